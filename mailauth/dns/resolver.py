"""The network resolver: dnspython underneath, one cache, sync and asyncio front ends.

dnspython does the wire work: UDP with EDNS0 (RFC 6891, a 1232-byte payload by default),
TCP when an answer comes back truncated (RFC 1035 4.2.1, RFC 7766), CNAME chains, a per-server
timeout and an overall lifetime across servers and retries. This module adds what mail
authentication needs on top: the four-way outcome of :mod:`mailauth.dns.types`, TXT strings
joined, names normalised, and a :class:`~mailauth.dns.cache.DnsCache` shared by both front
ends. The two front ends differ only in the dnspython resolver they call; the translation of
answers and errors into :class:`~mailauth.dns.types.Lookup` is written once.

Out of scope: DNSSEC validation (a validating local resolver is the place for it), DoT/DoH.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import cast

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from mailauth.dns.cache import DnsCache
from mailauth.dns.types import DnsStatus, Lookup, MxRecord, Query, Record, RRType
from mailauth.errors import ConfigError


def parse_nameserver(spec: str) -> tuple[str, int]:
    """``HOST[:PORT]`` to (address, port); IPv6 as ``::1`` or ``[::1]:5353``.

    Only addresses are accepted: looking up a nameserver's name would need another resolver.
    """
    text = spec.strip()
    port = 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"nameserver {spec!r}: expected [IPV6]:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ConfigError(f"nameserver {spec!r}: port must be 1-65535")
        port = int(port_text)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError(f"nameserver {spec!r}: not an IP address") from None
    return address, port


def records_from_rrset(rrset: dns.rrset.RRset) -> tuple[Record, ...]:
    """Convert dnspython rdata to mailauth's record values."""
    out: list[Record] = []
    for rdata in rrset:
        rdtype = rdata.rdtype
        if rdtype == dns.rdatatype.TXT:
            out.append(b"".join(rdata.strings))
        elif rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            out.append(str(rdata.address))
        elif rdtype == dns.rdatatype.MX:
            exchange = rdata.exchange.to_text(omit_final_dot=True).lower()
            out.append(MxRecord(int(rdata.preference), exchange))
        else:  # PTR, CNAME, NS
            out.append(rdata.target.to_text(omit_final_dot=True).lower())
    return tuple(out)


def _negative(
    response: dns.message.Message | None, name: str, status: DnsStatus
) -> tuple[int, str, str]:
    """What a negative response proves: its TTL (RFC 2308 5: min(SOA TTL, SOA MINIMUM), and
    no longer than a CNAME on the way; 0 without an SOA, which RFC 2308 5 says not to
    cache), the name where the CNAME chain ended, and why it proves nothing ("" when it
    does), from one walk of the response.

    A negative response proves nothing when its answer section holds records that are not
    the CNAME chain (records of another type or class: a broken server or middlebox
    answering another question; an answer beside NXDOMAIN), or when an empty NOERROR
    response is a referral (NS records and no SOA in the authority section, RFC 2308 2.2.1:
    a server that does not recurse, or a lame one). RFC 2308 2.2 calls the first NODATA
    ("no relevant answers"); mailauth does not take a broken server's word that a DKIM key
    or a DMARC record is absent, since that absence is a verdict (``permerror``,
    ``none``): both are temporary failures.
    """
    if response is None:
        return 0, name, ""
    end, ttl = name, 0x7FFFFFFF  # (RFC 2181 8: TTLs fit in 31 bits)
    if response.answer:
        try:
            chain = cast(dns.message.QueryMessage, response).resolve_chaining()
        except dns.exception.DNSException as exc:  # an answer beside NXDOMAIN, a long chain
            return 0, name, f"inconsistent response: {exc}"
        for rrset in response.answer:
            if rrset.rdtype not in _CHAIN_TYPES and not any(rrset is c for c in chain.cnames):
                what = f"{dns.rdataclass.to_text(rrset.rdclass)} "
                what += f"{dns.rdatatype.to_text(rrset.rdtype)} at {rrset.name}"
                return 0, name, f"the answer holds {what}: a broken server"
        owner, end = chain.canonical_name, chain.canonical_name.to_text(omit_final_dot=True)
        ttl = min((rrset.ttl for rrset in chain.cnames), default=ttl)
    else:  # no CNAME on the way (the common case): the SOA says it all
        owner = response.question[0].name if response.question else dns.name.root
    soa = next((r for r in response.authority if _is_soa_above(r, owner)), None)
    if soa is None:
        referral = any(r.rdtype == dns.rdatatype.NS for r in response.authority)
        if referral and status is DnsStatus.NODATA:
            return 0, name, "a referral, not an answer: the server does not recurse"
        return 0, end.lower(), ""
    return min(ttl, soa.ttl, next(iter(soa)).minimum), end.lower(), ""


