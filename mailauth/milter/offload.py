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
  (:mod:`mailauth.milter.heavy`, at the end of the headers, before the body): a header section of
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
import time
from collections.abc import Callable
from typing import Any

from mailauth import plan
from mailauth.milter.offload_pool import (
    RESPAWN_DELAY,
    OffloadStats,
    Worker,
    WorkerPool,
    default_workers,
)
from mailauth.milter.offload_wire import OffloadError, request_frame
from mailauth.pipeline import Authenticator
from mailauth.results import SpfCheck, Verdict

__all__ = ["OffloadError", "OffloadStats", "Offloader", "default_workers"]

MAX_BYTES = 32 * 1024 * 1024
MAX_HELD = 256 * 1024 * 1024
WAITING_PER_WORKER = 16
# Seconds past a request's deadline (which the worker keeps itself) after which a worker
# that has not answered is taken for stuck and ended.
GRACE = 2.0
SLICE = 256 * 1024  # octets of a message written to a worker at once
# Seconds of the loop a message's slices may take before the others' turn (plan.SLICE's
# reasoning): drain() waits only when the socket is full, and a worker that reads as fast as
# the milter writes never fills it (10 MB once went in one step of 12-24 ms). Not a yield
# per slice: a message holds its worker's stream until written whole, 128 turns for 32 MiB.
WRITE_TURN = plan.SLICE
_DRAIN_WAITED = 0.0002  # seconds a drain took beyond which it waited (the others ran meanwhile)
# Seconds before a request's deadline within which a caller that gives up (the milter's own
# deadline, set a moment before the request's) counts as a timeout, not a cancellation.
_AT_THE_DEADLINE = 0.5


class _Unanswered(OffloadError):
    """The worker did not answer ``GRACE`` seconds past the request's deadline."""


class Offloader(WorkerPool):
    """The worker processes (:class:`~.offload_pool.WorkerPool`), the requests sent to them
    and their bounds."""

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
        super().__init__(factory, workers=workers, respawn_delay=respawn_delay, stats=stats)
        self.max_waiting = max_waiting if max_waiting is not None else WAITING_PER_WORKER * workers
        self.max_bytes = max_bytes
        self.max_held = max_held
        self.held = 0  # octets of heavy messages gathered now
        self.waiting = 0  # heavy messages gathered or in a worker now
        self.offloaded = 0  # verdicts the workers gave
        self.spf_checks = 0  # SPF results the workers gave
        self._ids = 0

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
            if future.done() and not future.cancelled():
                future.exception()  # (seen: a worker ended while we wrote sets it, unread)

    async def _exchange(
        self,
        worker: Worker,
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
            _write(worker, worker.light_writer, request_frame((ident, 0, *request)))  # (whole)
            await worker.light_writer.drain()
            return await future
        writer = worker.writer
        assert writer is not None
        async with worker.sending:
            whole = False
            try:
                sent[0] = True
                _write(worker, writer, request_frame((ident, len(payload), *request)))
                view = memoryview(payload)
                turn = time.perf_counter()
                for start in range(0, len(view), SLICE):
                    if start:
                        before = time.perf_counter()
                        await writer.drain()
                        if (now := time.perf_counter()) - before > _DRAIN_WAITED:
                            turn = now  # (it waited: the others ran meanwhile)
                        elif now - turn >= WRITE_TURN:
                            await asyncio.sleep(0)
                            turn = time.perf_counter()
                    _write(worker, writer, view[start : start + SLICE])
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


def _write(worker: Worker, writer: asyncio.StreamWriter, data: bytes | memoryview) -> None:
    """Write to a worker's socket, unless the worker was ended meanwhile (another request's
    timeout, its death): its transport may have let go of the socket, and a write would
    raise from inside asyncio (AttributeError) rather than as a lost connection."""
    if not worker.alive or writer.is_closing():
        raise ConnectionResetError("the worker process was ended")
    writer.write(data)
