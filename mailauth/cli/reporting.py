"""``mailauth reports``: the DMARC report store (docs/reports.md). ``migrate`` brings its
schema forward, ``show`` lists what the next ``send`` would send, ``prune`` deletes old
periods. Also the store options ``verify --record`` shares."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from mailauth.cli.common import CliError, Parser, unix_time_arg
from mailauth.cli.failure_reports import show_failure_reports
from mailauth.cli.report_import import add_import_parser, cmd_reports_import
from mailauth.cli.report_send import add_send_parser, cmd_reports_send
from mailauth.cli.report_summary import add_summary_parsers, cmd_html, cmd_summary
from mailauth.config import MilterConfig, load_milter_config
from mailauth.reports import ReportSettings, open_store, report_status
from mailauth.reports.outgoing_status import ReportStatus


def add_reports_parser(commands: argparse._SubParsersAction[Parser]) -> argparse.ArgumentParser:
    reports = commands.add_parser(
        "reports",
        help="DMARC reports: the report store (migrate, show, prune), sending (send), and "
        "the reports you receive (import, summary, html)",
        description="The DMARC report store that the milter (and verify --record) fills: a "
        "SQLite file or a PostgreSQL database (docs/reports.md).",
        epilog="examples:\n"
        "  mailauth reports migrate --store /var/lib/mailauth/reports.sqlite\n"
        "  mailauth reports migrate --store postgresql://mailauth@db.example.net/reports\n"
        "  mailauth reports show --config /etc/mailauth/milter.toml\n"
        "  mailauth reports show --store reports.sqlite --now 1767312000 --json\n"
        "  mailauth reports show --store reports.sqlite --failure\n"
        "  mailauth reports send --config /etc/mailauth/milter.toml --dry-run --out /tmp/r\n"
        "  mailauth reports prune --config /etc/mailauth/milter.toml --before 1767225600\n"
        "  mailauth reports import --maildir /var/mail/dmarc --store reports.sqlite\n"
        "  mailauth reports summary example.com --store reports.sqlite --since 90d\n"
        "  mailauth reports html example.com --store reports.sqlite --out report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = reports.add_subparsers(dest="reports_command", metavar="ACTION", parser_class=Parser)
    migrate = actions.add_parser(
        "migrate",
        help="create the store or bring its schema up to date",
        description="Create the report store's tables, or apply the migrations it lacks (the "
        "milter does this on start too).",
        epilog="example:\n  mailauth reports migrate --store /var/lib/mailauth/reports.sqlite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(migrate)
    show = actions.add_parser(
        "show",
        help="list the reports the next send would send",
        description="The aggregate reports whose period is over and that are not sent yet: "
        "policy domain, period (UTC), rows, messages, state (new, pending after a failed "
        "attempt, claimed by a run in progress), attempts, destinations.",
        epilog="example:\n  mailauth reports show --store reports.sqlite --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(show)
    show.add_argument(
        "--now", type=unix_time_arg, metavar="UNIXTIME",
        help="as if it were this time (default: now): periods ended by then are closed",
    )  # fmt: skip
    show.add_argument("--json", action="store_true", help="one JSON array of reports")
    show.add_argument(
        "--failure", action="store_true",
        help="list the queued failure reports (RFC 9991) instead of the aggregate ones",
    )  # fmt: skip
    prune = actions.add_parser(
        "prune",
        help="delete the periods that ended before a time",
        description="Delete the counts, policies and send state of every period that ended "
        "before --before, whatever became of its report (a report a send run holds claimed "
        "is kept). Prints what was deleted.",
        epilog="example:\n  mailauth reports prune --store reports.sqlite --before 1767225600",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(prune)
    prune.add_argument(
        "--before", type=unix_time_arg, metavar="UNIXTIME", required=True,
        help="periods that ended before this time go (not later than now)",
    )  # fmt: skip
    add_send_parser(actions)
    add_import_parser(actions)
    add_summary_parsers(actions)
    return reports


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="STORE",
        help="a SQLite file path or a postgresql:// URL (default: [reports] store of --config)",
    )  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="the milter's TOML configuration")


def store_of(args: argparse.Namespace) -> tuple[str, MilterConfig]:
    """The store the options name, and the configuration (the file's, or the defaults)."""
    config = load_milter_config(args.config) if args.config else MilterConfig()
    store = args.store or config.reports.store
    if not store:
        raise CliError("give --store STORE (or [reports] store in --config FILE)")
    return store, config


def cmd_reports(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.reports_command == "migrate":
        return _migrate(args)
    if args.reports_command == "show":
        return _show(args)
    if args.reports_command == "send":
        return cmd_reports_send(args)
    if args.reports_command == "prune":
        return _prune(args)
    if args.reports_command == "import":
        return cmd_reports_import(args)
    if args.reports_command == "summary":
        return cmd_summary(args)
    if args.reports_command == "html":
        return cmd_html(args)
    raise CliError(
        "say what to do: mailauth reports {migrate,show,send,prune,import,summary,html} ..."
    )


def _migrate(args: argparse.Namespace) -> int:
    url, _ = store_of(args)
    store = open_store(url, migrate=False)
    try:
        before, after = store.migrate()
        shown = store.display()
    finally:
        store.close()
    if before == after:
        print(f"report store {shown}: schema version {after}, up to date")
    else:
        print(f"report store {shown}: schema version {before} -> {after}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from mailauth.reports.prune import prune_periods  # noqa: PLC0415 (loaded when it runs)

    url, _ = store_of(args)
    before = int(args.before)
    if before > time.time():
        raise CliError("--before is in the future: only periods that have ended can go")
    store = open_store(url, create=False)
    try:
        pruned = prune_periods(store, before)
        shown = store.display()
    finally:
        store.close()
    print(
        f"report store {shown}: deleted {pruned.counts} report rows, {pruned.policies} "
        f"policies, {pruned.outgoing} send states of periods ended before {before}"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    url, config = store_of(args)
    if args.failure:
        print(show_failure_reports(url, args.json))
        return 0
    now = time.time() if args.now is None else args.now
    settings = ReportSettings(
        config.reports.org_name, config.reports.email, config.reports.submitter
    )
    store = open_store(url, create=False)
    try:
        status = report_status(store, settings, now)
    finally:
        store.close()
    if args.json:
        print(json.dumps([s.to_dict() for s in status], indent=2, ensure_ascii=False))
        return 0
    print(_table(status))
    return 0


def _table(status: list[ReportStatus]) -> str:
    if not status:
        return "no reports to send"
    header = ("POLICY DOMAIN", "PERIOD (UTC)", "ROWS", "MESSAGES", "STATE", "TRIES", "RUA")
    lines = [header]
    for s in status:
        begin = datetime.fromtimestamp(s.begin, UTC).strftime("%Y-%m-%d %H:%M")
        end = datetime.fromtimestamp(s.end + 1, UTC).strftime("%Y-%m-%d %H:%M")
        lines.append((s.policy_domain, f"{begin} - {end}", str(s.records), str(s.messages),
                      s.state, str(s.attempts), " ".join(s.rua)))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.append("  ".join([*cells, line[-1]]))
    total = sum(s.messages for s in status)
    out.append(f"{len(status)} reports, {total} messages")
    return "\n".join(out)
