"""``mailauth reports summary`` and ``mailauth reports html``: what the aggregate reports a
domain owner imported say about one domain (docs/reports.md "Summaries" and "The
dashboard"): a table (or JSON, or CSV) of its sources and the readiness verdict, or one
self-contained HTML file. Reverse names only with ``--resolve``, through the one resolver
the DNS options make. The heavy modules (jinja2, the store) load only when a command runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mailauth.cli.common import (
    CliError,
    DnsUnreachableError,
    Parser,
    add_dns_options,
    make_resolver,
)

if TYPE_CHECKING:
    from mailauth.reports.summary import Reporter, Summary

DEFAULT_SINCE = "30d"
_SPAN = re.compile(r"(\d{1,6})([hdw])")
_UNITS = {"h": 3600, "d": 86_400, "w": 7 * 86_400}
CSV_COLUMNS = (
    "organisation", "source_ip", "reverse_name", "reverse_status", "messages",
    "spf_aligned_rate", "dkim_aligned_rate", "dmarc_pass_rate", "dmarc_fail",
    "disposition_none", "disposition_pass", "disposition_quarantine", "disposition_reject",
    "reporters",
)  # fmt: skip


def parse_when(text: str, now: float) -> int:
    """A Unix time from ``2026-03-01``, ``2026-03-01T12:00[:00]`` (UTC), or a span back
    from ``now``: ``30d``, ``12h``, ``2w``."""
    span = _SPAN.fullmatch(text.strip())
    if span:
        return max(0, int(now) - int(span.group(1)) * _UNITS[span.group(2)])
    for layout in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return int(datetime.strptime(text.strip(), layout).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    raise CliError(
        f"not a date (2026-03-01, 2026-03-01T12:00) or a span back from now (30d, 12h, 2w): "
        f"{text!r}"
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    from mailauth.cli.reporting import add_store_options  # noqa: PLC0415 - (a cycle)

    parser.add_argument("domain", metavar="DOMAIN", help="the policy domain the reports are about")
    parser.add_argument(
        "--since", default=DEFAULT_SINCE, metavar="WHEN",
        help="reports whose period begins at or after WHEN: a date (2026-03-01, UTC) or a span "
        f"back from --until (30d, 12h, 2w); default {DEFAULT_SINCE}",
    )  # fmt: skip
    parser.add_argument(
        "--until", metavar="WHEN",
        help="and before WHEN (a date, as --since); default: now",
    )  # fmt: skip
    parser.add_argument(
        "--resolve", action="store_true",
        help="look up each source's reverse name (PTR, confirmed by A/AAAA) in DNS, to name "
        "its organisation; at most 1000 sources, 32 queries at a time, 30 s in all",
    )  # fmt: skip
    parser.add_argument(
        "--include-unauthenticated", action="store_true",
        help="count the unauthenticated reports too: bare files imported by hand, unsigned "
        "or forged report e-mails (by default only reports whose e-mail the reporter's own "
        "domain signed count; docs/reports.md 'Authenticated reports')",
    )  # fmt: skip
    add_store_options(parser)
    add_dns_options(parser)


def add_summary_parsers(actions: argparse._SubParsersAction[Parser]) -> None:
    summary = actions.add_parser(
        "summary",
        help="what the imported aggregate reports say about a domain, and whether it is ready "
        "for p=reject",
        description="Per source IP of DOMAIN's mail, from the aggregate reports imported into "
        "the store (those their reporter's domain signed; the others are counted apart, "
        "--include-unauthenticated counts them): messages, the share with aligned SPF, "
        "aligned DKIM and DMARC pass, the "
        "receivers' dispositions and the reporters; sources grouped by sending organisation; "
        "and how many messages p=reject (or p=quarantine) would have refused. Columns: "
        "docs/reports.md, 'Summaries'.",
        epilog="examples:\n"
        "  mailauth reports summary example.com --store /var/lib/mailauth/reports.sqlite\n"
        "  mailauth reports summary example.com --config /etc/mailauth/milter.toml "
        "--since 90d --resolve\n"
        "  mailauth reports summary example.com --store reports.sqlite --since 2026-01-01 "
        "--until 2026-02-01 --json\n"
        "  mailauth reports summary example.com --store reports.sqlite --csv > sources.csv\n"
        "  mailauth reports summary example.com --store reports.sqlite "
        "--include-unauthenticated",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(summary)
    output = summary.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object")
    output.add_argument("--csv", action="store_true", help="CSV: one line per source")
    summary.add_argument(
        "--top", type=int, default=50, metavar="N",
        help="sources shown in the table (default 50; JSON and CSV have them all)",
    )  # fmt: skip
    html = actions.add_parser(
        "html",
        help="one self-contained HTML dashboard of a domain's imported reports",
        description="Write ONE HTML file that opens anywhere without network access: DMARC "
        "pass rate over time, volume by source, a sortable table of the sources and their "
        "alignment, the readiness verdict and the failure reports' samples "
        "(docs/reports.md, 'The dashboard').",
        epilog="examples:\n"
        "  mailauth reports html example.com --store reports.sqlite --out report.html\n"
        "  mailauth reports html example.com --config /etc/mailauth/milter.toml "
        "--since 365d --resolve --out /srv/www/dmarc/example.com.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(html)
    html.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")


def _summary(args: argparse.Namespace) -> tuple[Summary, str, int]:
    from mailauth.cli.reporting import store_of  # noqa: PLC0415
    from mailauth.domains import host_name  # noqa: PLC0415

    now = time.time()
    until = parse_when(args.until, now) if args.until else int(now) + 1
    since = parse_when(args.since, until)
    if since >= until:
        raise CliError("--since must be before --until")
    domain = host_name(args.domain)
    url, _ = store_of(args)
    return _compute(args, url, domain, since, until), url, int(now)


def _compute(args: argparse.Namespace, url: str, domain: str, since: int, until: int) -> Summary:
    from mailauth.reports.reverse import (  # noqa: PLC0415
        ReverseName,
        ReverseStatus,
        resolve_reverse_names,
    )
    from mailauth.reports.store import open_store  # noqa: PLC0415
    from mailauth.reports.summary import summarize, with_reverse_names  # noqa: PLC0415

    store = open_store(url)
    try:
        found = summarize(store, domain, since, until,
                          include_unauthenticated=args.include_unauthenticated)  # fmt: skip
    finally:
        store.close()
    if not args.resolve or not found.sources:
        return found
    addresses = [s.ip for s in found.sources]
    try:
        resolver = make_resolver(args)
    except DnsUnreachableError as exc:  # (reverse names are a nicety: never fatal)
        print(f"mailauth: warning: {exc}: reverse names unknown", file=sys.stderr)
        unknown = ReverseName(ReverseStatus.UNKNOWN)
        return with_reverse_names(found, dict.fromkeys(addresses, unknown))
    return with_reverse_names(found, resolve_reverse_names(addresses, resolver))


def cmd_summary(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise CliError("--top must be at least 1")
    found, _, _ = _summary(args)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
    elif args.csv:
        print(summary_csv(found), end="")
    else:
        print(summary_table(found, args.top))
    return 0


def cmd_html(args: argparse.Namespace) -> int:
    from mailauth.reports.dashboard import render_dashboard  # noqa: PLC0415
    from mailauth.reports.store import open_store  # noqa: PLC0415

    found, url, now = _summary(args)
    store = open_store(url)
    try:
        page = render_dashboard(store, found, generated=now)
    finally:
        store.close()
    _write_atomically(Path(args.out), page.encode("utf-8"))
    print(f"{args.out}: {found.messages:,} messages from {len(found.sources):,} sources")
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path()
    try:
        fd, name = tempfile.mkstemp(prefix=".mailauth-", suffix=".html", dir=directory)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(name, 0o644)
        os.replace(name, path)
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def summary_csv(found: Summary) -> str:
    """One line per source (reporters as :func:`_reporter_token` separated by spaces)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in found.sources:
        row = s.to_dict()
        writer.writerow([
            _cell(s.organisation), s.ip, _cell(s.reverse.name), str(s.reverse.status), s.messages,
            row["spf_aligned_rate"], row["dkim_aligned_rate"], row["dmarc_pass_rate"],
            s.dmarc_fail, *(s.dispositions.get(w, 0) for w in ("none", "pass", "quarantine",
                                                               "reject")),
            _cell(" ".join(_reporter_token(r) for r in s.reporters)),
        ])  # fmt: skip
    return out.getvalue()


