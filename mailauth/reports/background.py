"""What the two writers off the mail path share (:class:`~.recorder.BackgroundRecorder`,
the aggregate counts; :class:`~.failure_collect.FailureCollector`, the RFC 9991 queue): a
thread of their own that writes every ``flush_seconds`` or when woken, ``flush`` and
``close`` that wait for it, one store connection reopened after an error, the log at most
once per interval, and the bound on a batch the store refuses for good.

Each writer's PostgreSQL connection bounds its statements (:data:`WRITER_TIMEOUT`: the
server's ``statement_timeout``, and the client giving up on a server that does not answer
at all, :class:`~.store.PostgresStore`), so that a hung server is a write error within
about half a minute, not a thread blocked for ever.

A store that is down (a connection refused, a server gone, a statement timed out) is a
*temporary* failure: the batch is kept and retried, for as long as it takes (the buffer's
bound then decides what is dropped). A batch the store refuses *permanently* (a
constraint or a value the store will never take: :attr:`StoreError.permanent`; it would
fail again; not a privilege or a table an operator can mend) is retried at most
:data:`PERMANENT_ATTEMPTS` times in all, then dropped, counted and logged, so that one bad
row does not hold everything behind it for ever.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable
from typing import Self

from mailauth.reports.store import Store, StoreError, open_store, shown_url

log = logging.getLogger("mailauth.reports")
PERMANENT_ATTEMPTS = 3  # writes of a batch the store refuses for good, then it is dropped
WRITER_TIMEOUT = 30.0  # seconds a PostgreSQL statement of a writer may take at most
# Seconds close() waits for the thread: more than one statement's bound and the client's
# margin past it (32 s), so that a batch in its last statement is not cut at a shutdown.
CLOSE_TIMEOUT = WRITER_TIMEOUT + 10.0


def open_writer_store(url: str) -> Store:
    """The store a writer thread opens: its PostgreSQL statements bounded in time
    (:data:`WRITER_TIMEOUT`; a stuck server must not hold the thread for ever while the
    buffer fills)."""
    return open_store(url, timeout=WRITER_TIMEOUT)


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
        self._refusals = 0  # consecutive permanent refusals of what is retried
        self.write_errors = 0  # batches that could not be written
        self.refused = 0  # batches dropped: refused permanently PERMANENT_ATTEMPTS times

    @abc.abstractmethod
    def _flush_seconds(self) -> float:
        raise NotImplementedError

    @abc.abstractmethod
    def _write_once(self) -> bool:
        raise NotImplementedError

    def _after_write(self) -> None:  # noqa: B027 - nothing to do unless overridden
        """(After each write of the thread: the drops' log line.)"""

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
        if self._store is not None:
            self._store.close()
            self._store = None

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds())
            self._wake.clear()
            stopping = self._stopping
            self._write_once()
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

    def _failed(self, exc: Exception) -> tuple[StoreError, bool]:
        """After a write that raised: the connection closed (reopened next time), the error
        counted; the error as a StoreError (anything else, a bug or a driver's surprise,
        is one too: it must not end the thread), and whether to give the batch up (refused
        permanently :data:`PERMANENT_ATTEMPTS` times in a row)."""
        error = exc if isinstance(exc, StoreError) else StoreError(f"{type(exc).__name__}: {exc}")
        self.write_errors += 1
        if self._store is not None:
            self._store.close()
            self._store = None
        if not error.permanent:
            self._refusals = 0
            return error, False
        self._refusals += 1
        if self._refusals < PERMANENT_ATTEMPTS:
            return error, False
        self._refusals = 0
        self.refused += 1
        return error, True

    def _succeeded(self) -> None:
        self._refusals = 0

    def _log(self, text: str, *, force: bool = False) -> bool:
        """At most one line per interval (a store down for hours: not a flood); whether
        this one was written."""
        now = time.monotonic()
        if force or now - self._logged_at >= max(self._flush_seconds(), 60.0):
            self._logged_at = now
            log.warning("%s", text)
            return True
        return False
