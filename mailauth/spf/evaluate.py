"""check_host() (RFC 7208 4) as a plan: record selection, every mechanism and modifier, the
limits, the explanation. DNS questions are yielded as :class:`mailauth.plan.Resolve`
effects (directly, not through ``resolve()``: one generator less per question on this hot
path); nothing here blocks or knows how they are answered.

Order and concurrency: mechanisms are evaluated one after the other, left to right, and
evaluation stops at the first match (4.6.2). The independent questions of one step are asked
in one effect, so that the asyncio runner asks them concurrently: the address records of all
the names an ``mx`` term finds (5.4), the address records of the names a PTR query returns
(5.5, and for ``%{p}``, 7.3). The answers are then read in the RFC's order (MX names by
preference, PTR names as returned), so that the result, the limits and the void count are
those of the sequential procedure: for ``mx``, "an address lookup on each MX name", then the
comparison, so a temporary failure at any exchange is temperror even beside a match.

DNS outcomes (RFC 7208 4.4, 5): NXDOMAIN and NODATA are empty answers and "void lookups";
a temporary failure is temperror, except where the RFC says otherwise: a PTR query that
fails makes ``ptr`` not match, an address query that fails while validating a PTR name
skips that name (5.5), ``%{p}`` is then "unknown" (7.3), and the explanation is dropped
(6.2). A name DNS cannot carry (a label over 63 octets, an empty label, over 253 octets
after the cut of 7.3) is not asked: it has no records, and no void lookup was made.

Limits (4.6.4): 10 terms that query DNS (``include``, ``a``, ``mx``, ``ptr``, ``exists``,
and ``redirect`` when it is followed); 2 void lookups; 10 names per ``mx`` (more is
permerror); the first 10 names per PTR answer (the rest ignored). The explanation is fetched
after the result and counts toward none of them. The overall time and query budgets are the
caller's (a plan wrapper around the whole method).

Out of scope: the identities (which domain and sender to check, :mod:`mailauth.spf`).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from mailauth.dns import DnsStatus, Lookup, Query, RRType
from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError, RecordSyntaxError
from mailauth.plan import Plan, Resolve, checkpoint
from mailauth.results import SpfResult
from mailauth.spf.macro import expand, expand_domain, ip_values, reverse_name
from mailauth.spf.record import (
    QUALIFIER_RESULTS,
    MacroString,
    Mechanism,
    MechanismKind,
    SpfRecord,
    is_spf_record,
    parse_explanation,
    parse_spf_bytes,
)

MAX_TERMS = 10  # RFC 7208 4.6.4
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
MAX_EXPLANATION = 1024  # RFC 7208 6.2: "Implementations MAY limit the length"
# RFC 7208 3.4: a record SHOULD fit a 512-octet UDP answer. Real records reach a few hundred
# octets (flattened ones about 1 KB); a TXT record may hold 64 KB, and an include chain of
# 51 KB records cost 0.92 s of parsing. A record (or exp= text) over this is not read.
MAX_RECORD = 4096

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class HostResult:
    """What check_host() returns: the result, why, and the explanation of a fail (6.2)."""

    result: SpfResult
    reason: str
    explanation: str = ""


class _Abort(Exception):
    """permerror or temperror: the evaluation ends here (RFC 7208 4.6.1, 5)."""

    def __init__(self, result: SpfResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Decision:
    """One record's result; ``record`` and ``domain`` say where a match was (for exp=)."""

    result: SpfResult
    reason: str
    record: SpfRecord | None = None
    domain: str = ""


