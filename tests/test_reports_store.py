"""The report store on SQLite and on a real PostgreSQL (tests/pgserver.py): migration,
recording (direct and buffered), two writer processes, claims under two concurrent senders."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailauth.reports import (
    BackgroundRecorder,
    DirectRecorder,
    RecordingSettings,
    ReportSettings,
    StoreError,
    closed_reports,
    mark_failed,
    mark_sent,
    open_store,
    report_status,
    write_batch,
)
from mailauth.reports.batch import Batch
from mailauth.reports.observe import observe
from mailauth.reports.schema import SCHEMA_VERSION
from mailauth.reports.store import Store
from mailauth.results import DkimResult, DmarcResult, Policy, SpfResult
from tests.lease_helpers import LeaseClock
from tests.reports_helpers import DAY, T0, verdict

SETTINGS = ReportSettings(org_name="Example Mail", email="dmarc@example.net",
                          submitter="example.net")  # fmt: skip
AFTER = T0 + DAY + SETTINGS.grace  # when the first period is closed


def _counts(store: Store) -> dict[tuple[str, str], int]:
    rows = store.fetchall("SELECT policy_domain, source_ip, messages FROM report_counts")
    found: dict[tuple[str, str], int] = {}
    for domain, ip, messages in rows:
        found[(domain, ip)] = found.get((domain, ip), 0) + int(messages)
    return found


def test_migrate_creates_the_schema_once(store_url: str) -> None:
    store = open_store(store_url, migrate=False)
    try:
        assert store.version() == 0
        assert store.migrate() == (0, SCHEMA_VERSION)
        assert store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
        assert store.version() == SCHEMA_VERSION
    finally:
        store.close()


def test_a_newer_schema_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    store.execute("UPDATE mailauth_schema SET version = 999")
    store.close()
    with pytest.raises(StoreError, match="newer than"):
        open_store(store_url)


def test_an_unopenable_store_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="report store"):
        open_store(tmp_path / "missing" / "reports.sqlite")


def test_direct_recording_counts_rows_not_messages(store_url: str) -> None:
    store = open_store(store_url)
    try:
        recorder = DirectRecorder(store)
        for _ in range(3):
            recorder.record(verdict(), ip="192.0.2.1", mail_from="a@example.com", now=T0 + 5)
        recorder.record(verdict(), ip="192.0.2.2", mail_from="a@example.com", now=T0 + 6)
        failing = verdict(result=DmarcResult.FAIL, spf=SpfResult.FAIL, disposition=Policy.REJECT)
        recorder.record(failing, ip="192.0.2.1", mail_from="a@example.com", now=T0 + 7)
        rows = store.fetchall(
            "SELECT source_ip, disposition, dmarc_spf, messages FROM report_counts "
            "ORDER BY source_ip, messages"
        )
        assert rows == [
            ("192.0.2.1", "none", "fail", 1),  # reject not enforced (the milter's default)
            ("192.0.2.1", "pass", "pass", 3),
            ("192.0.2.2", "pass", "pass", 1),
        ]
        policies = store.fetchall("SELECT policy_domain, period_begin, period_end, p, rua "
                                  "FROM report_policies")  # fmt: skip
        assert policies == [("example.com", T0, T0 + DAY - 1, "reject",
                             "mailto:dmarc@example.com")]  # fmt: skip
    finally:
        store.close()


def test_the_last_policy_seen_wins(store_url: str) -> None:
    store = open_store(store_url)
    try:
        recorder = DirectRecorder(store)
        recorder.record(verdict(policy=Policy.QUARANTINE), ip="192.0.2.1", mail_from="",
                        now=T0 + 100)  # fmt: skip
        recorder.record(verdict(policy=Policy.NONE), ip="192.0.2.1", mail_from="", now=T0 + 50)
        assert store.fetchall("SELECT p FROM report_policies") == [("quarantine",)]
        recorder.record(verdict(policy=Policy.REJECT), ip="192.0.2.1", mail_from="",
                        now=T0 + 200)  # fmt: skip
        assert store.fetchall("SELECT p FROM report_policies") == [("reject",)]
    finally:
        store.close()


def test_background_recorder_writes_exact_counts(store_url: str) -> None:
    settings = RecordingSettings(flush_seconds=0.05, batch_rows=50)
    recorder = BackgroundRecorder(store_url, settings).start()
    for index in range(2000):
        recorder.record(verdict(f"d{index % 7}.example"), ip=f"192.0.2.{index % 13}",
                        mail_from="x@example.org", now=T0 + index)  # fmt: skip
    assert recorder.flush()
    recorder.close()
    assert (recorder.recorded, recorder.written, recorder.dropped) == (2000, 2000, 0)
    store = open_store(store_url)
    try:
        assert sum(_counts(store).values()) == 2000
        assert len(_counts(store)) == 7 * 13
    finally:
        store.close()


def _batch(ips: int, messages: int, now: float = T0) -> Batch:
    batch = Batch()
    for index in range(messages):
        observation = observe(verdict(f"d{index % 3}.example"), ip=f"10.0.{index % ips // 250}."
                              f"{index % ips % 250}", mail_from="x@example.org")  # fmt: skip
        assert observation is not None
        batch.add(observation, now + index % 60, DAY)
    return batch


def test_batches_on_one_connection_add_up_exactly(store_url: str) -> None:
    """A batch of many rows, written twice on the same connection (PostgreSQL: through the
    session's staging table, emptied at each commit), then a batch that fails midway: the
    counts are exact and the failed batch left nothing behind."""
    store = open_store(store_url)
    try:
        batch = _batch(ips=1200, messages=5000)
        write_batch(store, batch)
        write_batch(store, batch)
        assert sum(_counts(store).values()) == 10_000
        assert store.fetchall("SELECT COUNT(*) FROM report_counts") == [(1200,)]
        broken = _batch(ips=10, messages=10)
        (_, begin, key) = next(iter(broken.counts))
        broken.counts[("d9.example", begin, key)] = None  # type: ignore[assignment]  # (last)
        with pytest.raises(StoreError):
            write_batch(store, broken)
        assert sum(_counts(store).values()) == 10_000
        write_batch(store, _batch(ips=10, messages=10))
        assert sum(_counts(store).values()) == 10_010
        assert store.fetchall("SELECT COUNT(*) FROM report_policies") == [(3,)]
    finally:
        store.close()


def test_an_upsert_outside_a_write_transaction_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with pytest.raises(RuntimeError, match="outside a write transaction"):
            store.upsert("mailauth_schema", ("version",), ("version",), "DO NOTHING", [(1,)])
    finally:
        store.close()


def test_a_full_buffer_drops_and_counts() -> None:
    def unreachable(url: str) -> Store:
        raise StoreError(f"report store {url}: connection refused")

    settings = RecordingSettings(flush_seconds=3600, max_rows=10)
    recorder = BackgroundRecorder("postgresql://nowhere/x", settings, opener=unreachable)
    for index in range(15):
        recorder.record(verdict(), ip=f"192.0.2.{index}", mail_from="", now=T0)
    recorder.record(verdict(), ip="192.0.2.1", mail_from="", now=T0)  # (a row it holds)
    assert (recorder.recorded, recorder.dropped, recorder.pending) == (11, 5, 10)
    assert not recorder.flush()  # the store is down: kept for the next try
    assert (recorder.write_errors, recorder.pending, recorder.dropped) == (1, 10, 5)


def test_verdicts_no_report_counts_are_skipped(store_url: str) -> None:
    store = open_store(store_url)
    try:
        recorder = DirectRecorder(store)
        recorder.record(verdict(result=DmarcResult.TEMPERROR), ip="192.0.2.1", mail_from="",
                        now=T0)  # fmt: skip
        assert store.fetchall("SELECT COUNT(*) FROM report_counts") == [(0,)]
    finally:
        store.close()


def _writer(url: str, name: str, messages: int) -> None:
    """One milter's recorder in a process of its own."""
    settings = RecordingSettings(flush_seconds=0.01, batch_rows=20)
    recorder = BackgroundRecorder(url, settings).start()
    for index in range(messages):
        recorder.record(verdict(f"d{index % 5}.example"), ip=f"192.0.2.{index % 11}",
                        mail_from=f"{name}@example.org", now=T0 + index)  # fmt: skip
        if index % 100 == 0:
            time.sleep(0.001)
    recorder.close()
    assert recorder.written == messages


def test_two_writer_processes_count_exactly(store_url: str) -> None:
    open_store(store_url).close()  # (migrated once: the writers find it ready)
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_writer, args=(store_url, "same", 3000)) for _ in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    store = open_store(store_url)
    try:
        counts = _counts(store)
        assert sum(counts.values()) == 6000
        assert len(counts) == 5 * 11
        rows = store.fetchall("SELECT COUNT(*) FROM report_counts")
        assert rows == [(55,)]  # both writers' messages in the same rows
    finally:
        store.close()


