"""The writers off the mail path (the aggregate recorder and the failure-report collector)
against stores that misbehave, on SQLite and a real PostgreSQL: a batch the store refuses
for good (a real constraint) is dropped after a bounded number of attempts, counted and
logged, while a store that is down is retried for ever; messages written after their
period's report was due are counted ("late"); a PostgreSQL server that holds a lock or
stops answering altogether (SIGSTOP) is a write error within a bounded time, the buffer
keeping its bound meanwhile."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailauth.config_failure import FailureConfig
from mailauth.reports import BackgroundRecorder, RecordingSettings, open_store
from mailauth.reports.background import PERMANENT_ATTEMPTS
from mailauth.reports.failure_collect import FailureCollector
from mailauth.reports.store import Store, StoreError
from tests.failure_helpers import ARRIVAL, BAD, SPOOF, verdict_of
from tests.reports_helpers import DAY, T0, verdict

EVIL = "evil.example"


def _refuse(url: str, table: str, domain: str) -> None:
    """A constraint another tool added: rows of ``domain`` refused (an integrity error)."""
    store = open_store(url)
    try:
        if store.engine == "sqlite":
            store.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                f"WHEN NEW.policy_domain = '{domain}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            store.execute(f"ALTER TABLE {table} ADD CONSTRAINT refuse "
                          f"CHECK (policy_domain <> '{domain}')")  # fmt: skip
    finally:
        store.close()


def _record(recorder: BackgroundRecorder, domain: str, now: float = T0) -> None:
    recorder.record(verdict(domain), ip="192.0.2.1", mail_from="", now=now)


def test_a_store_error_says_whether_it_is_permanent(store_url: str) -> None:
    _refuse(store_url, "report_counts", EVIL)
    store = open_store(store_url)
    try:
        with pytest.raises(StoreError) as refused:
            store.execute("INSERT INTO report_counts (policy_domain) VALUES (?)", (EVIL,))
        assert refused.value.permanent
        with pytest.raises(StoreError) as wrong:
            store.execute("SELECT nonsense FROM nowhere")
        assert not wrong.value.unreachable  # (SQLite: an operational error; PG: programming)
    finally:
        store.close()


def test_a_batch_refused_for_good_is_dropped_after_bounded_attempts(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _refuse(store_url, "report_counts", EVIL)
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0)
    _record(recorder, EVIL)
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        for attempt in range(1, PERMANENT_ATTEMPTS):
            assert not recorder.flush()
            counts = (recorder.write_errors, recorder.pending, recorder.dropped)
            assert counts == (attempt, attempt, 0)
            _record(recorder, "good.example")  # (what comes meanwhile joins the batch)
        assert not recorder.flush()
    assert (recorder.pending, recorder.dropped, recorder.refused) == (0, 3, 1)
    assert sum("they are dropped" in r.message for r in caplog.records) == 1
    _record(recorder, "good.example")  # recording goes on
    assert recorder.flush() and recorder.written == 1
    recorder.close()


def test_a_store_that_is_down_is_retried_for_ever(tmp_path: Path) -> None:
    down = [True]

    def opener(url: str) -> Store:
        if down[0]:
            raise StoreError("report store: connection refused", unreachable=True)
        return open_store(url)

    recorder = BackgroundRecorder(str(tmp_path / "r.sqlite"), opener=opener)
    _record(recorder, "good.example")
    for _ in range(3 * PERMANENT_ATTEMPTS):
        assert not recorder.flush()
    assert (recorder.pending, recorder.dropped, recorder.refused) == (1, 0, 0)
    down[0] = False
    assert recorder.flush() and recorder.written == 1


def test_failure_reports_refused_for_good_are_dropped_after_bounded_attempts(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    open_store(store_url).close()
    _refuse(store_url, "failure_reports", "example.com")
    config = FailureConfig(enabled=True)
    collector = FailureCollector(store_url, config, clock=lambda: ARRIVAL)
    failing = verdict_of(SPOOF, BAD)
    header = SPOOF.split(b"\r\n\r\n")[0] + b"\r\n"
    reports = collector.offer(failing, header=header, ip=BAD["ip"], mail_from="x", now=ARRIVAL)
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        for _ in range(PERMANENT_ATTEMPTS - 1):
            assert not collector.flush() and collector.pending == 1
        assert not collector.flush()
    assert (collector.pending, collector.dropped, collector.refused) == (0, reports, 1)
    assert sum("they are dropped" in r.message for r in caplog.records) == 1
    collector.close()


def test_messages_written_after_their_report_was_due_are_counted_late(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [T0 + DAY - 1 + 599]  # the period's end + the sender's grace: not yet closed
    url = str(tmp_path / "r.sqlite")
    recorder = BackgroundRecorder(url, RecordingSettings(), clock=lambda: clock[0])
    _record(recorder, "example.com")
    assert recorder.flush() and (recorder.written, recorder.late) == (1, 0)
    clock[0] += 1  # closed: `reports send` may have built its report already
    for domain in ("example.com", "example.org"):
        _record(recorder, domain)
    _record(recorder, "example.com", now=T0 + DAY)  # (the next period: on time)
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert recorder.flush()
        recorder._after_write()
    assert (recorder.written, recorder.late) == (4, 2)
    assert sum("2 messages written after" in r.message for r in caplog.records) == 1


# -- PostgreSQL that holds a lock, or does not answer at all ----------------------------


def _timed(seconds: float) -> Callable[[str], Store]:
    return lambda url: open_store(url, timeout=seconds)


def test_a_lock_held_by_another_session_is_a_write_error_within_the_timeout(
    postgres_server: Any,
) -> None:
    url = postgres_server.new_database()
    open_store(url).close()
    recorder = BackgroundRecorder(url, opener=_timed(1.0), clock=lambda: T0)
    _record(recorder, "example.com")
    with psycopg.connect(url) as other:  # (a transaction: the lock held until the end)
        other.execute("LOCK TABLE report_counts IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        assert not recorder.flush()
        assert time.monotonic() - started < 5
        other.rollback()
    assert (recorder.write_errors, recorder.pending, recorder.refused) == (1, 1, 0)  # kept
    assert recorder.flush() and recorder.written == 1
    recorder.close()


def test_a_stopped_postgresql_server_is_given_up_in_bounded_time(postgres_server: Any) -> None:
    url = postgres_server.new_database() + "&connect_timeout=2"
    open_store(url).close()
    settings = RecordingSettings(flush_seconds=0.2, max_rows=3)
    recorder = BackgroundRecorder(url, settings, opener=_timed(1.0), clock=lambda: T0).start()
    _record(recorder, "first.example")
    assert recorder.flush(timeout=10) and recorder.written == 1
    with postgres_server.stopped():
        started = time.monotonic()
        slowest = 0.0
        for index in range(10):  # the mail path: never held, the buffer bounded
            began = time.monotonic()
            _record(recorder, f"d{index}.example")
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(0.05)
        while recorder.write_errors == 0 and time.monotonic() - started < 30:
            time.sleep(0.1)
        given_up = time.monotonic() - started
        assert recorder.write_errors >= 1 and given_up < 15  # (1 s + 2 s margin, + connect)
        assert slowest < 0.1 and recorder.pending <= 3 and recorder.dropped == 7
    assert recorder.flush(timeout=30) and recorder.written == 4
    recorder.close()
    store = open_store(url)
    try:
        assert store.fetchall("SELECT SUM(messages) FROM report_counts") == [(4,)]
    finally:
        store.close()


def test_a_reload_keeps_the_reporting_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Periods of two lengths would overlap in the store (N2): a SIGHUP that changes
    ``[reports] interval`` keeps the running one, with an error line; the other recording
    settings of the file apply."""
    from mailauth.cli import _build_parser
    from mailauth.cli.serve import build_milter_parts, effective_config

    path = tmp_path / "milter.toml"
    path.write_text(
        'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\n[reports]\n'
        f'store = "{tmp_path / "r.sqlite"}"\ninterval = 3600\n'
    )
    zone = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "example.com.zone"
    args = _build_parser().parse_args(["milter", "--config", str(path), "--dns-zone", str(zone)])
    recorder = BackgroundRecorder(str(tmp_path / "r.sqlite"), RecordingSettings(interval=3600))
    build_milter_parts(effective_config(args), args, recorder=recorder)
    assert recorder.settings.interval == 3600 and not caplog.records
    path.write_text(path.read_text().replace("3600", "7200") + "record_envelope_to = true\n")
    with caplog.at_level(logging.ERROR, "mailauth"):
        build_milter_parts(effective_config(args), args, recorder=recorder)
    assert recorder.settings.interval == 3600 and recorder.settings.record_envelope_to
    assert [r.message for r in caplog.records] == [
        "reports.interval: changed from 3600 to 7200 s by the reload: kept at 3600 s until "
        "the milter restarts (the periods being counted would overlap)"
    ]