@dataclass(slots=True)
class _Evaluation:
    """The state of one check_host() evaluation: the client, the macro values that do not
    change, and what the limits have counted."""

    address: Address
    client: int  # the address as a number
    rdtype: RRType  # A or AAAA: the client's family (RFC 7208 5.3, 5.4, 5.5)
    values: dict[str, str]
    terms: int = 0
    voids: int = 0
    void_term: int = -1  # the last term (its number in ``terms``) counted as void
    validated: tuple[str, ...] | None = None  # %{p}: the validated names, found once
    counting: bool = True  # False for the explanation, fetched after the result

    def count_term(self, term: str) -> None:
        """RFC 7208 4.6.4: the eleventh term that queries DNS is a permerror."""
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _Abort(
                SpfResult.PERMERROR,
                f"more than {MAX_TERMS} DNS-querying terms (at {term}; RFC 7208 4.6.4)",
            )

    def count_void(self, lookup: Lookup) -> None:
        """RFC 7208 4.6.4: the third *term* whose DNS queries return no records (NODATA or
        NXDOMAIN) is a permerror. A term counts once however many of its queries are void
        (an ``mx`` term's address lookups, say), as the RFC limits terms, not queries."""
        if not self.counting or self.void_term == self.terms:
            return
        self.void_term = self.terms
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise _Abort(
                SpfResult.PERMERROR,
                f"more than {MAX_VOID_LOOKUPS} void lookups (the last: {lookup.rdtype} "
                f"{lookup.name}; RFC 7208 4.6.4)",
            )


def check_host(
    address: Address,
    domain: str,
    *,
    local: str,
    sender_domain: str,
    helo: str,
    receiver: str = "unknown",
    now: int = 0,
    default_explanation: str = "",
) -> Plan[HostResult]:
    """RFC 7208 4: is ``address`` allowed to send for ``domain``? ``local`` and
    ``sender_domain`` make up <sender>; ``helo``, ``receiver`` and ``now`` are the macro
    values h, r and t (7.3). ``domain`` is as given: a malformed one gives none (4.3)."""
    values = {
        "s": f"{local}@{sender_domain}",
        "l": local,
        "o": sender_domain,
        "h": helo,
        "r": receiver,
        "t": str(now),
        **ip_values(address),
    }
    rdtype = RRType.A if address.version == 4 else RRType.AAAA
    evaluation = _Evaluation(address, int(address), rdtype, values)
    name = _query_name(domain)
    if name is None or "." not in name:  # RFC 7208 4.3: malformed, or a single label
        return HostResult(SpfResult.NONE, f"{domain!r} is not a valid domain (RFC 7208 4.3)")
    try:
        decision = yield from _check_domain(evaluation, domain.removesuffix("."))
    except _Abort as stop:
        return HostResult(stop.result, stop.reason)
    explanation = ""
    if decision.result is SpfResult.FAIL:
        explanation = (yield from _explain(evaluation, decision)) or default_explanation
    return HostResult(decision.result, decision.reason, explanation)


def _check_domain(evaluation: _Evaluation, domain: str) -> Plan[_Decision]:
    """check_host() for one domain: its record (4.4, 4.5), then the record (4.6)."""
    name = _query_name(domain)
    record = None
    if name is not None:
        (lookup,) = yield Resolve((Query(name, RRType.TXT),))
        record = _select_record(evaluation, name, lookup)
    if record is None:
        return _Decision(SpfResult.NONE, f"no SPF record at {domain}")
    values = {**evaluation.values, "d": domain} if record.uses_macros else evaluation.values
    client, version = evaluation.client, evaluation.address.version
    for mechanism in record.mechanisms:
        kind = mechanism.kind
        if kind is MechanismKind.ALL:
            matched = True
        elif kind is MechanismKind.IP4 or kind is MechanismKind.IP6:
            # RFC 7208 5.6: only the client's own family can match
            matched = mechanism.version == version and client & mechanism.mask == mechanism.bits
        elif kind is MechanismKind.INCLUDE:
            yield from checkpoint()  # (every term that asks DNS: the loop served past a slice)
            matched = yield from _include(evaluation, mechanism, values)
        else:
            yield from checkpoint()
            matched = yield from _matches(evaluation, mechanism, domain, values)
        if matched:
            result = QUALIFIER_RESULTS[mechanism.qualifier]
            return _Decision(result, f"matched {mechanism.text}", record, domain)
    # RFC 7208 6.1: redirect is followed when no mechanism matched; "all" always matches, so
    # a record that has "all" never gets here (its redirect is ignored, and not counted).
    if record.redirect is not None:
        yield from checkpoint()
        evaluation.count_term(record.redirect.text)
        spec = record.redirect.value
        target = yield from _target(evaluation, spec, values)
        decision = None if target is None else (yield from _check_domain(evaluation, target))
        if decision is None or decision.result is SpfResult.NONE:
            raise _Abort(
                SpfResult.PERMERROR,
                f"{domain}: {record.redirect.text} finds no SPF record (RFC 7208 6.1)",
            )
        return decision
    return _Decision(SpfResult.NEUTRAL, f"no mechanism matched at {domain} (RFC 7208 4.7)")


