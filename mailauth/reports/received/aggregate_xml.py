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

Safe: parsed by defusedxml with DTDs forbidden (no entity expansion, no external entity or
DTD is ever fetched or read), streamed (each record is dropped from the tree once read),
at most ``max_records`` records and ``max_text`` characters per value (:mod:`.limits`).
"""

from __future__ import annotations

import ipaddress
import pyexpat
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

import defusedxml.ElementTree as defused_tree
from defusedxml import DefusedXmlException

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
_MAX_AUTH = 100  # auth_results entries (and reasons) kept per record
_MAX_NUMBER = 1 << 62
_NUMBER = re.compile(r"[0-9]{1,19}(?:\.0*)?")
# Markup a DMARC report never has, refused before expat sees it: expat 2.5 reparses a token
# that spans its input chunks from the token's start each time (a tag of a million
# attributes or namespaces costs minutes), and every element of a record is kept until the
# record ends (a flood of them costs memory and, with the collector, more than linear time).
_MAX_TAG = 4096  # octets of one start tag (UTF-16: the NUL beside the < is allowed for)
_LONG_TAG = re.compile(rb"<\x00?[A-Za-z_][^<>]{%d}" % _MAX_TAG)
_MAX_DEPTH = 32  # elements nested (a report has 6)
_MAX_ELEMENTS = 10_000  # elements in one top-level element (a record has about 30)
_MAX_OTHERS = 100  # top-level elements beside the records (metadata, policy, extensions)


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


@dataclass(slots=True)
class _State:
    """What the stream has given so far."""

    limits: ReadLimits
    known: Callable[[str], bool] | None = None
    namespace: str = ""
    root: Element | None = None
    depth: int = 0
    elements: int = 0  # in the current top-level element
    top: int = 0  # top-level elements
    in_record: bool = False
    metadata: Element | None = None
    policy: Element | None = None
    version: str = ""
    records: list[AggregateRecord] = field(default_factory=list)
    clipped: set[str] = field(default_factory=set)


def _read_with_truncation(data: bytes, limits: ReadLimits, notes: list[str],
                          known: Callable[[str], bool] | None) -> AggregateReport:  # fmt: skip
    state = _State(limits, known)
    try:
        _stream(data, state)
    except ParseError as exc:
        code = getattr(exc, "code", 0)
        if code not in _TRUNCATED or state.root is None:
            raise _XmlError(_parse_error_text(exc), encoding=code == _ENCODING) from None
        if state.in_record:
            raise _XmlError(
                f"the XML ends inside record {len(state.records) + 1} (truncated?)"
            ) from None
        if state.metadata is None or state.policy is None:
            raise _XmlError("the XML ends before its policy_published (truncated?)") from None
        notes.append(f"the XML ends before </feedback> (truncated?): {len(state.records)} "
                     "complete records read")  # fmt: skip
    except LookupError as exc:  # (an encoding Python does not know)
        raise _XmlError(str(exc), encoding=True) from None
    except DefusedXmlException:
        raise ReportReadError(
            "refused: the XML has a DTD or entity declarations (a DMARC report has none; "
            "they are never read)"
        ) from None
    except RecursionError:
        raise ReportReadError("refused: XML nested too deeply") from None
    return _build(state, notes)


def _parse_error_text(exc: ParseError) -> str:
    return str(exc).splitlines()[0]


def _stream(data: bytes, state: _State) -> None:
    """Parse ``data`` in one pass of expat with entity expansion and DTDs refused (the
    handlers defusedxml's parser installs), calling the tree builder straight from expat's
    callbacks: no pure-Python parser layer or event queue per element (the import's
    speed; the elements built are those iterparse built, attributes left out: none is
    read)."""
    defused = defused_tree.DefusedXMLParser(forbid_dtd=True)
    expat = defused.parser
    builder = TreeBuilder()
    start, end = builder.start, builder.end
    no_attributes: dict[str, str] = {}

    def on_start(tag: str, _attributes: object) -> None:
        elem = start(_TAGS.get(tag) or _tag(tag), no_attributes)
        state.depth += 1
        state.elements += 1
        if state.depth > _MAX_DEPTH:
            raise ReportReadError(f"refused: XML nested more than {_MAX_DEPTH} elements deep")
        if state.elements > _MAX_ELEMENTS:
            raise ReportReadError(f"refused: more than {_MAX_ELEMENTS:,} elements in one "
                                  "top-level element")  # fmt: skip
        if state.depth == 1:
            namespace, name = _split(elem.tag)
            if name != "feedback":
                shown = clip(name, 60)
                raise _XmlError(f"the root element is <{shown}>, not <feedback>", markup=False)
            state.root, state.namespace = elem, namespace
        elif state.depth == 2:
            state.elements = 1
            state.top += 1
            if state.top > state.limits.max_records + _MAX_OTHERS:
                raise ReportReadError(f"refused: more than {state.limits.max_records:,} "
                                      "elements in <feedback>")  # fmt: skip
            state.in_record = _split(elem.tag)[1] == "record"

    def on_end(tag: str) -> None:
        elem = end(_TAGS.get(tag) or _tag(tag))
        state.depth -= 1
        if state.depth == 1:
            _top_level(_split(elem.tag)[1], elem, state)
            state.in_record = False
            if state.root is not None:
                state.root.clear()  # (what was read is dropped: memory holds one record)

    expat.StartElementHandler = on_start
    expat.EndElementHandler = on_end
    expat.CharacterDataHandler = builder.data
    try:
        for start_at in range(0, len(data), _CHUNK):  # (expat copies what it is given)
            expat.Parse(data[start_at : start_at + _CHUNK], False)
        expat.Parse(b"", True)
    except pyexpat.ExpatError as exc:
        error = ParseError(str(exc))
        error.code = exc.code
        error.position = exc.lineno, exc.offset
        raise error from None


_TAGS: dict[str, str] = {}  # expat's "namespace}name" to ElementTree's "{namespace}name"


def _tag(tag: str) -> str:
    """ElementTree's form of expat's name ``tag`` (cached, up to a bound)."""
    found = "{" + tag if "}" in tag else tag
    if len(_TAGS) < 1000:  # (names an attacker makes up do not fill the memory)
        _TAGS[tag] = found
    return found


def _top_level(name: str, elem: Element, state: _State) -> None:
    if name == "report_metadata" and state.metadata is None:
        state.metadata = elem
        if state.known is not None:
            _check_known(elem, state.known, state)
    elif name == "policy_published" and state.policy is None:
        state.policy = elem
    elif name == "version":
        state.version = (elem.text or "").strip()
    elif name == "record":
        if len(state.records) >= state.limits.max_records:
            raise ReportReadError(f"refused: more than {state.limits.max_records:,} records")
        state.records.append(_record(elem, len(state.records) + 1, state))


def _check_known(metadata: Element, known: Callable[[str], bool], state: _State) -> None:
    """KnownReport when ``known`` knows the key of the report with this metadata (a
    report without a Report-ID is left to be refused when it is built)."""
    meta = _children(metadata)
    report_id = _text(meta, "report_id", state)
    if report_id:
        org_name, email = _text(meta, "org_name", state), _text(meta, "email", state)
        key = report_key(ReportKind.AGGREGATE, org_name, email, report_id)
        if known(key):
            raise KnownReport(key, org_name or email, report_id)


_SPLIT: dict[str, tuple[str, str]] = {}  # (the names of a report recur: parsed once)


def _split(tag: str) -> tuple[str, str]:
    found = _SPLIT.get(tag)
    if found is not None:
        return found
    namespace, name = "", tag
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
    if len(_SPLIT) < 1000:  # (names an attacker makes up do not fill the memory)
        _SPLIT[tag] = (namespace, name)
    return namespace, name


def _children(elem: Element | None) -> dict[str, list[Element]]:
    found: dict[str, list[Element]] = {}
    if elem is not None:
        for child in elem:
            if isinstance(child.tag, str):
                found.setdefault(_split(child.tag)[1], []).append(child)
    return found


def _first(kids: dict[str, list[Element]], name: str) -> Element | None:
    elems = kids.get(name)
    return elems[0] if elems else None


def _text(kids: dict[str, list[Element]], name: str, state: _State, *, lower: bool = False) -> str:
    elems = kids.get(name)
    if not elems:
        return ""
    elem = elems[0]
    text = ("".join(elem.itertext()) if len(elem) else elem.text or "").strip()
    if len(text) > state.limits.max_text:
        state.clipped.add(name)
        text = clip(text, state.limits.max_text)
    return text.lower() if lower else text


def _number(text: str, what: str) -> int:
    whole = text.partition(".")[0]
    if not _NUMBER.fullmatch(text) or int(whole) > _MAX_NUMBER:
        shown = clip(text, 40)
        raise ReportReadError(f"{what} is not a number: {shown!r}")
    return int(whole)


def _record(elem: Element, number: int, state: _State) -> AggregateRecord:
    kids = _children(elem)
    rows = kids.get("row")
    if not rows:
        raise ReportReadError(f"record {number} has no <row>")
    row = _children(rows[0])
    ip_text = _text(row, "source_ip", state)
    try:
        source_ip = str(ipaddress.ip_address(ip_text))
    except ValueError:
        shown = clip(ip_text, 60)
        raise ReportReadError(
            f"record {number}: source_ip is not an IP address: {shown!r}"
        ) from None
    count = _number(_text(row, "count", state), f"record {number}: count")
    if count > state.limits.max_count:
        raise ReportReadError(f"record {number}: count {count:,} is more than "
                              f"{state.limits.max_count:,} messages (forged?)")  # fmt: skip
    evaluated = _children(_first(row, "policy_evaluated"))
    reasons = []
    for reason in evaluated.get("reason", [])[:_MAX_AUTH]:
        parts = _children(reason)
        kind, comment = _text(parts, "type", state, lower=True), _text(parts, "comment", state)
        if kind or comment:
            reasons.append(Reason(kind, comment))
    identifiers = _children(_first(kids, "identifiers"))
    auth = _children(_first(kids, "auth_results"))
    return AggregateRecord(
        source_ip=source_ip,
        count=count,
        disposition=_text(evaluated, "disposition", state, lower=True),
        dkim=_text(evaluated, "dkim", state, lower=True),
        spf=_text(evaluated, "spf", state, lower=True),
        reasons=tuple(reasons),
        header_from=_text(identifiers, "header_from", state, lower=True),
        envelope_from=_text(identifiers, "envelope_from", state, lower=True),
        envelope_to=_text(identifiers, "envelope_to", state, lower=True),
        auth_dkim=tuple(_dkim(e, state) for e in auth.get("dkim", [])[:_MAX_AUTH]),
        auth_spf=tuple(_spf(e, state) for e in auth.get("spf", [])[:_MAX_AUTH]),
    )


def _dkim(elem: Element, state: _State) -> DkimAuth:
    kids = _children(elem)
    return DkimAuth(
        _text(kids, "domain", state, lower=True),
        _text(kids, "selector", state),
        _text(kids, "result", state, lower=True),
        _text(kids, "human_result", state),
    )


def _spf(elem: Element, state: _State) -> SpfAuth:
    kids = _children(elem)
    return SpfAuth(
        _text(kids, "domain", state, lower=True),
        _text(kids, "scope", state, lower=True),
        _text(kids, "result", state, lower=True),
        _text(kids, "human_result", state),
    )


def _build(state: _State, notes: list[str]) -> AggregateReport:
    if state.metadata is None:
        raise ReportReadError("no <report_metadata>")
    if state.policy is None:
        raise ReportReadError("no <policy_published>")
    meta = _children(state.metadata)
    report_id = _text(meta, "report_id", state)
    if not report_id:
        raise ReportReadError("no <report_id> in <report_metadata>")
    dates = _children(_first(meta, "date_range"))
    begin_text, end_text = _text(dates, "begin", state), _text(dates, "end", state)
    if not begin_text or not end_text:
        raise ReportReadError("no <date_range> with <begin> and <end> in <report_metadata>")
    begin = _number(begin_text, "date_range begin")
    end = _number(end_text, "date_range end")
    policy = _policy(_children(state.policy), state)
    if not policy.domain:
        raise ReportReadError("no <domain> in <policy_published>")
    errors = tuple(clip("".join(e.itertext()).strip(), state.limits.max_text)
                   for e in meta.get("error", [])[:_MAX_AUTH])  # fmt: skip
    org_name, email = _text(meta, "org_name", state), _text(meta, "email", state)
    extra = _text(meta, "extra_contact_info", state)
    generator = _text(meta, "generator", state)
    if state.clipped:
        names = ", ".join(sorted(state.clipped))
        notes.append(f"text longer than {state.limits.max_text} characters cut: {names}")
    return AggregateReport(
        org_name=org_name,
        email=email,
        report_id=report_id,
        begin=begin,
        end=end,
        policy=policy,
        records=tuple(state.records),
        extra_contact_info=extra,
        generator=generator,
        errors=errors,
        format=_format(state.namespace),
        notes=tuple(notes),
    )


def _policy(kids: dict[str, list[Element]], state: _State) -> ReportedPolicy:
    def word(name: str) -> str:
        return _text(kids, name, state, lower=True)

    return ReportedPolicy(
        domain=word("domain"), p=word("p"), sp=word("sp"), np=word("np"), adkim=word("adkim"),
        aspf=word("aspf"), pct=word("pct"), fo=word("fo"), testing=word("testing"),
        discovery_method=word("discovery_method"),
    )  # fmt: skip


def _format(namespace: str) -> str:
    """``rfc9990`` (its namespace), ``rfc7489`` (none), or ``draft`` (another namespace)."""
    if namespace == NAMESPACE:
        return "rfc9990"
    return "rfc7489" if not namespace else "draft"