def _fill(url: str, domains: int, now: float = T0) -> None:
    store = open_store(url)
    try:
        recorder = DirectRecorder(store)
        for index in range(domains):
            recorder.record(verdict(f"d{index}.example"), ip="192.0.2.1", mail_from="",
                            now=now)  # fmt: skip
    finally:
        store.close()


def test_closed_reports_are_sent_once(store_url: str) -> None:
    _fill(store_url, 3)
    store = open_store(store_url)
    try:
        assert list(closed_reports(store, SETTINGS, now=T0 + DAY)) == []  # (within the grace)
        reports = list(closed_reports(store, SETTINGS, now=AFTER))
        assert sorted(r.policy_domain for r in reports) == ["d0.example", "d1.example",
                                                             "d2.example"]  # fmt: skip
        first = reports[0]
        assert first.file_name == (f"example.net!{first.policy_domain}!{T0}!{T0 + DAY - 1}!"
                                   f"{first.report_id}.xml.gz")  # fmt: skip
        assert first.subject == (f"Report Domain: {first.policy_domain} Submitter: example.net "
                                 f"Report-ID: <{first.report_id}>")  # fmt: skip
        assert (first.records, first.messages, first.attempts) == (1, 1, 1)
        assert list(closed_reports(store, SETTINGS, now=AFTER)) == []  # claimed: not again
        assert mark_sent(store, first, now=AFTER)
        assert mark_failed(store, reports[1], "451 try later", now=AFTER,
                           delivered=("mailto:a@x.example",))  # fmt: skip
        assert mark_failed(store, reports[2], "550 no such user", now=AFTER, give_up=True)
        again = list(closed_reports(store, SETTINGS, now=AFTER + 60))
        assert [r.policy_domain for r in again] == [reports[1].policy_domain]
        retry = again[0]
        assert (retry.report_id, retry.file_name) == (reports[1].report_id, reports[1].file_name)
        assert retry.xml_gz == reports[1].xml_gz
        assert (retry.attempts, retry.delivered) == (2, ("mailto:a@x.example",))
        assert not mark_sent(store, first, now=AFTER)  # (no claim held any more)
        assert mark_sent(store, retry, now=AFTER)
        assert list(closed_reports(store, SETTINGS, now=AFTER + 10 * DAY)) == []
    finally:
        store.close()