def _select_record(evaluation: _Evaluation, name: str, lookup: Lookup) -> SpfRecord | None:
    """RFC 7208 4.4, 4.5: of the TXT records, the one starting "v=spf1", or none, or
    permerror (several, or a syntax error anywhere: 4.6)."""
    if lookup.status is DnsStatus.TEMPFAIL:
        raise _Abort(SpfResult.TEMPERROR, f"{lookup.reason} (TXT {name})")
    if not lookup.records:
        evaluation.count_void(lookup)
        return None
    texts = [r for r in lookup.records if isinstance(r, bytes) and is_spf_record(r)]
    if not texts:
        return None
    if len(texts) > 1:
        raise _Abort(SpfResult.PERMERROR, f"{len(texts)} SPF records at {name} (RFC 7208 4.5: one)")
    if len(texts[0]) > MAX_RECORD:
        size = f"{len(texts[0])} octets, over {MAX_RECORD}"
        raise _Abort(SpfResult.PERMERROR, f"{name}: SPF record too large ({size}; RFC 7208 3.4)")
    record = parse_spf_bytes(texts[0])
    if record.errors:
        raise _Abort(SpfResult.PERMERROR, f"{name}: {record.errors[0].reason}")
    return record


def _matches(
    evaluation: _Evaluation, mechanism: Mechanism, domain: str, values: dict[str, str]
) -> Plan[bool]:
    """RFC 7208 5: whether one mechanism that queries DNS matches (all, ip4 and ip6 are
    matched by the caller)."""
    kind = mechanism.kind
    evaluation.count_term(mechanism.text)
    target: str | None = domain
    spec = mechanism.domain
    if spec is not None:
        target = yield from _target(evaluation, spec, values)
    if target is None:
        return False  # a name DNS cannot carry: no records (RFC 7208 4.3, 5)
    if kind is MechanismKind.A:
        hosts = yield from _addresses(evaluation, target)
        return _any_within(evaluation, hosts, mechanism)
    if kind is MechanismKind.MX:
        return (yield from _mx(evaluation, mechanism, target))
    if kind is MechanismKind.PTR:
        names = yield from _validated_names(evaluation)
        wanted = _query(target, RRType.PTR).name
        return any(_at_or_under(n, wanted) for n in names)
    # RFC 7208 5.7 exists: an A query, whatever the client's family; any answer matches
    (lookup,) = yield Resolve((_query(target, RRType.A),))
    return _has_records(evaluation, lookup)


def _include(evaluation: _Evaluation, mechanism: Mechanism, values: dict[str, str]) -> Plan[bool]:
    """RFC 7208 5.2: pass matches; fail, softfail, neutral do not; none is permerror;
    temperror and permerror end the evaluation (raised from inside)."""
    evaluation.count_term(mechanism.text)
    spec = mechanism.domain
    target = None
    if spec is not None:
        target = yield from _target(evaluation, spec, values)
    decision = None if target is None else (yield from _check_domain(evaluation, target))
    if decision is None or decision.result is SpfResult.NONE:
        raise _Abort(SpfResult.PERMERROR, f"{mechanism.text} finds no SPF record (RFC 7208 5.2)")
    return decision.result is SpfResult.PASS


