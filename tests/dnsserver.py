"""A small authoritative DNS server on loopback, for integration tests and benchmarks.

It serves one zone (RFC 1035 master-file text) over UDP and TCP on 127.0.0.1 and an
ephemeral port, in background threads. UDP answers larger than the client's payload size
(512 without EDNS0, RFC 6891 otherwise) come back truncated (TC=1), so that clients retry over
TCP. ``mode`` makes every answer misbehave, ``faults`` only those whose question, or a name
its CNAME chain reaches, is listed (as a recursive resolver fails on the way); the kinds:

- ``silent``: no answer at all (the client times out);
- an rcode in lower case (``servfail``, ``refused``, ``notimp``, ``formerr``, ``yxdomain``):
  an empty response with that rcode;
- ``truncate_tcp_refused``: the UDP answer truncated (TC=1, empty), and the TCP port closed,
  so that the client's retry over TCP is refused (only truncated answers are retried over
  TCP, so as a per-name fault it leaves the other names alone);
- ``truncate_tcp_reset``: the UDP answer truncated, and the TCP connection that asks the
  question again reset (RST) instead of answered;
- ``wrong_type`` / ``wrong_class``: NOERROR with records at the name of another type (A, or
  TXT for an A question), or a TXT record in class CH: a broken server's answer;
- ``referral``: NOERROR, no answer, NS records and no SOA (RFC 2308 2.2.1): what a server
  that does not recurse says of a name it is not authoritative for.

``delay`` adds latency to every answer. Every question is recorded.

For load (benchmarks), :func:`slow_dns_process` serves the same zone logic from another
process on asyncio (UDP, and TCP for truncated answers), every answer late by a fixed delay,
or only the answers about names under one domain; a :class:`QuestionCounter` counts the
questions it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing import Array, Event, Process, Queue, Value
from multiprocessing.synchronize import Event as EventType
from types import TracebackType
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from mailauth.dns import Resolver

_TRUNCATING = ("truncate_tcp_refused", "truncate_tcp_reset")
_RESET = b""  # _handle's answer for a TCP connection to be reset (no DNS message is empty)


class LoopbackDnsServer:
    def __init__(
        self,
        zone_text: str,
        *,
        mode: str = "normal",
        delay: float = 0.0,
        faults: Mapping[str, str] | None = None,
    ) -> None:
        self.zone = dns.zone.from_text(zone_text, relativize=False, check_origin=False)
        # Every name that exists: the nodes and their ancestors (empty non-terminals), so that
        # NXDOMAIN vs NODATA costs a set lookup, not a scan of the zone.
        self._existing = {
            ancestor for node_name in self.zone.nodes for ancestor in _ancestors(node_name)
        }
        self.mode = mode
        self.faults = {dns.name.from_text(name): kind for name, kind in (faults or {}).items()}
        self.delay = delay
        self.questions: list[tuple[str, str, str]] = []  # (transport, name, type)
        self._udp, self._tcp = self._bind()
        self.port = self._udp.getsockname()[1]
        self._udp.settimeout(0.1)  # so that the serving threads notice a stop
        self._tcp.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    @staticmethod
    def _bind() -> tuple[socket.socket, socket.socket]:
        """UDP and TCP on one free port (the UDP port's TCP twin may be taken: try again)."""
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)  # bursts of queries
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            return udp, tcp
        raise OSError("no free port for UDP and TCP together")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def resolver(self, timeout: float = 0.2, lifetime: float = 0.5) -> Resolver:
        """mailauth's network resolver asking this server only, with short timeouts."""
        return Resolver([self.address], timeout=timeout, lifetime=lifetime)

    def __enter__(self) -> LoopbackDnsServer:
        if "truncate_tcp_refused" in (self.mode, *self.faults.values()):
            self._tcp.close()  # nothing listens: connections to the port are refused
            self._threads.pop()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._udp.close()
        self._tcp.close()

    def fault(self, request: dns.message.Message) -> str:
        """How to misbehave for this question ("normal": not at all)."""
        if self.mode != "normal" or not self.faults:
            return self.mode
        name, rdtype = request.question[0].name, request.question[0].rdtype
        for _ in range(8):
            if name in self.faults:
                return self.faults[name]
            node = self.zone.get_node(name)
            if node is None or node.get_rdataset(dns.rdataclass.IN, rdtype) is not None:
                break
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                break
            name = cname[0].target
        return "normal"

    def answer(self, request: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(request)
        response.flags |= dns.flags.AA
        question = request.question[0]
        kind = self.fault(request)
        if kind in ("wrong_type", "wrong_class"):
            rdclass, rdtype, text = dns.rdataclass.IN, dns.rdatatype.A, "192.0.2.99"
            if kind == "wrong_class":  # (a TXT record in class CH)
                rdclass, rdtype, text = dns.rdataclass.CH, dns.rdatatype.TXT, '"wrong class"'
            elif question.rdtype == dns.rdatatype.A:
                rdtype, text = dns.rdatatype.TXT, '"wrong type"'
            response.answer.append(dns.rrset.from_text(question.name, 300, rdclass, rdtype, text))
            return response
        if kind == "referral":
            response.flags &= ~dns.flags.AA
            response.authority.append(
                dns.rrset.from_text("elsewhere.test.", 300, "IN", "NS", "ns.elsewhere.test.")
            )
            return response
        if kind not in ("normal", "silent", *_TRUNCATING):
            response.set_rcode(dns.rcode.from_text(kind.upper()))
            return response
        name, rdtype = question.name, question.rdtype
        for _ in range(8):
            node = self.zone.get_node(name)
            if node is None:
                break
            found = node.get_rdataset(dns.rdataclass.IN, rdtype)
            if found is not None:
                response.answer.append(dns.rrset.from_rdata_list(name, found.ttl, list(found)))
                return response
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                break
            response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
            name = cname[0].target
        if name not in self._existing:  # neither a node nor an empty non-terminal
            response.set_rcode(dns.rcode.NXDOMAIN)
        origin = cast(dns.name.Name, self.zone.origin)
        soa = self.zone.get_rdataset(origin, dns.rdatatype.SOA)
        if soa is not None:
            # The SOA of the zone that says no: this one, or for a name outside it, the root
            # (as a recursive resolver relays it; a client trusts only an SOA above the name).
            owner = origin if name.is_subdomain(origin) else dns.name.root
            response.authority.append(dns.rrset.from_rdata_list(owner, soa.ttl, list(soa)))
        return response

    def _handle(self, wire: bytes, transport: str) -> bytes | None:
        try:
            request = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        question = request.question[0]
        self.questions.append(
            (transport, question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        )
        kind = self.fault(request)
        if kind == "silent":
            return None
        if kind in _TRUNCATING:
            if transport == "tcp":
                return _RESET
            truncated = dns.message.make_response(request)
            truncated.flags |= dns.flags.TC | dns.flags.AA
            return truncated.to_wire()
        if self.delay:
            time.sleep(self.delay)
        response = self.answer(request)
        if transport == "tcp":
            return response.to_wire(max_size=65535)
        return _udp_wire(request, response)

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._reply_udp, args=(wire, peer), daemon=True).start()

    def _reply_udp(self, wire: bytes, peer: tuple[str, int]) -> None:
        reply = self._handle(wire, "udp")
        if reply is not None:
            try:
                self._udp.sendto(reply, peer)
            except OSError:
                pass

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._reply_tcp, args=(conn,), daemon=True).start()

    def _reply_tcp(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    header = conn.recv(2)
                    if len(header) < 2:
                        return
                    (length,) = struct.unpack("!H", header)
                    wire = b""
                    while len(wire) < length:
                        chunk = conn.recv(length - len(wire))
                        if not chunk:
                            return
                        wire += chunk
                    reply = self._handle(wire, "tcp")
                    if reply is None:
                        return
                    if reply is _RESET:  # SO_LINGER 0: close() sends RST, not FIN
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return


def _udp_wire(request: dns.message.Message, response: dns.message.Message) -> bytes:
    """The response for UDP: truncated (TC=1, no records) when larger than the client's
    payload size (512 without EDNS0, RFC 6891 otherwise), so that it asks again over TCP."""
    limit = request.payload if request.edns >= 0 else 512
    try:
        return response.to_wire(max_size=max(512, limit))
    except dns.exception.TooBig:
        truncated = dns.message.make_response(request)
        truncated.flags |= dns.flags.TC | dns.flags.AA
        return truncated.to_wire()


def txt_zone(records: Mapping[str, str]) -> str:
    """Zone text rooted at "." for TXT records by absolute name (long ones split into
    character-strings of 255 octets), with an SOA at the root."""
    lines = ["$ORIGIN .", ". 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60"]
    for name, text in records.items():
        chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
        lines.append(f"{name}. 300 IN TXT " + " ".join(f'"{c}"' for c in chunks))
    return "\n".join(lines) + "\n"


def _ancestors(name: dns.name.Name) -> list[dns.name.Name]:
    found = [name]
    while len(name) > 1:
        name = name.parent()
        found.append(name)
    return found


@dataclass
class Lateness:
    """Delayed answers, and how much later than their delay they went out (a busy or
    niced server process sends them later than it means to)."""

    answers: int = 0
    seconds: float = 0.0  # in all, beyond the delay
    worst: float = 0.0
    over_5ms: int = 0

    def __add__(self, other: Lateness) -> Lateness:
        return Lateness(
            self.answers + other.answers,
            self.seconds + other.seconds,
            max(self.worst, other.worst),
            self.over_5ms + other.over_5ms,
        )


class QuestionCounter:
    """The questions a server in another process has received, by transport, how late its
    delayed answers went out, and the server's process id (shared memory: create it before
    the server starts)."""

    def __init__(self) -> None:
        self._counts = Array("q", 2)  # UDP, TCP
        self._late = Array("d", 4)  # answers, seconds in all, worst, over 5 ms
        self.pid = Value("q", 0)  # the server process's, once it runs

    def add(self, transport: str) -> None:
        with self._counts.get_lock():
            self._counts[1 if transport == "tcp" else 0] += 1

    def answered(self, beyond: float) -> None:
        """A delayed answer went out ``beyond`` seconds after its delay had passed."""
        with self._late.get_lock():
            self._late[0] += 1
            self._late[1] += beyond
            self._late[2] = max(self._late[2], beyond)
            self._late[3] += beyond > 0.005

    def lateness(self, since: Lateness | None = None) -> Lateness:
        """The delayed answers so far, or since an earlier reading (whose ``worst`` is then
        this reading's: take a reading with :meth:`restart_worst` to begin a period)."""
        with self._late.get_lock():
            now = self._reading()
        if since is None:
            return now
        return Lateness(
            now.answers - since.answers,
            now.seconds - since.seconds,
            now.worst,
            now.over_5ms - since.over_5ms,
        )

    def restart_worst(self) -> Lateness:
        """A reading to count from, the worst lateness starting again from nothing."""
        with self._late.get_lock():
            self._late[2] = 0.0
            return self._reading()

    def _reading(self) -> Lateness:
        return Lateness(int(self._late[0]), self._late[1], self._late[2], int(self._late[3]))

    @property
    def udp(self) -> int:
        return int(self._counts[0])

    @property
    def tcp(self) -> int:
        return int(self._counts[1])

    @property
    def total(self) -> int:
        with self._counts.get_lock():
            return int(self._counts[0] + self._counts[1])


@dataclass(frozen=True)
class _Serving:
    """What the server process needs: the zone logic, the delay and where it applies."""

    server: LoopbackDnsServer
    delay: float
    slow_under: dns.name.Name | None
    questions: QuestionCounter | None

    def heard(self, request: dns.message.Message, transport: str) -> float:
        """Count a question; the seconds its answer waits."""
        if self.questions is not None:
            self.questions.add(transport)
        if self.slow_under is None or request.question[0].name.is_subdomain(self.slow_under):
            return self.delay
        return 0.0

    def sending(self, due: float) -> None:
        """A delayed answer goes out now; it was due at ``due`` (time.monotonic: its
        question's reading plus the delay; the answer was built within the delay)."""
        if self.questions is not None:
            self.questions.answered(max(0.0, time.monotonic() - due))


class _Answering(asyncio.DatagramProtocol):
    """Answers from the test server's zone logic, each reply sent late (as ``serving`` says)."""

    def __init__(self, serving: _Serving) -> None:
        self.serving = serving
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        due = time.monotonic() + (delay := self.serving.heard(request, "udp"))
        wire = _udp_wire(request, self.serving.server.answer(request))
        loop = asyncio.get_running_loop()  # (its time is time.monotonic)
        loop.call_at(due, self._send, wire, addr, due if delay else None)

    def _send(self, wire: bytes, addr: tuple[str, int], due: float | None) -> None:
        if due is not None:
            self.serving.sending(due)
        if self.transport is not None:
            self.transport.sendto(wire, addr)


async def _answer_tcp(
    serving: _Serving, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Questions over one TCP connection (RFC 1035 4.2.2 framing), each answered late."""
    try:
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            request = dns.message.from_wire(await reader.readexactly(length))
            due = time.monotonic() + (delay := serving.heard(request, "tcp"))
            wire = serving.server.answer(request).to_wire(max_size=65535)
            if delay:  # (built within the delay, as over UDP)
                await asyncio.sleep(due - time.monotonic())
                serving.sending(due)
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException):
        pass
    finally:
        writer.close()


def _serve(
    zone: str,
    delay: float,
    ports: Queue[int],
    stop: EventType,
    *,
    slow_under: str | None = None,
    questions: QuestionCounter | None = None,
) -> None:
    """A DNS server in its own process (in this one it would compete for the GIL), on
    asyncio: the test server's thread per answer cannot keep up with thousands of
    concurrent questions."""
    server = LoopbackDnsServer(zone)  # its zone logic only; its threads are never started
    if questions is not None:
        questions.pid.value = os.getpid()
    slow = dns.name.from_text(slow_under) if slow_under else None
    serving = _Serving(server, delay, slow, questions)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        udp, tcp = LoopbackDnsServer._bind()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Answering(serving), sock=udp)
        stream = await asyncio.start_server(
            lambda r, w: _answer_tcp(serving, r, w), sock=tcp, backlog=1024
        )
        ports.put(udp.getsockname()[1])
        await loop.run_in_executor(None, stop.wait)
        stream.close()
        transport.close()

    asyncio.run(run())


@contextlib.contextmanager
def slow_dns_process(
    zone_text: str,
    delay: float,
    *,
    slow_under: str | None = None,
    questions: QuestionCounter | None = None,
) -> Iterator[str]:
    """A DNS server for load tests: the zone's answers, each ``delay`` seconds late (with
    ``slow_under``: only those about names at or under that domain), from another process
    (in this one it would compete for the GIL) on asyncio (thousands of questions in flight),
    over UDP and TCP on one port. ``questions`` counts what it receives. Yields its address,
    ``127.0.0.1:PORT``."""
    ports: Queue[int] = Queue()
    stop = Event()
    process = Process(
        target=_serve,
        args=(zone_text, delay, ports, stop),
        kwargs={"slow_under": slow_under, "questions": questions},
    )
    process.start()
    try:
        yield f"127.0.0.1:{ports.get(timeout=30)}"
    finally:
        stop.set()
        process.join(timeout=10)
