"""How the writers off the mail path (the aggregate recorder, the failure-report collector)
isolate what the store will not take (REVIEW25B 2, 3, 8), on SQLite and a real
PostgreSQL: the rows a store refuses for good are isolated in one transaction under
savepoints, so that a steady trickle of them never backs recording up; no transaction
holds more than ``batch_rows`` rows, fewer after a write timed out; "late" and a refused
policy row are counted honestly once a batch is cut. (An exception that is not the
store's: test_reports_surprises.)"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mailauth.reports import BackgroundRecorder, RecordingSettings, open_store
from mailauth.reports.batch import Batch, late_messages
from mailauth.reports.observe import observe
from mailauth.reports.recorder import MIN_CHUNK_ROWS
from mailauth.reports.store import Store, StoreError
from tests.reports_helpers import DAY, T0, verdict
from tests.writer_helpers import counting, record, refuse_where, stored


def _batch(domains: list[str], now: float = T0) -> Batch:
    batch = Batch()
    for index, domain in enumerate(domains):
        observation = observe(verdict(domain), ip=f"192.0.2.{index}", mail_from="")
        assert observation is not None
        batch.add(observation, now, DAY)
    return batch


EVIL = "evil.example"


def test_late_messages_are_counted_in_every_piece_of_a_cut_batch() -> None:
    """REVIEW25B 8: ``late_messages`` needed the period's policy row in the same piece,
    which ``halves`` puts in only one of them: 6 late messages read 2 + 0 once halved, 0
    once isolated down to single rows. Each piece now knows its periods' policies."""
    batch = _batch(["example.com"] * 6)
    later = T0 + DAY + 3 * DAY
    assert late_messages(batch, later) == 6
    first, second = batch.halves()
    assert late_messages(first, later) + late_messages(second, later) == 6
    singles = batch.chunks(1)
    assert len(singles) == 7  # (the policy row and six counts)
    assert sum(late_messages(piece, later) for piece in singles) == 6
    assert sum(late_messages(piece, T0 + DAY) for piece in singles) == 0  # (not closed yet)
    merged = Batch()
    for piece in singles[3:]:
        merged.merge(piece)
    assert late_messages(merged, later) == 4 and not merged.policies


# -- REVIEW25B 2: refused rows isolated under savepoints, in one transaction -------------


def test_a_steady_trickle_of_refused_rows_never_backs_recording_up(store_url: str) -> None:
    """The reviewer's amp.py: each flush brings 2,000 good rows and 10 the store refuses,
    spread through them. Isolating them cost about 2 log2(n) transactions each, 32 at most
    per flush: 6 of the 10 were isolated per flush, the rest held, and the backlog grew
    to the caps (pending 16,083 by flush 20; 613 good messages dropped by flush 40). Now
    each flush isolates all of them in its one transaction: nothing good is dropped and
    nothing is left pending."""
    refuse_where(store_url, "report_counts", "NEW.policy_domain LIKE '%bad%'",
                  "policy_domain NOT LIKE '%bad%'")  # fmt: skip
    transactions: list[int] = []
    recorder = BackgroundRecorder(
        store_url, RecordingSettings(), opener=counting(transactions), clock=lambda: T0
    )
    n = 0
    for flush in range(1, 7):
        for index in range(2_010):
            bad = index % 201 == 100  # (10 of them, spread through the batch)
            record(recorder, f"g{n}{'bad' if bad else ''}.example")
            n += 1
        transactions.append(0)
        recorder.flush()
        assert (recorder.pending, recorder.written) == (0, 2_000 * flush)
        assert recorder.dropped == recorder.refused == 10 * flush
        assert transactions[-1] == 1  # (4,020 rows with their policies: one chunk)
    written = stored(store_url)
    assert len(written) == 12_000 and not any("bad" in d for d in written)
    recorder.close()


# -- REVIEW25B 3: at most batch_rows rows per transaction, fewer after a timeout ------------


def test_rows_held_through_an_outage_are_written_in_transactions_of_batch_rows(
    store_url: str,
) -> None:
    """What an outage left held was retried as one transaction with each flush's live rows
    merged into it (up to max_rows, 200,000): too large for the statement bound, it never
    went in, and the live rows were stuck with it. Now no transaction holds more than
    ``batch_rows`` rows: held rows first, then the live ones."""
    down = [True]
    transactions: list[int] = [0]
    rows: list[int] = []
    counted = counting(transactions, rows)

    def opener(url: str) -> Store:
        if down[0]:
            raise StoreError("report store: connection refused", unreachable=True)
        return counted(url)

    settings = RecordingSettings(batch_rows=1_000)
    recorder = BackgroundRecorder(store_url, settings, opener=opener, clock=lambda: T0)
    for flush in range(3):  # (an outage: 3 flushes of 1,000 rows, each with its policy)
        for index in range(500):
            record(recorder, f"o{flush}x{index}.example")
        assert not recorder.flush()
    assert recorder.pending == 1_500 and len(recorder._held) == 3
    down[0] = False
    record(recorder, "live.example")
    assert recorder.flush()
    assert (recorder.pending, recorder.dropped, recorder.written) == (0, 0, 1_501)
    assert len(rows) == 4 and max(rows) <= 1_000 and sum(rows) == 3_002
    written = stored(store_url)
    assert len(written) == 1_501 and set(written.values()) == {1}
    recorder.close()