def _mx(evaluation: _Evaluation, mechanism: Mechanism, target: str) -> Plan[bool]:
    """RFC 7208 5.4: the MX names (10 at most, 4.6.4), then the address records of each,
    all asked at once and read in order of preference."""
    (answer,) = yield Resolve((_query(target, RRType.MX),))
    if not _has_records(evaluation, answer):
        return False
    exchanges = sorted(answer.exchanges, key=lambda mx: (mx.preference, mx.exchange))
    if len(exchanges) > MAX_MX_NAMES:
        raise _Abort(
            SpfResult.PERMERROR,
            f"{mechanism.text}: {len(exchanges)} MX names at {target} (RFC 7208 4.6.4: 10)",
        )
    lookups = yield from _ask_addresses(evaluation, [mx.exchange for mx in exchanges])
    hosts: list[str] = []
    void = None
    for lookup in lookups:  # (None: a null MX or a name DNS cannot carry)
        if lookup is None:
            continue
        if lookup.status is DnsStatus.TEMPFAIL:
            _has_records(evaluation, lookup)  # (raises temperror)
        if lookup.records:
            hosts.extend(lookup.hosts)
        else:
            void = void or lookup
    if void is not None and not hosts:
        # The term found no address at all: one void lookup (4.6.4). An IPv6 client of a
        # domain whose MX hosts are mostly IPv4-only is not a permerror.
        evaluation.count_void(void)
    return _any_within(evaluation, hosts, mechanism)


def _validated_names(evaluation: _Evaluation) -> Plan[list[str]]:
    """RFC 7208 5.5: the names of the client's PTR records (the first 10, 4.6.4) whose
    address records include the client. A failed PTR query finds none; a name whose address
    query fails is skipped."""
    name = reverse_name(evaluation.address)
    (answer,) = yield Resolve((Query(name, RRType.PTR),))
    _refused(answer)
    if answer.status is DnsStatus.TEMPFAIL or not _has_records(evaluation, answer):
        return []
    names = list(answer.hosts[:MAX_PTR_NAMES])
    lookups = yield from _ask_addresses(evaluation, names)
    client, version = int(evaluation.address), evaluation.address.version
    validated = []
    for lookup in lookups:
        if lookup is not None:
            _refused(lookup)
        if lookup is None or lookup.status is DnsStatus.TEMPFAIL or not lookup.records:
            # RFC 7208 5.5: "that domain name is skipped and the search continues"; not a
            # void lookup of the term (4.6.4): the names are the client's, so that counting
            # them would let anyone with a reverse zone turn a -all into permerror.
            continue
        if any(_address_int(host, version) == client for host in lookup.hosts):
            validated.append(lookup.name)
    return validated


def _validated_name(evaluation: _Evaluation, domain: str) -> Plan[str]:
    """RFC 7208 7.3 %{p}: the validated name that is ``domain``, else one under it, else
    any, else "unknown". The names are looked up once per evaluation."""
    if evaluation.validated is None:
        evaluation.validated = tuple((yield from _validated_names(evaluation)))
    names = evaluation.validated
    wanted = _query_name(domain) or domain
    for name in names:
        if name == wanted:
            return name
    for name in names:
        if name.endswith("." + wanted):
            return name
    return names[0] if names else "unknown"


