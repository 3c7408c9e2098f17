"""SPF record audit (RFC 7208): one record, syntax, and the DNS-lookup budget counted over
the whole include/redirect tree.

Records are read by the parser check_host() uses (:mod:`mailauth.spf.record`), so that the
audit and ``mailauth verify`` agree on what is a syntax error.

Counting follows RFC 7208 4.6.4: the terms ``include``, ``a``, ``mx``, ``ptr``, ``exists``
and the ``redirect`` modifier count one each (10 at most); the address lookups of the hosts an
``mx`` term finds do not count as terms (they have their own limit of 10 names); a query that
finds nothing (NXDOMAIN or no records) is a void lookup, counted once per term (2 at most).
Macros (RFC 7208 7) cannot be expanded without a message: such terms are reported, not
followed. The work is bounded: the walk stops following after 40 counted terms or 10 levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailauth.check.report import Area, Finding, Status
from mailauth.dns import DnsStatus, Lookup, Query, RRType
from mailauth.domains import name_problem
from mailauth.plan import Plan, resolve
from mailauth.spf.record import (
    Mechanism,
    MechanismKind,
    Qualifier,
    TermError,
    parse_spf_record,
    select_spf_records,
)

MAX_LOOKUPS = 10  # RFC 7208 4.6.4
MAX_VOID = 2
MAX_MX_NAMES = 10
_FOLLOW_LIMIT, _DEPTH_LIMIT = 40, 10


@dataclass
class SpfNode:
    """One record in the tree: where it is, its text, what it costs, what it includes."""

    domain: str
    via: str  # "", "include" or "redirect"
    record: str = ""
    lookups: int = 0
    children: list[SpfNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "via": self.via,
            "record": self.record,
            "dns_lookups": self.lookups,
            "children": [c.to_dict() for c in self.children],
        }


def spf_records(lookup: Lookup) -> list[str]:
    """The TXT records that are SPF records (RFC 7208 4.5: "v=spf1" then a space or the end)."""
    return select_spf_records(lookup.texts)


@dataclass
class _Walk:
    findings: list[Finding] = field(default_factory=list)
    lookups: int = 0
    voids: int = 0
    void_terms: list[str] = field(default_factory=list)

    def add(self, finding_id: str, status: Status, message: str, fix: str = "") -> None:
        if not any(f.id == finding_id and f.message == message for f in self.findings):
            self.findings.append(Finding(Area.SPF, finding_id, status, message, fix))

    def void(self, term: str) -> None:
        self.voids += 1
        self.void_terms.append(term)


def check_spf(domain: str) -> Plan[tuple[list[Finding], dict[str, Any]]]:
    """Audit the SPF record of ``domain``: findings and the ``spf`` details for the report."""
    walk = _Walk()
    (lookup,) = yield from resolve(Query.of(domain, RRType.TXT))
    details: dict[str, Any] = {"record": None, "dns_lookups": 0, "void_lookups": 0}
    if lookup.status is DnsStatus.TEMPFAIL:
        walk.add("spf.dns-error", Status.FAIL, f"TXT {domain}: {lookup.reason}", "fix the DNS")
        return walk.findings, details
    records = spf_records(lookup)
    if not records:
        walk.add(
            "spf.missing",
            Status.WARN,
            f"{domain} has no SPF record",
            'publish "v=spf1 <your senders> -all" (or "v=spf1 -all" if it sends no mail)',
        )
        return walk.findings, details
    if len(records) > 1:
        walk.add(
            "spf.multiple",
            Status.FAIL,
            f"{len(records)} SPF records at {domain} (RFC 7208 4.5: permerror)",
            "merge them into one record",
        )
        return walk.findings, details
    size = _answer_size(domain, lookup.texts)
    if size > 512:
        walk.add(
            "spf.answer-size",
            Status.WARN,
            f"the TXT answer for {domain} is about {size} bytes: over 512, it needs EDNS0 or TCP",
            "shorten the record (fewer TXT records at the name, or move ranges into an include)",
        )
    root = SpfNode(domain, "", records[0])
    yield from _walk_record(walk, root, [domain])
    details = {
        "record": records[0],
        "dns_lookups": walk.lookups,
        "void_lookups": walk.voids,
        "tree": root.to_dict(),
    }
    if walk.lookups > MAX_LOOKUPS:
        walk.add(
            "spf.too-many-lookups",
            Status.FAIL,
            f"{walk.lookups} DNS-querying terms (limit {MAX_LOOKUPS}, RFC 7208 4.6.4): permerror",
            "flatten includes into ip4:/ip6: ranges or drop unused ones",
        )
    if walk.voids > MAX_VOID:
        walk.add(
            "spf.too-many-void-lookups",
            Status.FAIL,
            f"{walk.voids} terms find nothing in DNS ({', '.join(walk.void_terms)}; limit 2)",
            "remove the terms whose names do not exist or have no records",
        )
    if not any(f.status is Status.FAIL for f in walk.findings):
        walk.add(
            "spf.ok",
            Status.PASS,
            f"one valid record, {walk.lookups} of {MAX_LOOKUPS} DNS lookups used",
        )
    return walk.findings, details


def _walk_record(walk: _Walk, node: SpfNode, path: list[str]) -> Plan[None]:
    record = parse_spf_record(node.record)
    for term in record.terms:
        if isinstance(term, TermError):
            if term.modifier:  # a bad redirect= or exp=
                walk.add("spf.syntax", Status.FAIL, f"{node.domain}: {term.reason} (permerror)")
                return  # (check_host() ends here: nothing after it counts)
            walk.add(
                "spf.syntax",
                Status.FAIL,
                f"{node.domain}: {term.reason} (permerror)",
                "correct the term (RFC 7208 5)",
            )
        elif not isinstance(term, Mechanism):
            continue  # exp= is not a lookup here; unknown modifiers are ignored (RFC 7208 6)
        elif term.kind is MechanismKind.ALL:
            _check_all(walk, node.domain, term.qualifier, path)
        elif term.kind not in (MechanismKind.IP4, MechanismKind.IP6):
            node.lookups += 1
            walk.lookups += 1
            yield from _dns_term(walk, node, term, path)
    if record.redirect is not None and not record.has_all:
        # RFC 7208 6.1: redirect is ignored when "all" is present
        node.lookups += 1
        walk.lookups += 1
        yield from _follow(walk, node, "redirect", record.redirect.value.text, path)
    elif record.redirect is None and not record.has_all and len(path) == 1:
        walk.add(
            "spf.no-all",
            Status.WARN,
            f"{node.domain}: no 'all' term: mail from anywhere else is 'neutral'",
            "end the record with -all (or ~all while testing)",
        )


def _check_all(walk: _Walk, domain: str, qualifier: Qualifier, path: list[str]) -> None:
    if len(path) > 1:
        return  # an included record's all only ends that include
    if qualifier is Qualifier.PASS:
        walk.add(
            "spf.pass-all",
            Status.FAIL,
            f"{domain}: +all authorises every host on the Internet",
            "end the record with -all",
        )
    elif qualifier is Qualifier.NEUTRAL:
        walk.add(
            "spf.neutral-all",
            Status.WARN,
            f"{domain}: ?all asserts nothing about other hosts",
            "end the record with -all (or ~all)",
        )


def _dns_term(walk: _Walk, node: SpfNode, term: Mechanism, path: list[str]) -> Plan[None]:
    name = str(term.kind)
    if term.kind is MechanismKind.PTR:
        walk.add(
            "spf.ptr",
            Status.WARN,
            f"{node.domain}: the ptr mechanism is slow and unreliable (RFC 7208 5.5: SHOULD NOT)",
            "replace ptr with ip4:/ip6: ranges or a:",
        )
        return
    target = term.domain.text if term.domain is not None else node.domain
    if _has_macro(walk, node, f"{name}:{target}") or _bad_name(
        walk, node, f"{name}:{target}", target
    ):
        return
    if name == "include":
        yield from _follow(walk, node, "include", target, path)
    elif name in ("a", "exists"):
        types = (RRType.A, RRType.AAAA) if name == "a" else (RRType.A,)
        answers = yield from resolve(*(Query.of(target, t) for t in types))
        if all(a.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA) for a in answers):
            walk.void(f"{name}:{target}")
    else:  # mx
        (answer,) = yield from resolve(Query.of(target, RRType.MX))
        hosts = [mx.exchange for mx in answer.exchanges if mx.exchange]
        if not hosts:
            if answer.status is not DnsStatus.TEMPFAIL:
                walk.void(f"mx:{target}")
            return
        if len(hosts) > MAX_MX_NAMES:
            walk.add(
                "spf.mx-too-many",
                Status.FAIL,
                f"{node.domain}: mx:{target} has {len(hosts)} MX names (limit 10): permerror",
                "use ip4:/ip6: ranges for this domain's mail servers",
            )
        # The hosts' address lookups are not terms (RFC 7208 4.6.4); a host without
        # addresses is still a void lookup.
        for host in hosts[:MAX_MX_NAMES]:
            if _bad_name(walk, node, f"mx:{target} -> {host}", host, "skipped"):
                continue
            answers = yield from resolve(Query.of(host, RRType.A), Query.of(host, RRType.AAAA))
            if all(a.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA) for a in answers):
                walk.void(f"mx:{target} -> {host}")


def _follow(walk: _Walk, node: SpfNode, via: str, target: str, path: list[str]) -> Plan[None]:
    if target.lower() in path:
        walk.add(
            "spf.include-loop",
            Status.FAIL,
            f"{' -> '.join([*path, target])}: the records include each other (permerror)",
            "remove the include that loops back",
        )
        return
    if walk.lookups > _FOLLOW_LIMIT or len(path) > _DEPTH_LIMIT:
        return
    if _has_macro(walk, node, f"{via}:{target}") or _bad_name(
        walk, node, f"{via}:{target}", target
    ):
        return
    (lookup,) = yield from resolve(Query.of(target, RRType.TXT))
    if lookup.status is DnsStatus.TEMPFAIL:
        walk.add("spf.dns-error", Status.FAIL, f"TXT {target}: {lookup.reason}", "fix the DNS")
        return
    records = spf_records(lookup)
    if lookup.status is DnsStatus.NXDOMAIN:
        walk.void(f"{via}:{target}")
    if len(records) != 1:
        walk.add(
            "spf.include-no-spf",
            Status.FAIL,
            f"{node.domain}: {via}:{target} finds {len(records) or 'no'} SPF record(s) (permerror)",
            f"fix or remove the {via}",
        )
        return
    child = SpfNode(target.lower(), via, records[0])
    node.children.append(child)
    yield from _walk_record(walk, child, [*path, target.lower()])


def _has_macro(walk: _Walk, node: SpfNode, term: str) -> bool:
    """A term whose name holds macros (RFC 7208 7): it depends on the message, so it is
    reported, not followed (a redirect= with macros used to be asked literally)."""
    if "%" not in term:
        return False
    walk.add(
        "spf.macro", Status.WARN, f"{node.domain}: {term} uses macros; it is not followed here"
    )
    return True


def _bad_name(walk: _Walk, node: SpfNode, term: str, name: str, outcome: str = "permerror") -> bool:
    """A name in a term (or an MX answer) that DNS cannot carry: reported, not asked."""
    problem = name_problem(name)
    if problem:
        walk.add("spf.bad-name", Status.FAIL, f"{node.domain}: {term}: {problem} ({outcome})")
    return bool(problem)


def _answer_size(name: str, texts: tuple[bytes, ...]) -> int:
    """An estimate of the DNS response size for a TXT query (RFC 1035 4.1)."""
    question = len(name) + 2 + 4
    size = 12 + question
    for text in texts:
        strings = max(1, -(-len(text) // 255))
        size += 2 + 10 + len(text) + strings
    return size
