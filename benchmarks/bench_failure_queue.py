"""The RFC 9991 failure queue: what one flush of the milter's collector costs the store when
many reports wait.

A store is filled with ``--waiting`` reports waiting to be sent (pending), spread over
``--orgs`` organisations of ``--domains-per-org`` policy domains each, each with a header
section (and body) of ``--original-bytes`` as the collector queues it; then ``--rounds``
flushes of ``--batch`` reports each (:func:`mailauth.reports.failure_queue.enqueue_failures`
with the default share: 1 % of the queue per organisation, so that every flush needs the
organisations' counts) are timed, their reports deleted afterwards (the queue stays as
filled): the median and the slowest flush, and of the counts alone. With ``--explain``,
the plans of the counts a flush runs (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN``).

Run: python benchmarks/bench_failure_queue.py [--waiting 10000] [--orgs 200]
     [--domains-per-org 5] [--original-bytes 1000] [--batch 20] [--rounds 20]
     [--postgres | --store URL] [--explain]
Example: nice -n 19 python benchmarks/bench_failure_queue.py --postgres --explain
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.reports import open_store
from mailauth.reports.failure import FailureFacts
from mailauth.reports.failure_queue import (
    COUNT_WAITING,
    WAITING,
    QueuedFailure,
    count_owners,
    enqueue_failures,
    queue_owner,
)
from mailauth.reports.store import Store

NOW = 1_767_225_600.0  # 2026-01-01 UTC


def report(domain: str, index: int, original: bytes) -> QueuedFailure:
    facts = FailureFacts(domain, f"198.51.100.{index % 250}", NOW, "mx.example.net; dmarc=fail")
    ruf = (f"mailto:ruf-{index % 50}@reports.example.net",)
    return QueuedFailure(domain, "dmarc", ruf, facts, original, False, NOW)


def original(octets: int) -> bytes:
    """A header section of about ``octets`` (fields of 72 octets)."""
    return b"".join(b"X-Field-%04d: %s\r\n" % (i, b"v" * 56) for i in range(octets // 72 + 1))


def domains(orgs: int, per_org: int) -> list[str]:
    return [f"d{d}.org{o}.example" for o in range(orgs) for d in range(per_org)]


def fill(store: Store, waiting: int, names: list[str], header: bytes) -> float:
    started = time.perf_counter()
    for first in range(0, waiting, 1000):
        last = min(waiting, first + 1000)
        batch = [report(names[i % len(names)], i, header) for i in range(first, last)]
        enqueue_failures(store, batch, limit=10**6, period=86400, max_queued=10**9,
                         max_per_org=10**9, window_limit=10**9, now=NOW)  # fmt: skip
    return time.perf_counter() - started


def flushes(store: Store, args: argparse.Namespace, names: list[str], header: bytes) -> list[float]:
    """Each flush's seconds; its reports deleted afterwards (the queue stays as filled)."""
    times = []
    for round_ in range(args.rounds):
        batch = [
            dataclasses.replace(report(names[(round_ * 7919 + i) % len(names)], i, header),
                                created=NOW + 1)
            for i in range(args.batch)
        ]  # fmt: skip
        started = time.perf_counter()
        enqueue_failures(store, batch, limit=10**6, period=86400, max_queued=10**9,
                         max_per_org=args.waiting // 100, window_limit=10**9,
                         now=NOW)  # fmt: skip
        times.append(time.perf_counter() - started)
        store.execute("DELETE FROM failure_reports WHERE created = ?", (int(NOW + 1),))
    return times


def counts(store: Store, args: argparse.Namespace, names: list[str]) -> list[float]:
    """The seconds of the counts alone (all waiting; the organisations of a batch)."""
    times = []
    for round_ in range(args.rounds):
        batch = {names[(round_ * 7919 + i) % len(names)] for i in range(args.batch)}
        owners = sorted({queue_owner(d) for d in batch})
        started = time.perf_counter()
        store.fetchall(COUNT_WAITING, WAITING)
        store.fetchall(count_owners(len(owners)), (*owners, *WAITING))
        times.append(time.perf_counter() - started)
    return times


def explain(store: Store) -> None:
    """The plans of the counts a flush runs: all waiting, and the batch's organisations'."""
    prefix = "EXPLAIN QUERY PLAN " if store.engine == "sqlite" else "EXPLAIN "
    owners = ("org0.example", "org1.example")
    for sql, params in ((COUNT_WAITING, WAITING), (count_owners(2), (*owners, *WAITING))):
        print("  " + " ".join(sql.split()))
        for row in store.fetchall(prefix + sql, params):
            print("    " + " | ".join(str(c) for c in row))


def run(url: str, args: argparse.Namespace) -> None:
    store = open_store(url)
    try:
        names = domains(args.orgs, args.domains_per_org)
        header = original(args.original_bytes)
        seconds = fill(store, args.waiting, names, header)
        if store.engine == "postgresql":
            store.execute("VACUUM ANALYZE failure_reports")  # (as autovacuum would)
        print(f"{store.engine}: {args.waiting} reports waiting ({len(names)} policy domains, "
              f"{args.orgs} organisations, {len(header)} octets each) queued in "
              f"{seconds:.1f} s")  # fmt: skip
        times = flushes(store, args, names, header)
        print(f"  a flush of {args.batch} reports: median {statistics.median(times) * 1000:.1f} "
              f"ms, slowest {max(times) * 1000:.1f} ms ({args.rounds} rounds)")  # fmt: skip
        alone = counts(store, args, names)
        print(f"  its counts alone: median {statistics.median(alone) * 1000:.2f} ms, slowest "
              f"{max(alone) * 1000:.2f} ms")  # fmt: skip
        if args.explain:
            explain(store)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="example: nice -n 19 python benchmarks/bench_failure_queue.py --postgres",
    )
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--domains-per-org", type=int, default=5)
    parser.add_argument("--original-bytes", type=int, default=1000,
                        help="each report's header section (and body, opted in)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--store", default="", help="a postgresql:// URL (default: SQLite)")
    parser.add_argument(
        "--postgres", action="store_true",
        help="start a throwaway PostgreSQL (tests/pgserver.py) and use it as the store",
    )  # fmt: skip
    parser.add_argument("--explain", action="store_true", help="print the count's plan")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        url = args.store
        if args.postgres:
            from tests.pgserver import PostgresServer  # noqa: PLC0415

            url = stack.enter_context(PostgresServer()).new_database()
        run(url or str(Path(tmp) / "queue.sqlite"), args)


if __name__ == "__main__":
    main()
