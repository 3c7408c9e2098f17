"""A resolver answering from RFC 1035 master files, with no network: fixtures, tests, demos.

Zone files are parsed by dnspython's zone parser; one file may hold names of several domains.
A name that owns records, or is an ancestor of one that does (an empty non-terminal, RFC 8020),
exists: asked for a type it has no records of, it is NODATA. Every other name is NXDOMAIN.
CNAMEs are followed.

Relative names need an origin: a ``$ORIGIN`` line, or the one given with the file
(``FILE:ORIGIN``); without either, a relative name is an error at its line (dnspython would
read ``foo`` as ``foo.``, a name no lookup asks for). Names that are valid in DNS but not host
names load as DNS holds them: a label with octets no typed name can hold (``\\200``, RFC 1035
5.1) is kept escaped, exists (with its parents), and simply matches no lookup. Every error is
one line, ``FILE:LINE: what``, at the line where the bad token starts.

Temporary failures are declared in a zone file with a comment, so that the file stays a valid
master file for other tools::

    ; mailauth-fault: timeout.example.test timeout
    ; mailauth-fault: broken.example.test servfail

The name is absolute (``$ORIGIN`` does not apply to a comment) and the fault applies to that
name only, not to the names below it. It fails every query that ends at that name for a type
the zones hold no records of: listed records still answer (as in the OpenSPF suite's TIMEOUT
convention), a CNAME there is still followed, and a CNAME chain that ends there fails, as a
recursive resolver fails the whole query.

Every query is logged in :attr:`ZoneResolver.queries`, so that tests can count lookups (the
last :data:`MAX_LOGGED_QUERIES` at most: a long-running milter may serve from zone files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import Any, cast

import dns.exception
import dns.grange
import dns.name
import dns.node
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.zonefile

from mailauth.dns.outcomes import records_from_rrset
from mailauth.dns.types import DnsStatus, Lookup, MxRecord, Query, Record, RRType, normalize_name
from mailauth.errors import ConfigError
from mailauth.files import ZONE_LIMIT, read_limited

MAX_LOGGED_QUERIES = 100_000
MAX_GENERATE = 65_536  # names one $GENERATE line may make

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
            Query(_key_of(name), rdtype): (ttl, tuple(values))
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
    def from_files(
        cls, paths: Iterable[str | PathLike[str] | tuple[str | PathLike[str], str | None]]
    ) -> ZoneResolver:
        """Load master files: each a path, or (path, origin) for a file whose relative
        names have no ``$ORIGIN`` (as a server's configuration gives it); see
        :func:`split_zone_spec` for ``FILE:ORIGIN`` text."""
        records: dict[tuple[str, RRType], tuple[int, list[Record]]] = {}
        faults: dict[str, str] = {}
        for item in paths:
            path, origin = item if isinstance(item, tuple) else (item, None)
            try:
                text = read_limited(path, ZONE_LIMIT)
            except OSError as exc:
                raise ConfigError(f"cannot read zone file {path}: {exc.strerror}") from None
            _load_zone(text, str(path), records, faults, origin)
        return cls(
            {key: (ttl, tuple(values)) for key, (ttl, values) in records.items()}, faults=faults
        )

    @classmethod
    def from_text(cls, text: str, origin: str | None = None) -> ZoneResolver:
        """Load master-file text (as from_files does for files)."""
        records: dict[tuple[str, RRType], tuple[int, list[Record]]] = {}
        faults: dict[str, str] = {}
        _load_zone(text.encode(), "<text>", records, faults, origin)
        return cls(
            {key: (ttl, tuple(values)) for key, (ttl, values) in records.items()}, faults=faults
        )

    def lookup(self, name: str, rdtype: RRType) -> Lookup:
        query = Query.of(name, rdtype)
        self.queries.append(query)
        if len(self.queries) > MAX_LOGGED_QUERIES:  # (a milter serving from zone files)
            del self.queries[: MAX_LOGGED_QUERIES // 2]
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


class _Origin:
    """Whether relative names have an origin yet: the one given, or a ``$ORIGIN`` line."""

    def __init__(self, known: bool) -> None:
        self.known = known


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

    def _set_origin(self, origin: dns.name.Name) -> None:  # (a $ORIGIN line)
        cast(_Manager, self.manager).origin_state.known = True


class _Manager(dns.zonefile.RRSetsReaderManager):
    def __init__(self, origin: _Origin) -> None:
        super().__init__(dns.name.root, False, dns.rdataclass.IN)
        self.origin_state = origin

    def writer(self, replacement: bool = False) -> _Transaction:
        return _Transaction(self, True, False)


class _Tokenizer(dns.tokenizer.Tokenizer):
    """dnspython's tokenizer, with two changes for the messages of a bad file: the line of
    an error is where its token starts (dnspython's counter has passed the line ending
    already when a line ends too soon), and a relative name with no origin is an error
    (dnspython would take it as relative to the root: ``foo`` as ``foo.``, never asked)."""

    def __init__(self, text: str, label: str, origin: _Origin) -> None:
        super().__init__(text, label)
        self.origin_state = origin
        self.token_line = 1
        self.last_line = text.count("\n", 0, len(text) - 1) + 1  # (EOF: the last line)

    def skip_whitespace(self) -> int:
        skipped = super().skip_whitespace()
        self.token_line = self.line_number - (self.ungotten_char == "\n")
        return skipped

    def where(self) -> tuple[str, int]:
        return self.filename, min(self.token_line, self.last_line)

    def as_name(
        self,
        token: dns.tokenizer.Token,
        origin: dns.name.Name | None = None,
        relativize: bool = False,
        relativize_to: dns.name.Name | None = None,
    ) -> dns.name.Name:
        if (
            not self.origin_state.known
            and token.is_identifier()
            and not dns.name.from_text(token.value, None, self.idna_codec).is_absolute()
        ):
            raise _syntax_error(
                f"relative name {token.value!r} with no $ORIGIN (add a $ORIGIN line, "
                "write the name with a final dot, or give the origin as FILE:ORIGIN)"
            )
        return super().as_name(token, origin, relativize, relativize_to)


class _Reader(dns.zonefile.Reader):
    """Starts at ``origin`` when one is given (as a server's configuration gives a zone
    file its origin), while names stay absolute and may lie outside it."""

    def __init__(self, tok: _Tokenizer, txn: _Transaction, origin: dns.name.Name | None):
        super().__init__(
            tok,
            dns.rdataclass.IN,
            txn,
            allow_directives={"$ORIGIN", "$TTL", "$GENERATE"},
            rfc2308_ttl=True,
            default_ttl=DEFAULT_TTL,
        )
        if origin is not None:
            self.current_origin = self.last_name = origin
        else:
            # A first record with no owner name would be the root's (dnspython starts the
            # last name at the origin): "the last used name is undefined" instead.
            self.last_name = None
        self.origin_state = tok.origin_state

    def _generate_line(self) -> None:
        if not self.origin_state.known:  # (dnspython reads $GENERATE names without as_name)
            raise _syntax_error("$GENERATE with no $ORIGIN")
        token = self.tok.get()  # the range: at most MAX_GENERATE names (a file, not a loop)
        self.tok.unget(token)
        try:
            start, stop, step = dns.grange.from_text(token.value)
        except (dns.exception.SyntaxError, ValueError):
            start, stop, step = 0, 0, 1  # (dnspython reports the bad range itself)
        if (stop - start) // max(step, 1) + 1 > MAX_GENERATE:
            raise _syntax_error(f"$GENERATE range {token.value} over {MAX_GENERATE} names")
        super()._generate_line()  # type: ignore[no-untyped-call]


def _syntax_error(message: str) -> dns.exception.SyntaxError:
    return dns.exception.SyntaxError(message)  # type: ignore[no-untyped-call]


def zone_key(name: dns.name.Name) -> str:
    """The name under which a zone's records are kept: the form :func:`normalize_name` gives
    a typed name (lowercase, no final dot), so that lookups match; a label that no typed name
    can hold (an octet outside printable ASCII, a dot or backslash inside it: RFC 1035 5.1
    ``\\DDD``) keeps its octets escaped as ``\\DDD``, so that no lookup matches it."""
    labels = []
    for label in name.labels:
        if not label:
            continue
        if all(0x20 <= octet < 0x7F and octet not in b".\\" for octet in label):
            labels.append(label.decode("ascii").lower())
        else:
            labels.append("".join(_escaped(octet) for octet in label))
    return ".".join(labels) or "."


def _escaped(octet: int) -> str:
    if 0x20 <= octet < 0x7F and octet not in b".\\":
        return chr(octet).lower()
    return f"\\{octet:03d}"


def _key_of(name: str) -> str:
    """A name given to the constructor: typed, or in master-file form with escapes."""
    if name == ".":
        return name  # (the root: it may own records, which no lookup asks for)
    if "\\" not in name:
        return normalize_name(name)
    try:
        return zone_key(dns.name.from_text(name, dns.name.root))
    except dns.exception.DNSException as exc:
        raise ConfigError(f"invalid domain name {name!r}: {exc}") from None


def split_zone_spec(spec: str) -> tuple[str, str | None]:
    """``FILE`` or ``FILE:ORIGIN`` (the command line's ``--dns-zone``, the configuration's
    ``zone_files``): a path that exists, or has no colon, is a file name as it is."""
    path, colon, origin = spec.rpartition(":")
    if not colon or not path or not origin or "/" in origin or os.path.exists(spec):
        return spec, None
    return path, origin


def _load_zone(
    text: bytes,
    label: str,
    records: dict[tuple[str, RRType], tuple[int, list[Record]]],
    faults: dict[str, str],
    origin: str | None = None,
) -> None:
    # Read as plain RRsets rooted at "." (not as one dns.zone.Zone), so that one file may
    # hold several domains, each with its own SOA; $ORIGIN and $TTL apply as usual. Every
    # error is one line, FILE:LINE: what.
    try:
        start = dns.name.from_text(origin, dns.name.root) if origin else None
    except dns.exception.DNSException as exc:
        raise ConfigError(f"{label}: origin {origin!r}: {exc}") from None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = text.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{label}:{line}: not UTF-8 text") from None
    state = _Origin(start is not None)
    manager = _Manager(state)
    tokenizer = _Tokenizer(decoded, label, state)
    try:
        with manager.writer(True) as txn:
            _Reader(tokenizer, txn, start).read()
    except dns.exception.SyntaxError as exc:
        raise ConfigError(str(exc)) from None  # (dnspython's FILE:LINE: what)
    except (dns.exception.DNSException, ValueError) as exc:
        where = ":".join(map(str, tokenizer.where()))
        raise ConfigError(f"{where}: {exc}") from None
    for rrset in manager.rrsets:
        try:
            rdtype = RRType(dns.rdatatype.to_text(rrset.rdtype))
        except ValueError:
            continue  # SOA and other types mailauth never asks for
        if rdtype in (RRType.CNAME, RRType.PTR, RRType.NS, RRType.MX):
            values: list[Record] = [_target(rdata) for rdata in rrset]
        else:
            values = list(records_from_rrset(rrset))
        _, kept = records.setdefault((zone_key(rrset.name), rdtype), (rrset.ttl, []))
        kept.extend(values)
    for match in _FAULT.finditer(text):
        faults[match.group(1).decode()] = match.group(2).decode().lower()


def _target(rdata: Any) -> Record:
    """A name in a record's data, kept as owner names are (a CNAME's is looked up)."""
    if rdata.rdtype == dns.rdatatype.MX:
        return MxRecord(int(rdata.preference), zone_key(rdata.exchange))
    return zone_key(rdata.target)
