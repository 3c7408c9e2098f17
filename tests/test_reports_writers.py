"""The writers off the mail path (the aggregate recorder and the failure-report collector)
against stores that misbehave, on SQLite and a real PostgreSQL: of a batch the store
refuses for good (a real constraint, a trigger), only the rows refused are dropped
(isolated in halves under savepoints, in one transaction), counted and logged,
while a store that is down is retried for ever, its rows held apart from those recorded
since; messages written after their
period's report was due are counted ("late"); a PostgreSQL server that holds a lock or
stops answering altogether (SIGSTOP) is a write error within a bounded time, the buffer
keeping its bound meanwhile."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailauth.config_failure import FailureConfig
from mailauth.reports import BackgroundRecorder, RecordingSettings, open_store
from mailauth.reports.batch import Batch
from mailauth.reports.failure_collect import FailureCollector
from mailauth.reports.store import Store, StoreError
from tests.failure_helpers import ARRIVAL, BAD, SPOOF, verdict_of
from tests.reports_helpers import DAY, T0, verdict
from tests.writer_helpers import record, refuse_where, stored

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


def test_only_the_row_the_store_refuses_is_dropped(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch the store refuses for good was retried three times, whatever was recorded
    meanwhile merged into it, then dropped whole: one bad row cost every good one beside
    it. Now the batch is split until the refused row is alone: it alone is dropped."""
    _refuse(store_url, "report_counts", EVIL)
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0)
    good = [f"good{i}.example" for i in range(7)]
    for domain in [*good[:3], EVIL, *good[3:]]:
        record(recorder, domain)
    record(recorder, good[0])
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert not recorder.flush()  # (not all of it written)
    assert (recorder.pending, recorder.written, recorder.dropped, recorder.refused) == (0, 8, 1, 1)
    refusals = [r.message for r in caplog.records if "refused 1 rows for good" in r.message]
    assert len(refusals) == 1 and "refused" in refusals[0] and EVIL in refusals[0]
    assert stored(store_url) == {good[0]: 2, **dict.fromkeys(good[1:], 1)}
    record(recorder, "good.example")  # recording goes on
    assert recorder.flush() and recorder.written == 9
    recorder.close()


def test_rows_recorded_after_a_refused_one_are_never_dropped(store_url: str) -> None:
    """The writer's attempt counter dropped everything buffered at the third refusal,
    rows recorded since included. A refused row is dropped at once, alone; the flushes
    after it write everything else."""
    _refuse(store_url, "report_counts", EVIL)
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0)
    record(recorder, EVIL)
    recorder.flush()
    for index in range(4):
        record(recorder, f"good{index}.example")
        record(recorder, EVIL)
        recorder.flush()
    assert (recorder.pending, recorder.written, recorder.dropped) == (0, 4, 5)
    assert stored(store_url) == {f"good{i}.example": 1 for i in range(4)}
    recorder.close()


def test_refused_rows_are_isolated_within_one_transaction(store_url: str) -> None:
    """However many rows the store refuses, they are isolated in the flush that brings
    them, in one transaction (under savepoints, REVIEW25B 2: it spent a transaction per
    try, 32 at most per flush, and held the rest); everything else is written."""
    refuse_where(store_url, "report_counts", "NEW.policy_domain LIKE 'bad%'",
                  "policy_domain NOT LIKE 'bad%'")  # fmt: skip
    writes: list[int] = []

    def opener(url: str) -> Store:
        store = open_store(url)
        real = store.write

        def counted() -> Any:
            writes[-1] += 1
            return real()

        store.write = counted  # type: ignore[method-assign]
        return store

    recorder = BackgroundRecorder(store_url, RecordingSettings(), opener=opener, clock=lambda: T0)
    for index in range(24):
        record(recorder, f"{'bad' if index % 3 == 0 else 'good'}{index}.example")
    writes.append(0)
    assert not recorder.flush()  # (not all of it written)
    assert writes == [1]
    assert (recorder.refused, recorder.dropped, recorder.pending) == (8, 8, 0)
    record(recorder, "live.example")
    writes.append(0)
    assert recorder.flush() and writes == [1, 1]
    expected = {f"good{i}.example": 1 for i in range(24) if i % 3}
    assert stored(store_url) == {**expected, "live.example": 1}
    recorder.close()


def test_a_store_that_is_down_is_retried_for_ever(tmp_path: Path) -> None:
    down = [True]

    def opener(url: str) -> Store:
        if down[0]:
            raise StoreError("report store: connection refused", unreachable=True)
        return open_store(url)

    recorder = BackgroundRecorder(str(tmp_path / "r.sqlite"), opener=opener)
    record(recorder, "good.example")
    for _ in range(10):
        assert not recorder.flush()
    assert (recorder.pending, recorder.dropped, recorder.refused) == (1, 0, 0)
    down[0] = False
    assert recorder.flush() and recorder.written == 1