def _explain(evaluation: _Evaluation, decision: _Decision) -> Plan[str]:
    """RFC 7208 6.2: the exp= of the record whose mechanism failed, expanded; a failure to
    fetch or expand it only means there is none. Counted toward no limit (4.6.4)."""
    record = decision.record
    if record is None or record.explanation is None:
        return ""
    evaluation.counting = False
    values = {**evaluation.values, "d": decision.domain}
    spec = record.explanation.value
    target = yield from _target(evaluation, spec, values)
    if target is None:
        return ""
    (lookup,) = yield Resolve((_query(target, RRType.TXT),))
    if lookup.status is not DnsStatus.ANSWER or len(lookup.texts) != 1:
        return ""
    if len(lookup.texts[0]) > MAX_RECORD:
        return ""
    try:
        text = parse_explanation(lookup.texts[0].decode("ascii"))
    except (UnicodeDecodeError, RecordSyntaxError):
        return ""
    if "p" in text.letters:
        values["p"] = yield from _validated_name(evaluation, decision.domain)
    return expand(text, values)[:MAX_EXPLANATION]


def _target(evaluation: _Evaluation, spec: MacroString, values: dict[str, str]) -> Plan[str | None]:
    """A domain-spec expanded (RFC 7208 7.3), with the validated name first when it uses
    %{p}: the name to ask, or None when DNS cannot carry it."""
    if "p" in spec.letters:
        values["p"] = yield from _validated_name(evaluation, values["d"])
    name = expand_domain(spec, values)
    return name if _query_name(name) is not None else None


def _addresses(evaluation: _Evaluation, target: str) -> Plan[tuple[str, ...]]:
    (lookup,) = yield Resolve((_query(target, evaluation.rdtype),))
    return lookup.hosts if _has_records(evaluation, lookup) else ()


def _ask_addresses(evaluation: _Evaluation, names: list[str]) -> Plan[list[Lookup | None]]:
    """The client family's address records of each name, in one effect (each name asked
    once); None for a name DNS cannot carry."""
    queries = {}
    for name in names:
        query_name = _query_name(name)
        if query_name is not None:
            queries[query_name] = Query(query_name, evaluation.rdtype)
    if not queries:
        return [None] * len(names)
    lookups = yield Resolve(tuple(queries.values()))
    answers = dict(zip(queries, lookups, strict=True))
    return [answers.get(_query_name(name) or "") for name in names]


def _refused(lookup: Lookup) -> None:
    """A question our own limits gave up on is temperror even where RFC 7208 5.5 lets a DNS
    error pass as "no match": it says nothing about the domain, and reading it as no match
    would let a budget, or a busy moment, turn a pass into fail."""
    if lookup.refused:
        raise _Abort(SpfResult.TEMPERROR, f"{lookup.reason} ({lookup.rdtype} {lookup.name})")


def _has_records(evaluation: _Evaluation, lookup: Lookup) -> bool:
    """RFC 7208 5: a temporary failure is temperror; no records is a void lookup."""
    if lookup.status is DnsStatus.TEMPFAIL:
        raise _Abort(SpfResult.TEMPERROR, f"{lookup.reason} ({lookup.rdtype} {lookup.name})")
    if lookup.records:
        return True
    evaluation.count_void(lookup)
    return False


def _any_within(evaluation: _Evaluation, hosts: list[str] | tuple[str, ...], m: Mechanism) -> bool:
    """Whether the client is in the network of ``cidr`` bits around any of the addresses
    (RFC 7208 5.3: ip4-cidr-length for IPv4 clients, ip6-cidr-length for IPv6)."""
    address = evaluation.address
    bits = 32 if address.version == 4 else 128
    shift = bits - (m.cidr4 if bits == 32 else m.cidr6)
    wanted = int(address) >> shift
    for host in hosts:
        value = _address_int(host, address.version)
        if value is not None and value >> shift == wanted:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _address_int(text: str, version: int) -> int | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return int(address) if address.version == version else None


def _at_or_under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _query(name: str, rdtype: RRType) -> Query:
    """The question for a name :func:`_target` let through."""
    return Query(_query_name(name) or name, rdtype)


def _query_name(name: str) -> str | None:
    """The name as DNS asks it (lower case A-labels), or None when DNS cannot carry it."""
    try:
        return normalize_domain(name)
    except InvalidDomainError:
        return None
