"""``mailauth check``: the domain audit, many domains at once."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mailauth.cli.common import CliError, Parser, add_dns_options, make_resolver, read_input
from mailauth.errors import MailauthError

if TYPE_CHECKING:
    from mailauth.check import DomainReport
    from mailauth.dns import DnsResolver


def add_check_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    check = commands.add_parser(
        "check",
        help="audit a domain's SPF, DMARC, DKIM, MX, MTA-STS, TLS-RPT and BIMI records",
        description="Audit the mail-authentication DNS of one or more domains: each finding "
        "is pass, warn or fail, with a fix. Exit status 0 when nothing fails, 1 when "
        "something does, 2 on usage errors. See docs/check.md for the finding ids.",
        epilog="examples:\n  mailauth check example.com --selector s2026\n"
        "  mailauth check --from-file domains.txt --json --jobs 4 > report.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("domains", nargs="*", metavar="DOMAIN", help="domains to check")
    check.add_argument("--from-file", metavar="FILE", help="more domains, one per line")
    check.add_argument(
        "--selector", action="append", default=[], help="a DKIM selector to check (repeatable)"
    )
    check.add_argument("--json", action="store_true", help="JSON (one line per domain)")
    check.add_argument("--quiet", action="store_true", help="show only warnings and failures")
    check.add_argument(
        "--concurrency", type=int, default=20, help="domains at once, per process (20)"
    )
    check.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="worker processes (1): DNS message handling is CPU-bound, so long lists go "
        "faster with one per core",
    )  # fmt: skip
    check.add_argument(
        "--no-fetch", action="store_true", help="do not fetch MTA-STS policies over HTTPS"
    )
    check.add_argument("--ca-file", metavar="FILE", help="CA bundle for MTA-STS (default: system)")
    check.add_argument(
        "--progress", action="store_true", help="progress bar on stderr (default: >10 domains)"
    )
    add_dns_options(check)


def cmd_check(args: argparse.Namespace) -> int:
    # (Imported here, as in _check_shard: the other commands do not pay for the audit.)
    from tqdm import tqdm  # noqa: PLC0415

    from mailauth.check.render import render_report, render_totals  # noqa: PLC0415

    domains = list(args.domains)
    if args.from_file:
        text = read_input(args.from_file).decode("utf-8", "replace")
        domains += [d.strip() for d in text.splitlines() if d.strip() and d[0] != "#"]
    if not domains:
        raise CliError("give at least one DOMAIN (or --from-file)")
    if args.concurrency < 1 or args.jobs < 1:
        raise CliError("--concurrency and --jobs must be at least 1")
    if args.ca_file and not os.access(args.ca_file, os.R_OK):
        raise CliError(f"cannot read --ca-file {args.ca_file}")
    resolver = make_resolver(args)  # a usage or reachability problem stops here
    show = args.progress or (len(domains) > 10 and sys.stderr.isatty())
    colour = sys.stdout.isatty() and not args.json
    done: list[DomainReport] = []
    with tqdm(total=len(domains), disable=not show, file=sys.stderr, unit="domain") as bar:
        jobs = min(args.jobs, len(domains))
        if jobs > 1:
            reports = _in_processes(domains, args, jobs)
        else:
            reports = _in_process(domains, args, resolver)
        for report in reports:
            done.append(report)
            if args.json:
                line = json.dumps(report.to_dict(), ensure_ascii=False)
            else:
                line = render_report(report, colour=colour, verbose=not args.quiet) + "\n"
            bar.write(line, file=sys.stdout)
            bar.update(1)
    if len(done) > 1:  # (JSON Lines stay pure on stdout: the totals go to stderr then)
        print(render_totals(done), file=sys.stderr if args.json else sys.stdout)
    return 1 if any(report.failed for report in done) else 0


def _in_process(
    domains: list[str], args: argparse.Namespace, resolver: DnsResolver
) -> Iterator[DomainReport]:
    """Reports as they complete, from an event loop in a thread of this process (so that
    the caller iterates plainly, as over worker processes)."""
    results: queue.Queue[DomainReport | BaseException] = queue.Queue()
    work = (domains, args, results, resolver)
    thread = threading.Thread(target=_check_shard, args=work, daemon=True)
    thread.start()
    yield from _drain(results, len(domains), thread.is_alive)


def _in_processes(
    domains: list[str], args: argparse.Namespace, jobs: int
) -> Iterator[DomainReport]:
    """The domains dealt out to ``jobs`` worker processes, each with its own resolver and
    event loop; reports as they complete, whichever process they come from."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    results: multiprocessing.Queue[DomainReport | BaseException] = context.Queue()
    workers = [
        context.Process(target=_check_shard, args=(domains[n::jobs], args, results), daemon=True)
        for n in range(jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        yield from _drain(results, len(domains), lambda: any(w.is_alive() for w in workers))
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def _drain(
    results: queue.Queue[DomainReport | BaseException]
    | multiprocessing.Queue[DomainReport | BaseException],
    count: int,
    running: Callable[[], bool],
) -> Iterator[DomainReport]:
    while count:
        try:
            item = results.get(timeout=1)
        except queue.Empty:
            if not running():
                raise CliError("a worker ended before its domains were checked") from None
            continue
        if isinstance(item, BaseException):
            raise CliError(str(item))
        count -= 1
        yield item


def _check_shard(
    domains: list[str],
    args: argparse.Namespace,
    results: queue.Queue[DomainReport | BaseException]
    | multiprocessing.Queue[DomainReport | BaseException],
    resolver: DnsResolver | None = None,
) -> None:
    """Check ``domains`` (with a resolver of its own in a worker process); each report, or
    the one error, goes to ``results``."""
    from mailauth.check import MtaStsFetcher, check_domains  # noqa: PLC0415

    try:
        resolver = make_resolver(args) if resolver is None else resolver
        fetcher = None if args.no_fetch else MtaStsFetcher(verify=args.ca_file or True)

        async def run() -> None:
            reports = check_domains(
                domains,
                resolver,
                selectors=args.selector,
                fetcher=fetcher,
                concurrency=args.concurrency,
            )
            async for report in reports:
                results.put(report)

        asyncio.run(run())
    except (CliError, MailauthError, ValueError, OSError) as exc:
        results.put(CliError(str(exc)))
