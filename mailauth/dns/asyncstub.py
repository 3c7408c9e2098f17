"""The asyncio front end's queries: dnspython's stub-resolver loop, on mailauth's UDP channels.

:class:`AsyncStub` asks what ``dns.asyncresolver.Resolver.resolve`` asks, with the same
rules, and ends each query in the same :class:`~mailauth.dns.types.Lookup`:

- the nameservers in order (shuffled per query with resolv.conf's ``rotate``), each attempt
  bounded by ``timeout``, the whole query by ``lifetime`` (a query still unanswered then is
  a timeout); after a round of every server still in play, a pause of 0.1 s, doubling up to
  2 s, before the next (here cut short at the lifetime, which dnspython's overruns);
- a server that times out stays in play; one that answers with another rcode than NOERROR,
  NXDOMAIN or YXDOMAIN (SERVFAIL included: dnspython's ``retry_servfail=False``), whose
  answer is inconsistent (dnspython's ``Answer`` refuses it), or that cannot be reached
  (an ``OSError``, a TCP connection closed or a bad TCP response) is dropped for this query;
- a truncated UDP answer is asked again at once over TCP, of the same server (RFC 7766),
  one query per connection as dnspython's ``asyncquery.tcp`` (which parses the answer on the
  loop whatever its size: here a long one is parsed in a thread, and one over
  :data:`~mailauth.dns.udp.MAX_ANSWER` octets, over UDP or TCP, not at all: the server is
  dropped);
- NOERROR ends in an answer or NODATA, NXDOMAIN in NXDOMAIN, YXDOMAIN in a temporary
  failure, every server dropped in "no nameserver answered: what they said".

What it saves: the query is written once per question as octets (12 of header, the name
from dnspython's ``Name.to_wire``, the OPT record) rather than as a ``dns.message`` rendered
each time, sockets are reused (:mod:`mailauth.dns.udp`), and the answer becomes a ``Lookup``
from one ``resolve_chaining`` without a ``dns.resolver.Answer``.
"""

from __future__ import annotations

import asyncio
import random
import re
import struct
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from mailauth.dns.outcomes import (
    failure_reason,
    lookup_from_chain,
    lookup_from_error,
    lookup_from_negative,
)
from mailauth.dns.types import DnsStatus, Lookup, Query, RRType
from mailauth.dns.udp import UdpChannel, parse_answer, too_large

_RDTYPES = {
    rdtype: struct.pack("!HH", dns.rdatatype.from_text(rdtype.value), 1) for rdtype in RRType
}
ErrorTuple = tuple[str, bool, int, object, object]  # as dnspython's resolver keeps them
Server = tuple[str, int]


_PLAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*").fullmatch


def name_to_wire(name: str) -> bytes:
    """The wire form of a normalised name (RFC 1035 3.1), as ``dns.name.from_text(name)
    .to_wire()`` gives it: written directly for the names of letters, digits, hyphens and
    underscores (nearly all), by dnspython for the others."""
    if _PLAIN(name):
        return b"".join(bytes((len(label),)) + label for label in name.encode().split(b".")) + b"\0"
    wire = dns.name.from_text(name).to_wire()
    assert wire is not None
    return wire


def opt_record(payload: int) -> bytes:
    """An OPT pseudo-record (RFC 6891 6.1.2): EDNS version 0, no flags, no options."""
    return b"\x00" + struct.pack("!HHIH", dns.rdatatype.OPT, payload, 0, 0)


