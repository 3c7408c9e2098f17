"""``mailauth reports import``: the DMARC aggregate, failure and SMTP TLS reports a domain
owner receives, from files and directories, a Maildir or an mbox, into the report store
(docs/reports.md, "Reports you receive").

Report e-mails are authenticated (their aligned DKIM signature, checked through the one
resolver the DNS options or the configuration file give, made when the first e-mail comes);
bare files are not (docs/reports.md "Authenticated reports").

Idempotent: a report already in the store is counted as a duplicate and not written again.
A report that cannot be read is counted and listed (one line on stderr naming the file and
why), and the import goes on. Exit status: 0 when every input was read (imported or
duplicate), 1 when some could not be (the others are imported), 2 for a usage error or a
store that cannot be opened or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sized
from typing import TYPE_CHECKING, Protocol

from mailauth.cli.common import (
    CliError,
    DnsUnreachableError,
    Parser,
    add_dns_options,
    dns_args,
    make_resolver,
    unix_time_arg,
)
from mailauth.reports.received.importer import (
    DUPLICATE,
    ERROR,
    IMPORTED,
    ImportResult,
    SourceItem,
    import_item,
)
from mailauth.reports.received.limits import DEFAULT_LIMITS
from mailauth.reports.received.reader import sniff

if TYPE_CHECKING:
    from mailauth.config import MilterConfig
    from mailauth.dns import DnsResolver

EXIT_SOME_UNREADABLE = 1
IMAP_PASSWORD_ENV = "MAILAUTH_IMAP_PASSWORD"


class Source(Sized, Iterable[SourceItem], Protocol):
    """What the importer takes: a sized iterable of items (:mod:`.report_sources`)."""


def _settle(source: Source, item: SourceItem, results: list[ImportResult]) -> None:
    """Tell a source that acts on stored items (IMAP: moves the message) how it went: an
    item whose authentication could not be checked (temperror) stays, to be checked again
    at the next import."""
    settle = getattr(source, "settle", None)
    if settle is not None:
        settle(item, bool(results) and all(r.status != ERROR and not r.recheck
                                           for r in results))  # fmt: skip


def _close(source: Source) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


def add_import_parser(actions: argparse._SubParsersAction[Parser]) -> None:
    command = actions.add_parser(
        "import",
        help="import received DMARC aggregate, failure and TLS reports into the store",
        description="Read the reports sent to your rua=/ruf=/TLS-RPT addresses -- XML, .gz, "
        ".zip, whole report e-mails, ARF failure reports, RFC 8460 JSON -- from files and "
        "directories (walked), a Maildir (new/ and cur/), an mbox or an IMAP folder (TLS "
        "only; --move-to moves what was stored), and store each one "
        "once (a report already there is a duplicate). A report e-mail is authenticated by "
        "its DKIM signature (aligned with its From, checked in DNS: --nameserver, --dns-zone "
        "or the --config file's [dns]); summaries count only the reports their reporter's "
        "domain signed, and a bare file (.xml, .gz, .zip given as such) is unauthenticated "
        "(docs/reports.md 'Authenticated reports'). A report that cannot be read is "
        "listed on stderr and the rest goes on. Exit status: 0 all read, 1 some could not "
        "be read, 2 usage or store error.",
        epilog="examples:\n"
        "  mailauth reports import --store reports.sqlite ~/dmarc/*.xml.gz report.zip\n"
        "  mailauth reports import --maildir /var/mail/dmarc --config /etc/mailauth/milter.toml\n"
        "  mailauth reports import --mbox dmarc.mbox --store postgresql://db/reports --json\n"
        "  mailauth reports import --maildir ~/Maildir/.dmarc --nameserver 127.0.0.1 "
        "--store r.sqlite\n"
        "  mailauth reports import --imap imaps://dmarc%40example.com@imap.example.com \\\n"
        "      --move-to Imported --imap-password-file /etc/mailauth/imap.pass --store r.sqlite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("paths", nargs="*", metavar="FILE|DIR",
                         help="report files, or directories of them")  # fmt: skip
    command.add_argument("--maildir", metavar="DIR", action="append", default=[],
                         help="a Maildir of report e-mails (repeatable)")  # fmt: skip
    command.add_argument("--mbox", metavar="FILE", action="append", default=[],
                         help="an mbox file of report e-mails (repeatable)")  # fmt: skip
    command.add_argument("--imap", metavar="URL",
                         help="an IMAP folder over TLS: imaps://USER@HOST[:PORT][/FOLDER] or "
                         "imap://... (STARTTLS required); the password from "
                         "--imap-password-file or the environment variable "
                         f"{IMAP_PASSWORD_ENV}, never the URL")  # fmt: skip
    command.add_argument("--folder", metavar="F",
                         help="the IMAP folder to read (default: the URL's; INBOX)")  # fmt: skip
    command.add_argument("--move-to", metavar="F",
                         help="move each IMAP message whose reports are stored into this "
                         "folder (made when missing); without it, the folder is only "
                         "read")  # fmt: skip
    command.add_argument("--imap-password-file", metavar="FILE",
                         help="a file holding the IMAP password (its first line)")  # fmt: skip
    command.add_argument("--imap-ca", metavar="FILE",
                         help="CA certificates to trust for the IMAP server (default: the "
                         "system's)")  # fmt: skip
    command.add_argument("--store", metavar="STORE",
                         help="a SQLite file path or a postgresql:// URL (default: [reports] "
                         "store of --config)")  # fmt: skip
    command.add_argument("--config", metavar="FILE", help="the milter's TOML configuration")
    command.add_argument("--json", action="store_true",
                         help="one JSON object per report on stdout")  # fmt: skip
    command.add_argument("--progress", action="store_true",
                         help="progress bar on stderr (default: >10 inputs, on a tty)")  # fmt: skip
    command.add_argument("--now", type=unix_time_arg, metavar="UNIXTIME",
                         help="the time to check DKIM signatures (t=, x=) at and to record "
                         "as the import's (default: now)")  # fmt: skip
    add_dns_options(command)


def sources_of(args: argparse.Namespace) -> list[Source]:
    """The sources the command line names (each checked now: a usage error before any
    import)."""
    from mailauth.cli.report_sources import (  # noqa: PLC0415 - only this command needs them
        FileSource,
        MaildirSource,
        MboxSource,
    )

    limit = DEFAULT_LIMITS.max_input
    sources: list[Source] = []
    try:
        if args.paths:
            sources.append(FileSource(args.paths, limit))
        sources.extend(MaildirSource(path, limit) for path in args.maildir)
        sources.extend(MboxSource(path, limit) for path in args.mbox)
        if args.imap:
            sources.append(_imap_source(args, limit))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not sources:
        raise CliError("give report files or directories, --maildir DIR, --mbox FILE or --imap URL")
    return sources


def _imap_source(args: argparse.Namespace, limit: int) -> Source:
    from mailauth.cli.report_sources import ImapSource  # noqa: PLC0415
    from mailauth.reports.imap import ImapError, parse_imap_url  # noqa: PLC0415

    location = parse_imap_url(args.imap, args.folder)
    if args.imap_password_file:
        try:
            with open(args.imap_password_file, encoding="utf-8") as handle:
                password = handle.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the IMAP password file: {exc}") from None
    elif os.environ.get(IMAP_PASSWORD_ENV):
        password = os.environ[IMAP_PASSWORD_ENV]
    else:
        raise CliError(f"--imap needs --imap-password-file FILE or {IMAP_PASSWORD_ENV} set")
    try:
        return ImapSource(location, password, move_to=args.move_to, ca_file=args.imap_ca,
                          limit=limit)  # fmt: skip
    except ImapError as exc:
        raise CliError(str(exc)) from None


def cmd_reports_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415

    from mailauth.cli.reporting import store_of  # noqa: PLC0415 - (it imports this module)
    from mailauth.reports import open_store  # noqa: PLC0415
    from mailauth.reports.imap import ImapError  # noqa: PLC0415 - (imapclient: only here)

    if args.dns_zone and args.nameserver:  # (a usage error before anything is opened)
        raise CliError("--dns-zone and --nameserver exclude each other")
    sources = sources_of(args)
    url, config = store_of(args)
    resolver = _LazyResolver(args, config)
    total = sum(len(source) for source in sources)
    show = args.progress or (total > 10 and sys.stderr.isatty())
    counts = {IMPORTED: 0, DUPLICATE: 0, ERROR: 0}
    try:
        store = open_store(url)
    except BaseException:
        for source in sources:
            _close(source)
        raise
    try:
        with tqdm(total=total, disable=not show, file=sys.stderr, unit="input") as bar:
            for source in sources:
                try:
                    for item in source:
                        now = int(args.now if args.now is not None else time.time())
                        results = import_item(store, item, now=now,
                                              resolver=resolver.for_item(item))  # fmt: skip
                        for result in results:
                            counts[result.status] += 1
                            _show(result, args.json)
                        _settle(source, item, results)
                        bar.update(1)
                finally:
                    _close(source)
    except ImapError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    if not args.json:
        print(f"{counts[IMPORTED]} reports imported, {counts[DUPLICATE]} already in the store, "
              f"{counts[ERROR]} unreadable (from {total} inputs)")  # fmt: skip
    return EXIT_SOME_UNREADABLE if counts[ERROR] else 0


class _LazyResolver:
    """The command's one resolver, made when the first e-mail needs it (bare files need no
    DNS). Nameservers that do not answer are a warning, not an error: the e-mails'
    signatures are then ``temperror`` (stored unauthenticated; IMAP messages left in place,
    to be checked at the next import)."""

    def __init__(self, args: argparse.Namespace, config: MilterConfig) -> None:
        self.args = dns_args(config, args)
        self.resolver: DnsResolver | None = None

    def for_item(self, item: SourceItem) -> DnsResolver | None:
        if self.resolver is None and not item.error and sniff(item.data) == "mail":
            try:
                self.resolver = make_resolver(self.args)
            except DnsUnreachableError as exc:
                print(f"mailauth reports import: warning: {exc}: report e-mails cannot be "
                      "authenticated now (temperror)", file=sys.stderr)  # fmt: skip
                self.resolver = make_resolver(self.args, check=False)
        return self.resolver


def _show(result: ImportResult, as_json: bool) -> None:
    from tqdm import tqdm  # noqa: PLC0415

    write = tqdm.write  # (keeps the progress bar below the lines)
    if as_json:
        write(json.dumps(result.to_json(), ensure_ascii=False), file=sys.stdout)
        return
    if result.status == ERROR:
        write(f"mailauth reports import: {result.file}: {result.error}", file=sys.stderr)
    for note in result.notes:
        write(f"mailauth reports import: {result.file}: note: {note}", file=sys.stderr)
