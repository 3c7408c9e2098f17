"""The report store: one schema (:mod:`.schema`) on SQLite (the default: a file, nothing to
install) or PostgreSQL (a ``postgresql://`` URL: a fleet of MTAs writing to one store).

Thin on purpose: the standard library's ``sqlite3`` and psycopg 3 behind one small class,
the SQL written once in the dialect both share (``INSERT ... ON CONFLICT``), parameters as
``?`` (rewritten to psycopg's ``%s``). What differs is said here once: how a write
transaction takes the store's lock (SQLite: ``BEGIN IMMEDIATE``, one writer at a time, the
others waiting up to ``busy_timeout``; PostgreSQL: row locks, ``FOR UPDATE SKIP LOCKED`` for
claims, a transaction-level advisory lock for migrations), and how rows are streamed
(PostgreSQL: libpq's chunked rows mode, psycopg 3.2+). A :class:`Store` is one
connection: one per thread or process.

Migrations wait for their locks a bounded time (PostgreSQL: ``lock_timeout``, a few
attempts; an ``ALTER TABLE`` waiting for a long reader would otherwise queue every other
session's statement on that table behind it). A write transaction of a writer thread
(``track_writes``) records a random id (``report_writes``, schema 8), so that a COMMIT
whose answer is lost is looked up instead of written again (:meth:`Store.write`).

This module holds what both engines share (:class:`Store`, :class:`StoreError`) and
:func:`open_store`, which picks one; the engines are :mod:`.store_sqlite` and
:mod:`.store_postgres` (which import this module, never the other way at import time).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from mailauth.errors import MailauthError
from mailauth.reports.schema import MIGRATIONS, SCHEMA_VERSION

Params = Sequence[Any]
log = logging.getLogger("mailauth.reports")
MIGRATION_LOCK_TIMEOUT = 5.0  # seconds a migration's statement waits for a lock (PostgreSQL)
MIGRATION_ATTEMPTS = 3  # ... attempts of the migration, MIGRATION_PAUSE seconds apart
MIGRATION_PAUSE = 5.0
WRITE_IDS_KEPT = 86400  # seconds a writer's transaction id is kept in report_writes


class StoreError(MailauthError):
    """The store cannot be opened, read or written (its text says which and why);
    ``unreachable``: a server that did not answer (it may later), not a wrong setting;
    ``permanent``: the store refused the rows themselves (a constraint, a value, a limit:
    SQLSTATE classes 21, 22, 23 and 54 on PostgreSQL,
    :meth:`~.store_postgres.PostgresStore._is_permanent`; SQLite's integrity, data,
    programming and not-supported errors), which the same rows
    would meet again -- unlike a connection lost, a lock, a timeout, or what an operator
    can mend while the rows wait (a privilege revoked, a table or column missing until a
    migration has run); ``busy``: a lock not had in time (a migration's ``lock_timeout``,
    a statement cancelled at its bound), which may be had later."""

    def __init__(
        self, text: str, *, unreachable: bool = False, permanent: bool = False, busy: bool = False
    ) -> None:
        super().__init__(text)
        self.unreachable = unreachable
        self.permanent = permanent
        self.busy = busy


def shown_url(url: str) -> str:
    """A store's URL without its password (for messages and the log)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_store(
    url: str | os.PathLike[str],
    *,
    migrate: bool = True,
    create: bool = True,
    timeout: float | None = None,
    track_writes: bool = False,
) -> Store:
    """The store at ``url`` (a SQLite file path, ``sqlite:///path``, or a ``postgresql://``
    URL), its schema migrated forward unless ``migrate`` is false; a SQLite file that does
    not exist is created unless ``create`` is false (``reports show``/``send``: a mistyped
    path is an error, not an empty store); ``timeout``: the most seconds a PostgreSQL
    statement may take (:class:`~.store_postgres.PostgresStore`; SQLite waits
    ``busy_timeout`` at most); ``track_writes``: each write transaction records an id
    (a writer thread's: :meth:`Store.write`; the schema must be at version 8).
    Raises StoreError."""
    # (The engines import this module: they are imported when a store is opened.)
    from mailauth.reports.store_postgres import PostgresStore  # noqa: PLC0415
    from mailauth.reports.store_sqlite import SqliteStore  # noqa: PLC0415

    text = os.fspath(url)
    if not text:
        raise StoreError("no report store given (a SQLite file path or a postgresql:// URL)")
    store: Store = (
        PostgresStore(text, timeout=timeout) if is_postgres_url(text) else SqliteStore(text, create)
    )
    store.track_writes = track_writes
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


