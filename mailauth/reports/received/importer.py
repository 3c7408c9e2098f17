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

An item that is an e-mail is authenticated first (:mod:`.authenticate`: its aligned,
passing DKIM signature, through the one resolver given), and every report in it carries
that authentication (:class:`.model.ReportAuth`); a bare file (XML, gzip, zip, JSON given
as such) carries none. The authenticated domain is part of a report's key: a forged copy
never takes the place of the real, signed one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from mailauth.dns import DnsResolver
from mailauth.reports.received.authenticate import authenticate, trust_of
from mailauth.reports.received.limits import DEFAULT_LIMITS, ReadLimits
from mailauth.reports.received.model import (
    BARE_FILE,
    AggregateReport,
    AuthResult,
    FailureReport,
    Report,
    ReportAuth,
    ReportKind,
    Trust,
    authenticated_key,
)
from mailauth.reports.received.reader import ReadOutcome, read_reports, sniff
from mailauth.reports.received.storage import (
    StoredAggregate,
    save_report,
    stored_aggregate,
    stored_at,
)
from mailauth.reports.store import Store

IMPORTED = "imported"
DUPLICATE = "duplicate"
ERROR = "error"
# For how long after a copy was stored unauthenticated on a temperror an import checks the
# e-mail again (an MTA retries a temporary failure for days: 3 here); then it is settled.
RECHECK_FOR = 3 * 86400


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
    auth: ReportAuth = BARE_FILE
    auth_note: str = ""  # why the report is not counted as authenticated (also in notes)
    settled: bool = False  # a temperror past RECHECK_FOR: not checked again

    @property
    def authenticated(self) -> str | None:
        """The report e-mail's authenticated domain (None: none, or a bare file)."""
        return self.auth.domain or None

    @property
    def recheck(self) -> bool:
        """The authentication ended in ``temperror``: importing the item again checks it
        again (an IMAP message stays where it is)."""
        return self.auth.result == AuthResult.TEMPERROR and not self.settled

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
            "authenticated": self.authenticated,
            "auth_result": self.auth.result.value,
            "auth_note": self.auth_note or None,
        }


def import_reports(store: Store, items: Iterable[SourceItem], *, now: int,
                   limits: ReadLimits = DEFAULT_LIMITS,
                   resolver: DnsResolver | None = None) -> Iterator[ImportResult]:  # fmt: skip
    """Import every item of a source, one after the other (each report its own
    transaction: an interrupted import keeps what it wrote, and a rerun skips it)."""
    for item in items:
        yield from import_item(store, item, now=now, limits=limits, resolver=resolver)


def import_item(store: Store, item: SourceItem, *, now: int,
                limits: ReadLimits = DEFAULT_LIMITS,
                resolver: DnsResolver | None = None) -> list[ImportResult]:  # fmt: skip
    """Read one item and store its reports, each with the item's authentication
    (:func:`authenticate_item`; ``now`` is also the DKIM verifier's clock). StoreError
    (the store failing) propagates: that is no fault of the report, and the import should
    stop."""
    if item.error:
        return [ImportResult(item.name, None, "", "", "", 0, 0, ERROR, item.error)]
    auth = authenticate_item(item.data, resolver, now=now, limits=limits)
    found: dict[str, StoredAggregate] = {}

    def known(key: str) -> bool:  # (``key``: the reader's, of the report unauthenticated)
        stored = stored_aggregate(store, authenticated_key(key, auth.signer))
        if stored is not None:
            found[key] = stored
        return stored is not None

    results = []
    for outcome in read_reports(item.data, limits, known):
        results.append(_store_outcome(store, item.name, outcome, now=now, found=found, auth=auth))
    return results


def authenticate_item(data: bytes, resolver: DnsResolver | None, *, now: int,
                      limits: ReadLimits = DEFAULT_LIMITS) -> ReportAuth:  # fmt: skip
    """The authentication of an item: an e-mail's (:mod:`.authenticate`), checked with
    ``resolver``; :data:`.model.BARE_FILE` for anything else. Without a resolver, e-mails
    are not checked (``none``: their reports are unauthenticated)."""
    if len(data) > limits.max_input or sniff(data) != "mail":
        return BARE_FILE
    if resolver is None:
        return ReportAuth(AuthResult.NONE, reason="not checked (no resolver)")
    return authenticate(data, resolver, now=now)


