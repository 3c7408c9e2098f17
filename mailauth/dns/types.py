"""DNS outcome types shared by every resolver and every protocol module.

A query has four distinguishable outcomes (RFC 1035, RFC 2308): an answer, a name that does
not exist (NXDOMAIN), a name that exists without records of the asked type (NODATA), and a
temporary failure (timeout, SERVFAIL, REFUSED, network error). Each protocol maps them to its
own results (RFC 7208 5 and 4.4, RFC 6376 6.1.2, RFC 9989 4.10); nothing here decides that.

TXT data is returned as the concatenation of the record's character-strings with nothing in
between (RFC 7208 3.3, RFC 6376 3.6.2.2); several TXT records at one name stay separate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailauth.domains import normalize_domain


class RRType(StrEnum):
    """The record types mailauth asks for."""

    A = "A"
    AAAA = "AAAA"
    TXT = "TXT"
    MX = "MX"
    PTR = "PTR"
    CNAME = "CNAME"
    NS = "NS"


class DnsStatus(StrEnum):
    """How a query ended."""

    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record: preference and exchange host (lowercase, no trailing dot)."""

    preference: int
    exchange: str


Record = bytes | str | MxRecord
"""TXT: ``bytes``; A, AAAA: address text; PTR, CNAME, NS: host name; MX: :class:`MxRecord`."""


@dataclass(frozen=True, slots=True)
class Query:
    """A question: a normalised domain name and a record type."""

    name: str
    rdtype: RRType

    @classmethod
    def of(cls, name: str, rdtype: RRType) -> Query:
        return cls(normalize_name(name), rdtype)


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of one query.

    ``records`` is empty unless ``status`` is ANSWER. ``ttl`` is the time the outcome may be
    cached (for negative outcomes the RFC 2308 negative TTL). ``reason`` explains temporary
    failures. ``canonical_name`` is where a CNAME chain ended (the queried name if none).
    ``refused``: a temporary failure that DNS did not give -- the question was not asked, or
    its answer not waited for, because a budget's count or time ran out (mailauth.plan) --
    so that a rule that lets a DNS error pass (RFC 7208 5.5) does not let this one pass.
    """

    name: str
    rdtype: RRType
    status: DnsStatus
    records: tuple[Record, ...] = ()
    ttl: int = 0
    reason: str = ""
    canonical_name: str = field(default="")
    refused: bool = False  # not answered by DNS: a local limit (a budget) gave up on it

    @property
    def texts(self) -> tuple[bytes, ...]:
        """TXT records, each as the concatenation of its strings."""
        return tuple(r for r in self.records if isinstance(r, bytes))

    @property
    def hosts(self) -> tuple[str, ...]:
        """Addresses (A, AAAA) or names (PTR, CNAME, NS)."""
        return tuple(r for r in self.records if isinstance(r, str))

    @property
    def exchanges(self) -> tuple[MxRecord, ...]:
        """MX records, in the order received."""
        return tuple(r for r in self.records if isinstance(r, MxRecord))

    @property
    def is_temporary_failure(self) -> bool:
        return self.status is DnsStatus.TEMPFAIL

    @property
    def name_does_not_exist(self) -> bool:
        """NXDOMAIN for the name asked itself. After a CNAME the rcode speaks of the chain's
        last name (RFC 6604 3): the name asked exists, since it owns the CNAME."""
        return self.status is DnsStatus.NXDOMAIN and self.canonical_name in ("", self.name)


def normalize_name(name: str) -> str:
    """The DNS form of a name: see :func:`mailauth.domains.normalize_domain`."""
    return normalize_domain(name)
