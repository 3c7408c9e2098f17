"""``mailauth reports summary`` over a year of aggregate reports for one domain, on SQLite.

Fills a fresh SQLite store with a generated year (tests/summary_data.generated_year: 365
days, REPORTS reports a day from ten reporters, RECORDS records each, about 500 source IPs
of seven kinds), stored as ``reports import`` stores them, then times ``summarize`` (the
table's and JSON's numbers) and the dashboard's extra queries over the whole year. Target
(issue 17): under 2 seconds.

    nice -n 19 .venv/bin/python benchmarks/bench_summary.py [--reports 50] [--records 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.reports.dashboard import failure_samples
from mailauth.reports.store import open_store
from mailauth.reports.summary import daily_pass_rate, summarize
from tests.summary_data import day, generated_year, store_reports

TARGET = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=50, help="reports per day (default 50)")
    parser.add_argument("--records", type=int, default=40, help="records per report (40)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (the best is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(Path(directory) / "reports.sqlite")
        started = time.perf_counter()
        for month in range(13):  # (generated and stored a month at a time: bounded memory)
            first = day("2025-01-01") + month * 28 * 86_400
            days = min(28, 365 - month * 28)
            if days <= 0:
                break
            first_day = time.strftime("%Y-%m-%d", time.gmtime(first))
            store_reports(store, generated_year(
                first_day, days, reports_per_day=args.reports,
                records_per_report=args.records, seed=month,
            ))  # fmt: skip
        filled = time.perf_counter() - started
        (rows,) = store.fetchall("SELECT COUNT(*), SUM(messages) FROM received_records")
        print(f"store: {rows[0]:,} records, {rows[1]:,} messages, "
              f"{365 * args.reports:,} reports (filled in {filled:.1f} s)")  # fmt: skip
        since, until = day("2025-01-01"), day("2026-01-01")
        best_summary = best_dashboard = best_cpu = float("inf")
        for _ in range(args.runs):
            started, cpu = time.perf_counter(), time.process_time()
            found = summarize(store, "example.com", since, until)
            best_summary = min(best_summary, time.perf_counter() - started)
            best_cpu = min(best_cpu, time.process_time() - cpu)
            started = time.perf_counter()
            daily_pass_rate(store, "example.com", since, until)
            failure_samples(store, "example.com", since, until)
            best_dashboard = min(best_dashboard, time.perf_counter() - started)
        store.close()
    print(f"summary of a year: {best_summary:.3f} s, {best_cpu:.3f} s CPU (best of {args.runs}; "
          f"target < {TARGET} s): "
          f"{found.messages:,} messages, {len(found.sources)} sources, "
          f"{len(found.organisations)} organisations")  # fmt: skip
    print(
        f"the dashboard's further queries (daily pass rate, failure samples): "
        f"{best_dashboard:.3f} s"
    )
    return 0 if best_summary < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
