"""Heavy messages and SPF evaluations done in worker processes, so that none of them holds
the milter's event loop.

The milter serves every connection on one event loop. A message's checks run on it in
slices (plan checkpoints), but asyncio runs whatever is ready first in, first out: the slices
of a few crafted messages (thousands of DKIM signatures, 50 ARC sets, megabytes of header
fields, an SPF tree of a hundred lookups, each tens of milliseconds of CPU, much of it
parsing DNS answers) queue in front of every other message's next step, and ordinary mail
waits ten times longer than alone. So two kinds of work go to worker processes, each with an
:class:`~mailauth.pipeline.Authenticator` of its own built from the same settings (and its own
DNS cache), and the operating system shares the CPUs between them and the loop:

- SPF evaluations the milter does not have in its memo (:meth:`Offloader.spf`): the answer
  and how long it may be reused come back, and go into the milter's memo;
- heavy messages, whole (:meth:`Offloader.verdict`), recognised by their header section
  (:meth:`Offloader.heavy`, at the end of the headers, before the body): a header section of
  64 KiB or more, more than 300 header fields, more than 5 DKIM-Signature fields, or more
  than 3 ARC sets (ARC-Seal fields). Real mail stays far below (a few KiB, a few dozen
  fields, one to three signatures, an ARC set or two from forwarders and mailing lists), and
  is checked on the loop as before.

A worker serves many requests at once (its own event loop; most of a check's time is spent
waiting for DNS). Requests (JSON, each followed by its message's octets) and replies
(pickles) cross a unix socket pair as length-prefixed frames, between the milter and the
workers it started itself; a request whose octets could not all be written (its deadline
came first) ends its worker, whose stream would otherwise take the next request for the
rest of that message.

Bounds: ``workers`` processes (the milter's ``inbound.offload_workers``); at most
``max_waiting`` heavy messages gathered or in a worker at once (16 per worker): one past that
is checked on the loop, as before; a gathered message is at most ``max_bytes`` (32 MiB;
Postfix's message_size_limit is 10 MB by default), and all of them together ``max_held``
(256 MiB, header sections included): past either, the loop checks it from there (never
on_error: junk signatures must not make a message too large to check). A worker gives up
a request at the milter's deadline, as the loop would; one that has not answered ``GRACE``
seconds later is ended. A worker that dies (a crash, the OOM killer) fails what it held
(``on_error`` for a message; SPF is then evaluated on the loop), and the next request
starts a new one. No request waits for a worker to start (a reload's new workers, one in
place of one that died): until it has built its Authenticator and said so, SPF and heavy
messages are checked on the loop, as when none runs (a Python process takes a second or two
to start, tens of seconds on a busy machine: waiting for it made every message of those
seconds ``on_error``). A worker whose milter went away sees the end of its socket and exits.
What the workers did is counted in :class:`OffloadStats` (the milter's metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailauth.pipeline import Authenticator
from mailauth.results import SpfCheck, Verdict

HEAVY_HEADER_BYTES = 64 * 1024
HEAVY_DKIM_SIGNATURES = 5  # more than this many DKIM-Signature fields
HEAVY_ARC_SETS = 3  # more than this many ARC-Seal fields
# More than this many header fields (real mail has a few dozen; a list's copy with a long
# trail of Received fields, perhaps a hundred): each costs the end of the header section some
# 5 us of the loop on the loop's path (1,000 tiny fields: 5 ms in one piece).
HEAVY_HEADER_FIELDS = 300
MAX_BYTES = 32 * 1024 * 1024
MAX_HELD = 256 * 1024 * 1024
WAITING_PER_WORKER = 16
# The workers' nice value once started (they start at the milter's: not starved while
# importing): the loop's ordinary mail comes first when the CPUs are busy (the scheduler's
# weight 110 against the loop's 1,024), yet a worker is not starved by other programs at
# nice 0, and every SPF evaluation goes to it. At 19 (weight 15) it got 1.5 % of a CPU
# shared with one busy program: beside four busy loops two offload tests took 152 s instead
# of 5 (12 s at nice 10). bench_hostile --pin 0, same run: p99 with the hostile stream
# 13.7 ms at nice 19, 14.9 ms at 10, 19.0 ms at 5.
WORKER_NICE = 10
MAX_FRAME = 1 << 30
MAX_REQUEST = 1 << 20  # octets of a request's JSON (an envelope: far less)
# Seconds past a request's deadline (which the worker keeps itself) after which a worker
# that has not answered is taken for stuck and ended.
GRACE = 2.0
SLICE = 256 * 1024  # octets of a message written to a worker at once
# Seconds during which a worker that died or could not start is not replaced (requests go
# to the loop meanwhile): not one new Python process per request while, say, the nameserver
# a worker probes at start is down, or an attacker's message crashes every worker.
RESPAWN_DELAY = 5.0
# Seconds a worker may take to build its Authenticator (imports, the nameserver probe) after
# it was started by a request; then it is ended and replaced after RESPAWN_DELAY. No request
# waits for a worker that is starting: the loop does the work meanwhile.
START_TIMEOUT = 120.0
# Seconds before a request's deadline within which a caller that gives up (the milter's own
# deadline, set a moment before the request's) counts as a timeout, not a cancellation.
_AT_THE_DEADLINE = 0.5
_LENGTH = struct.Struct(">I")
log = logging.getLogger("mailauth.milter")


@dataclass
class HeaderTally:
    """What makes a header section heavy, counted field by field as the fields arrive (so
    that the end of the header section costs the loop nothing per field)."""

    size: int = 0
    fields: int = 0
    signatures: int = 0
    seals: int = 0

    def add(self, name: str, value: bytes) -> None:
        self.size += len(name) + len(value) + 3
        self.fields += 1
        name = name.rstrip(" \t")  # (as the verifiers read "ARC-Seal :")
        if len(name) == 14:
            self.signatures += name.lower() == "dkim-signature"
        elif len(name) == 8:
            self.seals += name.lower() == "arc-seal"

    def heavy(self) -> bool:
        return (
            self.size >= HEAVY_HEADER_BYTES
            or self.signatures > HEAVY_DKIM_SIGNATURES
            or self.seals > HEAVY_ARC_SETS
            or self.fields > HEAVY_HEADER_FIELDS
        )


class OffloadError(Exception):
    """The worker could not answer (it died, could not start, or the request failed)."""


class _Unanswered(OffloadError):
    """The worker did not answer ``GRACE`` seconds past the request's deadline."""


