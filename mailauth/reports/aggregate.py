"""RFC 9990 aggregate report XML (namespace ``urn:ietf:params:xml:ns:dmarc-2.0``), written
as a stream of text pieces from the store's rows, and compressed as it is written: memory
holds one row and the compressed output, whatever the number of messages counted.

Pure: it takes the report's metadata, the published policy and an iterable of rows (as
:mod:`.outgoing` streams them from the store). Element order follows RFC 9990's tables;
every value is escaped, and the schema (fixtures/dmarc-reports/dmarc-2.0.xsd) validates
what is written (tests/test_reports_aggregate.py).
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"


@dataclass(frozen=True, slots=True)
class ReportMetadata:
    """RFC 9990 "report_metadata"."""

    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    extra_contact_info: str = ""
    generator: str = "mailauth"


@dataclass(frozen=True, slots=True)
class PolicyColumns:
    """A ``report_policies`` row as the store holds it (text columns; "" when absent)."""

    domain: str
    p: str
    sp: str
    np: str
    adkim: str
    aspf: str
    testing: str
    psd: str
    fo: str
    discovery: str
    rua: str
    ruf: str


# A ``report_counts`` row: source_ip, header_from, envelope_from, envelope_to, dkim (JSON),
# spf_domain, spf_scope, spf_result, dmarc_dkim, dmarc_spf, disposition, reasons (JSON),
# messages.
Row = tuple[str, str, str, str, str, str, str, str, str, str, str, str, int]


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
# XML 1.0 2.2 Char: what is not one (C0 controls but TAB/LF/CR, surrogates, U+FFFE/FFFF)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _e(text: str) -> str:
    """Character data escaped (XML 1.0 2.4), and any character XML cannot carry replaced
    by U+FFFD (:func:`mailauth.reports.observe.observe` did it for what it records; this
    covers the settings and rows that other writers left in the store)."""
    if not text.isprintable():
        text = _NOT_XML.sub("\ufffd", text)
    if "&" in text or "<" in text or ">" in text:
        return text.translate(_ESCAPES)
    return text


def render_report(
    metadata: ReportMetadata, policy: PolicyColumns, rows: Iterable[Row]
) -> Iterator[str]:
    """The report's XML, a piece at a time (one per record)."""
    yield '<?xml version="1.0" encoding="UTF-8"?>\n'
    yield f'<feedback xmlns="{NAMESPACE}">\n  <version>1.0</version>\n'
    yield _metadata(metadata)
    yield _policy(policy)
    for row in rows:
        yield _record(row)
    yield "</feedback>\n"


def _metadata(m: ReportMetadata) -> str:
    extra = (
        f"    <extra_contact_info>{_e(m.extra_contact_info)}</extra_contact_info>\n"
        if m.extra_contact_info
        else ""
    )
    return (
        "  <report_metadata>\n"
        f"    <org_name>{_e(m.org_name)}</org_name>\n"
        f"    <email>{_e(m.email)}</email>\n"
        f"{extra}"
        f"    <report_id>{_e(m.report_id)}</report_id>\n"
        f"    <date_range>\n      <begin>{m.begin}</begin>\n      <end>{m.end}</end>\n"
        "    </date_range>\n"
        f"    <generator>{_e(m.generator)}</generator>\n"
        "  </report_metadata>\n"
    )


def _policy(p: PolicyColumns) -> str:
    parts = [f"    <domain>{_e(p.domain)}</domain>\n"]
    if p.discovery:
        parts.append(f"    <discovery_method>{_e(p.discovery)}</discovery_method>\n")
    parts.append(f"    <p>{_e(p.p)}</p>\n")
    for tag, value in (("sp", p.sp), ("np", p.np), ("fo", p.fo), ("adkim", p.adkim)):
        if value:
            parts.append(f"    <{tag}>{_e(value)}</{tag}>\n")
    for tag, value in (("aspf", p.aspf), ("testing", p.testing)):
        if value:
            parts.append(f"    <{tag}>{_e(value)}</{tag}>\n")
    return "  <policy_published>\n" + "".join(parts) + "  </policy_published>\n"


def _record(row: Row) -> str:
    (ip, header_from, envelope_from, envelope_to, dkim, spf_domain, spf_scope, spf_result,
     dmarc_dkim, dmarc_spf, disposition, reasons, messages) = row  # fmt: skip
    out = [
        "  <record>\n    <row>\n",
        f"      <source_ip>{_e(ip)}</source_ip>\n      <count>{int(messages)}</count>\n",
        "      <policy_evaluated>\n",
        f"        <disposition>{_e(disposition)}</disposition>\n",
        f"        <dkim>{_e(dmarc_dkim)}</dkim>\n        <spf>{_e(dmarc_spf)}</spf>\n",
    ]
    if reasons != "[]":
        out.append(_reasons(reasons))
    out.append("      </policy_evaluated>\n    </row>\n    <identifiers>\n")
    out.append(f"      <header_from>{_e(header_from)}</header_from>\n")
    out.append(f"      <envelope_from>{_e(envelope_from)}</envelope_from>\n")
    if envelope_to:
        out.append(f"      <envelope_to>{_e(envelope_to)}</envelope_to>\n")
    out.append("    </identifiers>\n    <auth_results>\n")
    if dkim != "[]":
        out.append(_dkim(dkim))
    if spf_domain:
        scope = f"<scope>{_e(spf_scope)}</scope>" if spf_scope else ""
        out.append(
            f"      <spf><domain>{_e(spf_domain)}</domain>{scope}"
            f"<result>{_e(spf_result)}</result></spf>\n"
        )
    out.append("    </auth_results>\n  </record>\n")
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _dkim(text: str) -> str:
    """The auth_results/dkim elements of a row's DKIM list (as the store keeps it: JSON;
    memoised, as the same lists recur row after row)."""
    return "".join(
        f"      <dkim><domain>{_e(domain)}</domain><selector>{_e(selector)}</selector>"
        f"<result>{_e(result)}</result></dkim>\n"
        for domain, selector, result in json.loads(text)
    )


@functools.lru_cache(maxsize=1024)
def _reasons(text: str) -> str:
    """The policy_evaluated/reason elements of a row's override reasons (JSON)."""
    parts = []
    for kind, comment in json.loads(text):
        note = f"<comment>{_e(comment)}</comment>" if comment else ""
        parts.append(f"        <reason><type>{_e(kind)}</type>{note}</reason>\n")
    return "".join(parts)


class ReportTooLarge(ValueError):
    """The compressed report grew past its limit (the build stopped there)."""


def gzip_pieces(pieces: Iterable[str], level: int = 6, *, limit: int | None = None) -> bytes:
    """The pieces, UTF-8 encoded, as one gzip member (RFC 1952), compressed as they come;
    ReportTooLarge once the compressed bytes pass ``limit`` (memory stays near it)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # (31: gzip header and trailer)
    out: list[bytes] = []
    pending: list[str] = []
    size = total = 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= 1 << 16:
            out.append(compressor.compress("".join(pending).encode("utf-8")))
            pending, size = [], 0
            total += len(out[-1])
            _check_size(total, limit)
    out.append(compressor.compress("".join(pending).encode("utf-8")))
    out.append(compressor.flush())
    _check_size(total + len(out[-2]) + len(out[-1]), limit)
    return b"".join(out)


def _check_size(total: int, limit: int | None) -> None:
    if limit is not None and total > limit:
        raise ReportTooLarge(f"larger than {limit} bytes compressed")