# In an answer section beside a CNAME chain: DNAMEs (RFC 6672 synthesises the CNAMEs) and
# DNSSEC signatures (sent by some servers even without the DO bit) say nothing against it.
_CHAIN_TYPES = (dns.rdatatype.DNAME, dns.rdatatype.RRSIG)


def _is_soa_above(rrset: dns.rrset.RRset, name: dns.name.Name) -> bool:
    """An SOA of class IN owned by ``name`` or an ancestor of it: the zone that says no."""
    return (
        rrset.rdtype == dns.rdatatype.SOA
        and rrset.rdclass == dns.rdataclass.IN
        and len(rrset) > 0
        and name.is_subdomain(rrset.name)
    )


def lookup_from_answer(query: Query, answer: dns.resolver.Answer) -> Lookup:
    rrset = answer.rrset
    if rrset is None:  # pragma: no cover - dnspython raises NoAnswer instead
        return Lookup(query.name, query.rdtype, DnsStatus.NODATA)
    canonical = answer.canonical_name.to_text(omit_final_dot=True).lower()
    return Lookup(
        query.name,
        query.rdtype,
        DnsStatus.ANSWER,
        records_from_rrset(rrset),
        ttl=int(answer.chaining_result.minimum_ttl),
        canonical_name=canonical,
    )