def default_workers() -> int:
    """One worker on a machine with two or more CPUs; none on one (nothing to gain)."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _request(value: tuple[Any, ...]) -> bytes:
    """A request to a worker: JSON, never a pickle (the worker unpickles only the frames
    the milter writes before any request), so that octets of a message read as a frame
    can never be code."""
    data = json.dumps(value).encode()
    return _LENGTH.pack(len(data)) + data


async def read_request(reader: asyncio.StreamReader) -> list[Any] | None:
    """The next request (in the worker), or None at the end of the stream or when what
    comes is not a request."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_REQUEST:
            return None
        value = json.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return None
    return value if isinstance(value, list) and len(value) == 7 else None


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next value, or None at the end of the stream."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_FRAME:
            raise OffloadError(f"a frame of {length} octets")
        return pickle.loads(await reader.readexactly(length))  # noqa: S301 - our own worker
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


@dataclass
class OffloadStats:
    """What the worker processes did, for the metrics (mailauth.milter.metrics reads it at
    each scrape); one for the milter's life, shared by the offloaders its reloads make.

    ``sent``: requests written to a worker, by kind ("spf", "message"); ``outcomes``: how
    those ended, by (kind, outcome): "answered", "failed" (the worker died, could not
    start or the check raised), "timeout" (past the request's deadline, in the worker or
    waiting for it), "cancelled" (the message was dropped before); ``unsent``: requests no
    worker could take (none running, one ended moments ago, stopped): SPF evaluated on
    the loop, a gathered message ``on_error``; ``on_loop``: heavy messages checked on the
    loop because a bound was reached ("max_waiting", "no_worker": none running or
    none ready yet, "max_bytes", "max_held"); ``alive``: worker processes running;
    ``restarts``: workers started in place of one that ended."""

    alive: int = 0
    restarts: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    unsent: Counter[str] = field(default_factory=Counter)
    on_loop: Counter[str] = field(default_factory=Counter)


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    sock: socket.socket  # heavy messages
    light: socket.socket  # SPF requests: never behind a message being written
    writer: asyncio.StreamWriter | None = None
    light_writer: asyncio.StreamWriter | None = None
    connected: asyncio.Future[None] | None = None
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)  # one request's octets at once
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    alive: bool = True
    ready: bool = False  # (it said "ready": its Authenticator is built)
    started: float = field(default_factory=time.monotonic)


