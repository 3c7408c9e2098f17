"""One input (a file, a mailbox message) to the reports it holds.

What an input is, is told from its first octets, not its name: gzip or zip (:mod:`.containers`),
XML (an aggregate report, :mod:`.aggregate_xml`), JSON (a TLS report, :mod:`.tls_json`), or
an e-mail (:mod:`.mail`: attachments read in turn, or a failure report). Containers nest up
to ``max_depth``; everything one input expands to shares one budget of ``max_expanded``
octets. Each report found, and each part that cannot be read, is one :class:`ReadOutcome`:
a zip holding three reports gives three, one of them perhaps an error, and the others are
still read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mailauth.reports.received.aggregate_xml import KnownReport, read_aggregate
from mailauth.reports.received.containers import (
    GZIP_MAGIC,
    ZIP_MAGIC,
    Budget,
    gunzip,
    zip_members,
)
from mailauth.reports.received.limits import (
    DEFAULT_LIMITS,
    ReadLimits,
    ReportReadError,
    describe_size,
)
from mailauth.reports.received.mail import read_mail
from mailauth.reports.received.model import Report, ReportKind
from mailauth.reports.received.tls_json import read_tls

_HEADER_START = re.compile(rb"(?:From [^\r\n]*\r?\n)?[!-9;-~]{1,200}[ \t]*:")
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    """A report read from an input, or why a part of it could not be: ``part`` says where
    (member and attachment names, ``a.zip > b.xml``; "" for the input itself), ``kind``
    what it was to be when that is known."""

    part: str
    report: Report | None
    error: str = ""
    kind: ReportKind | None = None
    known: KnownReport | None = None


def read_reports(data: bytes, limits: ReadLimits = DEFAULT_LIMITS,
                 known: Callable[[str], bool] | None = None) -> list[ReadOutcome]:  # fmt: skip
    """Every report in ``data`` (never raises ReportReadError: each problem is an outcome).
    ``known``: see :func:`.aggregate_xml.read_aggregate` (a duplicate's records unread)."""
    if len(data) > limits.max_input:
        return [ReadOutcome("", None, f"refused: larger than {describe_size(limits.max_input)}")]
    budget = Budget(limits.max_expanded, limits.max_expanded)
    return list(_read(data, "", 0, budget, limits, known=known))


def sniff(data: bytes) -> str:
    """``gzip``, ``zip``, ``xml``, ``json``, ``mail`` or ``unknown``, from the first octets."""
    if data.startswith(GZIP_MAGIC):
        return "gzip"
    if data.startswith(ZIP_MAGIC):
        return "zip"
    head = data[:1024]
    if head.startswith(_BOMS[1:]):
        return "xml"  # (UTF-16: only XML declares itself so)
    head = head.removeprefix(_BOMS[0]).lstrip()
    if head.startswith(b"<"):
        return "xml"
    if head.startswith(b"{"):
        return "json"
    if _HEADER_START.match(head):
        return "mail"
    return "unknown"


_KINDS = {"xml": ReportKind.AGGREGATE, "json": ReportKind.TLS}


def _read(data: bytes, part: str, depth: int, budget: Budget, limits: ReadLimits,
          *, known: Callable[[str], bool] | None = None) -> Iterator[ReadOutcome]:  # fmt: skip
    kind = sniff(data)
    try:
        if kind in ("gzip", "zip", "mail") and depth >= limits.max_depth:
            raise ReportReadError(f"refused: containers nested more than {limits.max_depth} deep")
        if kind == "gzip":
            yield from _read(gunzip(data, budget), part, depth + 1, budget, limits, known=known)
        elif kind == "zip":
            members = zip_members(data, budget, limits.max_members)
            if not members:
                raise ReportReadError("a zip archive with no files in it")
            for name, content in members:
                yield from _read(content, _join(part, name), depth + 1, budget, limits, known=known)
        elif kind == "xml":
            try:
                report = read_aggregate(data, limits, known)
            except KnownReport as found:
                yield ReadOutcome(part, None, kind=ReportKind.AGGREGATE, known=found)
            else:
                yield ReadOutcome(part, report, kind=ReportKind.AGGREGATE)
        elif kind == "json":
            yield ReadOutcome(part, read_tls(data, limits), kind=ReportKind.TLS)
        elif kind == "mail":
            yield from _read_mail(data, part, depth, budget, limits, known=known)
        else:
            raise ReportReadError("not a report: neither XML, JSON, gzip, zip nor an e-mail")
    except ReportReadError as exc:
        yield ReadOutcome(part, None, str(exc), _KINDS.get(kind))


def _read_mail(data: bytes, part: str, depth: int, budget: Budget, limits: ReadLimits,
               *, known: Callable[[str], bool] | None) -> Iterator[ReadOutcome]:  # fmt: skip
    contents = read_mail(data, limits)
    if contents.failure is not None:
        yield ReadOutcome(part, contents.failure, kind=ReportKind.FAILURE)
    for attachment in contents.attachments:
        yield from _read(attachment.content, _join(part, attachment.name), depth + 1, budget,
                         limits, known=known)  # fmt: skip


def _join(part: str, name: str) -> str:
    return f"{part} > {name}" if part else name
