"""``mailauth check``: the domain audit, many domains at once."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from tqdm import tqdm

from mailauth.check import MtaStsFetcher, check_domains
from mailauth.check.render import render_report
from mailauth.cli.common import CliError, Parser, add_dns_options, make_resolver, read_input


def add_check_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    check = commands.add_parser(
        "check",
        help="audit a domain's SPF, DMARC, DKIM, MX, MTA-STS, TLS-RPT and BIMI records",
        description="Audit the mail-authentication DNS of one or more domains: each finding "
        "is pass, warn or fail, with a fix. Exit status 0 when nothing fails, 1 when "
        "something does, 2 on usage errors. See docs/check.md for the finding ids.",
        epilog="examples:\n  mailauth check example.com --selector s2026\n"
        "  mailauth check --from-file domains.txt --json > report.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("domains", nargs="*", metavar="DOMAIN", help="domains to check")
    check.add_argument("--from-file", metavar="FILE", help="more domains, one per line")
    check.add_argument(
        "--selector", action="append", default=[], help="a DKIM selector to check (repeatable)"
    )
    check.add_argument("--json", action="store_true", help="JSON (one line per domain)")
    check.add_argument("--quiet", action="store_true", help="show only warnings and failures")
    check.add_argument("--concurrency", type=int, default=20, help="domains at once (20)")
    check.add_argument(
        "--no-fetch", action="store_true", help="do not fetch MTA-STS policies over HTTPS"
    )
    check.add_argument("--ca-file", metavar="FILE", help="CA bundle for MTA-STS (default: system)")
    check.add_argument(
        "--progress", action="store_true", help="progress bar on stderr (default: >10 domains)"
    )
    add_dns_options(check)


def cmd_check(args: argparse.Namespace) -> int:
    domains = list(args.domains)
    if args.from_file:
        text = read_input(args.from_file).decode("utf-8", "replace")
        domains += [d.strip() for d in text.splitlines() if d.strip() and d[0] != "#"]
    if not domains:
        raise CliError("give at least one DOMAIN (or --from-file)")
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    resolver = make_resolver(args)
    fetcher = None if args.no_fetch else MtaStsFetcher(verify=args.ca_file or True)
    show = args.progress or (len(domains) > 10 and sys.stderr.isatty())
    colour = sys.stdout.isatty() and not args.json

    async def run() -> bool:
        failed = False
        with tqdm(total=len(domains), disable=not show, file=sys.stderr, unit="domain") as bar:
            reports = check_domains(
                domains,
                resolver,
                selectors=args.selector,
                fetcher=fetcher,
                concurrency=args.concurrency,
            )
            async for report in reports:
                failed = failed or report.failed
                if args.json:
                    line = json.dumps(report.to_dict(), ensure_ascii=False)
                else:
                    line = render_report(report, colour=colour, verbose=not args.quiet) + "\n"
                bar.write(line, file=sys.stdout)
                bar.update(1)
        return failed

    return 1 if asyncio.run(run()) else 0
