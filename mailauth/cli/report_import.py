"""``mailauth reports import``: the DMARC aggregate, failure and SMTP TLS reports a domain
owner receives, from files and directories, a Maildir or an mbox, into the report store
(docs/reports.md, "Reports you receive").

Idempotent: a report already in the store is counted as a duplicate and not written again.
A report that cannot be read is counted and listed (one line on stderr naming the file and
why), and the import goes on. Exit status: 0 when every input was read (imported or
duplicate), 1 when some could not be (the others are imported), 2 for a usage error or a
store that cannot be opened or written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sized
from typing import Protocol

from mailauth.cli.common import CliError, Parser
from mailauth.reports.received.importer import (
    DUPLICATE,
    ERROR,
    IMPORTED,
    ImportResult,
    SourceItem,
    import_item,
)
from mailauth.reports.received.limits import DEFAULT_LIMITS

EXIT_SOME_UNREADABLE = 1


class Source(Sized, Iterable[SourceItem], Protocol):
    """What the importer takes: a sized iterable of items (:mod:`.report_sources`)."""


def add_import_parser(actions: argparse._SubParsersAction[Parser]) -> None:
    command = actions.add_parser(
        "import",
        help="import received DMARC aggregate, failure and TLS reports into the store",
        description="Read the reports sent to your rua=/ruf=/TLS-RPT addresses -- XML, .gz, "
        ".zip, whole report e-mails, ARF failure reports, RFC 8460 JSON -- from files and "
        "directories (walked), a Maildir (new/ and cur/) or an mbox, and store each one "
        "once (a report already there is a duplicate). A report that cannot be read is "
        "listed on stderr and the rest goes on. Exit status: 0 all read, 1 some could not "
        "be read, 2 usage or store error.",
        epilog="examples:\n"
        "  mailauth reports import --store reports.sqlite ~/dmarc/*.xml.gz report.zip\n"
        "  mailauth reports import --maildir /var/mail/dmarc --config /etc/mailauth/milter.toml\n"
        "  mailauth reports import --mbox dmarc.mbox --store postgresql://db/reports --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("paths", nargs="*", metavar="FILE|DIR",
                         help="report files, or directories of them")  # fmt: skip
    command.add_argument("--maildir", metavar="DIR", action="append", default=[],
                         help="a Maildir of report e-mails (repeatable)")  # fmt: skip
    command.add_argument("--mbox", metavar="FILE", action="append", default=[],
                         help="an mbox file of report e-mails (repeatable)")  # fmt: skip
    command.add_argument("--store", metavar="STORE",
                         help="a SQLite file path or a postgresql:// URL (default: [reports] "
                         "store of --config)")  # fmt: skip
    command.add_argument("--config", metavar="FILE", help="the milter's TOML configuration")
    command.add_argument("--json", action="store_true",
                         help="one JSON object per report on stdout")  # fmt: skip
    command.add_argument("--progress", action="store_true",
                         help="progress bar on stderr (default: >10 inputs, on a tty)")  # fmt: skip


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
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not sources:
        raise CliError("give report files or directories, --maildir DIR or --mbox FILE")
    return sources


def cmd_reports_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415

    from mailauth.cli.reporting import store_of  # noqa: PLC0415 - (it imports this module)
    from mailauth.reports import open_store  # noqa: PLC0415

    sources = sources_of(args)
    url, _ = store_of(args)
    total = sum(len(source) for source in sources)
    show = args.progress or (total > 10 and sys.stderr.isatty())
    counts = {IMPORTED: 0, DUPLICATE: 0, ERROR: 0}
    store = open_store(url)
    try:
        with tqdm(total=total, disable=not show, file=sys.stderr, unit="input") as bar:
            for source in sources:
                for item in source:
                    for result in import_item(store, item, now=int(time.time())):
                        counts[result.status] += 1
                        _show(result, args.json)
                    bar.update(1)
    finally:
        store.close()
    if not args.json:
        print(f"{counts[IMPORTED]} reports imported, {counts[DUPLICATE]} already in the store, "
              f"{counts[ERROR]} unreadable (from {total} inputs)")  # fmt: skip
    return EXIT_SOME_UNREADABLE if counts[ERROR] else 0


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
