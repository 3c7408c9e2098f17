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

import asyncio
import ipaddress
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from mailauth.dns.asyncstub import AsyncStub
from mailauth.dns.cache import DnsCache
from mailauth.dns.outcomes import lookup_from_answer, lookup_from_error
from mailauth.dns.types import Lookup, Query, RRType
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
        self._stub = _stub_for(self._async, timeout, lifetime, edns_payload)

    def close(self) -> None:
        """Close the sockets the asyncio front end keeps open (it opens them again when
        asked). Not needed before the resolver is dropped: they are closed with it."""
        if self._stub is not None:
            self._stub.close()

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
        if self._stub is not None and _has_readers(asyncio.get_running_loop()):
            lookup = await self._stub.resolve(query)
            self.cache.put(lookup)
            return lookup
        try:  # (nameservers of other kinds, Windows' proactor loop)
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


def _stub_for(
    backend: dns.resolver.BaseResolver, timeout: float, lifetime: float, edns_payload: int
) -> AsyncStub | None:
    """The asyncio front end's own stub for ``backend``'s nameservers, or None when one of
    them is not a plain address and port (DNS over HTTPS, TLS or QUIC: dnspython then)."""
    servers: list[tuple[str, int]] = []
    for ns in backend.nameservers:
        if isinstance(ns, str):
            servers.append((ns, backend.nameserver_ports.get(ns, backend.port)))
        elif type(ns) is dns.nameserver.Do53Nameserver:
            servers.append((ns.address, ns.port))
        else:
            return None
    return AsyncStub(
        servers,
        timeout=timeout,
        lifetime=lifetime,
        edns_payload=edns_payload,
        rotate=backend.rotate,
    )


def _has_readers(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` watches sockets for reading (not Windows' proactor loop)."""
    proactor = getattr(asyncio, "ProactorEventLoop", None)
    return proactor is None or not isinstance(loop, proactor)
