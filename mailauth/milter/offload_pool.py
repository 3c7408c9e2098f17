"""The worker processes of :mod:`.offload`: started, connected, watched and ended.

Each worker is ``python -m mailauth.milter.offload_worker`` with one end of two unix socket
pairs (heavy messages; SPF requests, never behind a message being written). It gets the
milter's ``sys.path`` and the factory of its Authenticator, builds it and says "ready"; until
then no request goes to it (the loop does the work meanwhile: a Python process takes a second
or two to start, tens of seconds on a busy machine). A worker that ends, or is not ready
``START_TIMEOUT`` seconds after it was started, is replaced, but not within
``respawn_delay`` seconds of the last one that died or could not start. A killed worker is
reaped without waiting for it on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailauth.milter.offload_wire import OffloadError, frame, read_frame, recv_frame_blocking
from mailauth.pipeline import Authenticator

# Seconds during which a worker that died or could not start is not replaced (requests go
# to the loop meanwhile): not one new Python process per request while, say, the nameserver
# a worker probes at start is down, or an attacker's message crashes every worker.
RESPAWN_DELAY = 5.0
# Seconds a worker may take to build its Authenticator (imports, the nameserver probe) after
# it was started by a request; then it is ended and replaced after RESPAWN_DELAY. No request
# waits for a worker that is starting: the loop does the work meanwhile.
START_TIMEOUT = 120.0
log = logging.getLogger("mailauth.milter")


def default_workers() -> int:
    """One worker on a machine with two or more CPUs; none on one (nothing to gain)."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


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
class Worker:
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


class WorkerPool:
    """The worker processes; ``factory`` builds a worker's Authenticator (it is pickled to
    each worker: a module-level function or a picklable object's method; the worker imports
    it with the milter's ``sys.path``)."""

    def __init__(
        self,
        factory: Callable[[], Authenticator],
        *,
        workers: int = 1,
        respawn_delay: float = RESPAWN_DELAY,
        stats: OffloadStats | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("an Offloader needs at least one worker")
        self.factory = factory
        self.workers = workers
        self.respawn_delay = respawn_delay
        self.stats = stats if stats is not None else OffloadStats()
        self._respawn_at = 0.0  # (time.monotonic(): no new worker before it)
        self.closed = False  # (after close(): no worker is started again)
        self._workers: list[Worker] = []

    def start(self) -> None:
        """Start the workers and wait until each has built its Authenticator (so that a
        worker that cannot start is a start-up error); blocking, before the loop runs."""
        while len(self._workers) < self.workers:
            self._workers.append(self._spawn(wait=True))

    def _spawn(self, *, wait: bool) -> Worker:
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
        worker = Worker(process, ours, light, ready=wait)
        self.stats.alive += 1
        try:
            ours.sendall(frame(list(sys.path)) + frame(self.factory))
        except OSError as exc:
            self._kill(worker)
            raise OffloadError(f"a worker process did not start: {exc}") from None
        if wait:
            ours.settimeout(120)
            try:
                ready = recv_frame_blocking(ours)
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

    def _kill(self, worker: Worker) -> None:
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

    def _try_spawn(self) -> Worker | None:
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

    async def _connected(self) -> Worker:
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

    async def _connect(self, worker: Worker) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=worker.sock)
        worker.writer = writer
        light_reader, worker.light_writer = await asyncio.open_unix_connection(sock=worker.light)
        for stream in (reader, light_reader):
            task = asyncio.ensure_future(self._replies(worker, stream))
            task.add_done_callback(_retrieved)

    async def _replies(self, worker: Worker, reader: asyncio.StreamReader) -> None:
        said = False  # (why it could not start, logged)
        try:
            while True:
                reply = await read_frame(reader)
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
