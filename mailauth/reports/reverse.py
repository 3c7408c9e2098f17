"""Reverse names of report sources, for ``mailauth reports summary --resolve``: the PTR name
of each source IP, and whether it is *verified* (forward-confirmed: one of the name's A or
AAAA records is that IP, as RFC 7208 5.5 validates a name; the PTR name alone is whatever
the owner of the address block chose, and says nothing about who sends).

A plan (mailauth.plan) over the one injected resolver: the PTR questions go out ``BATCH`` at
a time (the asyncio runner asks one batch concurrently: at most ``BATCH`` queries in flight),
then the address questions of the names found, likewise; the whole is bounded
(``plan.bounded``: 3 questions per source, ``seconds`` in all). A failure (timeout,
SERVFAIL, a budget run out) is ``unknown`` for that source, never an error of the summary;
only the first PTR name of a source is checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from mailauth.dns import DnsResolver, DnsStatus, Lookup, Query, RRType
from mailauth.domains import name_problem, normalize_domain
from mailauth.plan import Budget, Plan, Resolve, bounded, run_plan_async

BATCH = 32  # questions in flight at once
MAX_SOURCES = 1000  # sources resolved in one summary (the largest; the others: not asked)


class ReverseStatus(StrEnum):
    VERIFIED = "verified"  # a PTR name whose addresses include the source
    UNVERIFIED = "unverified"  # a PTR name that does not resolve back to the source
    NONE = "none"  # no PTR record (NXDOMAIN, NODATA)
    UNKNOWN = "unknown"  # DNS failed or the time ran out
    NOT_ASKED = "not asked"


@dataclass(frozen=True, slots=True)
class ReverseName:
    status: ReverseStatus
    name: str = ""  # the PTR name (lowercase, no trailing dot), "" when none

    @property
    def verified(self) -> bool:
        return self.status is ReverseStatus.VERIFIED


NOT_ASKED = ReverseName(ReverseStatus.NOT_ASKED)


def _batches(queries: list[Query]) -> Plan[list[Lookup]]:
    answers: list[Lookup] = []
    for start in range(0, len(queries), BATCH):
        answers.extend((yield Resolve(tuple(queries[start : start + BATCH]))))
    return answers


def reverse_names_plan(addresses: list[str]) -> Plan[dict[str, ReverseName]]:
    """The reverse name of each address (an address that does not parse: ``unknown``)."""
    result: dict[str, ReverseName] = {}
    parsed: list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
    for text in addresses:
        try:
            parsed.append((text, ipaddress.ip_address(text)))
        except ValueError:
            result[text] = ReverseName(ReverseStatus.UNKNOWN)
    ptrs = yield from _batches([Query(ip.reverse_pointer, RRType.PTR) for _, ip in parsed])
    names: dict[str, str] = {}
    for (text, _), lookup in zip(parsed, ptrs, strict=True):
        name = _first_name(lookup)
        if lookup.status is DnsStatus.TEMPFAIL or (lookup.records and not name):
            result[text] = ReverseName(ReverseStatus.UNKNOWN)
        elif not name:
            result[text] = ReverseName(ReverseStatus.NONE)
        else:
            names[text] = name
    pending = [(text, ip) for text, ip in parsed if text in names]
    queries = [
        Query(names[text], RRType.A if ip.version == 4 else RRType.AAAA) for text, ip in pending
    ]
    forward = yield from _batches(queries)
    for (text, ip), lookup in zip(pending, forward, strict=True):
        if lookup.status is DnsStatus.TEMPFAIL:
            status = ReverseStatus.UNKNOWN
        elif any(_same(host, ip) for host in lookup.hosts):
            status = ReverseStatus.VERIFIED
        else:
            status = ReverseStatus.UNVERIFIED
        result[text] = ReverseName(status, names[text])
    return result


def _first_name(lookup: Lookup) -> str:
    for host in sorted(lookup.hosts):  # (sorted: the same name on every run)
        if not name_problem(host):
            return normalize_domain(host)
    return ""


def _same(host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(host) == ip
    except ValueError:
        return False


def resolve_reverse_names(
    addresses: list[str], resolver: DnsResolver, *, seconds: float = 30.0
) -> dict[str, ReverseName]:
    """Run :func:`reverse_names_plan` on asyncio (each batch concurrently) within a budget of
    3 questions per address and ``seconds`` in all; the first ``MAX_SOURCES`` addresses
    only (the others: not asked)."""
    asked = addresses[:MAX_SOURCES]
    budget = Budget("reverse names", queries=3 * len(asked) + 1, seconds=seconds)
    plan = bounded(reverse_names_plan(asked), budget)
    found = asyncio.run(run_plan_async(plan, resolver))
    return {address: found.get(address, NOT_ASKED) for address in addresses}