def _store_outcome(
    store: Store,
    name: str,
    outcome: ReadOutcome,
    *,
    now: int,
    found: dict[str, StoredAggregate],
    auth: ReportAuth,
) -> ImportResult:
    file = f"{name} > {outcome.part}" if outcome.part else name
    if outcome.known is not None:  # (a duplicate told from its metadata: records unread)
        known, stored = outcome.known, found[outcome.known.key]
        status, error, note = _not_written(auth, stored.imported_at, now)
        return ImportResult(file, ReportKind.AGGREGATE, known.reporter, known.report_id,
                            stored.domain, stored.records, stored.messages, status, error,
                            notes=(*stored.notes, *([note] if note else [])), auth=auth,
                            auth_note=error or note, settled=bool(note))  # fmt: skip
    report = outcome.report
    if report is None:
        return ImportResult(file, outcome.kind, "", "", "", 0, 0, ERROR, outcome.error)
    report = replace(report, auth=auth)
    written = save_report(store, report, source=file, now=now)
    records, messages = _counts(report)
    status, error, settled = IMPORTED, "", ""
    if not written:
        status, error, settled = _not_written(auth, stored_at(store, report), now)
    note = error or settled or _auth_note(report)  # (an error says it once: not as a note too)
    return ImportResult(
        file=file,
        kind=report.kind,
        reporter=report.org_name or report.email,
        report_id=report.report_id,
        domain=report.domain,
        records=records,
        messages=messages,
        status=status,
        error=error,
        notes=(*report.notes, *([note] if note and not error else [])),
        auth=auth,
        auth_note=note,
        settled=bool(settled),
    )


def _not_written(auth: ReportAuth, stored: int | None, now: int) -> tuple[str, str, str]:
    """(status, error, note) of a report the store holds already under its key, stored at
    ``stored``. A ``temperror`` is no duplicate: the copy stored is the unauthenticated one
    (an earlier ``temperror``, a bare file), the e-mail's authentication is still
    undecided, and the report must be imported again (``error``: exit status 1, an IMAP
    message stays in its folder) -- for RECHECK_FOR after that copy was stored. Then it is
    settled as unauthenticated (``duplicate``, with a note; the IMAP message moves on): a
    signer whose DNS never answers must not fail every import for good, each waiting for
    its DNS."""
    if auth.result != AuthResult.TEMPERROR:
        return DUPLICATE, "", ""
    if stored is not None and now - stored >= RECHECK_FOR:
        return DUPLICATE, "", (f"still not authenticated ({auth.reason}) "
                               f"{RECHECK_FOR // 3600} hours after it was first stored: "
                               "kept unauthenticated, not checked again")  # fmt: skip
    return ERROR, (f"not authenticated for now ({auth.reason}): only an unauthenticated "
                   "copy is stored; import the e-mail again to check it again"), ""  # fmt: skip


def _auth_note(report: Report) -> str:
    """What a domain owner should know about a report e-mail's authentication, "" when it
    counts (a bare file is said once, in the docs, not per file)."""
    auth = report.auth
    if auth.result == AuthResult.TEMPERROR:
        return (f"not authenticated for now ({auth.reason}): stored unauthenticated; "
                "import the e-mail again to check it again")  # fmt: skip
    if auth is BARE_FILE or trust_of(report) == Trust.AUTHENTICATED:
        return ""
    if auth.result == AuthResult.PASS:
        note = (f"authenticated by {auth.domain}, but not sent from the address the report "
                f"names ({report.email.strip() or 'none'})")  # fmt: skip
    else:
        note = f"unauthenticated ({auth.result}: {auth.reason})"
    if isinstance(report, AggregateReport):
        note += ": not counted in summaries unless --include-unauthenticated"
    return note


def _counts(report: Report) -> tuple[int, int]:
    """(records, messages): an aggregate report's rows and the sum of their counts; a
    failure report's one reported message; a TLS report's policies (and no messages: its
    counts are TLS sessions)."""
    if isinstance(report, AggregateReport):
        return len(report.records), report.messages
    if isinstance(report, FailureReport):
        return 1, 1
    return len(report.policies), 0
