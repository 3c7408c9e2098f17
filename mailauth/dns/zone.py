"""A resolver answering from RFC 1035 master files, with no network: fixtures, tests, demos.

Zone files are parsed by dnspython's zone parser; one file may hold names of several domains.
A name that owns records, or is an ancestor of one that does (an empty non-terminal, RFC 8020),
exists: asked for a type it has no records of, it is NODATA. Every other name is NXDOMAIN.
CNAMEs are followed.

Temporary failures are declared in a zone file with a comment, so that the file stays a valid
master file for other tools::

    ; mailauth-fault: timeout.example.test timeout
    ; mailauth-fault: broken.example.test servfail

The name is absolute (``$ORIGIN`` does not apply to a comment) and the fault applies to that
name only, not to the names below it. It fails every query that ends at that name for a type
the zones hold no records of: listed records still answer (as in the OpenSPF suite's TIMEOUT
convention), a CNAME there is still followed, and a CNAME chain that ends there fails, as a
recursive resolver fails the whole query.

Every query is logged in :attr:`ZoneResolver.queries`, so that tests can count lookups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import Any

import dns.exception
import dns.name
import dns.node
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.zonefile

from mailauth.dns.outcomes import records_from_rrset
from mailauth.dns.types import DnsStatus, Lookup, Query, Record, RRType, normalize_name
from mailauth.errors import ConfigError
from mailauth.files import ZONE_LIMIT, read_limited

_FAULT = re.compile(rb"^\s*;\s*mailauth-fault:\s*(\S+)\s+(timeout|servfail)\s*$", re.M | re.I)
_MAX_CNAME = 8
DEFAULT_TTL = 3600  # for records in files without $TTL or an SOA


class ZoneResolver:
    """Answers from in-memory data; implements the same interface as the network resolver.

    ``records`` maps (name, type) to (ttl, records); ``faults`` maps a name to ``timeout`` or
    ``servfail`` (anything else is a ConfigError).
    """

    def __init__(
        self,
        records: Mapping[tuple[str, RRType], tuple[int, Sequence[Record]]],
        *,
        faults: Mapping[str, str] | None = None,
    ) -> None:
        self._records: dict[Query, tuple[int, tuple[Record, ...]]] = {
            Query.of(name, rdtype): (ttl, tuple(values))
            for (name, rdtype), (ttl, values) in records.items()
        }
        self._faults = {normalize_name(name): kind for name, kind in (faults or {}).items()}
        unknown = sorted(set(self._faults.values()) - {"timeout", "servfail"})
        if unknown:
            raise ConfigError(f"unknown DNS fault {unknown[0]!r}: timeout or servfail")
        self._names = {"."}
        for query in self._records:
            labels = query.name.split(".")
            self._names.update(".".join(labels[i:]) for i in range(len(labels)))
        self.queries: list[Query] = []

    @classmethod
    def from_files(cls, paths: Iterable[str | PathLike[str]]) -> ZoneResolver:
        """Load master files; each needs an ``$ORIGIN`` or absolute owner names."""
        records: dict[tuple[str, RRType], tuple[int, list[Record]]] = {}
        faults: dict[str, str] = {}
        for path in paths:
            try:
                text = read_limited(path, ZONE_LIMIT)
            except OSError as exc:
                raise ConfigError(f"cannot read zone file {path}: {exc.strerror}") from None
            _load_zone(text, str(path), records, faults)
        return cls(
            {key: (ttl, tuple(values)) for key, (ttl, values) in records.items()}, faults=faults
        )

    @classmethod
    def from_text(cls, text: str) -> ZoneResolver:
        """Load master-file text (as from_files does for files)."""
        records: dict[tuple[str, RRType], tuple[int, list[Record]]] = {}
        faults: dict[str, str] = {}
        _load_zone(text.encode(), "<text>", records, faults)
        return cls(
            {key: (ttl, tuple(values)) for key, (ttl, values) in records.items()}, faults=faults
        )

    def lookup(self, name: str, rdtype: RRType) -> Lookup:
        query = Query.of(name, rdtype)
        self.queries.append(query)
        current = query.name
        for _ in range(_MAX_CNAME + 1):
            found = self._records.get(Query(current, rdtype))
            if found is not None:
                ttl, values = found
                return Lookup(query.name, rdtype, DnsStatus.ANSWER, values, ttl, "", current)
            cname = self._records.get(Query(current, RRType.CNAME))
            if cname is None or rdtype is RRType.CNAME:
                break
            current = str(cname[1][0])
        else:
            return Lookup(query.name, rdtype, DnsStatus.TEMPFAIL, reason="CNAME chain too long")
        fault = self._faults.get(current)
        if fault is not None:
            reason = "DNS timeout" if fault == "timeout" else "no nameserver answered: SERVFAIL"
            return Lookup(query.name, rdtype, DnsStatus.TEMPFAIL, reason=reason)
        status = DnsStatus.NODATA if current in self._names else DnsStatus.NXDOMAIN
        return Lookup(query.name, rdtype, status, canonical_name=current)

    async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
        return self.lookup(name, rdtype)


class _Transaction(dns.zonefile.RRsetsReaderTransaction):
    """Drops SOA records: dnspython accepts an SOA only at the origin, and a file rooted at
    "." holds each domain's SOA below it. mailauth never asks for SOA records.

    Also finds a name's rdatasets through an index: dnspython's reader looks every name up
    (its CNAME-and-other-data check) by scanning all rdatasets read so far, so a file of n
    records cost n^2 name comparisons (200 records: 0.4 s of a `verify`)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)  # type: ignore[no-untyped-call]
        self._names: dict[dns.name.Name, set[Any]] = {}

    def add(self, *args: Any) -> None:
        if args and getattr(args[-1], "rdtype", None) == dns.rdatatype.SOA:
            return
        super().add(*args)

    def _get_node(self, name: dns.name.Name) -> dns.node.Node | None:
        keys = self._names.get(name)
        if not keys:
            return None
        node = dns.node.Node()  # type: ignore[no-untyped-call]
        node.rdatasets = [self.rdatasets[key] for key in keys]
        return node

    def _name_exists(self, name: dns.name.Name) -> bool:
        return bool(self._names.get(name))

    def _put_rdataset(self, name: dns.name.Name, rdataset: Any) -> None:
        super()._put_rdataset(name, rdataset)  # type: ignore[no-untyped-call]
        self._names.setdefault(name, set()).add((name, rdataset.rdtype, rdataset.covers))

    def _delete_name(self, name: dns.name.Name) -> None:
        super()._delete_name(name)  # type: ignore[no-untyped-call]
        self._names.pop(name, None)

    def _delete_rdataset(self, name: dns.name.Name, rdtype: Any, covers: Any) -> None:
        super()._delete_rdataset(name, rdtype, covers)  # type: ignore[no-untyped-call]
        self._names.get(name, set()).discard((name, rdtype, covers))


