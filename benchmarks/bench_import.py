"""Importing received DMARC aggregate reports: ``mailauth reports import`` over a directory of
generated reports.

The reports: ``--reports`` of them (default 10,000), each for one of 20 policy domains and
from one of 50 reporters, with a number of records drawn log-uniformly from 10 to 10,000
(seeded: the same set every run), written by mailauth's own RFC 9990 writer and gzipped, as
``.xml.gz`` files in a temporary directory. Then ``mailauth reports import DIR`` runs as a
process of its own, twice (the second run finds every report a duplicate): the time, reports
and records per second (of wall-clock time, and of the process's CPU time: the figure to
compare on a busy machine), and the process's peak resident memory (its maximum RSS, from
``wait4``: that process's own). The
store: a new SQLite file (or ``--store postgresql://...``).

Run: python benchmarks/bench_import.py [--reports 10000] [--min-records 10]
     [--max-records 10000] [--store URL] [--keep DIR] [--generate-only] [--once]

``--keep DIR`` keeps the generated reports (with a manifest of the parameters beside it,
``DIR.manifest.json``) and reuses
them when run again with the same parameters: before and after are measured on the same
files. The report set is seeded, and its first N reports are the same whatever
``--reports`` says.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

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


def prepare(directory: Path, reports: int, low: int, high: int) -> tuple[int, int, float]:
    """The report files in ``directory``, generated unless a previous run with the same
    parameters left them there (its manifest says so, and all the files are there): (records,
    octets, seconds taken)."""
    manifest = directory.with_name(directory.name + ".manifest.json")  # (not in it: imported)
    wanted = {"reports": reports, "min_records": low, "max_records": high, "seed": 17}
    if manifest.exists():
        known = json.loads(manifest.read_text())
        present = sum(1 for _ in directory.glob("*.xml.gz"))
        if {k: known.get(k) for k in wanted} == wanted and present == reports:
            return int(known["records"]), int(known["octets"]), 0.0
    for old in directory.glob("*.xml.gz"):
        old.unlink()
    started = time.perf_counter()
    records, octets = generate(directory, reports, low, high)
    took = time.perf_counter() - started
    manifest.write_text(json.dumps({**wanted, "records": records, "octets": octets}))
    return records, octets, took


def run_import(store: str, directory: Path, log_every: float) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS in KiB, summary line) of one import process
    (``--json``: a line per report): its own resource usage, from ``wait4`` (not the sum or
    maximum over all children). Every ``log_every`` seconds (0: never), a progress line:
    reports and records done so far, the process's CPU time and peak RSS so far (from
    /proc), so that a run stopped early still tells what it did."""
    started = last = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailauth", "reports", "import", "--json", "--store", store,
             str(directory)],
            stdout=out, stderr=err, cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.2)
            if log_every and time.perf_counter() - last >= log_every:
                last = time.perf_counter()
                print(f"  progress: {_progress(out, process.pid, last - started)}", flush=True)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        lines, stderr = out.read().splitlines(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"import failed ({process.returncode}): {stderr.strip()}")
    results = [json.loads(line) for line in lines]
    counts = {s: sum(r["status"] == s for r in results) for s in ("imported", "duplicate", "error")}
    summary = (f"{counts['imported']} reports imported, {counts['duplicate']} already in the "
               f"store, {counts['error']} unreadable")  # fmt: skip
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, summary


def _progress(out: IO[str], pid: int, elapsed: float) -> str:
    out.seek(0)
    results = [json.loads(line) for line in out.read().splitlines() if line.endswith("}")]
    out.seek(0, os.SEEK_END)
    records = sum(r["records"] for r in results)
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        status = Path(f"/proc/{pid}/status").read_text()
        peak = next(int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("VmHWM:"))  # fmt: skip
    except (OSError, StopIteration, IndexError, ValueError):
        return f"{len(results):,} reports, {records:,} records, {elapsed:.0f} s wall"
    rate = f"{records / cpu:,.0f} records per CPU second" if cpu else ""
    return (f"{len(results):,} reports, {records:,} records, {elapsed:.0f} s wall, "
            f"{cpu:.1f} s CPU ({rate}), peak RSS {peak / 1024:.0f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--min-records", type=int, default=10)
    parser.add_argument("--max-records", type=int, default=10_000)
    parser.add_argument("--store", help="default: a new SQLite file in a temporary directory")
    parser.add_argument("--keep", help="generate into (or reuse) this directory")
    parser.add_argument("--generate-only", action="store_true",
                        help="only generate the reports (into --keep)")  # fmt: skip
    parser.add_argument("--once", action="store_true", help="skip the second (duplicate) run")
    parser.add_argument("--log-every", type=float, default=0,
                        help="a progress line every this many seconds (default: none)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailauth-bench-import-") as temp:
        directory = Path(args.keep) if args.keep else Path(temp) / "reports"
        directory.mkdir(parents=True, exist_ok=True)
        records, octets, took = prepare(directory, args.reports, args.min_records,
                                        args.max_records)  # fmt: skip
        how = f"generated in {took:.1f} s" if took else f"reused from {directory}"
        print(f"{args.reports:,} reports, {records:,} records, "
              f"{octets / 2**20:.1f} MiB gzipped ({how})", flush=True)  # fmt: skip
        if args.generate_only:
            return
        store = args.store or str(Path(temp) / "store.sqlite")
        labels = ("first import", "again (all duplicates)")
        for label in labels[:1] if args.once else labels:
            elapsed, cpu, peak_kib, summary = run_import(store, directory, args.log_every)
            print(f"{label}: {args.reports / elapsed:,.2f} reports/s, "
                  f"{records / elapsed:,.0f} records/s (wall); "
                  f"{args.reports / cpu:,.2f} reports/s, {records / cpu:,.0f} records/s "
                  f"(per CPU second); {cpu:.1f} s CPU, {elapsed:.1f} s wall, "
                  f"peak RSS {peak_kib / 1024:.0f} MiB -- {summary}", flush=True)  # fmt: skip
        if not args.store:
            size = os.path.getsize(store)
            print(f"store: {size / 2**20:.0f} MiB ({size / records:.0f} octets per record)")


if __name__ == "__main__":
    main()