def test_an_expired_claim_is_claimable_again(store_url: str) -> None:
    _fill(store_url, 1)
    store = open_store(store_url)
    try:
        wall = LeaseClock(store, "outgoing_reports", 1_000_000)
        (lost,) = closed_reports(store, SETTINGS, now=AFTER, clock=wall)  # (it died)
        wall.advance(SETTINGS.lease - 60)
        assert list(closed_reports(store, SETTINGS, now=AFTER, clock=wall)) == []
        wall.advance(60)
        (again,) = closed_reports(store, SETTINGS, now=AFTER, clock=wall)
        assert again.file_name == lost.file_name and again.attempts == 2
        assert not mark_sent(store, lost, now=AFTER)  # the old claim lost it
        assert mark_sent(store, again, now=AFTER)
    finally:
        store.close()


def test_stopping_early_releases_the_rest(store_url: str) -> None:
    _fill(store_url, 5)
    store = open_store(store_url)
    try:
        for report in closed_reports(store, SETTINGS, now=AFTER):
            mark_sent(store, report, now=AFTER)
            break
        assert len(list(closed_reports(store, SETTINGS, now=AFTER))) == 4
    finally:
        store.close()


def test_report_status_lists_what_the_next_run_sends(store_url: str) -> None:
    _fill(store_url, 2)
    _fill(store_url, 1, now=T0 + DAY)  # (the next period: still open)
    store = open_store(store_url)
    try:
        status = report_status(store, SETTINGS, now=AFTER)
        assert [(s.policy_domain, s.state, s.records, s.messages) for s in status] == [
            ("d0.example", "new", 1, 1),
            ("d1.example", "new", 1, 1),
        ]
        (report, _) = closed_reports(store, SETTINGS, now=AFTER)
        mark_sent(store, report, now=AFTER)
        assert [s.state for s in report_status(store, SETTINGS, now=AFTER)] == ["claimed"]
    finally:
        store.close()


