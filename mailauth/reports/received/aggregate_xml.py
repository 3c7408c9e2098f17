"""DMARC aggregate report XML as domain owners receive it: RFC 9990 (namespace
``urn:ietf:params:xml:ns:dmarc-2.0``), RFC 7489 appendix C and the drafts before it (no
namespace, or another one; ``<version>`` present or not, ``pct`` instead of ``testing``).

Tolerant where the real world needs it and the data stays unambiguous: result words in any
case (``Pass`` is ``pass``), optional elements left out or empty (an empty ``<reason>`` is
no reason), surrounding white space, text outside the elements; XML that is not
well-formed is repaired by :mod:`.xml_repair` when the repair cannot change what a value
means (a file cut short after a complete record, a wrong encoding declaration, a stray
``<`` or ``&`` inside a value, junk around ``<feedback>``), and the report's ``notes`` say
so. Strict where it matters: a report without a Report-ID, a date range or a policy domain,
a record without a source IP address or a count, a count that is not a number, is refused
with one line that says which.

Safe: parsed by expat with defusedxml's handlers and DTDs forbidden (no entity expansion, no
external entity or DTD is ever fetched or read), streamed: the values read are collected
from expat's callbacks (:mod:`.aggregate_stream`, no element tree), each record built as it
ends; at most ``max_records`` records and ``max_text`` characters per value
(:mod:`.limits`), caps on nesting and element counts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import pyexpat
import re
import socket
from collections.abc import Callable

import defusedxml.ElementTree as defused_tree
from defusedxml import DefusedXmlException

from mailauth.reports.received.aggregate_stream import Collector, NotAReport, Record, Values
from mailauth.reports.received.limits import DEFAULT_LIMITS, ReadLimits, ReportReadError, clip
from mailauth.reports.received.model import (
    AggregateRecord,
    AggregateReport,
    DkimAuth,
    Reason,
    ReportedPolicy,
    ReportKind,
    SpfAuth,
    report_key,
)
from mailauth.reports.received.xml_repair import fix_declaration, repair_markup

NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"
_TRUNCATED = {3, 5, 6}  # expat: no element found, unclosed token, partial character
_ENCODING = 19  # expat: encoding specified in XML declaration is incorrect
_CHUNK = 1 << 16  # octets given to expat at a time
_MAX_NUMBER = 1 << 62
_NUMBER = re.compile(r"[0-9]{1,19}(?:\.0*)?")
# Markup a DMARC report never has, refused before expat sees it: expat 2.5 reparses a token
# that spans its input chunks from the token's start each time (a tag of a million
# attributes or namespaces costs minutes). (Depth, element and top-level caps: at each start
# tag, :mod:`.aggregate_stream`.)
_MAX_TAG = 4096  # octets of one start tag (UTF-16: the NUL beside the < is allowed for)
_LONG_TAG = re.compile(rb"<\x00?[A-Za-z_][^<>]{%d}" % _MAX_TAG)


def read_aggregate(data: bytes, limits: ReadLimits = DEFAULT_LIMITS,
                   known: Callable[[str], bool] | None = None) -> AggregateReport:  # fmt: skip
    """The aggregate report in ``data`` (XML); ReportReadError with one line when it cannot
    be read or is refused. ``known``, when given, is asked with the report's key
    (:func:`.model.report_key`) as soon as ``<report_metadata>`` has been read: when it
    answers True, :class:`KnownReport` is raised and the records are not read."""
    notes: list[str] = []
    if _LONG_TAG.search(data):
        raise ReportReadError(f"refused: a tag longer than {_MAX_TAG:,} octets "
                              "(a DMARC report has none)")  # fmt: skip
    try:
        return _read_with_truncation(data, limits, notes, known)
    except _XmlError as first:
        error = first
    if error.encoding:
        fixed = fix_declaration(data)
        if fixed is not None:
            notes.append("the XML declaration names the wrong encoding: read as UTF-8")
            try:
                return _read_with_truncation(fixed, limits, notes, known)
            except _XmlError as second:
                error, data = second, fixed
    repaired = repair_markup(data)
    if repaired is not None and repaired != data:
        try:
            report = _read_with_truncation(repaired, limits, [], known)
        except _XmlError:
            pass
        else:
            note = f"repaired XML: {error.text}"
            return _with_notes(report, [*notes, note, *report.notes])
    if not error.markup:
        raise ReportReadError(f"not a DMARC aggregate report: {error.text}")
    raise ReportReadError(f"not well-formed XML: {error.text}")


class KnownReport(Exception):
    """The report's key is known (a duplicate): its metadata, its records left unread."""

    def __init__(self, key: str, reporter: str, report_id: str) -> None:
        super().__init__(key)
        self.key = key
        self.reporter = reporter
        self.report_id = report_id