def test_a_write_that_times_out_halves_the_rows_per_transaction(
    postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's spiral.py, with a store too slow for a whole batch within its
    statement bound (a trigger taking 1 ms a row, a bound of 0.5 s): after an outage left
    3,000 rows held, the held piece timed out at every flush, for ever, the live rows
    merged into it. Now each timeout halves the rows per transaction (down to
    MIN_CHUNK_ROWS, never dropping), until they fit: everything is written, and a minute
    without a timeout doubles them back."""
    from mailauth.reports import recorder as recording

    url = postgres_server.new_database()
    store = open_store(url)
    try:
        store.execute("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$ BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$")  # fmt: skip
        store.execute("CREATE TRIGGER slow BEFORE INSERT ON report_counts FOR EACH ROW "
                      "EXECUTE FUNCTION slow()")  # fmt: skip
    finally:
        store.close()
    down = [True]

    def opener(url: str) -> Store:
        if down[0]:
            raise StoreError("report store: connection refused", unreachable=True)
        return open_store(url, timeout=0.5, migrate=False)

    settings = RecordingSettings(batch_rows=2_000)
    recorder = BackgroundRecorder(url, settings, opener=opener, clock=lambda: T0)
    for flush in range(3):
        for index in range(1_000):  # (one policy domain, 1,000 sources)
            recorder.record(verdict("example.com"), ip=f"10.{flush}.{index // 250}.{index % 250}",
                            mail_from="", now=T0)  # fmt: skip
        assert not recorder.flush()
    down[0] = False
    flushes, errors = 0, recorder.write_errors
    while recorder.pending and flushes < 12:
        record(recorder, f"live{flushes}.example")
        recorder.flush()
        flushes += 1
    assert recorder.pending == 0 and recorder.dropped == 0
    assert recorder.written == 3_000 + flushes
    assert 2 <= recorder.write_errors - errors < flushes  # (timeouts, each halving)
    assert MIN_CHUNK_ROWS <= recorder._chunk_rows() <= 500
    assert sum(stored(url).values()) == 3_000 + flushes
    before = recorder._chunk_rows()
    monkeypatch.setattr(recording, "REGROW_SECONDS", 0.0)
    record(recorder, "later.example")
    assert recorder.flush() and recorder._chunk_rows() > before
    assert recorder._chunk_rows() == max(MIN_CHUNK_ROWS, 2_000 >> recorder._halvings)
    recorder.close()


# -- REVIEW25B 8: "late" and a refused policy row, once a batch is cut ----------------------


def test_late_is_counted_whatever_piece_holds_the_policy_row(store_url: str) -> None:
    """Six messages of a period closed days ago, beside a row the store refuses: the
    isolation writes most of them in a piece without their policy row, where they read as
    on time (1 of 6 counted late before). All six are late."""
    refuse_where(store_url, "report_counts", f"NEW.policy_domain = '{EVIL}'",
                  f"policy_domain <> '{EVIL}'")  # fmt: skip
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0 + 3 * DAY)
    record(recorder, EVIL)
    for index in range(6):
        recorder.record(verdict("example.com"), ip=f"192.0.2.{index}", mail_from="", now=T0)
    assert not recorder.flush()
    assert (recorder.written, recorder.late, recorder.dropped) == (6, 6, 1)
    recorder.close()


def _refuse_policy(url: str) -> None:
    """A constraint on report_policies: a rua= naming 'bad' refused (as a LATIN1 database
    refuses a URI it cannot encode)."""
    refuse_where(url, "report_policies", "NEW.rua LIKE '%bad%'", "rua NOT LIKE '%bad%'")


def _policies(url: str) -> list[str]:
    store = open_store(url)
    try:
        return [d for (d,) in store.fetchall("SELECT policy_domain FROM report_policies")]
    finally:
        store.close()


def test_the_counts_of_a_refused_policy_row_are_dropped_with_it(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy row refused alone left its counts written: never reported (reports are
    built from report_policies) nor pruned (through the policy), while the metrics said
    they were written and nothing dropped. Now they are dropped with it, counted and said."""
    _refuse_policy(store_url)
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0)
    bad = verdict("victim.example", rua=("mailto:bad@victim.example",))
    for index in range(3):
        recorder.record(bad, ip=f"192.0.2.{index}", mail_from="", now=T0)
    for domain in ("a.example", "z.example"):
        record(recorder, domain)
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert not recorder.flush()
        recorder._after_write()
    assert (recorder.written, recorder.dropped, recorder.refused) == (2, 3, 4)
    assert stored(store_url) == {"a.example": 1, "z.example": 1}
    assert sorted(_policies(store_url)) == ["a.example", "z.example"]
    lines = [r.message for r in caplog.records]
    assert len(lines) == 1  # (one line: not a second "not recorded" for the same messages)
    assert "refused 4 rows for good" in lines[0] and "3 messages not recorded" in lines[0]
    assert "3 of them counts whose period's policy row was refused" in lines[0]
    assert "victim.example" in lines[0]
    recorder.close()