def _sender(url: str, out: str) -> None:
    """One `send` run: claims, "delivers" slowly, marks sent; writes what it sent."""
    store = open_store(url)
    sent = []
    for report in closed_reports(store, SETTINGS, now=AFTER, batch=3):
        time.sleep(0.005)
        assert mark_sent(store, report, now=AFTER)
        sent.append(report.policy_domain)
    store.close()
    Path(out).write_text("\n".join(sent))


def test_two_concurrent_senders_never_send_a_report_twice(store_url: str, tmp_path: Path) -> None:
    _fill(store_url, 60)
    spawn = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"sent{n}" for n in range(2)]
    senders = [spawn.Process(target=_sender, args=(store_url, str(o))) for o in outs]
    for process in senders:
        process.start()
    for process in senders:
        process.join(120)
        assert process.exitcode == 0
    sent = [o.read_text().split() for o in outs]
    assert not set(sent[0]) & set(sent[1])
    assert sorted(sent[0] + sent[1]) == sorted(f"d{n}.example" for n in range(60))


def test_sqlite_store_is_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "reports.sqlite"
    _fill(str(path), 1)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version FROM mailauth_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


def test_dkim_results_are_kept_in_preference_order(store_url: str) -> None:
    store = open_store(store_url)
    try:
        dkim = (
            ("other.example", "s1", DkimResult.FAIL),
            ("esp.example", "s2", DkimResult.PASS),
            ("example.com", "s3", DkimResult.PASS),
        )
        DirectRecorder(store).record(verdict(dkim=dkim), ip="192.0.2.1", mail_from="", now=T0)
        assert store.fetchall("SELECT dkim FROM report_counts") == [(
            '[["example.com","s3","pass"],["esp.example","s2","pass"],'
            '["other.example","s1","fail"]]',
        )]  # fmt: skip
    finally:
        store.close()


def _open_and_close(url: str) -> None:
    open_store(url).close()


def test_two_processes_migrating_at_once_migrate_once(store_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    starters = [spawn.Process(target=_open_and_close, args=(store_url,)) for _ in range(3)]
    for process in starters:
        process.start()
    for process in starters:
        process.join(60)
        assert process.exitcode == 0
    store = open_store(store_url, migrate=False)
    try:
        assert store.fetchall("SELECT version FROM mailauth_schema") == [(SCHEMA_VERSION,)]
    finally:
        store.close()


def test_hostile_dkim_tags_are_bounded_in_a_row() -> None:
    """Malformed DKIM-Signature fields keep whatever d=/s= they carry (a 1 MiB header
    section: 200 KB per row in the store and the buffer). A report row keeps at most 253
    characters of each (a domain name's limit)."""
    from mailauth.reports.observe import observe

    selectors = tuple(
        ("example.com", "s" * 20_000 + str(i), DkimResult.PERMERROR) for i in range(10)
    )
    long_d = (("d" * 20_000 + ".example.com", "sel", DkimResult.PERMERROR),)
    observation = observe(verdict(dkim=selectors + long_d), ip="192.0.2.1", mail_from="")
    assert observation is not None
    assert all(len(d) <= 253 and len(s) <= 253 for d, s, _ in observation.dkim)
    assert sum(map(len, observation.key())) < 11 * 600


def test_the_buffer_is_bounded_in_bytes_too() -> None:
    """Rows of a few KB each (many DKIM results with long selectors, all distinct) fill
    ``max_bytes`` before ``max_rows``: the rest is dropped and counted."""

    def unreachable(url: str) -> Store:
        raise StoreError(f"report store {url}: connection refused")

    settings = RecordingSettings(flush_seconds=3600, max_rows=100_000, max_bytes=200_000)
    recorder = BackgroundRecorder("postgresql://nowhere/x", settings, opener=unreachable)
    for index in range(1000):
        sigs = tuple(
            ("example.com", f"{index}-{'s' * 240}-{n}", DkimResult.FAIL) for n in range(10)
        )
        recorder.record(verdict(dkim=sigs), ip="192.0.2.1", mail_from="", now=T0)
    assert recorder.pending < 100
    assert recorder.dropped == 1000 - recorder.recorded > 900
    assert recorder.buffered_bytes <= 200_000 + 10_000


@pytest.fixture
def tarpit() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a PostgreSQL server that
    hangs, or a firewall that lets the handshake through)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_hung_postgresql_server_is_an_error_within_seconds(tarpit: int) -> None:
    """libpq waits for ever by default: the milter's start (and the writer thread) hung
    with it. A connection that is not up within 5 s is a StoreError that says so."""
    pytest.importorskip("psycopg")
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://mailauth@127.0.0.1:{tarpit}/reports")
    assert time.monotonic() - started < 15
    assert caught.value.unreachable


