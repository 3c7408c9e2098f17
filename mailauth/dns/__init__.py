"""DNS for mailauth: one resolver object, injected into every check.

Two implementations of :class:`DnsResolver`:

- :class:`Resolver` talks to recursive nameservers through dnspython, with a shared cache;
- :class:`ZoneResolver` answers from RFC 1035 master files (tests, fixtures, offline demos).

Both return :class:`Lookup` outcomes that tell an answer, NXDOMAIN, NODATA and a temporary
failure apart; each protocol module maps them to its RFC's results.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mailauth.dns.cache import DnsCache
from mailauth.dns.resolver import Resolver, parse_nameserver
from mailauth.dns.types import DnsStatus, Lookup, MxRecord, Query, Record, RRType, normalize_name
from mailauth.dns.zone import ZoneResolver


@runtime_checkable
class DnsResolver(Protocol):
    """What every check needs from DNS: one query, blocking or on the event loop."""

    def lookup(self, name: str, rdtype: RRType) -> Lookup: ...

    async def lookup_async(self, name: str, rdtype: RRType) -> Lookup: ...


__all__ = [
    "DnsCache",
    "DnsResolver",
    "DnsStatus",
    "Lookup",
    "MxRecord",
    "Query",
    "RRType",
    "Record",
    "Resolver",
    "ZoneResolver",
    "normalize_name",
    "parse_nameserver",
]