class Store(abc.ABC):
    """One connection to the store. ``engine``: ``sqlite`` or ``postgresql``; the abstract
    methods are what each engine provides."""

    engine = ""
    skip_locked = ""  # what a claim's SELECT ends with (``o``: outgoing_reports's alias)
    prune_writes = "DELETE FROM report_writes WHERE at < ?"  # (PostgreSQL: never waits)

    def __init__(self, url: str) -> None:
        self.url = url
        self._in_write = False
        self.track_writes = False
        self._pruned_at = -WRITE_IDS_KEPT

    # -- what each engine provides ---------------------------------------------------
    @abc.abstractmethod
    def _begin(self) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def _raw(self, sql: str, params: Params = ()) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def _raw_many(self, sql: str, rows: Sequence[Params]) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def _raw_upsert(
        self, table: str, columns: str, key: str, action: str, rows: Sequence[Params]
    ) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def stream(self, sql: str, params: Params = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a query, fetched a batch at a time (memory: one batch)."""
        raise NotImplementedError

    @abc.abstractmethod
    def close(self) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def _errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    @abc.abstractmethod
    def _is_permanent(self, error: BaseException) -> bool:
        """Whether one of :meth:`_errors` is one the same rows would meet again."""
        raise NotImplementedError

    def _is_busy(self, error: BaseException) -> bool:
        """Whether one of :meth:`_errors` is a lock or a time bound (may work later)."""
        return False

    def _is_unreachable(self, error: BaseException) -> bool:
        """Whether one of :meth:`_errors` left the connection unusable (the server gone)."""
        return False

    def _record_write(self, write_id: str, at: int) -> None:
        self.execute("INSERT INTO report_writes (id, at) VALUES (?, ?)", (write_id, at))

    def _settle(self, write_id: str) -> bool | None:
        """After a COMMIT that failed: whether the transaction of ``write_id`` committed
        (None: not known). SQLite: the connection is local, its answer never lost; the
        transaction is rolled back if still open, and the id looked up."""
        with contextlib.suppress(*self._errors()):
            self._raw("ROLLBACK")
        try:
            rows = self.fetchall("SELECT 1 FROM report_writes WHERE id = ?", (write_id,))
        except StoreError:
            return None
        return bool(rows)

    # -- shared ----------------------------------------------------------------------
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with self._translated():
            return int(self._raw(sql, params).rowcount)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            with self._translated():
                self._raw_many(sql, rows)

    def upsert(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        action: str,
        rows: Sequence[Params],
    ) -> None:
        """Insert ``rows`` (values of ``columns``) into ``table``, in a write transaction; a
        row whose ``key`` (the table's primary key) is there already gets ``action``
        instead (``DO UPDATE SET ...``, ``excluded`` naming the new row). The rows' keys
        must be distinct. Rows are locked in ``key`` order (PostgreSQL: concurrent writers
        take their row locks in one order, so never deadlock)."""
        if not self._in_write:
            raise RuntimeError("upsert outside a write transaction")
        if rows:
            with self._translated():
                self._raw_upsert(table, ", ".join(columns), ", ".join(key), action, rows)

    def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._translated():
            return list(self._raw(sql, params).fetchall())

    @contextlib.contextmanager
    def write(self) -> Iterator[Store]:
        """A write transaction holding the store's lock (SQLite: the database's; PostgreSQL:
        the rows it touches), committed at the end, rolled back on an exception.

        With ``track_writes`` (a writer thread's store) the transaction first records a
        random id in ``report_writes`` (once an hour, before it, those older than a day
        are deleted, in a statement of their own: :meth:`_prune_writes`). A COMMIT that
        fails -- its answer lost with the connection: the server may have committed -- is
        settled by looking the id up (PostgreSQL: over a new connection, once the old
        transaction has ended, :meth:`_settle`): committed, this returns as if the COMMIT
        had answered; not committed, it raises (the rows may be written again); not known
        (the store does not answer), it raises saying so."""
        if self._in_write:
            raise RuntimeError("nested write transaction")
        if self.track_writes:
            self._prune_writes()
        with self._translated():
            self._begin()
        self._in_write = True
        write_id = ""
        try:
            if self.track_writes:
                write_id = self._track()
            yield self
        except BaseException:
            self._in_write = False
            with contextlib.suppress(*self._errors()):
                self._raw("ROLLBACK")
            raise
        self._in_write = False
        try:
            with self._translated():
                self._raw("COMMIT")
        except StoreError as exc:
            if not write_id or exc.permanent:
                raise
            self._settle_commit(write_id, exc)

    def _track(self) -> str:
        """(In the transaction: its id recorded.)"""
        write_id = secrets.token_hex(16)
        self._record_write(write_id, int(time.time()))
        return write_id

    def _prune_writes(self) -> None:
        """The ids older than a day deleted, once an hour per connection: a statement of
        its own, whose failure (the user may not DELETE there) is said and does not stop
        the write."""
        now = int(time.time())
        if now - self._pruned_at < 3600:
            return
        self._pruned_at = now
        try:
            self.execute(self.prune_writes, (now - WRITE_IDS_KEPT,))
        except StoreError as exc:
            log.warning("%s; the writers' ids older than a day not deleted from report_writes "
                        "(the user may need DELETE on it)", exc)  # fmt: skip

    def _settle_commit(self, write_id: str, error: StoreError) -> None:
        committed = self._settle(write_id)
        if committed:
            log.warning("%s (COMMIT's answer lost), but write %s had committed: not written "
                        "again", error, write_id)  # fmt: skip
            return
        if committed is None:  # (said here, whatever the caller's log allows)
            log.warning("%s (COMMIT's answer lost) and the store does not answer: whether "
                        "write %s committed is not known; its rows are kept and may be "
                        "counted twice", error, write_id)  # fmt: skip
            raise StoreError(
                f"{error}; whether write {write_id} committed is not known (the store does "
                "not answer): its rows are kept and may be counted twice",
                unreachable=True,
            ) from error
        raise StoreError(f"{error} (write {write_id} not committed)",
                         unreachable=error.unreachable) from error  # fmt: skip

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except self._errors() as exc:
            why = f"report store {self.display()}: {first_line(exc)}"
            raise StoreError(why, permanent=self._is_permanent(exc), busy=self._is_busy(exc),
                             unreachable=self._is_unreachable(exc)) from exc  # fmt: skip

    def display(self) -> str:
        """The store's URL without a password."""
        return shown_url(self.url)

    def version(self) -> int:
        """The schema version reached (0: an empty store)."""
        if not self._has_schema_table():
            return 0
        rows = self.fetchall("SELECT version FROM mailauth_schema")
        return int(rows[0][0]) if rows else 0

    def is_current(self) -> bool:
        """Whether the schema is this code's version (no migration due)."""
        return self.version() == SCHEMA_VERSION

    def migrate(
        self,
        *,
        attempts: int = MIGRATION_ATTEMPTS,
        lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ) -> tuple[int, int]:
        """Apply the missing migrations in one transaction: (version before, after). Each
        statement waits at most ``lock_timeout`` seconds for a lock (PostgreSQL; the
        blockers are logged), the whole tried ``attempts`` times, :data:`MIGRATION_PAUSE`
        apart (meanwhile the others' statements go through); then StoreError, ``busy``."""
        if self._has_schema_table() and self.version() == SCHEMA_VERSION:
            return SCHEMA_VERSION, SCHEMA_VERSION  # (the common case: no lock taken)
        for attempt in range(1, max(attempts, 1) + 1):
            try:
                with self._lock_waits_shown(attempt, attempts, lock_timeout):
                    return self._migrate_once(lock_timeout)
            except StoreError as exc:
                if not exc.busy or attempt >= attempts:
                    raise
            time.sleep(MIGRATION_PAUSE)
        raise AssertionError("unreachable")  # pragma: no cover

    def _migrate_once(self, lock_timeout: float) -> tuple[int, int]:
        tracked, self.track_writes = self.track_writes, False  # (report_writes may not be)
        try:
            return self._migrate_untracked(lock_timeout)
        finally:
            self.track_writes = tracked

    def _migrate_untracked(self, lock_timeout: float) -> tuple[int, int]:
        with self.write():
            self._lock_for_migration(lock_timeout)
            self.execute("CREATE TABLE IF NOT EXISTS mailauth_schema (version INTEGER NOT NULL)")
            rows = self.fetchall("SELECT version FROM mailauth_schema")
            before = int(rows[0][0]) if rows else 0
            if before > SCHEMA_VERSION:
                raise StoreError(
                    f"report store {self.display()} has schema version {before}, newer than "
                    f"this mailauth's {SCHEMA_VERSION}: upgrade mailauth"
                )
            for statements in MIGRATIONS[before:]:
                for statement in statements:
                    self.execute(statement)
            if rows:
                self.execute("UPDATE mailauth_schema SET version = ?", (SCHEMA_VERSION,))
            else:
                self.execute("INSERT INTO mailauth_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        return before, SCHEMA_VERSION

    @abc.abstractmethod
    def _has_schema_table(self) -> bool:
        raise NotImplementedError

    def _lock_for_migration(self, lock_timeout: float) -> None:  # noqa: B027 - PostgreSQL's
        """(SQLite: BEGIN IMMEDIATE already holds the only write lock.)"""

    def _lock_waits_shown(
        self, attempt: int, attempts: int, lock_timeout: float
    ) -> contextlib.AbstractContextManager[None]:
        """(PostgreSQL: who blocks a migration attempt, logged when it times out.)"""
        return contextlib.nullcontext()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
