"""Report destinations: the rua/ruf URIs of a DMARC record, and whether they may be used.

RFC 9989 4.7 and 4.8: ``rua=`` and ``ruf=`` hold comma-separated URIs; a Mail Receiver that
sends reports MUST support ``mailto:`` and MUST ignore URIs of schemes it does not support
(every scheme but ``mailto:`` here); a URI followed by ``!size`` (``obs-dmarc-report-size``)
is obsolete syntax whose size reporters ignore. RFC 9990 3 (Report Delivery): malformed URIs
SHOULD be ignored. :func:`parse_report_uris` is pure and keeps the reason for every URI it
sets aside.

RFC 9990 4 (Verifying External Destinations; RFC 9991 5 for ``ruf``):
:func:`verify_destinations` is a plan (:mod:`mailauth.plan`) that asks
``<policy-domain>._report._dmarc.<destination-host>`` for each destination outside the
policy domain's Organizational Domain; a temporary DNS failure is ``tempfail`` (try again
later), never a refusal.

Out of scope: schemes other than ``mailto:`` (https: reporting is not specified), the header
fields of a mailto URI (``?subject=...``: ignored, the report's fields are fixed by RFC 9990).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote_to_bytes

from mailauth.dmarc.discovery import organizational_domain, psl_organizational_domain, tree_walk
from mailauth.dmarc.record import NotDmarcRecord, ReportUri, parse_dmarc_record
from mailauth.dns import DnsStatus, Query, RRType
from mailauth.domains import MAX_NAME, host_name
from mailauth.errors import InvalidDomainError
from mailauth.plan import Plan, parallel, resolve

MAX_DESTINATIONS = 10  # RFC 9990 3: "up to the Receiver's limits on supported URIs"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)\Z", re.DOTALL)
_SIZE = re.compile(r"!([0-9]+[kmgtKMGT]?)\Z")  # RFC 9989 4.8 obs-dmarc-report-size
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")  # RFC 5322 3.2.3
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')  # 3.2.4, no FWS


@dataclass(frozen=True, slots=True)
class ReportAddress:
    """One mailbox a report goes to: the URI it came from (without any ``!size``), the
    address (``local@domain``, the domain as a lowercase A-label) and the domain."""

    uri: str
    address: str
    domain: str


@dataclass(frozen=True, slots=True)
class IgnoredUri:
    """A URI that will not be used, and why."""

    uri: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedUris:
    """What :func:`parse_report_uris` made of a list: the addresses to use, in order, the
    URIs set aside, and notes on what was ignored within the ones kept (``!size``, header
    fields)."""

    addresses: tuple[ReportAddress, ...]
    ignored: tuple[IgnoredUri, ...] = ()
    notes: tuple[str, ...] = ()


def parse_report_uris(
    uris: str | Iterable[str | ReportUri], *, limit: int = MAX_DESTINATIONS
) -> ParsedUris:
    """The mailto: addresses of a ``rua=``/``ruf=`` value (a string, split at commas) or of
    a list of URIs (strings or :class:`ReportUri`), at most ``limit`` of them."""
    items: Iterable[str | ReportUri] = uris.split(",") if isinstance(uris, str) else uris
    addresses: list[ReportAddress] = []
    ignored: list[IgnoredUri] = []
    notes: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = (item.uri if isinstance(item, ReportUri) else item).strip(" \t")
        if not text:
            continue
        found, reason = _parse_one(text, notes)
        if reason:
            ignored.append(IgnoredUri(text, reason))
            continue
        for address in found:
            if address.address in seen:
                continue
            if len(addresses) >= limit:
                ignored.append(IgnoredUri(text, f"more than {limit} destinations: not used"))
                break
            seen.add(address.address)
            addresses.append(address)
    return ParsedUris(tuple(addresses), tuple(ignored), tuple(notes))


def _parse_one(text: str, notes: list[str]) -> tuple[list[ReportAddress], str]:
    """One URI's addresses, or a reason to ignore it."""
    if any(c in text for c in "\r\n\x00"):
        return [], "control characters in the URI"
    size = _SIZE.search(text)
    if size:
        # RFC 9989 4.8: obs-dmarc-report-size is obsolete; reporters ignore it.
        notes.append(f"{text}: size limit !{size.group(1)} ignored (obsolete, RFC 9989 4.8)")
        text = text[: size.start()]
    if "!" in text:  # RFC 9989 4.8: "!" within a URI MUST be percent-encoded
        return [], "'!' that is not a size suffix (it must be percent-encoded)"
    match = _SCHEME.match(text)
    if match is None or any(c in text for c in " \t<>\"'"):
        return [], "not a URI"
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme != "mailto":  # RFC 9989 4.7: unsupported schemes MUST be ignored
        return [], f"scheme {scheme}: not supported (only mailto:)"
    to, question, _ = rest.partition("?")
    if question:
        notes.append(f"{text}: mailto header fields ignored")
    try:
        decoded = unquote_to_bytes(to).decode("utf-8")
    except UnicodeDecodeError:
        return [], "percent-encoded octets that are not UTF-8"
    found: list[ReportAddress] = []
    for part in decoded.split(","):  # RFC 6068 2: to = addr-spec *("," addr-spec)
        address, reason = _addr_spec(part.strip())
        if reason:
            return [], reason
        found.append(ReportAddress(text, *address))
    return found, ""