def lookup_from_error(query: Query, exc: Exception) -> Lookup:
    """The one map from dnspython's exceptions to outcomes (tested as a table).

    NXDOMAIN and NODATA only when a server said so in a consistent response; every other
    way a query can end (a timeout, SERVFAIL, REFUSED, NOTIMP, FORMERR, YXDOMAIN, a
    truncated answer whose TCP retry failed, a network error) is a temporary failure.
    Anything else is a bug, raised.
    """
    if isinstance(exc, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
        if isinstance(exc, dns.resolver.NXDOMAIN):
            responses = exc.responses()  # type: ignore[no-untyped-call]
            response = next(iter(responses.values()), None) if responses else None
            status = DnsStatus.NXDOMAIN
        else:
            response, status = exc.response(), DnsStatus.NODATA  # type: ignore[no-untyped-call]
        ttl, chain_end, problem = _negative(response, query.name, status)
        if not problem:
            return Lookup(query.name, query.rdtype, status, ttl=ttl, canonical_name=chain_end)
        reason = f"{status.upper()} not proven: {problem}"
    elif isinstance(exc, dns.exception.Timeout):
        reason = "DNS timeout"
    elif isinstance(exc, dns.resolver.NoNameservers):
        reason = f"no nameserver answered: {_attempts(exc)}"
    elif isinstance(exc, dns.exception.DNSException | OSError | EOFError):
        # (dnspython turns these into NoNameservers; the map stays whole if one escapes.)
        reason = f"DNS error: {str(exc) or type(exc).__name__}"
    else:
        raise exc
    return Lookup(query.name, query.rdtype, DnsStatus.TEMPFAIL, reason=reason)


def _attempts(exc: dns.resolver.NoNameservers) -> str:
    """What the servers said, once each: ``SERVFAIL``, ``truncated answer; TCP: Connection
    refused``. Not which server: the reason goes into Authentication-Results fields of
    delivered mail, which need not show the receiver's resolvers."""
    said: list[str] = []
    for _server, tcp, _port, error, _response in exc.kwargs.get("errors") or []:
        if isinstance(error, dns.message.Truncated):
            what = "truncated answer"
        elif isinstance(error, OSError):
            what = error.strerror or str(error) or type(error).__name__
        else:
            what = str(error) or type(error).__name__
        text = f"TCP: {what}" if tcp else what
        if text not in said:
            said.append(text)
    return "; ".join(said) or "no nameserver to ask"


EDNS_PAYLOAD = 1232  # DNS Flag Day 2020
LOOPBACK_EDNS_PAYLOAD = 4096


class Resolver:
    """A caching stub resolver talking to recursive nameservers.

    ``nameservers`` is a list of ``HOST[:PORT]`` (IPv4 or IPv6 addresses); None reads the
    system configuration (/etc/resolv.conf). ``timeout`` bounds one attempt at one server,
    ``lifetime`` the whole query including retries and fallbacks. ``edns_payload``: the
    largest UDP answer asked for; by default 1232 octets (DNS Flag Day 2020: no IP
    fragmentation on the Internet's paths), and 4096 when every nameserver is on the
    loopback interface (a local recursive resolver, the recommended set-up), where
    fragmentation cannot happen: DKIM keys and SPF records over 1232 octets then come back
    in one UDP exchange instead of a truncated one and a TCP connection.
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        timeout: float = 2.0,
        lifetime: float = 5.0,
        cache: DnsCache | None = None,
        edns_payload: int | None = None,
    ) -> None:
        if timeout <= 0 or lifetime <= 0:
            raise ConfigError("DNS timeout and lifetime must be positive")
        servers: list[str | dns.nameserver.Nameserver] | None = None
        if nameservers is not None:
            if not nameservers:
                raise ConfigError("no nameservers given")
            servers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(spec)) for spec in nameservers
            ]
        self.cache = cache if cache is not None else DnsCache()
        if edns_payload is None:
            local = servers is not None and all(
                ipaddress.ip_address(ns.address).is_loopback
                for ns in servers
                if isinstance(ns, dns.nameserver.AddressAndPortNameserver)
            )
            edns_payload = LOOPBACK_EDNS_PAYLOAD if local else EDNS_PAYLOAD
        self.edns_payload = edns_payload
        try:
            self._sync = dns.resolver.Resolver(configure=servers is None)
            self._async = dns.asyncresolver.Resolver(configure=servers is None)
        except dns.resolver.NoResolverConfiguration as exc:
            raise ConfigError(f"no system DNS configuration: {exc}") from None
        for backend in (self._sync, self._async):
            if servers is not None:
                backend.nameservers = servers
            backend.timeout = timeout
            backend.lifetime = lifetime
            backend.use_edns(0, 0, edns_payload)
            backend.cache = None
            backend.retry_servfail = False
        self.timeout = timeout
        self.lifetime = lifetime

    @property
    def nameservers(self) -> list[str]:
        """The servers asked, as ``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6)."""
        out = []
        for ns in self._sync.nameservers:
            if isinstance(ns, dns.nameserver.AddressAndPortNameserver):
                address, port = ns.address, ns.port
            else:
                address, port = str(ns), 53
            out.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        return out

    def lookup(self, name: str, rdtype: RRType) -> Lookup:
        """Resolve ``name``/``rdtype``, blocking the calling thread."""
        query = Query.of(name, rdtype)
        cached = self.cache.get(query)
        if cached is not None:
            return cached
        try:
            answer = self._sync.resolve(query.name, rdtype.value, search=False)
        except Exception as exc:
            lookup = lookup_from_error(query, exc)
        else:
            lookup = lookup_from_answer(query, answer)
        self.cache.put(lookup)
        return lookup

    async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
        """Resolve ``name``/``rdtype`` on the running event loop."""
        query = Query.of(name, rdtype)
        cached = self.cache.get(query)
        if cached is not None:
            return cached
        try:
            answer = await self._async.resolve(query.name, rdtype.value, search=False)
        except Exception as exc:
            lookup = lookup_from_error(query, exc)
        else:
            lookup = lookup_from_answer(query, answer)
        self.cache.put(lookup)
        return lookup

    def check_reachable(self) -> str | None:
        """None when some nameserver answers at all (any rcode); else what went wrong.

        Asks for the root's NS records, which every recursive resolver has at hand. Used by
        the command line to tell "DNS is unreachable" from a domain's temporary failure.
        """
        try:
            self._sync.resolve(dns.name.root, "NS", search=False)
        except dns.exception.Timeout:
            return f"no answer from {', '.join(self.nameservers)} within {self.lifetime:g}s"
        except OSError as exc:
            return f"{', '.join(self.nameservers)}: {exc.strerror or exc}"
        except dns.resolver.NoNameservers as exc:
            # Reachable if any server sent a response (SERVFAIL, REFUSED...); not if every
            # attempt ended in a network error.
            errors = exc.kwargs.get("errors") or []
            if errors and all(isinstance(e[3], OSError) for e in errors):
                return f"{', '.join(self.nameservers)}: {errors[-1][3]}"
        except dns.exception.DNSException:
            return None  # any other DNS response (NXDOMAIN, FORMERR...) means it answered
        return None
