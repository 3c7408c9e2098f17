"""What the two writers off the mail path share (:class:`~.recorder.BackgroundRecorder`,
the aggregate counts; :class:`~.failure_collect.FailureCollector`, the RFC 9991 queue): a
thread of their own that writes every ``flush_seconds`` or when woken, ``flush`` and
``close`` that wait for it, one store connection reopened after an error, the log at most
once per interval, and what becomes of rows the store would not take.

Each writer's PostgreSQL connection bounds its statements (:data:`WRITER_TIMEOUT`: the
server's ``statement_timeout``, and the client giving up on a server that does not answer
at all, :class:`~.store_postgres.PostgresStore`), so that a hung server is a write error within
about half a minute, not a thread blocked for ever; opening it, and the migrations it may
need, are :mod:`.writer_store`'s.

What a write could not store is *held* (:class:`Held`), apart from what is recorded
meanwhile (the writer's live buffer), and bounded together with it by the writer's caps.
A store that is down (a connection refused, a server gone, a statement timed out, a
privilege revoked, a table missing until a migration) is a *temporary* failure: the rows
held are retried at each flush, for as long as it takes, and nothing beyond the caps is
dropped. Rows the store refuses *permanently* (a constraint or a value it will never take:
:attr:`StoreError.permanent`; they would fail again) are isolated: the piece refused is
split in halves, each written in its own transaction, down to single rows, so that only
the rows the store refuses for good are dropped (counted and logged once, with the reason);
the rows beside them, and everything recorded since, are written. Isolating costs at most
:data:`ISOLATING_WRITES` transactions per flush (a store that refuses everything cannot
make a flush run away); what is left waits, held, for the next flush.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar

from mailauth.reports.store import Store, StoreError, shown_url

# (re-exported: the writers' bound and default opener, this module's before writer_store)
from mailauth.reports.writer_store import WRITER_TIMEOUT as WRITER_TIMEOUT  # noqa: PLC0414
from mailauth.reports.writer_store import open_writer_store as open_writer_store  # noqa: PLC0414

log = logging.getLogger("mailauth.reports")
ISOLATING_WRITES = 32  # transactions a flush may spend isolating rows refused for good
# Seconds close() waits for the thread: more than one statement's bound and the client's
# margin past it (32 s), so that a batch in its last statement is not cut at a shutdown.
CLOSE_TIMEOUT = WRITER_TIMEOUT + 10.0


class Piece(Protocol):
    """What a writer writes in one transaction (a batch of counts, a list of captures)."""

    def rows(self) -> int:
        """The rows it holds (the smallest pieces the store may refuse alone)."""
        ...

    def halves(self) -> tuple[Self, Self]:
        """Two pieces holding its rows between them, each at least one (``rows() > 1``)."""
        ...


P = TypeVar("P", bound=Piece)


@dataclass(frozen=True, slots=True)
class Held(Generic[P]):
    """A piece not written yet. ``suspect``: it holds a row the store refused for good
    (it is split before or after a write, within the flush's :data:`ISOLATING_WRITES`);
    ``bad``: certainly (its other half was written: split it without trying it whole);
    ``first``: the first half of a split, whose success tells that the next is bad."""

    piece: P
    suspect: bool = False
    bad: bool = False
    first: bool = False


@dataclass(slots=True)
class Round(Generic[P]):
    """What one flush's writes left: the pieces still held (in order), those refused for
    good (single rows, each with its error), the temporary error that stopped the round."""

    kept: list[Held[P]]
    refused: list[tuple[P, StoreError]]
    error: StoreError | None = None


class BackgroundWriter(abc.ABC):
    """A writer thread over one store connection (see the module). Subclasses write what
    they hold in :meth:`_write_once` (True when written) and may log in
    :meth:`_after_write`."""

    thread_name = "mailauth-writer"
    isolating_writes = ISOLATING_WRITES

    def __init__(self, url: str, opener: Callable[[str], Store]) -> None:
        self.url = url
        self._opener = opener
        self._store: Store | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._done = threading.Condition()
        self._generation = 0  # writes done (a flush waits for the next one)
        self._thread: threading.Thread | None = None
        self._logged_at = -1e9
        self.write_errors = 0  # transactions that failed (a batch, or a piece of one)
        self.refused = 0  # rows (reports) dropped: the store refused them for good

    @abc.abstractmethod
    def _flush_seconds(self) -> float:
        raise NotImplementedError

    @abc.abstractmethod
    def _write_once(self) -> bool:
        raise NotImplementedError

    def _after_write(self) -> None:  # noqa: B027 - nothing to do unless overridden
        """(After each write of the thread: the drops' log line.)"""

    @abc.abstractmethod
    def _left_at_stop(self) -> tuple[int, str]:
        """What the last write at stop could not store: (count, what it is, for the log
        line), counted as dropped by the subclass."""
        raise NotImplementedError

    def _stopped(self, error: str = "") -> None:
        """After the last write: what is still held is lost with the process; said (a
        forced line) and counted, never silently."""
        count, what = self._left_at_stop()
        if count:
            self._log(f"{shown_url(self.url)}: {what} not written at stop"
                      f"{f' ({error})' if error else ''}: lost", force=True)  # fmt: skip

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def request_flush(self) -> None:
        """Write what is buffered soon (from a signal handler: returns at once)."""
        self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Write what is buffered now; whether it was written within ``timeout`` seconds."""
        if self._thread is None or not self._thread.is_alive():
            return self._write_once()
        with self._done:
            target = self._generation + 2  # (one in progress may have taken an older batch)
            self._wake.set()
            return self._done.wait_for(lambda: self._generation >= target, timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is buffered and stop the thread. A thread still writing after
        ``timeout`` seconds (a server that stopped answering mid-statement) keeps its
        connection: closing it under the thread would race the statement in flight."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s still writing after %g s: left to finish", shown_url(self.url),
                            timeout)  # fmt: skip
                return
            self._thread = None
        else:
            self._write_once()
            self._stopped()
            self._after_write()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds())
            self._wake.clear()
            stopping = self._stopping
            self._write_once()
            if stopping:
                self._stopped()
            self._after_write()
            with self._done:
                self._generation += 1
                self._done.notify_all()
            if stopping:
                return

    def _open(self) -> Store:
        if self._store is None:
            self._store = self._opener(self.url)
        return self._store

    def _failed(self, exc: Exception) -> StoreError:
        """After a write that raised: the error counted, as a StoreError (anything else, a
        bug or a driver's surprise, is one too: it must not end the thread); unless the
        store refused the rows themselves (its transaction rolled back, the connection
        sound), the connection closed, to be reopened next time."""
        error = exc if isinstance(exc, StoreError) else StoreError(f"{type(exc).__name__}: {exc}")
        self.write_errors += 1
        if not error.permanent and self._store is not None:
            self._store.close()
            self._store = None
        return error

    def _write_pieces(self, todo: list[Held[P]], write: Callable[[Store, P], None]) -> Round[P]:
        """Write each piece of ``todo`` in its own transaction (``write``: the writing and
        its accounting), in order, isolating the rows the store refuses for good (see the
        module): at most :attr:`isolating_writes` writes of suspect pieces; a temporary
        error ends the round. What was not written is kept, in order."""
        queue, done = deque(todo), Round[P]([], [])
        isolating = 0
        while queue:
            held = queue.popleft()
            capped = held.suspect and isolating >= self.isolating_writes and not self._stopping
            if done.error is not None or capped:  # (stopping: no next flush to go on)
                done.kept.append(held)
                continue
            if held.bad and held.piece.rows() > 1:
                self._split(queue, held.piece)
                continue
            isolating += held.suspect
            try:
                write(self._open(), held.piece)
            except Exception as exc:  # (F13: whatever it is, writing goes on)
                error = self._failed(exc)
                if not error.permanent:
                    done.error = error
                    done.kept.append(held)
                elif held.piece.rows() == 1:
                    done.refused.append((held.piece, error))
                else:
                    self._split(queue, held.piece)
                continue
            if held.first and queue and queue[0].suspect:
                queue[0] = Held(queue[0].piece, suspect=True, bad=True)
        return done

    @staticmethod
    def _split(queue: deque[Held[P]], piece: P) -> None:
        first, second = piece.halves()
        queue.appendleft(Held(second, suspect=True))
        queue.appendleft(Held(first, suspect=True, first=True))

    def _log(self, text: str, *, force: bool = False) -> bool:
        """At most one line per interval (a store down for hours: not a flood); whether
        this one was written."""
        now = time.monotonic()
        if force or now - self._logged_at >= max(self._flush_seconds(), 60.0):
            self._logged_at = now
            log.warning("%s", text)
            return True
        return False