class Offloader:
    """The worker processes and their bounds; ``factory`` builds a worker's Authenticator
    (it is pickled to each worker: a module-level function or a picklable object's method;
    the worker imports it with the milter's ``sys.path``)."""

    def __init__(
        self,
        factory: Callable[[], Authenticator],
        *,
        workers: int = 1,
        max_waiting: int | None = None,
        max_bytes: int = MAX_BYTES,
        max_held: int = MAX_HELD,
        respawn_delay: float = RESPAWN_DELAY,
        stats: OffloadStats | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("an Offloader needs at least one worker")
        self.factory = factory
        self.workers = workers
        self.max_waiting = max_waiting if max_waiting is not None else WAITING_PER_WORKER * workers
        self.max_bytes = max_bytes
        self.max_held = max_held
        self.respawn_delay = respawn_delay
        self.stats = stats if stats is not None else OffloadStats()
        self._respawn_at = 0.0  # (time.monotonic(): no new worker before it)
        self.closed = False  # (after close(): no worker is started again)
        self.held = 0  # octets of heavy messages gathered now
        self.waiting = 0  # heavy messages gathered or in a worker now
        self.offloaded = 0  # verdicts the workers gave
        self.spf_checks = 0  # SPF results the workers gave
        self._workers: list[_Worker] = []
        self._ids = 0

    # -- processes

    def start(self) -> None:
        """Start the workers and wait until each has built its Authenticator (so that a
        worker that cannot start is a start-up error); blocking, before the loop runs."""
        while len(self._workers) < self.workers:
            self._workers.append(self._spawn(wait=True))

    def _spawn(self, *, wait: bool) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        light, their_light = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            fds = (theirs.fileno(), their_light.fileno())
            process = subprocess.Popen(
                [sys.executable, "-m", "mailauth.milter.offload_worker", *map(str, fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            light.close()
            raise
        finally:
            theirs.close()
            their_light.close()
        light.setblocking(False)
        worker = _Worker(process, ours, light, ready=wait)
        self.stats.alive += 1
        try:
            ours.sendall(_frame(list(sys.path)) + _frame(self.factory))
        except OSError as exc:
            self._kill(worker)
            raise OffloadError(f"a worker process did not start: {exc}") from None
        if wait:
            ours.settimeout(120)
            try:
                ready = _recv_frame_blocking(ours)
            except (OSError, EOFError) as exc:
                self._kill(worker)
                raise OffloadError(f"a worker process did not start: {exc}") from None
            if ready != "ready":
                self._kill(worker)
                raise OffloadError(f"a worker process did not start: {ready}")
        ours.setblocking(False)
        return worker

    def close(self) -> None:
        self.closed = True
        for worker in self._workers:
            self._kill(worker)
        self._workers.clear()

    def _kill(self, worker: _Worker) -> None:
        if worker.alive:
            self.stats.alive -= 1
        worker.alive = False
        with contextlib.suppress(OSError):
            worker.process.kill()  # (first: nothing below may leave it running)
        # (RuntimeError: the loop that connected it is closed -- at the end, or a test's
        # loop -- and its streams and futures cannot be told any more.)
        with contextlib.suppress(RuntimeError):
            for future in worker.pending.values():
                if not future.done():
                    future.set_exception(OffloadError("the worker process checking it died"))
        worker.pending.clear()
        for writer, sock in ((worker.writer, worker.sock), (worker.light_writer, worker.light)):
            if writer is None:
                sock.close()
                continue
            try:
                writer.close()  # (its transport closes the socket)
            except RuntimeError:  # (its loop is closed: the socket is ours to close)
                sock.close()
        _reap(worker.process)

    def _resting(self) -> bool:
        """Whether no worker may be started now (one died or could not start lately)."""
        return time.monotonic() < self._respawn_at

    def _ensure(self) -> None:
        """Start the workers missing (a dead one replaced, unless one died or could not
        start lately), end one still not ready ``START_TIMEOUT`` seconds after it was
        started, and connect to each new one (on the running loop: its "ready" is read
        there). Never waits."""
        if self.closed:
            return
        now = time.monotonic()
        for worker in self._workers:
            if worker.alive and not worker.ready and now - worker.started > START_TIMEOUT:
                log.warning(
                    "worker process %d not ready after %g s: ended", worker.process.pid,
                    START_TIMEOUT,
                )  # fmt: skip
                self._kill(worker)
                self._respawn_at = now + self.respawn_delay
        for index, worker in enumerate(self._workers):
            if worker.alive or self._resting():
                continue
            if (new := self._try_spawn()) is not None:
                self._workers[index] = new
                self.stats.restarts += 1
        while len(self._workers) < self.workers and not self._resting():
            if (new := self._try_spawn()) is None:
                break
            self._workers.append(new)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # (connected by the first call on a loop)
        for worker in self._workers:
            if worker.alive and worker.connected is None:
                worker.connected = asyncio.ensure_future(self._connect(worker))
                worker.connected.add_done_callback(_retrieved)

    def _try_spawn(self) -> _Worker | None:
        """A new worker, or None when none could be started now (no process, no file
        descriptor left): said once, and none tried again for ``respawn_delay`` seconds;
        the loop does the work meanwhile."""
        try:
            return self._spawn(wait=False)
        except (OSError, OffloadError) as exc:
            log.warning("a worker process could not be started: %s; another in %g s", exc,
                        self.respawn_delay)  # fmt: skip
            self._respawn_at = time.monotonic() + self.respawn_delay
            return None

    def has_ready_worker(self) -> bool:
        """Whether a worker is running with its Authenticator built (starting the missing
        ones when called on the loop: the next call may find one)."""
        self._ensure()
        return any(w.alive and w.ready for w in self._workers)

    async def wait_ready(self, seconds: float) -> bool:
        """Whether a worker is ready within ``seconds`` (the missing ones started): for
        tests and benchmarks; no request of the milter waits so."""
        deadline = time.monotonic() + seconds
        while not self.has_ready_worker():
            if self.closed or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _connected(self) -> _Worker:
        """The ready worker with the fewest requests; OffloadError when none is (stopped,
        one ended moments ago, or still starting: the caller does the work on the loop
        rather than wait seconds for a Python process to start)."""
        if self.closed:
            raise OffloadError("the worker processes were stopped (a reload or the end)")
        self._ensure()
        ready = [w for w in self._workers if w.alive and w.ready]
        if not ready:
            starting = any(w.alive for w in self._workers)
            why = "still starting" if starting else "one ended moments ago"
            raise OffloadError(f"no worker process ready ({why})")
        worker = min(ready, key=lambda w: len(w.pending))
        assert worker.connected is not None  # (_ensure connected every live one)
        await asyncio.shield(worker.connected)
        return worker

    async def _connect(self, worker: _Worker) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=worker.sock)
        worker.writer = writer
        light_reader, worker.light_writer = await asyncio.open_unix_connection(sock=worker.light)
        for stream in (reader, light_reader):
            task = asyncio.ensure_future(self._replies(worker, stream))
            task.add_done_callback(_retrieved)

    async def _replies(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        said = False  # (why it could not start, logged)
        try:
            while True:
                reply = await _read_frame(reader)
                if reply is None:
                    break
                if isinstance(reply, str):  # "ready", or why the worker could not start
                    if reply != "ready":
                        log.warning("a worker process could not start: %s", reply[:500])
                        said = True
                        break
                    worker.ready = True
                    continue
                ident, ok, value = reply
                future = worker.pending.pop(ident, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(OffloadError(value))
        finally:
            if worker.alive:  # (ended on its own: replaced after respawn_delay)
                self._kill(worker)
                self._respawn_at = time.monotonic() + self.respawn_delay
                if not said:
                    log.warning(
                        "worker process %d ended%s (exit status %s); another in %g s",
                        worker.process.pid,
                        "" if worker.ready else " before it was ready",
                        worker.process.returncode,
                        self.respawn_delay,
                    )

    async def _call(self, request: tuple[Any, ...], payload: bytes | memoryview = b"") -> Any:
        """Send a request (``payload``: octets sent as they are after it, in slices, so
        that neither a copy nor a pickle of a large message holds the loop), counted in
        ``stats`` by how it ended."""
        kind = "message" if request[0] == "verify" else "spf"
        until: float = request[-1]
        sent = [False]  # (set once the request's first octets are handed to the worker)
        outcome = "failed"
        try:
            reply = await self._send(request, payload, sent)
            outcome = "timeout" if reply == "timeout" else "answered"
            return reply
        except _Unanswered:
            outcome = "timeout"
            raise
        except asyncio.CancelledError:  # (the milter's deadline comes a moment before ours)
            outcome = "timeout" if time.time() >= until - _AT_THE_DEADLINE else "cancelled"
            raise
        finally:
            if sent[0]:
                self.stats.sent[kind] += 1
                self.stats.outcomes[kind, outcome] += 1
            else:
                self.stats.unsent[kind] += 1

    async def _send(
        self, request: tuple[Any, ...], payload: bytes | memoryview, sent: list[bool]
    ) -> Any:
        worker = await self._connected()
        self._ids += 1
        ident = self._ids
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.pending[ident] = future
        until: float = request[-1]
        try:
            async with asyncio.timeout(max(0.0, until - time.time()) + GRACE):
                return await self._exchange(worker, ident, future, request, payload, sent=sent)
        except TimeoutError:
            # Past its own deadline and then some: stopped, stuck, or starved. Ended, so
            # that the next request starts one that answers (this one would keep every
            # later request waiting until the milter's deadline, for ever).
            if worker.alive:
                worker.pending.pop(ident, None)
                self._kill(worker)
            raise _Unanswered("the worker process did not answer in time") from None
        except ConnectionError:
            raise OffloadError("the worker process checking it died") from None
        finally:
            worker.pending.pop(ident, None)

    async def _exchange(
        self,
        worker: _Worker,
        ident: int,
        future: asyncio.Future[Any],
        request: tuple[Any, ...],
        payload: bytes | memoryview,
        *,
        sent: list[bool],
    ) -> Any:
        """Write one request whole (or end the worker), then wait for its reply. A request
        with no payload (SPF) goes over the worker's other socket: it never waits behind a
        message being written (a busy worker may take seconds to read 32 MiB), nor goes to
        the loop meanwhile."""
        if not payload:
            assert worker.light_writer is not None
            sent[0] = True
            worker.light_writer.write(_request((ident, 0, *request)))  # (whole: one write)
            await worker.light_writer.drain()
            return await future
        writer = worker.writer
        assert writer is not None
        async with worker.sending:
            whole = False
            try:
                sent[0] = True
                writer.write(_request((ident, len(payload), *request)))
                view = memoryview(payload)
                for start in range(0, len(view), SLICE):
                    if start:
                        await writer.drain()
                    writer.write(view[start : start + SLICE])
                whole = True  # (all in the transport: it goes out even if we are cancelled)
                await writer.drain()
            finally:
                if not whole and worker.alive:
                    # Cut in the middle (a deadline, a dead socket): the worker would read
                    # the next request's octets as the rest of this one, and the next
                    # "frame" from a message's body. The stream is lost: so is the worker.
                    worker.pending.pop(ident, None)
                    self._kill(worker)
        return await future

    # -- requests

    @staticmethod
    def heavy(headers: Sequence[tuple[str, bytes]]) -> bool:
        """Whether a message with these header fields (name, value as the MTA sent them)
        is checked in a worker."""
        tally = HeaderTally()
        for name, value in headers:
            tally.add(name, value)
        return tally.heavy()

    def reserve(self) -> bool:
        """A place for one more heavy message, or False when all are taken."""
        if self.waiting >= self.max_waiting:
            self.stats.on_loop["max_waiting"] += 1
            return False
        if not self.has_ready_worker():
            self.stats.on_loop["no_worker"] += 1
            return False  # (none now, or still starting: the loop checks it)
        self.waiting += 1
        return True

    def release(self) -> None:
        self.waiting -= 1

    def hold(self, octets: int) -> bool:
        """Room for ``octets`` more of a gathered message, within ``max_held`` for all."""
        if self.held + octets > self.max_held:
            return False
        self.held += octets
        return True

    def unhold(self, octets: int) -> None:
        self.held -= octets

    async def verdict(
        self, message: bytes | memoryview, *, ip: str, helo: str, mail_from: str, seconds: float
    ) -> Verdict:
        """A worker's verdict on the whole ``message``; TimeoutError past ``seconds`` (in
        the worker too), OffloadError when the worker failed."""
        until = time.time() + seconds
        outcome = await self._call(("verify", ip, helo, mail_from, until), message)
        if outcome == "timeout":
            raise TimeoutError("deadline")
        assert isinstance(outcome, Verdict)
        self.offloaded += 1
        return outcome

    async def spf(
        self, *, ip: str, helo: str, mail_from: str, seconds: float
    ) -> tuple[SpfCheck, int]:
        """A worker's SPF check of this envelope, and for how many seconds it may be
        reused (:meth:`Authenticator.remember_spf`)."""
        until = time.time() + seconds
        outcome = await self._call(("spf", ip, helo, mail_from, until))
        if outcome == "timeout":
            raise TimeoutError("deadline")
        spf, ttl = outcome
        self.spf_checks += 1
        return spf, ttl


def _recv_frame_blocking(sock: socket.socket) -> Any:
    def exactly(count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise EOFError("the worker process exited")
            data += chunk
        return bytes(data)

    (length,) = _LENGTH.unpack(exactly(_LENGTH.size))
    return pickle.loads(exactly(length))  # noqa: S301 - our own worker


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Collect a killed worker's exit status without waiting for it here: at once when it
    has ended, else in a thread that waits for it. (A wait here was on the event loop: a
    killed process has not always ended by the time kill() returns, and under load the wait
    held every connection up for as long as it allowed, a second.) SIGKILL ends the
    process, so the thread ends soon after; a daemon, it never holds up the milter's exit,
    and no worker is left a zombie however its end came (close() included)."""
    if process.poll() is not None:
        return
    reaper = threading.Thread(target=process.wait, name=f"reap {process.pid}", daemon=True)
    with contextlib.suppress(RuntimeError):  # (no thread to be had: subprocess reaps a
        reaper.start()  # dropped Popen's process when the next one is started)


def _retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