class AsyncStub:
    """Queries to ``servers`` over :class:`~mailauth.dns.udp.UdpChannel`, TCP when truncated."""

    def __init__(
        self,
        servers: Sequence[Server],
        *,
        timeout: float,
        lifetime: float,
        edns_payload: int,
        rotate: bool = False,
    ) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout
        self.lifetime = lifetime
        self.edns_payload = edns_payload
        self.rotate = rotate
        self._opt = opt_record(edns_payload)
        # The channels of each event loop (a loop's readers serve that loop only).
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Server, UdpChannel]
        ] = weakref.WeakKeyDictionary()
        self._current: tuple[asyncio.AbstractEventLoop, dict[Server, UdpChannel]] | None = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._loops)

    def channels(self, loop: asyncio.AbstractEventLoop) -> dict[Server, UdpChannel]:
        """The channels on ``loop`` (those of loops closed since are closed on the way).
        One resolver may serve loops in several threads: the slow path holds a lock."""
        current = self._current
        if current is not None and current[0] is loop:
            return current[1]
        with self._lock:
            channels = self._loops.get(loop)
            if channels is None:
                for other, old in list(self._loops.items()):
                    if other.is_closed():
                        self._loops.pop(other, None)
                        for channel in old.values():
                            channel.close()
                channels = {server: UdpChannel(loop, *server) for server in self.servers}
                self._loops[loop] = channels
            self._current = (loop, channels)
        return channels

    def close(self) -> None:
        """Close every socket (queries still waiting fail)."""
        with self._lock:
            self._current = None
            _close_all(self._loops)

    async def resolve(self, query: Query) -> Lookup:
        loop = asyncio.get_running_loop()
        question = _Question(query, name_to_wire(query.name), self.channels(loop))
        start = loop.time()
        servers = list(self.servers)
        if self.rotate:
            random.shuffle(servers)
        current = servers[:]
        errors: list[ErrorTuple] = []
        backoff = 0.1
        retry_tcp: Server | None = None
        while True:
            tcp = retry_tcp is not None
            if retry_tcp is not None:
                server, retry_tcp = retry_tcp, None
            else:
                if not current:
                    if not servers:
                        reason = f"no nameserver answered: {failure_reason(errors)}"
                        return Lookup(query.name, query.rdtype, DnsStatus.TEMPFAIL, reason=reason)
                    current = servers[:]
                    await asyncio.sleep(min(backoff, start + self.lifetime - loop.time()))
                    backoff = min(backoff * 2, 2.0)
                server = current.pop(0)
            remaining = start + self.lifetime - loop.time()
            if remaining <= 0:
                return Lookup(query.name, query.rdtype, DnsStatus.TEMPFAIL, reason="DNS timeout")
            try:
                response = await self._ask(question, server, tcp, min(remaining, self.timeout))
            except Exception as exc:
                errors.append((_label(server), tcp, server[1], exc, None))
                if isinstance(exc, dns.message.Truncated) and not tcp:
                    retry_tcp = server
                elif isinstance(exc, _UNREACHABLE):
                    servers.remove(server)  # (Truncated over TCP cannot happen)
                continue
            outcome = _outcome(query, response)
            if isinstance(outcome, Lookup):
                return outcome
            errors.append((_label(server), tcp, server[1], outcome, response))
            servers.remove(server)

    async def _ask(
        self, question: _Question, server: Server, tcp: bool, timeout: float
    ) -> dns.message.Message:
        """One attempt at one server: over UDP, or over TCP after a truncated answer."""
        query = question.query
        if not tcp:
            channel = question.channels[server]
            return await channel.exchange(question.name, _RDTYPES[query.rdtype], self._opt, timeout)
        request = dns.message.make_query(
            query.name + ".", query.rdtype.value, use_edns=0, payload=self.edns_payload
        )
        return await _tcp(request, server, timeout)


async def _tcp(request: dns.message.Message, server: Server, timeout: float) -> dns.message.Message:
    """One query over a TCP connection of its own (RFC 1035 4.2.2, RFC 7766); the answer
    checked for its size, read whole, then parsed (a long one in the parsing thread)."""
    wire = request.to_wire()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(server[0], server[1])
            try:
                writer.write(struct.pack("!H", len(wire)) + wire)
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                if (problem := too_large(length)) is not None:
                    raise problem
                answer = await reader.readexactly(length)
            finally:
                writer.close()
            if (problem := too_large(answer)) is not None:
                raise problem
            response = await parse_answer(answer)  # (within the timeout)
    except TimeoutError:
        raise dns.exception.Timeout(timeout=timeout) from None  # type: ignore[no-untyped-call]
    if not request.is_response(response):
        raise dns.query.BadResponse  # (a FormError: the server is dropped)
    return response


# What takes a server out of a query (as dnspython's resolver: it cannot be reached, or its
# answers cannot be read); a timeout does not.
_UNREACHABLE = (dns.exception.FormError, EOFError, OSError, NotImplementedError)


@dataclass(frozen=True, slots=True)
class _Question:
    query: Query
    name: bytes  # in wire form
    channels: dict[Server, UdpChannel]  # (those of the running loop)


def _outcome(query: Query, response: dns.message.Message) -> Lookup | object:
    """The lookup a response ends in, or what is wrong with it (the server is dropped)."""
    assert isinstance(response, dns.message.QueryMessage)  # (opcode QUERY: matched so)
    rcode = response.rcode()
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        try:  # (what dnspython's Answer checks; AnswerForNXDOMAIN, ChainTooLong...)
            chain = response.resolve_chaining()
        except Exception as exc:
            return exc
        if rcode == dns.rcode.NXDOMAIN:
            return lookup_from_negative(query, response, DnsStatus.NXDOMAIN)
        if chain.answer is None:
            return lookup_from_negative(query, response, DnsStatus.NODATA)
        return lookup_from_chain(query, chain)
    if rcode == dns.rcode.YXDOMAIN:
        return lookup_from_error(query, dns.resolver.YXDOMAIN())  # type: ignore[no-untyped-call]
    return dns.rcode.to_text(rcode)


def _label(server: Server) -> str:
    return f"Do53:{server[0]}@{server[1]}"


def _close_all(
    loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Server, UdpChannel]],
) -> None:
    """Close the channels of every loop: at once on their loop's thread or when it does not
    run, else on its thread (a resolver dropped may be finalised in any thread)."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, channels in list(loops.items()):
        for channel in channels.values():
            try:
                if loop is running or not loop.is_running():
                    channel.close()
                else:
                    loop.call_soon_threadsafe(channel.close)
            except RuntimeError:  # (the loop closed meanwhile: close here)
                channel.close()
    loops.clear()