def test_a_refused_policy_row_whose_period_has_one_stored_keeps_its_counts(
    store_url: str,
) -> None:
    """A newer policy row refused while the store has one of the period: the counts are
    reported with the stored one, so they are written."""
    _refuse_policy(store_url)
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0)
    recorder.record(verdict("victim.example"), ip="192.0.2.1", mail_from="", now=T0)
    assert recorder.flush()
    bad = verdict("victim.example", rua=("mailto:bad@victim.example",))
    for index in range(3):
        recorder.record(bad, ip=f"192.0.2.{index}", mail_from="", now=T0 + 60)
    assert not recorder.flush()  # (the policy row refused)
    assert (recorder.written, recorder.dropped, recorder.refused) == (4, 0, 1)
    assert stored(store_url) == {"victim.example": 4}
    recorder.close()


def test_messages_lost_at_stop_are_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The line at stop ("held for the report store not written at stop: lost") was
    followed by a second one for the same messages ("N messages not recorded (buffer full
    ...; or refused by the store")."""

    def down(url: str) -> Store:
        raise StoreError("report store: connection refused", unreachable=True)

    recorder = BackgroundRecorder(str(tmp_path / "r.sqlite"), opener=down).start()
    for index in range(4):
        record(recorder, f"d{index}.example")
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        recorder.close()
    assert recorder.dropped == 4
    said = [r.message for r in caplog.records if "4 messages" in r.message]
    assert len(said) == 1 and "not written at stop: lost" in said[0]
    assert not any("not recorded" in r.message for r in caplog.records)


# -- REVIEW26B: a transaction's isolation bounded in time; a restored store looked at again --


def test_isolating_stops_at_the_transaction_budget_and_goes_on_next_flush(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store refusing many rows costs 2n - 1 tries (35 s in one transaction for 5,000 on
    PostgreSQL, its locks held against the other hosts). Past TRANSACTION_SECONDS a
    transaction commits what it has written and keeps the rest, isolation going on at the
    next flush: here a budget of one try per transaction. Nothing good is lost."""
    from mailauth.reports import background

    monkeypatch.setattr(background, "TRANSACTION_SECONDS", 0.0)
    refuse_where(store_url, "report_counts", "NEW.policy_domain LIKE '%bad%'",
                  "policy_domain NOT LIKE '%bad%'")  # fmt: skip
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0)
    for index in range(16):
        record(recorder, f"d{index}{'bad' if index % 2 else ''}.example")
    recorder.flush()
    assert recorder.pending > 0 and recorder.written == 0  # (one try: refused, split)
    for _ in range(200):
        if not recorder.pending:
            break
        recorder.flush()
    assert (recorder.pending, recorder.written, recorder.refused) == (0, 8, 8)
    written = stored(store_url)
    assert len(written) == 8 and not any("bad" in d for d in written)
    recorder.close()


def test_a_store_restored_from_an_older_dump_is_migrated_again(tmp_path: Path) -> None:
    """Once a writer has seen the schema current it did not look again: a dump of an older
    schema restored under it (no report_writes) failed every write, for ever, until the
    milter's restart. A temporary error now makes the next connection look again."""
    url = str(tmp_path / "reports.sqlite")
    recorder = BackgroundRecorder(url, RecordingSettings(), clock=lambda: T0)
    record(recorder, "one.example")
    recorder.flush()
    assert recorder.written == 1
    store = open_store(url)  # (the restore: schema 7, no report_writes)
    with store.write():
        store.execute("DROP TABLE report_writes")
        store.execute("UPDATE mailauth_schema SET version = 7")
    store.close()
    record(recorder, "two.example")
    recorder.flush()  # (fails: no such table; the schema is looked at again next time)
    recorder.flush()
    assert recorder.pending == 0 and recorder.written == 2
    assert set(stored(url)) == {"one.example", "two.example"}
    recorder.close()
