"""Importers running at the same time (issue 17, item 3): two ``mailauth reports import``
runs of the same reports (two cron jobs; an IMAP run and a directory) store each report
once and count it once, on SQLite and on a real PostgreSQL (tests/pgserver.py).

- The same copy twice (the same files, two processes): the key's primary index decides,
  one run says ``imported`` and the other ``duplicate`` for each report.
- Two copies of one report at once (the signed e-mail and the same report as a bare file):
  storing one reads the other (authenticated, or superseded), so the two writes must not
  interleave (mailauth.reports.received.lock). On PostgreSQL the interleaving is forced: a
  third connection holds the table in SHARE mode, so that both importers have done
  everything before their INSERT when it lets them go; without the report's lock both read
  "no other copy" and the forged-or-bare copy counted beside the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailauth.dns import ZoneResolver
from mailauth.reports.received import received_reports
from mailauth.reports.received.importer import (
    DUPLICATE,
    IMPORTED,
    ImportResult,
    SourceItem,
    import_item,
)
from mailauth.reports.received.lock import lock_number
from mailauth.reports.received.model import Trust
from mailauth.reports.store import open_store
from mailauth.reports.summary import summarize
from tests.received_helpers import aggregate_xml, gzipped, report_mail
from tests.report_auth_helpers import NOW, signed, zone_text

ROOT = Path(__file__).resolve().parent.parent
REPORTS = 12


def _import_cli(inputs: Path, store: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "mailauth", "reports", "import", str(inputs), "--store",
               store, "--json", "--now", str(NOW)]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def test_two_import_processes_of_the_same_files_store_each_report_once(
    store_url: str, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(REPORTS):
        xml = aggregate_xml(5 + n, report_id=f"r-{n}").encode()
        (inputs / f"r-{n}.xml.gz").write_bytes(gzipped(xml))
    open_store(store_url).close()  # (the schema made once: the runs race on reports only)
    runs = [_import_cli(inputs, store_url) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    statuses: dict[str, list[str]] = {}
    for out, _ in outputs:
        for line in out.splitlines():
            result = json.loads(line)
            statuses.setdefault(result["report_id"], []).append(result["status"])
    assert {rid: sorted(s) for rid, s in statuses.items()} == {
        f"r-{n}": [DUPLICATE, IMPORTED] for n in range(REPORTS)
    }
    store = open_store(store_url)
    try:
        stored = received_reports(store, "example.com")
        assert sorted(r.report_id for r in stored) == sorted(f"r-{n}" for n in range(REPORTS))
        records = store.fetchall("SELECT COUNT(*) FROM received_records")
        assert int(records[0][0]) == sum(5 + n for n in range(REPORTS))
    finally:
        store.close()


def _copies() -> tuple[bytes, bytes]:
    """One report as a signed e-mail from its reporter and as a bare file."""
    xml = aggregate_xml(4, report_id="copy-1").encode()
    mail = signed(report_mail([("r.xml.gz", "application/gzip", gzipped(xml))]))
    return mail, xml


def _race(store_url: str, items: list[SourceItem]) -> list[ImportResult]:
    """Import each item in a thread of its own (a store connection each) at once; on
    PostgreSQL with received_aggregate held in SHARE mode until both wait for a lock."""
    results: list[ImportResult] = []
    errors: list[BaseException] = []

    def run(item: SourceItem) -> None:
        try:
            store = open_store(store_url)
            try:
                zone = ZoneResolver.from_text(zone_text())
                results.extend(import_item(store, item, now=NOW, resolver=zone))
            finally:
                store.close()
        except BaseException as exc:  # (reported by the test's thread)
            errors.append(exc)

    holder = _hold_table(store_url) if store_url.startswith("postgresql") else None
    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    if holder is not None:
        assert _release_when_both_wait(store_url, holder) >= 2  # (else the race was not run)
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def _release_when_both_wait(url: str, holder: psycopg.Connection[Any]) -> int:
    """(PostgreSQL) Let go of the SHARE lock on received_aggregate once two other
    connections wait for a lock (the table's, or a report's advisory lock): how many
    waited."""
    deadline = time.monotonic() + 30
    waiting = 0
    with psycopg.connect(url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute("SELECT COUNT(*) FROM pg_locks WHERE NOT granted").fetchone()
            waiting = int(row[0]) if row else 0
            if waiting >= 2:
                break
            time.sleep(0.02)
    holder.commit()
    holder.close()
    return waiting


def _hold_table(url: str) -> psycopg.Connection[Any]:
    """(PostgreSQL) Hold received_aggregate in SHARE mode: reads go on, INSERTs wait."""
    holder = psycopg.connect(url)
    holder.execute("LOCK TABLE received_aggregate IN SHARE MODE")
    return holder


@pytest.mark.parametrize("order", ["mail-first", "file-first"])
def test_two_copies_of_one_report_imported_at_once_count_once(store_url: str, order: str) -> None:
    mail, xml = _copies()
    items = [SourceItem("r.eml", mail), SourceItem("r.xml", xml)]
    if order == "file-first":
        items.reverse()
    open_store(store_url).close()
    results = _race(store_url, items)
    assert sorted(r.status for r in results) == [IMPORTED, IMPORTED]  # (two copies, two keys)
    store = open_store(store_url)
    try:
        trusts = sorted(r.trust for r in received_reports(store, "example.com"))
        assert trusts == [Trust.AUTHENTICATED, Trust.SUPERSEDED]
        for include in (False, True):
            found = summarize(store, "example.com", 0, NOW, include_unauthenticated=include)
            assert (found.reports, found.messages) == (1, 1 + 2 + 3 + 4), include
    finally:
        store.close()


def test_the_same_copy_imported_at_once_by_two_threads_is_imported_once(store_url: str) -> None:
    mail, _ = _copies()
    open_store(store_url).close()
    results = _race(store_url, [SourceItem("a.eml", mail), SourceItem("b.eml", mail)])
    assert sorted(r.status for r in results) == [DUPLICATE, IMPORTED]
    store = open_store(store_url)
    try:
        [stored] = received_reports(store, "example.com")
        assert (stored.trust, stored.messages) == (Trust.AUTHENTICATED, 10)
    finally:
        store.close()


def test_the_lock_number_is_shared_by_a_reports_copies_and_a_bigint() -> None:
    from dataclasses import replace

    from mailauth.reports.received.aggregate_xml import read_aggregate
    from mailauth.reports.received.model import AuthResult, ReportAuth

    report = read_aggregate(aggregate_xml(1, report_id="n").encode())
    signed_copy = replace(report, auth=ReportAuth(AuthResult.PASS, "receiver.example", "x"))
    assert signed_copy.key != report.key
    assert lock_number(signed_copy) == lock_number(report)
    other = read_aggregate(aggregate_xml(1, report_id="m").encode())
    assert lock_number(other) != lock_number(report)
    assert all(-(1 << 63) <= lock_number(r) < 1 << 63 for r in (report, other))