def test_rows_held_through_an_outage_and_live_ones_share_the_caps(store_url: str) -> None:
    """While the store is down, what a flush could not write is held apart from what is
    recorded since, the two bounded together by max_rows; once it is back, a row it
    refuses for good is isolated and only it is dropped."""
    _refuse(store_url, "report_counts", EVIL)
    down = [True]

    def opener(url: str) -> Store:
        if down[0]:
            raise StoreError("report store: connection refused", unreachable=True)
        return open_store(url)

    settings = RecordingSettings(max_rows=4)
    recorder = BackgroundRecorder(store_url, settings, opener=opener, clock=lambda: T0)
    for domain in (EVIL, "a.example"):
        record(recorder, domain)
    assert not recorder.flush() and recorder.pending == 2  # held
    for domain in ("b.example", "c.example", "d.example"):  # (d: past the caps)
        record(recorder, domain)
    assert not recorder.flush()
    assert (recorder.pending, recorder.dropped, recorder.refused) == (4, 1, 0)
    down[0] = False
    recorder.flush()
    assert (recorder.pending, recorder.dropped, recorder.refused) == (0, 2, 1)
    assert stored(store_url) == {"a.example": 1, "b.example": 1, "c.example": 1}
    recorder.close()


def _offer(collector: FailureCollector, ip: str) -> int:
    header = SPOOF.split(b"\r\n\r\n")[0] + b"\r\n"
    return collector.offer(verdict_of(SPOOF, {**BAD, "ip": ip}), header=header, ip=ip,
                           mail_from="x", now=ARRIVAL)  # fmt: skip


def _queued_ips(url: str) -> list[str]:
    store = open_store(url)
    try:
        rows = store.fetchall("SELECT facts FROM failure_reports ORDER BY facts")
        return sorted(json.loads(facts)["source_ip"] for (facts,) in rows)
    finally:
        store.close()