def test_the_new_counters_are_exported(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from mailauth.milter.metrics import Metrics

    metrics = Metrics()
    recorder = BackgroundRecorder(str(tmp_path / "r.sqlite"))
    recorder.late, recorder.refused = 4, 1
    collector = FailureCollector(str(tmp_path / "r.sqlite"), FailureConfig(enabled=True))
    collector.over_share, collector.over_window, collector.refused = 2, 3, 5
    metrics.watch_recorder(recorder)
    metrics.watch_failure_reports(collector)
    text = generate_latest(metrics.registry).decode()
    for line in (
        "mailauth_reports_late_total 4.0",
        "mailauth_reports_refused_total 1.0",
        "mailauth_failure_reports_over_share_total 2.0",
        "mailauth_failure_reports_over_window_total 3.0",
        "mailauth_failure_reports_refused_total 5.0",
    ):
        assert line in text


# -- what an operator mends is not "refused for good" (REVIEW16B 1-3) ----------------------


def test_a_privilege_revoked_keeps_the_rows_until_it_is_granted_again(
    postgres_server: Any,
) -> None:
    """psycopg calls a revoked privilege (42501) a ProgrammingError, as it does a missing
    table or column: once taken for permanent, every batch was dropped after 3 attempts
    while the operator fixed the grant. Only data and constraint errors (22, 23) are."""
    url = postgres_server.new_database()
    open_store(url).close()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE ROLE recorder_role LOGIN")
        admin.execute("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public "
                      "TO recorder_role")  # fmt: skip
        admin.execute("REVOKE INSERT ON report_counts FROM recorder_role")
        as_role = url.replace("postgresql://postgres@", "postgresql://recorder_role@")
        recorder = BackgroundRecorder(as_role, clock=lambda: T0)
        _record(recorder, "example.com")
        for _ in range(PERMANENT_ATTEMPTS + 1):
            assert not recorder.flush()
        assert (recorder.refused, recorder.pending) == (0, 1)  # (kept, not dropped)
        admin.execute("GRANT INSERT ON report_counts TO recorder_role")
        assert recorder.flush() and recorder.written == 1
        recorder.close()
        admin.execute("DROP OWNED BY recorder_role")
        admin.execute("DROP ROLE recorder_role")


def test_a_column_added_by_a_migration_meanwhile_is_seen_by_the_next_flush(
    postgres_server: Any,
) -> None:
    """The staging table is made for each call from the table as it is then: a session's
    older copy (CREATE TEMPORARY TABLE IF NOT EXISTS ... LIKE) had refused a column another
    process's migration added, and the batch was taken for refused for good."""
    url = postgres_server.new_database()
    store = open_store(url)
    try:
        columns, key = ("policy_domain", "n"), ("policy_domain",)
        store.execute("CREATE TABLE t (policy_domain TEXT PRIMARY KEY, n INTEGER)")
        action = "DO UPDATE SET n = t.n + excluded.n"
        with store.write():
            store.upsert("t", columns, key, action, [("a.example", 1)])
        store.execute("ALTER TABLE t ADD COLUMN extra TEXT DEFAULT 'd'")
        with store.write():
            store.upsert("t", (*columns, "extra"), key, action, [("b.example", 1, "x")])
        rows = store.fetchall("SELECT policy_domain, n, extra FROM t ORDER BY 1")
        assert rows == [("a.example", 1, "d"), ("b.example", 1, "x")]
    finally:
        store.close()


def test_two_upserts_into_one_table_in_one_transaction_count_once(store_url: str) -> None:
    """The staging table kept the first call's rows until the commit: the second call
    inserted them again (a count doubled)."""
    store = open_store(store_url)
    try:
        store.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
        action = "DO UPDATE SET n = t.n + excluded.n"
        with store.write():
            store.upsert("t", ("k", "n"), ("k",), action, [("a", 1)])
            store.upsert("t", ("k", "n"), ("k",), action, [("b", 1)])
        assert store.fetchall("SELECT k, n FROM t ORDER BY k") == [("a", 1), ("b", 1)]
    finally:
        store.close()


def test_close_leaves_a_writer_still_in_a_statement_its_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """REVIEW16B 6: close() waited 30 s, less than a statement's bound (30 s and the
    client's 2 s margin), then closed the store under the thread still writing. Now it
    waits longer than that by default, and a thread still busy keeps its connection."""
    import threading

    from mailauth.reports.background import CLOSE_TIMEOUT, WRITER_TIMEOUT, BackgroundWriter
    from mailauth.reports.store import _ABORT_MARGIN

    assert CLOSE_TIMEOUT > WRITER_TIMEOUT + _ABORT_MARGIN

    class Stuck(BackgroundWriter):
        released = threading.Event()
        writing = threading.Event()

        def _flush_seconds(self) -> float:
            return 0.01

        def _write_once(self) -> bool:
            self._store = self._store or open_store(self.url)
            self.writing.set()
            return self.released.wait(30)

    url = str(tmp_path / "reports.sqlite")
    writer = Stuck(url, open_store).start()
    assert Stuck.writing.wait(10)
    writer.close(timeout=0.2)
    assert f"{url} still writing after 0.2 s: left to finish" in caplog.text
    assert writer._store is not None and writer._thread is not None  # (left to finish)
    Stuck.released.set()
    writer._thread.join(10)
    writer._store.close()


def test_which_postgresql_errors_are_permanent(postgres_server: Any) -> None:
    """(REVIEW24: a key twice in a batch, a limit exceeded and a value the client could not
    convert would fail again: dropped after the attempts, not retried for ever.)"""
    from psycopg import errors

    store = open_store(postgres_server.new_database())
    try:
        permanent = [errors.CardinalityViolation(), errors.NumericValueOutOfRange(),
                     errors.UniqueViolation(), errors.ProgramLimitExceeded(),
                     psycopg.DataError("client-side: cannot dump")]  # fmt: skip
        temporary = [errors.InsufficientPrivilege(), errors.UndefinedColumn(),
                     errors.UndefinedTable(), errors.SerializationFailure(),
                     errors.DeadlockDetected(), errors.QueryCanceled(), errors.DiskFull(),
                     psycopg.OperationalError("server closed the connection")]  # fmt: skip
        assert all(store._is_permanent(e) for e in permanent)
        assert not any(store._is_permanent(e) for e in temporary)
    finally:
        store.close()