def test_the_milter_starts_while_its_postgresql_store_is_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A store that is down must not stop mail: the milter starts (one warning line), its
    recorder buffers and writes once the store is back; a store that cannot work at all
    (a SQLite file in a directory that does not exist) is still a start-up error."""
    from mailauth.cli.serve import start_recorder
    from mailauth.config import MilterConfig, ReportsConfig

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://mailauth@127.0.0.1:{port}/reports"
    recorder = start_recorder(MilterConfig(reports=ReportsConfig(store=url)))
    assert recorder is not None
    try:
        assert "warning" in capsys.readouterr().err
        recorder.record(verdict(), ip="192.0.2.1", mail_from="", now=T0)
        assert recorder.pending == 1
    finally:
        recorder.close(timeout=1)
    with pytest.raises(StoreError):
        start_recorder(MilterConfig(reports=ReportsConfig(store="/nonexistent/dir/r.db")))


def test_a_claim_lasts_its_lease_in_real_time_whatever_now_says(store_url: str) -> None:
    """``reports send --now`` in the past (a catch-up run) beside the timer's run: the
    claim must hold for its lease in real time. Measured on --now, it had ended before it
    began, and the timer's run took and sent the same report."""
    _fill(store_url, 1)
    store = open_store(store_url)
    try:
        (first,) = closed_reports(store, SETTINGS, now=AFTER)  # --now AFTER, long ago
        assert list(closed_reports(store, SETTINGS, now=time.time())) == []  # the timer's
        assert mark_sent(store, first, now=AFTER)
    finally:
        store.close()


