"""DNS over UDP on asyncio: a few connected sockets per nameserver, reused across queries.

dnspython's asyncio path opens a socket and an asyncio transport for every question and
builds its machinery around it; under a burst of questions (one hostile message asks about
fifty at once) that cost lands in one turn of the event loop, which every other message
waits for. Here each nameserver has a small pool of connected UDP sockets (RFC 1035 4.2.1),
opened lazily, each on its own random source port, read with ``loop.add_reader``; a
question goes out on one of them with a random 16-bit ID, and the answer is matched by
(ID, question) before anything else is parsed (RFC 5452 9.1: ID, question and source
address; the kernel's connected socket filters the source, checked again here).

Spoofing (RFC 5452 10): a forged answer must hit the socket's port (the kernel's random
ephemeral port) and the query's random ID, as with a fresh socket; what is given up is the
port's short life. A socket serves at most :data:`USES` queries before it is retired (closed
once its last query ends), so that a port learned one way or another (a side channel such
as CVE-2020-25705) serves for those queries only. See docs/dns.md.

Answers are parsed with dnspython (``dns.message.from_wire``), only once they match, and in
slices: at most :data:`PARSE_SLICE` seconds of parsing per turn of the event loop, so that
the fifty answers of a hostile message, arriving together, do not hold up every other
message for one long turn (docs/architecture.md, "Bounded work"); an answer still waiting
to be parsed when its query's time is up is parsed then, not lost. One that does not
parse, or does not answer the question asked, is ignored and the query goes on waiting, as
dnspython's ``asyncquery.udp`` does with ``ignore_unexpected`` and ``ignore_errors``. A
truncated answer (TC) ends the exchange with ``dns.message.Truncated``, unparsed; the caller
asks again over TCP. ICMP errors that a connected socket reports (port unreachable) are
ignored: the query times out, as with dnspython's unconnected sockets, which never see them.

Out of scope: TCP (:mod:`mailauth.dns.asyncstub` asks again over TCP after a truncated
answer), TSIG.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import random
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import dns.exception
import dns.message

from mailauth.dns.wirecost import parse_cost

SOCKETS = 8  # per nameserver, opened as queries need them
USES = 100  # queries a socket serves before a fresh one (a new random port) replaces it
IN_FLIGHT = 64  # queries one socket carries at once before another is preferred
MAX_AGE = 10.0  # seconds a socket takes new queries (its port then retires, however idle)
_BATCH = 32  # datagrams read per readiness callback (the rest wait for the loop's next turn)
PARSE_SLICE = 0.001  # seconds of parsing per turn of the loop (at least one answer a turn)
# dnspython parses an answer in one piece, at a cost that depends on its shape
# (mailauth.dns.wirecost: 150 us a record, 15 us a TXT string, and the square of each name's
# labels; a 1,232-octet answer of deep MX names took 0.48 s). Each answer's cost is estimated
# first, in one cheap pass: up to INLINE_COST (every answer a DKIM key or DMARC record
# normally needs, a few hundred) it is parsed at once; up to MAX_COST (a big domain's apex TXT
# set, an address pool of a hundred) in a thread of its own, which the loop shares the
# interpreter with in turns of sys.getswitchinterval() (the milter sets 2 ms); past it, or
# past MAX_ANSWER octets, it is not parsed at all: the server is dropped for the query, which
# ends in a temporary failure. (Estimated microseconds on the benchmark machine.)
INLINE_COST = 2_000
MAX_COST = 50_000
MAX_ANSWER = 16 * 1024

_HEADER = struct.Struct("!HHHHHH")  # RFC 1035 4.1.1
_ID_FLAGS_QDCOUNT = struct.Struct("!HHH")
RD = 0x0100
_QR, _TC, _OPCODE = 0x8000, 0x0200, 0x7800
# dnspython's Message.is_response accepts these rcodes with an empty question section.
_NO_QUESTION_RCODES = frozenset((1, 2, 4, 5))  # FORMERR, SERVFAIL, NOTIMP, REFUSED


def too_large(wire: bytes | int) -> dns.exception.FormError | None:
    """The error for an answer (or answer length) over :data:`MAX_ANSWER` octets, or
    one whose parse would cost more than :data:`MAX_COST`."""
    size = wire if isinstance(wire, int) else len(wire)
    if size > MAX_ANSWER:
        reason = f"an answer of {size} octets (over {MAX_ANSWER}: not read)"
    elif isinstance(wire, int) or _cost(wire) <= MAX_COST:
        return None
    else:
        reason = "an answer too costly to parse (its records, strings or labels: not read)"
    return dns.exception.FormError(reason)  # type: ignore[no-untyped-call]


def _cost(wire: bytes) -> float:
    try:
        return parse_cost(wire, MAX_COST)
    except ValueError:
        return 0.0  # (not a DNS message: dnspython says so, at once)


_parser: concurrent.futures.ThreadPoolExecutor | None = None
_parser_lock = threading.Lock()


def parse_at_once(wire: bytes) -> bool:
    """Whether ``wire`` (within :func:`too_large`'s bounds) is cheap enough to parse on the
    loop."""
    return _cost(wire) <= INLINE_COST


async def parse_answer(wire: bytes) -> dns.message.Message:
    """``dns.message.from_wire(wire)``: at once when cheap, else in the parsing thread, so
    that a costly answer does not hold the event loop in one piece."""
    if parse_at_once(wire):
        return dns.message.from_wire(wire)
    return await asyncio.wrap_future(_parsing_thread().submit(dns.message.from_wire, wire))


def _parsing_thread() -> concurrent.futures.ThreadPoolExecutor:
    global _parser  # noqa: PLW0603 - one thread for the process, started when first needed
    with _parser_lock:
        if _parser is None:
            _parser = concurrent.futures.ThreadPoolExecutor(1, "mailauth-dns-parse")
        return _parser


_random = random.SystemRandom()  # IDs from the OS's CSPRNG (RFC 5452 9.2)


@dataclass(slots=True)
class _Pending:
    """One query waiting on a socket: its future and the question it asked (lowercased)."""

    future: asyncio.Future[dns.message.Message]
    name: bytes  # the question's name in wire form, lowercase
    type_class: bytes  # QTYPE and QCLASS, 4 octets
    received: list[bytes] = field(default_factory=list)  # matched, not parsed yet


@dataclass(slots=True, eq=False)
class _Socket:
    sock: socket.socket
    peer: object  # the address recvfrom must report (getpeername)
    pending: dict[int, _Pending] = field(default_factory=dict)
    uses: int = 0
    retired: bool = False
    born: float = 0.0  # time.monotonic() when opened


class UdpChannel:
    """The UDP sockets to one nameserver, on one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        port: int,
        *,
        sockets: int = SOCKETS,
        uses: int = USES,
        in_flight: int = IN_FLIGHT,
        parse_slice: float = PARSE_SLICE,
    ) -> None:
        self.loop = loop
        self.address = address
        self.port = port
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.size = sockets
        self.uses = uses
        self.in_flight = in_flight
        self.parse_slice = parse_slice
        self._unparsed: deque[_Pending] = deque()
        self._parsing = False  # a slice of parsing is scheduled
        self._open: list[_Socket] = []  # taking new queries
        self._draining: set[_Socket] = set()  # retired, closed when their last query ends
        self.closed = False
        self.ignored = 0  # datagrams dropped: wrong source, ID, question, or unparsable
        self.opened = 0  # sockets opened in all

    @property
    def sockets(self) -> int:
        """Sockets open now (taking queries or finishing them)."""
        return len(self._open) + len(self._draining)

    @property
    def waiting(self) -> int:
        """Queries waiting for an answer."""
        return sum(len(s.pending) for s in (*self._open, *self._draining))

    async def exchange(
        self, name: bytes, type_class: bytes, opt: bytes, timeout: float
    ) -> dns.message.Message:
        """Ask one question (``name``: its wire form; ``opt``: an OPT record, or b"") and
        return the parsed answer; ``dns.exception.Timeout`` after ``timeout`` seconds,
        ``dns.message.Truncated`` for a truncated one, ``OSError`` when it cannot be sent."""
        if self.closed:
            raise ConnectionAbortedError("resolver closed")
        entry = self._choose()
        qid = _random.getrandbits(16)
        while qid in entry.pending:
            qid = _random.getrandbits(16)
        future: asyncio.Future[dns.message.Message] = self.loop.create_future()
        pending = entry.pending[qid] = _Pending(future, name.lower(), type_class)
        entry.uses += 1
        if entry.uses >= self.uses:
            self._retire(entry)
        timer = self.loop.call_later(timeout, self._expire, pending, timeout)
        try:
            wire = _HEADER.pack(qid, RD, 1, 0, 0, 1 if opt else 0) + name + type_class + opt
            await self._send(entry, wire)
            return await future
        finally:
            timer.cancel()
            entry.pending.pop(qid, None)
            if entry.retired and not entry.pending:
                self._close_socket(entry)

    def _choose(self) -> _Socket:
        """A socket with room: a new one while the pool is not full, else one of the pool
        at random among those with room (the least loaded when none has), retiring first
        those past :data:`MAX_AGE` seconds, so that no port serves long (a port learned by
        a side channel is worth little). Never more than :attr:`size` open at once."""
        now = time.monotonic()
        for old in [e for e in self._open if now - e.born > MAX_AGE]:
            self._retire(old)
            if not old.pending:
                self._close_socket(old)
        if len(self._open) < self.size:
            return self._open_socket()
        roomy = [e for e in self._open if len(e.pending) < self.in_flight]
        if roomy:
            return roomy[_random.randrange(len(roomy))]
        return min(self._open, key=lambda e: len(e.pending))

    def _open_socket(self) -> _Socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((self.address, self.port))  # the kernel picks a random port
            entry = _Socket(sock, sock.getpeername(), born=time.monotonic())
            self.loop.add_reader(sock.fileno(), self._readable, entry)
        except BaseException:
            sock.close()
            raise
        self._open.append(entry)
        self.opened += 1
        return entry

    async def _send(self, entry: _Socket, wire: bytes) -> None:
        try:
            entry.sock.send(wire)
        except BlockingIOError:
            # The socket's send buffer is full: the datagram is lost, as on the network;
            # the query's timer decides (a wait for room here would outlive its lifetime).
            return
        except ConnectionRefusedError:
            # An ICMP error of an earlier datagram, reported now: this one was not sent.
            entry.sock.send(wire)

    def _retire(self, entry: _Socket) -> None:
        if not entry.retired:
            entry.retired = True
            self._open.remove(entry)
            self._draining.add(entry)

    def _close_socket(self, entry: _Socket) -> None:
        if entry.sock.fileno() < 0:  # (closed already)
            return
        self._draining.discard(entry)
        if entry in self._open:
            self._open.remove(entry)
        if not self.loop.is_closed():
            self.loop.remove_reader(entry.sock.fileno())
        entry.sock.close()

    def _readable(self, entry: _Socket) -> None:
        sock = entry.sock
        if sock.fileno() < 0:  # (closed earlier in this turn of the loop)
            return
        for _ in range(_BATCH):
            try:
                wire, source = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error (see the module's docstring): ignored
                continue
            if source != entry.peer:
                self.ignored += 1
                continue
            self._deliver(entry, wire)

    def _deliver(self, entry: _Socket, wire: bytes) -> None:
        """Hand a datagram to the query it answers, if any (RFC 5452 9.1): the ID, QR set,
        the opcode QUERY, and the question asked (names compared without case, RFC 4343)."""
        if len(wire) < 12:
            self.ignored += 1
            return
        qid, flags, qdcount = _ID_FLAGS_QDCOUNT.unpack_from(wire)
        pending = entry.pending.get(qid)
        if pending is None or pending.future.done() or flags & (_QR | _OPCODE) != _QR:
            self.ignored += 1
            return
        if qdcount == 1:
            end = 12 + len(pending.name)
            if wire[12:end].lower() != pending.name or wire[end : end + 4] != pending.type_class:
                self.ignored += 1
                return
        elif qdcount != 0 or flags & 0xF not in _NO_QUESTION_RCODES:
            self.ignored += 1
            return
        if flags & _TC:
            pending.future.set_exception(dns.message.Truncated())  # type: ignore[no-untyped-call]
            return
        if (problem := too_large(wire)) is not None:
            pending.future.set_exception(problem)
            return
        pending.received.append(wire)
        self._unparsed.append(pending)
        if not self._parsing:
            self._parsing = True
            self.loop.call_soon(self._parse_slice)

    def _parse_slice(self) -> None:
        """Parse what came, until :attr:`parse_slice` seconds have gone; the rest in the
        loop's next turn, after the other tasks' turn."""
        unparsed = self._unparsed
        ends = time.perf_counter() + self.parse_slice
        while unparsed:
            self._settle(unparsed.popleft())
            if time.perf_counter() >= ends:
                break
        if unparsed:
            self.loop.call_soon(self._parse_slice)
        else:
            self._parsing = False

    def _settle(self, pending: _Pending) -> None:
        """The query's answer: the first of its datagrams that parses (a costly one in the
        parsing thread: it answers when parsed, unless the query's time is up first)."""
        while pending.received and not pending.future.done():
            wire = pending.received.pop(0)
            if not parse_at_once(wire):
                parsed = asyncio.ensure_future(parse_answer(wire), loop=self.loop)
                parsed.add_done_callback(functools.partial(self._parsed, pending))
                continue
            try:
                message = dns.message.from_wire(wire)
            except Exception:  # (as dnspython's ignore_errors: go on waiting)
                self.ignored += 1
                continue
            pending.future.set_result(message)
        pending.received.clear()

    def _parsed(self, pending: _Pending, parsed: asyncio.Future[dns.message.Message]) -> None:
        if parsed.cancelled():
            return
        problem = parsed.exception()  # (retrieved even when the query is over: no log noise)
        if pending.future.done():
            return
        if problem is not None:  # (as dnspython's ignore_errors: go on waiting)
            self.ignored += 1
            return
        pending.future.set_result(parsed.result())

    def _expire(self, pending: _Pending, timeout: float) -> None:
        self._settle(pending)  # (an answer that came in time, not parsed yet, counts)
        if not pending.future.done():
            exc = dns.exception.Timeout(timeout=timeout)  # type: ignore[no-untyped-call]
            pending.future.set_exception(exc)

    def close(self) -> None:
        """Close every socket; queries still waiting fail (``ConnectionAbortedError``; not
        on a loop already closed, which can run nothing)."""
        self.closed = True
        alive = not self.loop.is_closed()
        for entry in (*self._open, *self._draining):
            try:
                for pending in entry.pending.values():
                    if alive and not pending.future.done():
                        pending.future.set_exception(ConnectionAbortedError("resolver closed"))
            finally:
                entry.pending.clear()
                self._close_socket(entry)
        self._unparsed.clear()