class _Manager(dns.zonefile.RRSetsReaderManager):
    def writer(self, replacement: bool = False) -> _Transaction:
        return _Transaction(self, True, False)


def _load_zone(
    text: bytes,
    label: str,
    records: dict[tuple[str, RRType], tuple[int, list[Record]]],
    faults: dict[str, str],
) -> None:
    # Read as plain RRsets rooted at "." (not as one dns.zone.Zone), so that one file may
    # hold several domains, each with its own SOA; $ORIGIN and $TTL apply as usual.
    manager = _Manager(dns.name.root, False, dns.rdataclass.IN)
    try:
        with manager.writer(True) as txn:
            tokenizer = dns.tokenizer.Tokenizer(text.decode("utf-8"), label)
            dns.zonefile.Reader(
                tokenizer,
                dns.rdataclass.IN,
                txn,
                allow_directives={"$ORIGIN", "$TTL", "$GENERATE"},
                rfc2308_ttl=True,
                default_ttl=DEFAULT_TTL,
            ).read()
    except (dns.exception.DNSException, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"zone file {label}: {exc}") from None
    for rrset in manager.rrsets:
        try:
            rdtype = RRType(dns.rdatatype.to_text(rrset.rdtype))
        except ValueError:
            continue  # SOA and other types mailauth never asks for
        name = normalize_name(rrset.name.to_text())
        _, values = records.setdefault((name, rdtype), (rrset.ttl, []))
        values.extend(records_from_rrset(rrset))
    for match in _FAULT.finditer(text):
        faults[match.group(1).decode()] = match.group(2).decode().lower()