class _XmlError(Exception):
    """XML that could not be read as it is (``markup``: not well-formed; ``encoding``: the
    declared encoding is wrong or unknown)."""

    def __init__(self, text: str, *, encoding: bool = False, markup: bool = True) -> None:
        super().__init__(text)
        self.text = text
        self.encoding = encoding
        self.markup = markup


def _with_notes(report: AggregateReport, notes: list[str]) -> AggregateReport:
    return AggregateReport(
        report.org_name, report.email, report.report_id, report.begin, report.end,
        report.policy, report.records, report.extra_contact_info, report.generator,
        report.errors, report.format, tuple(notes),
    )  # fmt: skip


def _read_with_truncation(data: bytes, limits: ReadLimits, notes: list[str],
                          known: Callable[[str], bool] | None) -> AggregateReport:  # fmt: skip
    records: list[AggregateRecord] = []
    collector = Collector(limits, lambda record, number: None)

    def on_record(record: Record, number: int) -> None:
        if number > limits.max_records:
            raise ReportReadError(f"refused: more than {limits.max_records:,} records")
        records.append(_record(record, number, collector))

    def on_metadata() -> None:
        if known is not None:
            _check_known(collector.metadata, known)

    collector.on_record, collector.on_metadata = on_record, on_metadata
    try:
        _stream(data, collector)
    except pyexpat.ExpatError as exc:
        text = str(exc).splitlines()[0]
        if exc.code not in _TRUNCATED or not collector.root:
            raise _XmlError(text, encoding=exc.code == _ENCODING) from None
        if collector.in_record:
            raise _XmlError(
                f"the XML ends inside record {collector.records + 1} (truncated?)"
            ) from None
        if not collector.have_metadata or not collector.have_policy:
            raise _XmlError("the XML ends before its policy_published (truncated?)") from None
        notes.append(f"the XML ends before </feedback> (truncated?): {len(records)} "
                     "complete records read")  # fmt: skip
    except NotAReport as exc:
        shown = clip(exc.name, 60)
        raise _XmlError(f"the root element is <{shown}>, not <feedback>", markup=False) from None
    except LookupError as exc:  # (an encoding Python does not know)
        raise _XmlError(str(exc), encoding=True) from None
    except DefusedXmlException:
        raise ReportReadError(
            "refused: the XML has a DTD or entity declarations (a DMARC report has none; "
            "they are never read)"
        ) from None
    return _build(collector, records, notes)


def _stream(data: bytes, collector: Collector) -> None:
    """Parse ``data`` in one pass of expat with DTDs and entity declarations refused (the
    handlers defusedxml's parser installs), the collector's handlers called straight from
    expat's callbacks (:mod:`.aggregate_stream`: no element tree, no event queue)."""
    expat = defused_tree.DefusedXMLParser(forbid_dtd=True).parser
    collector.install(expat)
    for start_at in range(0, len(data), _CHUNK):  # (expat copies what it is given)
        expat.Parse(data[start_at : start_at + _CHUNK], False)
    expat.Parse(b"", True)


def _check_known(metadata: Values, known: Callable[[str], bool]) -> None:
    """KnownReport when ``known`` knows the key of the report with this metadata (a
    report without a Report-ID is left to be refused when it is built)."""
    report_id = metadata.get("report_id", "")
    if report_id:
        org_name, email = metadata.get("org_name", ""), metadata.get("email", "")
        key = report_key(ReportKind.AGGREGATE, org_name, email, report_id)
        if known(key):
            raise KnownReport(key, org_name or email, report_id)