def test_only_the_failure_report_the_store_refuses_is_dropped(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure collector had the same flaw: captures put back before the live ones,
    all dropped at the third refusal. Now only the refused one is."""
    open_store(store_url).close()
    refused_ip = "198.51.100.99"
    refuse_where(store_url, "failure_reports", f"NEW.facts LIKE '%{refused_ip}%'",
                  f"facts NOT LIKE '%{refused_ip}%'")  # fmt: skip
    collector = FailureCollector(store_url, FailureConfig(enabled=True), clock=lambda: ARRIVAL)
    ips = ["198.51.100.1", refused_ip, "198.51.100.2", "198.51.100.3"]
    reports = [_offer(collector, ip) for ip in ips]
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert not collector.flush()
    assert (collector.pending, collector.refused, collector.dropped) == (0, reports[1], reports[1])
    assert collector.queued == sum(reports) - reports[1]
    assert sum("refused" in r.message and "for good" in r.message for r in caplog.records) == 1
    _offer(collector, "198.51.100.4")
    assert collector.flush()
    assert set(_queued_ips(store_url)) == {*ips, "198.51.100.4"} - {refused_ip}
    assert collector._buffered_bytes == 0
    collector.close()


def test_failure_reports_held_through_an_outage_are_queued_once_it_ends(tmp_path: Path) -> None:
    """Captures a write could not store are held apart and retried; with what is offered
    since, they share the buffer's bound."""
    down = [True]

    def opener(url: str) -> Store:
        if down[0]:
            raise StoreError("report store: connection refused", unreachable=True)
        return open_store(url)

    url = str(tmp_path / "r.sqlite")
    config = FailureConfig(enabled=True)
    collector = FailureCollector(url, config, max_buffered=3, opener=opener, clock=lambda: ARRIVAL)
    _offer(collector, "198.51.100.1")
    _offer(collector, "198.51.100.2")
    assert not collector.flush() and collector.pending == 2
    assert _offer(collector, "198.51.100.3") and not _offer(collector, "198.51.100.4")
    assert not collector.flush() and (collector.pending, collector.refused) == (3, 0)
    down[0] = False
    assert collector.flush() and collector.pending == 0
    assert _queued_ips(url) == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    collector.close()


def test_messages_written_after_their_report_was_due_are_counted_late(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [T0 + DAY - 1 + 599]  # the period's end + the sender's grace: not yet closed
    url = str(tmp_path / "r.sqlite")
    recorder = BackgroundRecorder(url, RecordingSettings(), clock=lambda: clock[0])
    record(recorder, "example.com")
    assert recorder.flush() and (recorder.written, recorder.late) == (1, 0)
    clock[0] += 1  # closed: `reports send` may have built its report already
    for domain in ("example.com", "example.org"):
        record(recorder, domain)
    record(recorder, "example.com", now=T0 + DAY)  # (the next period: on time)
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
    record(recorder, "example.com")
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
    record(recorder, "first.example")
    assert recorder.flush(timeout=10) and recorder.written == 1
    with postgres_server.stopped():
        started = time.monotonic()
        slowest = 0.0
        for index in range(10):  # the mail path: never held, the buffer bounded
            began = time.monotonic()
            record(recorder, f"d{index}.example")
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
    while the operator fixed the grant. Only data and constraint errors (22, 23) are. What
    is recorded while the grant is missing waits too; once it is back, a row a constraint
    refuses is dropped alone."""
    url = postgres_server.new_database()
    open_store(url).close()
    _refuse(url, "report_counts", EVIL)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE ROLE recorder_role LOGIN")
        admin.execute("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public "
                      "TO recorder_role")  # fmt: skip
        admin.execute("REVOKE INSERT ON report_counts FROM recorder_role")
        as_role = url.replace("postgresql://postgres@", "postgresql://recorder_role@")
        recorder = BackgroundRecorder(as_role, clock=lambda: T0)
        record(recorder, "example.com")
        record(recorder, EVIL)
        for index in range(4):
            assert not recorder.flush()
            record(recorder, f"live{index}.example")
        assert (recorder.refused, recorder.dropped, recorder.pending) == (0, 0, 6)  # (kept)
        admin.execute("GRANT INSERT ON report_counts TO recorder_role")
        assert not recorder.flush()  # (EVIL's row refused)
        assert (recorder.written, recorder.refused, recorder.dropped) == (5, 1, 1)
        assert recorder.pending == 0
        recorder.close()
        admin.execute("DROP OWNED BY recorder_role")
        admin.execute("DROP ROLE recorder_role")
    expected = {"example.com": 1, **{f"live{i}.example": 1 for i in range(4)}}
    assert stored(url) == expected


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
    from mailauth.reports.store_postgres import _ABORT_MARGIN

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

        def _left_at_stop(self) -> tuple[int, str]:
            return 0, ""

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


def test_a_writer_migrates_a_store_whatever_the_migration_takes(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A milter started while its store was unreachable migrates from its writer thread,
    whose PostgreSQL statements are bounded (WRITER_TIMEOUT): a migration longer than that
    (schema 6 on a store of imported reports: minutes) was cancelled, rolled back and tried
    again at every flush, for ever. The migrations now run before the bound is set."""
    from mailauth.reports import background, schema, store, writer_store

    slow = "SELECT pg_sleep(1.5)" if store_url.startswith("postgresql") else "SELECT 1"
    migrations = (*schema.MIGRATIONS, (slow,))
    monkeypatch.setattr(store, "MIGRATIONS", migrations)
    monkeypatch.setattr(store, "SCHEMA_VERSION", len(migrations))
    monkeypatch.setattr(writer_store, "WRITER_TIMEOUT", 0.5)
    writer = background.open_writer_store(store_url)
    try:
        assert writer.version() == len(migrations)
    finally:
        writer.close()


def test_the_last_write_at_stop_isolates_every_refused_row_and_says_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At stop there is no next flush: the last write isolates without the per-flush bound
    (before: 40 refused rows spread through 2,000 took more than its 32 transactions, and
    1,909 good rows were thrown away without a word). What a stop still cannot write is
    counted as dropped and said in a line."""
    from tests.reports_helpers import T0

    url = str(tmp_path / "reports.sqlite")
    store = open_store(url)
    store.execute(
        "CREATE TRIGGER refuse_some BEFORE INSERT ON report_counts WHEN "
        "NEW.policy_domain LIKE '%bad%' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    store.close()
    recorder = BackgroundRecorder(url, RecordingSettings(), clock=lambda: T0).start()
    for n in range(2_000):
        domain = f"g{n}{'bad' if n % 50 == 0 else ''}.example"
        recorder.record(verdict(domain), ip="192.0.2.1", mail_from="", now=T0)
    recorder.close()
    store = open_store(url)
    try:
        stored = store.fetchall("SELECT COUNT(*) FROM report_counts")[0][0]
    finally:
        store.close()
    assert (stored, recorder.written, recorder.dropped, recorder.pending) == (1_960, 1_960, 40, 0)

    class Down(BackgroundRecorder):  # (a store that is down at stop)
        def _write_piece(self, store: Store, batch: Batch) -> Callable[[], None]:
            raise StoreError("connection refused", unreachable=True)

    down = Down(url, RecordingSettings(), clock=lambda: T0).start()
    for n in range(5):
        down.record(verdict(f"d{n}.example"), ip="192.0.2.1", mail_from="", now=T0)
    down.close()
    assert down.dropped == 5
    assert "5 rows (5 messages) held for the report store not written at stop: lost" in (
        caplog.text
    )
