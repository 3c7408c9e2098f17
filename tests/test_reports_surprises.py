"""The writers off the mail path (the aggregate recorder, the failure-report collector)
against an exception that is not the store's while writing (REVIEW25B 9), on SQLite and a
real PostgreSQL: isolated like a refusal, the row or capture it comes down to dropped and
said with the exception's type, the connection closed after; never a writer stalled."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from mailauth.config_failure import FailureConfig
from mailauth.reports import BackgroundRecorder, RecordingSettings, open_store
from mailauth.reports.failure_collect import FailureCollector
from mailauth.reports.observe import observe
from mailauth.reports.store import Store
from tests.failure_helpers import ARRIVAL, BAD, SPOOF, verdict_of
from tests.reports_helpers import T0
from tests.writer_helpers import record, stored

POISON = "x\udc80.example"  # (a lone surrogate: both drivers raise UnicodeEncodeError)


def test_a_row_the_driver_raises_on_is_isolated_and_dropped_alone(
    store_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite3 and psycopg raise UnicodeEncodeError, not their own error class, for a
    string the database cannot take. Such an error was "temporary": the piece kept, every
    later flush behind it, for ever. It is now isolated like a refusal: the row it comes
    down to dropped, logged with the exception's type and its policy domain (printable),
    the connection closed after the transaction; the rest is written. (observe() makes a
    lone surrogate U+FFFD: a bug that let one through is what this stands for.)"""
    from mailauth.reports import recorder as recording

    def observe_with_a_bug(verdict: Any, **kwargs: Any) -> Any:
        found = observe(verdict, **kwargs)
        assert found is not None
        return dataclasses.replace(found, policy_domain=verdict.dmarc.policy_domain)

    monkeypatch.setattr(recording, "observe", observe_with_a_bug)
    recorder = BackgroundRecorder(store_url, RecordingSettings(), clock=lambda: T0)
    for domain in ("a.example", POISON, "z.example"):
        record(recorder, domain)
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert not recorder.flush()
    assert (recorder.pending, recorder.written, recorder.dropped) == (0, 2, 1)
    assert recorder.refused == 2  # (its count row and its policy row)
    assert recorder._store is None  # (closed: its state after a surprise is not known)
    line = next(r.message for r in caplog.records if "refused" in r.message)
    assert "UnicodeEncodeError" in line and "x\\udc80.example" in line
    assert stored(store_url) == {"a.example": 1, "z.example": 1}
    record(recorder, "later.example")
    assert recorder.flush() and recorder.written == 3
    recorder.close()


def test_a_surprise_that_breaks_the_connection_never_stalls_the_writer(store_url: str) -> None:
    """An exception that is not the store's and leaves the connection unusable: rolling
    back to the savepoint fails, the transaction is lost, but what the isolation learnt is
    held (the piece known bad, in halves), so each flush gets further: the row is dropped
    within a few flushes, the others written."""

    def opener(url: str) -> Store:
        store = open_store(url)
        real = store.upsert

        def upsert(table: str, columns: Any, key: Any, action: str, rows: Any) -> None:
            if any("poison" in str(row[0]) for row in rows):
                store._connection.close()  # type: ignore[attr-defined]
                raise RuntimeError("driver confused")
            real(table, columns, key, action, rows)

        store.upsert = upsert  # type: ignore[method-assign]
        return store

    recorder = BackgroundRecorder(store_url, RecordingSettings(), opener=opener, clock=lambda: T0)
    for index in range(40):
        record(recorder, "poison.example" if index == 23 else f"d{index:02}.example")
    flushes = 0
    while recorder.pending and flushes < 20:
        recorder.flush()
        flushes += 1
    assert recorder.pending == 0 and flushes <= 10  # (about log2 of the 80 rows)
    assert (recorder.written, recorder.dropped, recorder.refused) == (39, 1, 2)
    assert len(stored(store_url)) == 39
    recorder.close()


def test_a_capture_the_collector_raises_on_is_dropped_alone(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same in the failure-report collector: a capture whose rows raise (here the
    driver, on its policy domain) was kept, every later capture stuck behind it until
    max_buffered, then all dropped. It is dropped alone, logged with the exception's type
    and its policy domain; the others are queued."""
    open_store(store_url).close()
    collector = FailureCollector(store_url, FailureConfig(enabled=True), clock=lambda: ARRIVAL)
    header = SPOOF.split(b"\r\n\r\n")[0] + b"\r\n"
    taken = []
    for ip, domain in (("198.51.100.1", ""), ("198.51.100.2", POISON), ("198.51.100.3", "")):
        found = verdict_of(SPOOF, {**BAD, "ip": ip})
        assert found.dmarc is not None
        if domain:
            dmarc = dataclasses.replace(found.dmarc, policy_domain=domain)
            found = dataclasses.replace(found, dmarc=dmarc)
        taken.append(collector.offer(found, header=header, ip=ip, mail_from="x", now=ARRIVAL))
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert not collector.flush()
    assert (collector.pending, collector.refused, collector.dropped) == (0, taken[1], taken[1])
    assert collector.queued == taken[0] + taken[2] and collector._buffered_bytes == 0
    assert collector._store is None
    line = next(r.message for r in caplog.records if "not written" in r.message)
    assert "UnicodeEncodeError" in line and "x\\udc80.example" in line
    store = open_store(store_url)
    try:
        assert store.fetchall("SELECT COUNT(*) FROM failure_reports") == [(taken[0] + taken[2],)]
    finally:
        store.close()
    collector.close()
