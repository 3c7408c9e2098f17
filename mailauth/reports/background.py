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
dropped.

Each transaction writes its pieces under savepoints (:meth:`BackgroundWriter._write_pieces`).
Rows the store refuses *permanently* (a constraint or a value it will never take:
:attr:`StoreError.permanent`; they would fail again) are isolated *within the transaction*:
the piece refused is rolled back to its savepoint and split in halves, each tried under a
savepoint of its own, down to single rows; the transaction then commits once. Only the
rows the store refuses for good are dropped (counted and logged once, with the reason);
the rows beside them, and everything recorded since, are written. Isolating costs
statements, not transactions: a piece of n rows takes at most 2n - 1 tries (a binary tree
over its rows), k refused rows scattered through it about 2k log2(n/k), whatever their
number, so a steady trickle of refused rows is isolated in the flush that brings them.
An exception that is not the store's (a bug on odd input, a driver raising its own
``UnicodeEncodeError`` for a string the database cannot take) is isolated the same way:
the single row it comes down to is dropped and logged with the exception's type, and the
connection, whose state is not known, is closed after the transaction. If rolling back
to the savepoint fails, the transaction is lost like at a temporary error, but what the
isolation learnt is kept (the piece known bad is held in halves): each flush gets further,
never stalled for ever.
"""

from __future__ import annotations

import abc
import itertools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar

from mailauth.reports.store import Store, StoreError, first_line, shown_url

# (re-exported: the writers' bound and default opener, this module's before writer_store)
from mailauth.reports.writer_store import WRITER_TIMEOUT as WRITER_TIMEOUT  # noqa: PLC0414
from mailauth.reports.writer_store import open_writer_store as open_writer_store  # noqa: PLC0414

log = logging.getLogger("mailauth.reports")
# Seconds one transaction may spend isolating refused rows before it commits what it has
# written and keeps the rest for the next flush (a store refusing every row of 5,000: 2n - 1
# tries, 35 s of one transaction holding its locks against the other hosts, measured).
TRANSACTION_SECONDS = 5.0
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


# What writes a piece within a transaction (under a savepoint), returning what to count
# once the transaction has committed.
Write = Callable[[Store, P], Callable[[], None]]
_SAVEPOINT = "mailauth_piece"


@dataclass(frozen=True, slots=True)
class Held(Generic[P]):
    """A piece not written yet, and what isolating it has learnt so far (kept when a
    transaction was lost half way): ``first``, the first half of a split, whose success
    tells that the next (``suspect``, the second half) holds the row refused; ``bad``:
    certainly holds one (split without trying it whole)."""

    piece: P
    suspect: bool = False
    bad: bool = False
    first: bool = False

    @property
    def plain(self) -> bool:
        """Nothing learnt about it (it may be merged with others)."""
        return not (self.suspect or self.bad or self.first)


@dataclass(slots=True)
class Round(Generic[P]):
    """What one flush's writes left: the pieces still held (in order), those refused for
    good (single rows, each with its error), the temporary error that stopped the round,
    and whether that error was a write that took too long (the server's statement bound,
    or the client giving up on it)."""

    kept: list[Held[P]]
    refused: list[tuple[P, StoreError]]
    error: StoreError | None = None
    timed_out: bool = False


class BackgroundWriter(abc.ABC):
    """A writer thread over one store connection (see the module). Subclasses write what
    they hold in :meth:`_write_once` (True when written) and may log in
    :meth:`_after_write`."""

    thread_name = "mailauth-writer"

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
        self.write_errors = 0  # writes that failed (a transaction, or a piece within one)
        self._doubtful = False  # an exception not the store's met: closed after the transaction
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
        """After a transaction that failed: the error counted, as a StoreError (anything
        else, a bug or a driver's surprise, is one too: it must not end the thread), and
        the connection closed, to be reopened next time."""
        error = exc if isinstance(exc, StoreError) else StoreError(f"{type(exc).__name__}: {exc}")
        self.write_errors += 1
        self._close_store()
        forget = getattr(self._opener, "forget", None)  # (open_writer_store's memory)
        if forget is not None:
            forget(self.url)  # (a dump restored, a table dropped: the schema looked at again)
        return error

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _chunk_rows(self) -> int:
        """The most rows a transaction takes (pieces grouped up to it; the recorder's is
        ``batch_rows``, fewer after a write timed out)."""
        return sys.maxsize

    def _write_pieces(
        self, todo: list[Held[P]], write: Write[P], refused: Callable[[P], None] | None = None
    ) -> Round[P]:
        """Write the pieces of ``todo`` in order, consecutive pieces together in one
        transaction up to :meth:`_chunk_rows` rows, isolating within it the rows the store
        refuses for good (see the module; ``refused`` is told of each as soon as it is);
        a temporary error ends the round. What was not written is kept, in order."""
        queue, done = deque(todo), Round[P]([], [])
        limit = self._chunk_rows()
        while queue and done.error is None:
            group = [queue.popleft()]
            rows = group[0].piece.rows()
            while queue and rows + queue[0].piece.rows() <= limit:
                rows += queue[0].piece.rows()
                group.append(queue.popleft())
            self._transaction(group, write, refused, done)
        done.kept.extend(queue)
        return done

    def _transaction(
        self,
        group: list[Held[P]],
        write: Write[P],
        refused: Callable[[P], None] | None,
        done: Round[P],
    ) -> None:
        """One transaction writing ``group``'s pieces, each under a savepoint; committed
        once, then counted. Lost (a temporary error): the pieces kept, with what isolating
        them has learnt."""
        work = deque(group)
        written: list[tuple[P, Callable[[], None]]] = []
        self._doubtful = False
        started = time.monotonic()
        try:
            store = self._open()
            with store.write():
                if store.engine == "postgresql":  # (a deferred constraint: checked at once,
                    store.execute("SET CONSTRAINTS ALL IMMEDIATE")  # where a savepoint sees it)
                tries = 0
                while work and (tries == 0 or time.monotonic() - started < TRANSACTION_SECONDS):
                    self._attempt(store, work, (write, refused), written, done)
                    tries += 1
        except Exception as exc:  # (F13: whatever it is, writing goes on)
            done.error = self._failed(exc)
            done.timed_out = _timed_out(done.error, time.monotonic() - started)
            done.kept.extend(Held(piece) for piece, _ in written)
            done.kept.extend(work)
            return
        for _, count in written:
            count()
        done.kept.extend(work)  # (isolating past TRANSACTION_SECONDS: the rest next time)
        if self._doubtful:  # (closed as after a temporary error: its state is not known)
            self._close_store()

    def _attempt(
        self,
        store: Store,
        work: deque[Held[P]],
        how: tuple[Write[P], Callable[[P], None] | None],
        written: list[tuple[P, Callable[[], None]]],
        done: Round[P],
    ) -> None:
        """Try the first piece of ``work`` under a savepoint: written; or refused for good
        (or an exception not the store's), rolled back to the savepoint and isolated:
        dropped when a single row, else split in halves put first in ``work``. A temporary
        error is raised, the piece left in ``work``."""
        held = work[0]
        piece = held.piece
        if held.bad and piece.rows() > 1:
            work.popleft()
            _split(work, piece)
            return
        store.execute(f"SAVEPOINT {_SAVEPOINT}")
        write, refused = how
        try:
            count = write(store, piece)
        except StoreError as exc:
            if not exc.permanent:
                raise
            error = exc
        except Exception as exc:  # (not the store's: isolated, the connection closed after)
            self._doubtful = True
            error = StoreError(f"{type(exc).__name__} raised writing it: {first_line(exc)}",
                               permanent=True)  # fmt: skip
        else:
            work.popleft()
            written.append((piece, count))
            if held.first and work and work[0].suspect:
                work[0] = Held(work[0].piece, suspect=True, bad=True)
            store.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            return
        self.write_errors += 1
        work.popleft()  # (what was learnt, before a rollback that may fail)
        if piece.rows() == 1:
            done.refused.append((piece, error))
            if refused is not None:
                refused(piece)
        else:
            _split(work, piece)
        store.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        store.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")

    def _log(self, text: str, *, force: bool = False) -> bool:
        """At most one line per interval (a store down for hours: not a flood); whether
        this one was written."""
        now = time.monotonic()
        if force or now - self._logged_at >= max(self._flush_seconds(), 60.0):
            self._logged_at = now
            log.warning("%s", text)
            return True
        return False


def _split(work: deque[Held[P]], piece: P) -> None:
    first, second = piece.halves()
    work.appendleft(Held(second, suspect=True))
    work.appendleft(Held(first, first=True))


def _timed_out(error: StoreError, seconds: float) -> bool:
    """Whether a failed transaction took too long: PostgreSQL cancelled a statement at its
    bound (SQLSTATE 57014), or it ran the writer's whole bound (the client gave the server
    up; SQLite waited out its busy timeout)."""
    return getattr(error.__cause__, "sqlstate", None) == "57014" or seconds >= WRITER_TIMEOUT


def printable(text: str) -> str:
    """``text`` for a log line: what is not printable (a control, a lone surrogate, which
    a stream would refuse to encode) escaped."""
    return (
        text
        if text.isprintable()
        else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    )


def shown_list(names: Iterable[str], most: int = 5) -> str:
    """The first ``most`` distinct ``names``, printable, for a log line."""
    distinct = dict.fromkeys(names)
    shown = ", ".join(printable(n) for n in itertools.islice(distinct, most))
    return shown + (", ..." if len(distinct) > most else "")


def reasons(refused: Sequence[tuple[object, StoreError]]) -> str:
    """The distinct reasons rows were refused for, for a log line (the first three)."""
    distinct = dict.fromkeys(str(error) for _, error in refused)
    shown = "; ".join(printable(r) for r in itertools.islice(distinct, 3))
    return shown + ("; ..." if len(distinct) > 3 else "")
