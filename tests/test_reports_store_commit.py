"""A writer's COMMIT whose answer is lost (REVIEW25B 7): the server may have committed, and
a retry added every count of the batch a second time. Each writer transaction now records
a random id (``report_writes``, schema 8) and a COMMIT that fails is settled by looking
the id up (PostgreSQL: over a new connection, once the old transaction has ended). Against
a real PostgreSQL through a proxy that loses the COMMIT's answer (tests/pgproxy.py), and
the ids' bookkeeping on both engines."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from mailauth.reports import BackgroundRecorder, open_store
from mailauth.reports.store import WRITE_IDS_KEPT, StoreError
from mailauth.reports.writer_store import WriterStores
from tests.pgproxy import CommitProxy
from tests.reports_helpers import T0, verdict

DOMAINS = [f"d{n}.example" for n in range(5)]


def _recorder(url: str) -> BackgroundRecorder:
    recorder = BackgroundRecorder(url, opener=WriterStores(), clock=lambda: T0)
    for domain in DOMAINS:
        recorder.record(verdict(domain), ip="192.0.2.1", mail_from="", now=T0)
    return recorder


def _stored(url: str) -> dict[str, int]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT policy_domain, SUM(messages) FROM report_counts "
                                  "GROUP BY policy_domain").fetchall()  # fmt: skip
    return {str(domain): int(messages) for domain, messages in rows}


@pytest.mark.parametrize("mode", ["answer", "request", "hold"])
def test_a_commit_whose_answer_is_lost_is_written_once(postgres_server: Any, mode: str) -> None:
    """``answer``: the server committed, its answer lost: settled as committed, the write
    succeeds without a retry (before: kept and written again, every count doubled).
    ``request``: the COMMIT never reached the server: settled as not committed, written
    again once. ``hold``: nor did it, and the server has not noticed (the old transaction
    idle, holding its row locks): it is ended, then settled as not committed."""
    url = postgres_server.new_database()
    open_store(url).close()
    with CommitProxy(postgres_server.root, mode) as proxy:
        recorder = _recorder(proxy.url(url))
        proxy.arm()
        started = time.monotonic()
        first = recorder.flush()
        took = time.monotonic() - started
        assert proxy.lost == 1
        assert first is (mode == "answer")
        assert took < 15
        if not first:
            assert recorder.pending == len(DOMAINS)
            assert recorder.flush()
        assert (recorder.written, recorder.pending) == (len(DOMAINS), 0)
        recorder.close()
    assert _stored(url) == dict.fromkeys(DOMAINS, 1)


def test_a_commit_not_settled_says_so_and_keeps_the_rows(
    postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer lost and the store gone at once: whether it committed is not known. The
    rows are kept (the one case that may still count twice), and the error says so."""
    url = postgres_server.new_database()
    open_store(url).close()
    with CommitProxy(postgres_server.root, "answer", refuse_after=True) as proxy:
        recorder = _recorder(proxy.url(url))
        store = recorder._open()
        proxy.arm()
        with pytest.raises(StoreError) as caught, store.write():
            store.execute("INSERT INTO report_writes (id, at) VALUES ('x', 0)")
        assert "committed is not known" in str(caught.value)
        assert "may be counted twice" in caplog.text
        assert caught.value.unreachable and not caught.value.permanent
        recorder.close(timeout=1)


def test_each_writer_transaction_records_an_id_and_a_day_of_them_is_kept(store_url: str) -> None:
    """Both engines: one id per writer transaction (the milter's writers; a CLI's store
    records none), the ids older than a day deleted by the next connection's first write.
    (A tracked store that migrates does not track its migration: no report_writes yet.)"""
    open_store(store_url, track_writes=True).close()
    store = open_store(store_url, migrate=False)
    try:
        store.execute("INSERT INTO report_writes (id, at) VALUES ('old', ?)",
                      (int(time.time()) - WRITE_IDS_KEPT - 10,))  # fmt: skip
        store.execute("INSERT INTO report_writes (id, at) VALUES ('recent', ?)",
                      (int(time.time()) - WRITE_IDS_KEPT + 600,))  # fmt: skip
        with store.write():
            store.execute("DELETE FROM report_counts")
        recorder = _recorder(store_url)
        assert recorder.flush()
        for index in range(3):
            recorder.record(verdict(f"more{index}.example"), ip="192.0.2.1", mail_from="",
                            now=T0)  # fmt: skip
            assert recorder.flush()
        recorder.close()
        ids = [row[0] for row in store.fetchall("SELECT id FROM report_writes ORDER BY at")]
    finally:
        store.close()
    assert ids[0] == "recent" and "old" not in ids
    assert len(ids) == 1 + 4 and all(len(i) == 32 for i in ids[1:])