def _addr_spec(text: str) -> tuple[tuple[str, str], str]:
    """``(address, domain)`` of an RFC 5322 addr-spec, or a reason it is not one."""
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return ("", ""), f"{text!r} is not an address"
    if not local.isascii():
        return ("", ""), f"{text!r}: non-ASCII local-part (reports are not sent with SMTPUTF8)"
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        return ("", ""), f"{text!r}: bad local-part"
    if domain.startswith("["):
        return ("", ""), f"{text!r}: address literals cannot be verified"
    try:
        name = host_name(domain)
    except InvalidDomainError as exc:
        return ("", ""), f"{text!r}: {exc}"
    if "." not in name:
        return ("", ""), f"{text!r}: not a fully qualified domain"
    return (f"{local}@{name}", name), ""


class DestinationStatus(StrEnum):
    """Whether reports may go to a destination (RFC 9990 4)."""

    SAME_ORGANIZATION = "same-organization"  # no verification needed
    AUTHORIZED = "authorized"  # the destination published <policy>._report._dmarc.<host>
    REFUSED = "refused"  # it did not: the URI MUST be ignored
    TEMPFAIL = "tempfail"  # DNS failed temporarily: try again later


@dataclass(frozen=True, slots=True)
class Destination:
    """The verification of one address: ``addresses`` are where the report goes (the
    address itself, or the ones the destination's record names instead: RFC 9990 4 step 9);
    empty unless the status is ``same-organization`` or ``authorized``."""

    address: ReportAddress
    status: DestinationStatus
    addresses: tuple[ReportAddress, ...] = ()
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.status in (DestinationStatus.SAME_ORGANIZATION, DestinationStatus.AUTHORIZED)


OrgDomainPlan = Callable[[str], Plan[str | None]]
"""The Organizational Domain of a domain, as a plan; None when DNS failed temporarily."""


def treewalk_org_domain(domain: str) -> Plan[str | None]:
    """RFC 9989 4.10.2: the Organizational Domain found by a DNS Tree Walk."""
    walk = yield from tree_walk(domain)
    return None if walk.tempfail else organizational_domain(walk)


def psl_org_domain(domain: str) -> Plan[str | None]:
    """RFC 7489 3.2: the Organizational Domain by the Public Suffix List (no DNS)."""
    yield from ()  # (a plan that asks nothing)
    return psl_organizational_domain(domain)


def verify_destinations(
    policy_domain: str,
    addresses: Sequence[ReportAddress],
    *,
    tag: str = "rua",
    org_domain: OrgDomainPlan = treewalk_org_domain,
) -> Plan[tuple[Destination, ...]]:
    """Verify each address for reports about ``policy_domain`` (the domain whose record
    named it), in order; ``tag``: ``rua`` or ``ruf`` (RFC 9991 5: the same procedure, with
    ruf)."""
    policy_domain = host_name(policy_domain)
    hosts = sorted({a.domain for a in addresses} - {policy_domain})
    orgs = yield from parallel(*(org_domain(d) for d in (policy_domain, *hosts)))
    policy_org, host_orgs = orgs[0], dict(zip(hosts, orgs[1:], strict=True))
    checks = [
        _verify_one(policy_domain, policy_org, host_orgs.get(a.domain, policy_org), a, tag)
        for a in addresses
    ]
    return tuple((yield from parallel(*checks)))


def _verify_one(
    policy_domain: str,
    policy_org: str | None,
    host_org: str | None,
    address: ReportAddress,
    tag: str,
) -> Plan[Destination]:
    if address.domain == policy_domain or (policy_org is not None and policy_org == host_org):
        return Destination(address, DestinationStatus.SAME_ORGANIZATION, (address,))
    if policy_org is None or host_org is None:
        why = "Organizational Domain unknown: temporary DNS failure"
        return Destination(address, DestinationStatus.TEMPFAIL, reason=why)
    # RFC 9990 4 steps 1-3: <policy domain (A-label)>._report._dmarc.<destination host>
    name = f"{policy_domain}._report._dmarc.{address.domain}"
    if len(name) > MAX_NAME:  # step 4: no positive determination can be made
        why = f"{name[:60]}...: longer than DNS allows"
        return Destination(address, DestinationStatus.REFUSED, reason=why)
    (lookup,) = yield from resolve(Query.of(name, RRType.TXT))
    if lookup.status is DnsStatus.TEMPFAIL:  # step 5: the test may be repeated later
        why = f"{name}: {lookup.reason or 'temporary DNS failure'}"
        return Destination(address, DestinationStatus.TEMPFAIL, reason=why)
    records = []
    for text in lookup.texts:
        try:
            records.append(parse_dmarc_record(text))  # step 6: v=DMARC1 first, else discarded
        except NotDmarcRecord:
            continue
    if not records:  # step 7
        why = f"{name}: no v=DMARC1 record: external destination not authorized"
        return Destination(address, DestinationStatus.REFUSED, reason=why)
    lists = (r.ruf if tag == "ruf" else r.rua for r in records)
    override = next((uris for uris in lists if uris), ())
    if not override:  # step 8
        return Destination(address, DestinationStatus.AUTHORIZED, (address,))
    return _overridden(address, name, parse_report_uris(override))


def _overridden(address: ReportAddress, name: str, parsed: ParsedUris) -> Destination:
    """Step 9: the destination's record names the URIs to use instead; they MUST have the
    same destination host, else no report goes to either."""
    elsewhere = [a.address for a in parsed.addresses if a.domain != address.domain]
    if elsewhere:
        why = f"{name} redirects to {elsewhere[0]}, another host: no report to either"
        return Destination(address, DestinationStatus.REFUSED, reason=why)
    if not parsed.addresses:
        why = f"{name} names no usable mailto: address instead"
        return Destination(address, DestinationStatus.REFUSED, reason=why)
    return Destination(
        address, DestinationStatus.AUTHORIZED, parsed.addresses, reason=f"redirected by {name}"
    )
