"""The store connections of the writer threads (:mod:`.background`: the recorder, the
failure collector), and the schema migration they may have to apply.

A writer's connection bounds every statement (:data:`WRITER_TIMEOUT`), so that a stuck
server is a write error within about half a minute, never a thread blocked for ever; it is
reopened after every temporary error. Opening it is one connection and, until the schema
is known to be current, one look at its version over that same bounded connection: once
the store has been seen current (or migrated) by this process, a reconnect runs nothing
more (REVIEW25B 5: each reconnect opened a second, unbounded connection and probed the
schema over it).

Only when a migration is due does a second connection open, for it alone: its statements
bounded by :data:`MIGRATION_TIMEOUT` (an hour: schema 6 on a store of imported reports
takes minutes, which the writer's 30 s would cancel at every flush, for ever), each
waiting at most ``lock_timeout`` for a lock (REVIEW25B 4: an ``ALTER TABLE`` waiting
behind a ``pg_dump`` queued every other host's statements on the table behind it). A
migration that failed -- could not have its lock, above all -- is tried again only after a
pause that doubles up to ten minutes (the others' statements go through meanwhile; a
migration that fails otherwise is not run again at every flush either); the writer holds
its rows in memory, within its caps, as for a store that is down.

:data:`open_writer_store` is the process's (the milter's two writers share what it learnt);
:meth:`WriterStores.prepare` is the milter's start: the same steps, bounded, before it
listens.
"""

from __future__ import annotations

import logging
import threading
import time

from mailauth.reports.store import MIGRATION_LOCK_TIMEOUT, Store, StoreError, open_store, shown_url

log = logging.getLogger("mailauth.reports")
WRITER_TIMEOUT = 30.0  # seconds a PostgreSQL statement of a writer may take at most
MIGRATION_TIMEOUT = 3600.0  # ... and one of a migration a writer (or the milter's start) runs
MIGRATION_BACKOFF = (30.0, 600.0)  # seconds before the next try after a lock not had: first, most


class WriterStores:
    """The writers' opener (``opener=`` of :class:`~.recorder.BackgroundRecorder` and
    :class:`~.failure_collect.FailureCollector`): :meth:`__call__` opens a writer's
    connection (see the module), remembering per URL whether the schema is current, and
    when a migration that failed may be tried again."""

    def __init__(
        self,
        *,
        lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
        backoff: tuple[float, float] = MIGRATION_BACKOFF,
    ) -> None:
        self.lock_timeout = lock_timeout
        self.backoff = backoff
        self._lock = threading.Lock()  # (one migration at a time in the process)
        self._current: set[str] = set()
        self._retry: dict[str, tuple[float, float, str]] = {}  # url: not before, pause, why

    def __call__(self, url: str) -> Store:
        """A writer's connection to ``url``, its schema current (migrated if need be).
        Raises StoreError (``busy``: a migration waits for its lock)."""
        store = open_store(url, timeout=WRITER_TIMEOUT, migrate=False, track_writes=True)
        try:
            if url not in self._current:
                self._bring_up_to_date(url, store)
        except BaseException:
            store.close()
            raise
        return store

    def forget(self, url: str) -> None:
        """After a writer's temporary error: look at ``url``'s schema again at its next
        connection (an older dump restored, a table dropped: "relation does not exist" at
        every write, for ever, until the milter's restart otherwise)."""
        with self._lock:
            self._current.discard(url)

    def prepare(self, url: str) -> None:
        """The milter's start: the store reached and its schema made current, bounded (a
        server that does not answer: ``connect_timeout``, :data:`WRITER_TIMEOUT`; a lock
        held: ``lock_timeout``). Raises StoreError; ``unreachable`` or ``busy``: may work
        later (the writers will try again)."""
        self(url).close()

    def _bring_up_to_date(self, url: str, store: Store) -> None:
        with self._lock:
            if url in self._current:
                return
            if store.is_current():
                self._current.add(url)
                return
            not_before, pause, why = self._retry.get(url, (0.0, self.backoff[0], ""))
            if (wait := not_before - time.monotonic()) > 0:
                raise StoreError(f"{why}; the migration tried again in {wait:.0f} s", busy=True)
            try:
                self._migrate(url)
            except StoreError as exc:
                later = (time.monotonic() + pause, min(2 * pause, self.backoff[1]), str(exc))
                self._retry[url] = later
                raise
            self._retry.pop(url, None)
            self._current.add(url)

    def _migrate(self, url: str) -> None:
        migration = open_store(url, timeout=MIGRATION_TIMEOUT, migrate=False)
        try:
            before, after = migration.migrate(attempts=1, lock_timeout=self.lock_timeout)
        finally:
            migration.close()
        if before != after:
            log.info("report store %s: schema migrated from version %d to %d", shown_url(url),
                     before, after)  # fmt: skip


open_writer_store = WriterStores()
