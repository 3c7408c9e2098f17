"""Importing received reports into the store: one importer, fed items by any source.

A source (files and directories, a Maildir, an mbox: :mod:`mailauth.cli.report_sources`;
an IMAP folder, added beside them) is an iterable of :class:`SourceItem`: a name to show
and the item's octets, or why it could not be read. :func:`import_item` reads one item
(:mod:`.reader`) and writes each report it holds (:mod:`.storage`); an aggregate report
whose key the store holds already is recognised from its metadata, its records never read
(its result's counts and notes are the stored report's). Every report found and
every part that could not be read is one :class:`ImportResult`, ``imported``,
``duplicate`` (the store has it already: importing is idempotent) or ``error``. A source
that must act on an item once it is imported (move an IMAP message) calls
:func:`import_item` itself and looks at the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mailauth.reports.received.limits import DEFAULT_LIMITS, ReadLimits
from mailauth.reports.received.model import AggregateReport, FailureReport, Report, ReportKind
from mailauth.reports.received.reader import ReadOutcome, read_reports
from mailauth.reports.received.storage import StoredAggregate, save_report, stored_aggregate
from mailauth.reports.store import Store

IMPORTED = "imported"
DUPLICATE = "duplicate"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One input of a source: ``data``, or ``error`` when it could not be read."""

    name: str
    data: bytes = b""
    error: str = ""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What became of one report (or one unreadable part) of an input. ``file``: the
    input's name, with the part inside it (``x.zip > y.xml``); ``messages``: an aggregate
    report's message count (the sum of its rows' counts)."""

    file: str
    kind: ReportKind | None
    reporter: str
    report_id: str
    domain: str
    records: int
    messages: int
    status: str
    error: str = ""
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object, exactly these keys."""
        return {
            "file": self.file,
            "kind": self.kind.value if self.kind is not None else None,
            "reporter": self.reporter,
            "report_id": self.report_id,
            "domain": self.domain,
            "records": self.records,
            "messages": self.messages,
            "status": self.status,
            "error": self.error or None,
        }


def import_reports(store: Store, items: Iterable[SourceItem], *, now: int,
                   limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[ImportResult]:  # fmt: skip
    """Import every item of a source, one after the other (each report its own
    transaction: an interrupted import keeps what it wrote, and a rerun skips it)."""
    for item in items:
        yield from import_item(store, item, now=now, limits=limits)


def import_item(store: Store, item: SourceItem, *, now: int,
                limits: ReadLimits = DEFAULT_LIMITS) -> list[ImportResult]:  # fmt: skip
    """Read one item and store its reports. StoreError (the store failing) propagates:
    that is no fault of the report, and the import should stop."""
    if item.error:
        return [ImportResult(item.name, None, "", "", "", 0, 0, ERROR, item.error)]
    found: dict[str, StoredAggregate] = {}

    def known(key: str) -> bool:
        stored = stored_aggregate(store, key)
        if stored is not None:
            found[key] = stored
        return stored is not None

    results = []
    for outcome in read_reports(item.data, limits, known):
        results.append(_store_outcome(store, item.name, outcome, now, found))
    return results


def _store_outcome(store: Store, name: str, outcome: ReadOutcome, now: int,
                   found: dict[str, StoredAggregate]) -> ImportResult:  # fmt: skip
    file = f"{name} > {outcome.part}" if outcome.part else name
    if outcome.known is not None:  # (a duplicate told from its metadata: records unread)
        known, stored = outcome.known, found[outcome.known.key]
        return ImportResult(file, ReportKind.AGGREGATE, known.reporter, known.report_id,
                            stored.domain, stored.records, stored.messages, DUPLICATE,
                            notes=stored.notes)  # fmt: skip
    report = outcome.report
    if report is None:
        return ImportResult(file, outcome.kind, "", "", "", 0, 0, ERROR, outcome.error)
    written = save_report(store, report, source=file, now=now)
    records, messages = _counts(report)
    return ImportResult(
        file=file,
        kind=report.kind,
        reporter=report.org_name or report.email,
        report_id=report.report_id,
        domain=report.domain,
        records=records,
        messages=messages,
        status=IMPORTED if written else DUPLICATE,
        notes=report.notes,
    )


def _counts(report: Report) -> tuple[int, int]:
    """(records, messages): an aggregate report's rows and the sum of their counts; a
    failure report's one reported message; a TLS report's policies (and no messages: its
    counts are TLS sessions)."""
    if isinstance(report, AggregateReport):
        return len(report.records), report.messages
    if isinstance(report, FailureReport):
        return 1, 1
    return len(report.policies), 0