def _number(text: str, what: str) -> int:
    if text.isdigit() and text.isascii() and len(text) < 19:  # (the common case, quickly)
        return int(text)
    whole = text.partition(".")[0]
    if not _NUMBER.fullmatch(text) or int(whole) > _MAX_NUMBER:
        shown = clip(text, 40)
        raise ReportReadError(f"{what} is not a number: {shown!r}")
    return int(whole)


def _address(text: str, number: int) -> str:
    """The IP address ``text``, as Python writes it (an IPv4 address already written so,
    the common case, told by the C library's parser)."""
    with contextlib.suppress(OSError, ValueError):  # (not one: Python's parser says)
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        shown = clip(text, 60)
        raise ReportReadError(
            f"record {number}: source_ip is not an IP address: {shown!r}"
        ) from None


def _record(record: Record, number: int, collector: Collector) -> AggregateRecord:
    values, reasons, dkims, spfs = record
    if not collector.saw_row():
        raise ReportReadError(f"record {number} has no <row>")
    get = values.get
    source_ip = _address(get("source_ip", ""), number)
    count = _number(get("count", ""), f"record {number}: count")
    if count > collector.limits.max_count:
        raise ReportReadError(f"record {number}: count {count:,} is more than "
                              f"{collector.limits.max_count:,} messages (forged?)")  # fmt: skip
    return AggregateRecord(
        source_ip, count, get("disposition", ""), get("dkim", ""), get("spf", ""),
        tuple(_reasons(reasons)) if reasons else (),
        get("header_from", ""), get("envelope_from", ""), get("envelope_to", ""),
        tuple(map(_dkim, dkims)), tuple(map(_spf, spfs)),
    )  # fmt: skip


def _reasons(reasons: list[Values]) -> list[Reason]:
    found = []
    for reason in reasons:
        kind, comment = reason.get("type", ""), reason.get("comment", "")
        if kind or comment:
            found.append(Reason(kind, comment))
    return found


def _dkim(values: Values) -> DkimAuth:
    get = values.get
    return DkimAuth(get("domain", ""), get("selector", ""), get("result", ""),
                    get("human_result", ""))  # fmt: skip


def _spf(values: Values) -> SpfAuth:
    get = values.get
    return SpfAuth(get("domain", ""), get("scope", ""), get("result", ""),
                   get("human_result", ""))  # fmt: skip


def _build(
    collector: Collector, records: list[AggregateRecord], notes: list[str]
) -> AggregateReport:
    if not collector.have_metadata:
        raise ReportReadError("no <report_metadata>")
    if not collector.have_policy:
        raise ReportReadError("no <policy_published>")
    meta = collector.metadata
    report_id = meta.get("report_id", "")
    if not report_id:
        raise ReportReadError("no <report_id> in <report_metadata>")
    begin_text, end_text = meta.get("begin", ""), meta.get("end", "")
    if not begin_text or not end_text:
        raise ReportReadError("no <date_range> with <begin> and <end> in <report_metadata>")
    begin = _number(begin_text, "date_range begin")
    end = _number(end_text, "date_range end")
    policy = ReportedPolicy(**{name: collector.policy.get(name, "") for name in _POLICY})
    if not policy.domain:
        raise ReportReadError("no <domain> in <policy_published>")
    if collector.clipped:
        names = ", ".join(sorted(collector.clipped))
        notes.append(f"text longer than {collector.limits.max_text} characters cut: {names}")
    return AggregateReport(
        org_name=meta.get("org_name", ""),
        email=meta.get("email", ""),
        report_id=report_id,
        begin=begin,
        end=end,
        policy=policy,
        records=tuple(records),
        extra_contact_info=meta.get("extra_contact_info", ""),
        generator=meta.get("generator", ""),
        errors=tuple(collector.errors),
        format=_format(collector.namespace),
        notes=tuple(notes),
    )


_POLICY = ("domain", "p", "sp", "np", "adkim", "aspf", "pct", "fo", "testing",
           "discovery_method")  # fmt: skip


def _format(namespace: str) -> str:
    """``rfc9990`` (its namespace), ``rfc7489`` (none), or ``draft`` (another namespace)."""
    if namespace == NAMESPACE:
        return "rfc9990"
    return "rfc7489" if not namespace else "draft"