def test_each_claim_is_renewed_when_its_report_is_handed_out(store_url: str) -> None:
    """A run that takes longer than a lease over its batch (a slow relay) renews each
    claim as it comes to it; one that another run took meanwhile is skipped, not sent
    twice."""
    _fill(store_url, 3)
    store = open_store(store_url)
    other = open_store(store_url)
    clock = LeaseClock(other, "outgoing_reports", 1_000_000.0)
    try:
        run = closed_reports(store, SETTINGS, now=AFTER, batch=3, clock=clock)
        first = next(run)
        clock.advance(SETTINGS.lease + 1)  # the first delivery took longer than a lease
        second = next(run)  # renewed as it is handed out: the other run cannot take it
        taken = list(closed_reports(other, SETTINGS, now=AFTER, clock=clock))
        # the other run takes the first (still being delivered past its lease: its sender
        # is that slow) and the third (not handed out yet), never the second
        assert len(taken) == 2 and second.policy_domain not in {r.policy_domain for r in taken}
        assert first.policy_domain in {r.policy_domain for r in taken}
        assert list(run) == []  # the third: the other run's now, not handed out twice
    finally:
        store.close()
        other.close()


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The store holds who sends to this host and from where (and, with record_envelope_to,
    its users' domains): a new file is 0600 whatever the umask, its WAL and shared-memory
    files likewise (SQLite gives them the database's mode); an existing file keeps its."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "reports.sqlite"
        _fill(str(path), 1)
        store = open_store(str(path))  # (a connection open: the -wal and -shm files exist)
        try:
            for name in ("reports.sqlite", "reports.sqlite-wal", "reports.sqlite-shm"):
                assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        finally:
            store.close()
        shared = tmp_path / "shared.sqlite"
        shared.touch(mode=0o640)
        open_store(str(shared)).close()
        assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_record_with_thousands_of_rua_uris_is_stored_bounded(store_url: str) -> None:
    """An attacker's record may list thousands of URIs (74 KB a row, per period); reports
    go to at most 10 destinations (reports.uri.MAX_DESTINATIONS): the first 32 URIs of a
    sane length are kept, a URI with white space in it (not a URI) is not."""
    odd = ("mailto:a@x.example mailto:b@y.example", "mailto:" + "x" * 2000 + "@example.com")
    rua = odd + tuple(f"mailto:r{i}@example.com" for i in range(3000))
    store = open_store(store_url)
    try:
        DirectRecorder(store).record(verdict(rua=rua), ip="192.0.2.1", mail_from="", now=T0)
        ((stored,),) = store.fetchall("SELECT rua FROM report_policies")
        assert stored.split() == [f"mailto:r{i}@example.com" for i in range(32)]
    finally:
        store.close()


def test_prune_deletes_the_periods_that_ended_before_a_time(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mailauth reports prune --before T`: every period that ended before T goes (counts,
    policy, send state, whatever became of the report), except one a send run holds
    claimed; later periods stay; --before in the future is refused."""
    from mailauth.cli import main

    _fill(store_url, 2)  # two domains, period T0
    _fill(store_url, 1, now=T0 + DAY)  # one domain, the next period
    store = open_store(store_url)
    try:
        run = closed_reports(store, SETTINGS, now=AFTER, batch=1)
        held = next(run)  # claimed by a send run: kept; the other one (pending) goes
        assert main(["reports", "prune", "--store", store_url, "--before", str(T0 + DAY)]) == 0
        assert "deleted 1 report rows, 1 policies, 1 send states" in capsys.readouterr().out
        rows = store.fetchall("SELECT policy_domain, period_begin FROM report_counts")
        assert sorted(rows) == [(held.policy_domain, T0), ("d0.example", T0 + DAY)]
        assert mark_sent(store, held, now=AFTER)
        assert main(["reports", "prune", "--store", store_url, "--before", str(T0 + DAY)]) == 0
        rows = store.fetchall("SELECT policy_domain, period_begin FROM report_counts")
        assert rows == [("d0.example", T0 + DAY)]
        assert store.fetchall("SELECT COUNT(*) FROM outgoing_reports") == [(0,)]
        assert store.fetchall("SELECT period_begin FROM report_policies") == [(T0 + DAY,)]
        future = str(int(time.time()) + 3600)
        assert main(["reports", "prune", "--store", store_url, "--before", future]) == 2
    finally:
        store.close()


def test_an_unexpected_error_does_not_end_recording(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Anything the store layer raises besides StoreError (a bug, a driver's surprise)
    ended the writer thread: recording stopped for good, with no line. It is logged, the
    batch kept, and the next flush writes."""
    calls = []

    def flaky(url: str) -> Store:
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError("driver surprise")
        return open_store(url)

    settings = RecordingSettings(flush_seconds=0.05)
    recorder = BackgroundRecorder(store_url, settings, opener=flaky).start()
    recorder.record(verdict(), ip="192.0.2.1", mail_from="", now=T0)
    deadline = time.monotonic() + 10
    while recorder.written == 0 and time.monotonic() < deadline:
        recorder.flush(timeout=1)  # the first try fails; the thread lives on and writes
    recorder.close()
    assert (recorder.written, recorder.write_errors) == (1, 1)
    assert "driver surprise" in caplog.text


def test_a_report_past_its_size_limit_is_abandoned_not_built_in_memory(store_url: str) -> None:
    """A domain whose period holds millions of rows (an attacker's own domain, a row per
    fresh DKIM selector) made `send` build its whole gzipped report, then the e-mail, in
    memory (26 bytes a row compressed: 10 million rows, 260 MB before base64 and
    signing). Past ``max_report_bytes`` compressed the build stops and the report is
    abandoned with its reason; the next report is built."""
    store = open_store(store_url)
    try:
        recorder = DirectRecorder(store)
        for index in range(300):
            sig = (("big.example", f"s{index:04x}{'x' * 60}", DkimResult.FAIL),)
            recorder.record(verdict("big.example", dkim=sig), ip=f"192.0.2.{index % 250}",
                            mail_from="", now=T0)  # fmt: skip
        recorder.record(verdict("small.example"), ip="192.0.2.1", mail_from="", now=T0)
        settings = ReportSettings("Example Mail", "dmarc@example.net", "example.net",
                                  max_report_bytes=1024)  # fmt: skip
        reports = list(closed_reports(store, settings, now=AFTER))
        assert [r.policy_domain for r in reports] == ["small.example"]
        rows = store.fetchall("SELECT state, last_error FROM outgoing_reports "
                              "WHERE policy_domain = 'big.example'")  # fmt: skip
        ((state, error),) = rows
        assert state == "abandoned" and "larger than" in error
    finally:
        store.close()
