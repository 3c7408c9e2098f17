"""Importing received DMARC aggregate reports: ``mailauth reports import`` over a directory of
generated reports.

The reports: ``--reports`` of them (default 10,000), each for one of 20 policy domains and
from one of 50 reporters, with a number of records drawn log-uniformly from 10 to 10,000
(seeded: the same set every run), written by mailauth's own RFC 9990 writer and gzipped, as
``.xml.gz`` files in a temporary directory. Then ``mailauth reports import DIR`` runs as a
process of its own, twice (the second run finds every report a duplicate): the time, reports
and records per second (of wall-clock time, and of the process's CPU time: the figure to
compare on a busy machine), and the process's peak resident memory (its maximum RSS, from
``getrusage``; ``ru_maxrss`` of the children is the largest of them, the import's). The
store: a new SQLite file (or ``--store postgresql://...``).

Run: python benchmarks/bench_import.py [--reports 10000] [--min-records 10]
     [--max-records 10000] [--store URL] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.reports.aggregate import (
    PolicyColumns,
    ReportMetadata,
    Row,
    gzip_pieces,
    render_report,
)

DAY = 86400
T0 = 1_767_225_600  # 2026-01-01 UTC
VARIANTS = (
    ("pass", "pass", "pass", "pass", "none"),
    ("fail", "pass", "fail", "pass", "none"),
    ("pass", "fail", "pass", "fail", "none"),
    ("fail", "fail", "fail", "fail", "reject"),
)  # (dkim result, spf result, DMARC dkim, DMARC spf, disposition)


def _rows(rng: random.Random, domain: str, count: int) -> list[Row]:
    rows: list[Row] = []
    for n in range(count):
        dkim, spf, dmarc_dkim, dmarc_spf, disposition = VARIANTS[n % 4]
        ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        dkim_list = json.dumps([[domain, "s1", dkim]])
        rows.append((ip, domain, domain, "", dkim_list, domain, "mfrom", spf, dmarc_dkim,
                     dmarc_spf, disposition, "[]", rng.randint(1, 500)))  # fmt: skip
    return rows


def generate(directory: Path, reports: int, low: int, high: int) -> tuple[int, int]:
    """The report files; (records, octets on disk)."""
    rng = random.Random(17)
    total_records = total_octets = 0
    for number in range(reports):
        records = int(math.exp(rng.uniform(math.log(low), math.log(high + 1))))
        records = min(max(records, low), high)
        domain = f"domain{number % 20}.example"
        reporter = f"receiver{number % 50}.example"
        begin = T0 + (number // 1000) * DAY
        metadata = ReportMetadata(reporter, f"dmarc@{reporter}", f"r{number}", begin,
                                  begin + DAY - 1)  # fmt: skip
        policy = PolicyColumns(domain, "reject", "", "", "r", "r", "", "", "", "", "", "")
        data = gzip_pieces(render_report(metadata, policy, _rows(rng, domain, records)))
        path = directory / f"{reporter}!{domain}!{begin}!{begin + DAY - 1}!r{number}.xml.gz"
        path.write_bytes(data)
        total_records += records
        total_octets += len(data)
    return total_records, total_octets


def run_import(store: str, directory: Path) -> tuple[float, float, int, str]:
    """(seconds, CPU seconds, peak RSS in KiB of the import process, its summary line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mailauth", "reports", "import", "--store", store, str(directory)],
        capture_output=True, text=True, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, cpu, after.ru_maxrss, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--min-records", type=int, default=10)
    parser.add_argument("--max-records", type=int, default=10_000)
    parser.add_argument("--store", help="default: a new SQLite file in a temporary directory")
    parser.add_argument("--keep", help="generate into (or reuse) this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailauth-bench-import-") as temp:
        directory = Path(args.keep) if args.keep else Path(temp) / "reports"
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        records, octets = generate(directory, args.reports, args.min_records, args.max_records)
        took = time.perf_counter() - started
        print(f"generated {args.reports:,} reports, {records:,} records, "
              f"{octets / 2**20:.1f} MiB gzipped, in {took:.1f} s")  # fmt: skip
        store = args.store or str(Path(temp) / "store.sqlite")
        for label in ("first import", "again (all duplicates)"):
            elapsed, cpu, peak_kib, summary = run_import(store, directory)
            print(f"{label}: {elapsed:.1f} s ({cpu:.1f} s CPU), {args.reports / elapsed:,.2f} "
                  f"reports/s ({args.reports / cpu:,.2f} per CPU second), "
                  f"{records / elapsed:,.0f} records/s ({records / cpu:,.0f} per CPU second), "
                  f"peak RSS {peak_kib / 1024:.0f} MiB -- {summary}")  # fmt: skip
        if not args.store:
            size = os.path.getsize(store)
            print(f"store: {size / 2**20:.0f} MiB ({size / records:.0f} octets per record)")


if __name__ == "__main__":
    main()