def _reporter_token(reporter: Reporter) -> str:
    """``name=messages``, an unverified reporter's name prefixed ``[unverified]``; the name
    percent-encoded but for letters, digits and ``.-_:@`` (RFC 3986), so that an org_name a
    report wrote (``google.com=250000 x``) cannot pass for another reporter, a count, or a
    verified name."""
    name = urllib.parse.quote(reporter.name, safe=".-_:@")
    return f"{'' if reporter.verified else '[unverified]'}{name}={reporter.messages}"


def _cell(text: str) -> str:
    """A text cell that a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _printable(text: str, width: int = 60) -> str:
    """Report text for a terminal: control characters shown as ``?`` (no escape sequences
    from a hostile report reach the terminal), cut at ``width``."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= width else clean[: width - 1] + "…"


def summary_table(found: Summary, top: int) -> str:
    since = datetime.fromtimestamp(found.since, UTC).strftime("%Y-%m-%d %H:%M")
    until = datetime.fromtimestamp(found.until, UTC).strftime("%Y-%m-%d %H:%M")
    lines = [
        f"{found.domain}: {found.messages:,} messages from {len(found.sources):,} sources in "
        f"{found.reports:,} reports by {found.reporters:,} reporters ({since} - {until} UTC)",
        *found.verdict(),
        "",
    ]
    if not found.sources:
        return "\n".join(lines[:-1])
    header = ("ORGANISATION", "SOURCES", "MESSAGES", "SPF", "DKIM", "DMARC", "FAIL")
    rows: list[tuple[str, ...]] = [header] + [
        (_printable(o.name, 40), f"{o.sources:,}", f"{o.messages:,}", *_rates(o.messages,
         o.spf_aligned, o.dkim_aligned, o.dmarc_pass), f"{o.messages - o.dmarc_pass:,}")
        for o in found.organisations[:top]
    ]  # fmt: skip
    lines += _columns(rows)
    lines.append("")
    columns = ("SOURCE IP", "REVERSE NAME", "ORGANISATION", "MESSAGES", "SPF", "DKIM", "DMARC",
              "FAIL", "DISPOSITIONS", "REPORTERS")  # fmt: skip
    rows = [columns]
    for s in found.sources[:top]:
        reverse = s.reverse.name or ("" if s.reverse.status == "not asked" else s.reverse.status)
        if s.reverse.name and not s.reverse.verified:
            reverse += f" ({s.reverse.status})"
        dispositions = " ".join(f"{w}={n}" for w, n in sorted(s.dispositions.items()))
        reporters = ", ".join(r.label for r in s.reporters[:3])
        reporters += f" +{len(s.reporters) - 3}" if len(s.reporters) > 3 else ""
        rows.append((
            _printable(s.ip, 45), _printable(reverse, 40), _printable(s.organisation, 30),
            f"{s.messages:,}",
            *_rates(s.messages, s.spf_aligned, s.dkim_aligned, s.dmarc_pass),
            f"{s.dmarc_fail:,}", dispositions, _printable(reporters, 60),
        ))  # fmt: skip
    lines += _columns(rows)
    if len(found.sources) > top:
        lines.append(f"... and {len(found.sources) - top} smaller sources (--top N, --json, --csv)")
    return "\n".join(lines)


def _rates(messages: int, *counts: int) -> tuple[str, ...]:
    return tuple(f"{100 * n / messages:.1f}%" if messages else "-" for n in counts)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
