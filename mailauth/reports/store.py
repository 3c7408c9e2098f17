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
"""

from __future__ import annotations

import abc
import contextlib
import os
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from mailauth.errors import MailauthError
from mailauth.reports.schema import MIGRATIONS, SCHEMA_VERSION
from mailauth.reports.watchdog import StatementWatchdog

Params = Sequence[Any]
_ADVISORY_KEY = 0x6D61696C61757468  # "mailauth": the migration lock's advisory-lock key
_BUSY_MS = 30_000  # how long a SQLite writer waits for another's transaction to end
# PostgreSQL connections, unless the URL says otherwise: libpq waits for ever for a server
# that accepts and does not answer; a peer gone silent is noticed in about a minute.
_PG_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",  # (ms: data unacknowledged that long ends the connection)
}


class StoreError(MailauthError):
    """The store cannot be opened, read or written (its text says which and why);
    ``unreachable``: a server that did not answer (it may later), not a wrong setting;
    ``permanent``: the store refused the rows themselves (a constraint, a value, a limit:
    SQLSTATE classes 21, 22, 23 and 54 on PostgreSQL, :meth:`PostgresStore._is_permanent`;
    SQLite's integrity, data, programming and not-supported errors), which the same rows
    would meet again -- unlike a connection lost, a lock, a timeout, or what an operator
    can mend while the rows wait (a privilege revoked, a table or column missing until a
    migration has run)."""

    def __init__(self, text: str, *, unreachable: bool = False, permanent: bool = False) -> None:
        super().__init__(text)
        self.unreachable = unreachable
        self.permanent = permanent


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
) -> Store:
    """The store at ``url`` (a SQLite file path, ``sqlite:///path``, or a ``postgresql://``
    URL), its schema migrated forward unless ``migrate`` is false; a SQLite file that does
    not exist is created unless ``create`` is false (``reports show``/``send``: a mistyped
    path is an error, not an empty store); ``timeout``: the most seconds a PostgreSQL
    statement may take (:class:`PostgresStore`; SQLite waits ``busy_timeout`` at most).
    Raises StoreError."""
    text = os.fspath(url)
    if not text:
        raise StoreError("no report store given (a SQLite file path or a postgresql:// URL)")
    store: Store = (
        PostgresStore(text, timeout=timeout) if is_postgres_url(text) else SqliteStore(text, create)
    )
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

    def __init__(self, url: str) -> None:
        self.url = url
        self._in_write = False

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
        the rows it touches), committed at the end, rolled back on an exception."""
        if self._in_write:
            raise RuntimeError("nested write transaction")
        with self._translated():
            self._begin()
        self._in_write = True
        try:
            yield self
        except BaseException:
            self._in_write = False
            with contextlib.suppress(*self._errors()):
                self._raw("ROLLBACK")
            raise
        self._in_write = False
        with self._translated():
            self._raw("COMMIT")

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except self._errors() as exc:
            permanent = self._is_permanent(exc)
            why = f"report store {self.display()}: {_first_line(exc)}"
            raise StoreError(why, permanent=permanent) from exc

    def display(self) -> str:
        """The store's URL without a password."""
        return shown_url(self.url)

    def version(self) -> int:
        """The schema version reached (0: an empty store)."""
        if not self._has_schema_table():
            return 0
        rows = self.fetchall("SELECT version FROM mailauth_schema")
        return int(rows[0][0]) if rows else 0

    def migrate(self) -> tuple[int, int]:
        """Apply the missing migrations in one transaction: (version before, after)."""
        if self._has_schema_table() and self.version() == SCHEMA_VERSION:
            return SCHEMA_VERSION, SCHEMA_VERSION  # (the common case: no lock taken)
        with self.write():
            self._lock_for_migration()
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

    def _lock_for_migration(self) -> None:  # noqa: B027 - a default that PostgreSQL overrides
        """(SQLite: BEGIN IMMEDIATE already holds the only write lock.)"""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class SqliteStore(Store):
    """SQLite in WAL mode: readers never wait; one writer at a time (``BEGIN IMMEDIATE``,
    others waiting up to 30 s); ``synchronous=NORMAL`` (a power cut may lose the last
    transactions, never corrupt the file)."""

    engine = "sqlite"

    def __init__(self, url: str, create: bool = True) -> None:
        super().__init__(url)
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
        self.path = path
        private = path != ":memory:" and not path.startswith("file:")
        if private and not create and not os.path.exists(path):
            why = "no such file (the milter, verify --record and reports migrate create it)"
            raise StoreError(f"report store {path}: {why}")
        try:
            if private:
                _create_private(path)
            self._connection = sqlite3.connect(
                path, isolation_level=None, timeout=_BUSY_MS / 1000, check_same_thread=False
            )
            self._connection.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"report store {path}: {_first_line(exc)}") from exc
        except OSError as exc:
            raise StoreError(f"report store {path}: {exc.strerror or exc}") from exc

    def _begin(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def _raw(self, sql: str, params: Params = ()) -> Any:
        return self._connection.execute(sql, params)

    def _raw_many(self, sql: str, rows: Sequence[Params]) -> None:
        self._connection.executemany(sql, rows)

    def _raw_upsert(
        self, table: str, columns: str, key: str, action: str, rows: Sequence[Params]
    ) -> None:
        """(One INSERT per row, looped in C; the order does not matter: the transaction
        holds the database's only write lock.)"""
        values = ", ".join("?" * len(rows[0]))
        sql = f"INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) {action}"  # noqa: S608 - the caller's constants
        self._connection.executemany(sql, rows)

    def stream(self, sql: str, params: Params = ()) -> Iterator[tuple[Any, ...]]:
        with self._translated():
            cursor = self._connection.execute(sql, params)
            while batch := cursor.fetchmany(1000):
                yield from batch

    def _has_schema_table(self) -> bool:
        rows = self.fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mailauth_schema'"
        )
        return bool(rows)

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _is_permanent(self, error: BaseException) -> bool:
        return isinstance(error, (sqlite3.IntegrityError, sqlite3.DataError,
                                  sqlite3.ProgrammingError, sqlite3.NotSupportedError))  # fmt: skip

    def close(self) -> None:
        self._connection.close()


def _create_private(path: str) -> None:
    """A new SQLite file is created 0600 (SQLite would follow the umask: 0644), so that its
    WAL and shared-memory files, which SQLite gives the database's mode, are too. The store
    says who sends to this host and from where. An existing file keeps its mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


class PostgresStore(Store):
    """PostgreSQL through psycopg 3.2+ (``pip install 'mailauth[postgresql]'``).

    With a ``timeout``, no statement holds the caller longer than about that: the server
    cancels it (``statement_timeout``: a lock another session holds, a slow query), and a
    server that does not answer at all -- stopped, swapping, its host's kernel still
    acknowledging the packets, so that neither TCP keepalives nor ``tcp_user_timeout``
    notice -- is given up on by the client :data:`_ABORT_MARGIN` seconds later: the
    connection's socket is shut down (:class:`~.watchdog.StatementWatchdog`) and the
    statement fails with a connection error (a temporary one: the caller reconnects,
    within ``connect_timeout``).
    """

    engine = "postgresql"
    skip_locked = " FOR UPDATE OF o SKIP LOCKED"

    def __init__(self, url: str, *, timeout: float | None = None) -> None:
        super().__init__(url)
        try:
            import psycopg  # noqa: PLC0415 - only a PostgreSQL store needs it
        except ImportError:
            raise StoreError(
                "a postgresql:// store needs psycopg 3: pip install 'mailauth[postgresql]'"
            ) from None
        self._psycopg = psycopg
        self._watchdog: StatementWatchdog | None = None
        try:
            given = psycopg.conninfo.conninfo_to_dict(url)
            extra = {k: v for k, v in _PG_DEFAULTS.items() if k not in given}
            conninfo = psycopg.conninfo.make_conninfo(url, **extra)
            self._connection = psycopg.connect(conninfo, autocommit=True)
            if timeout is not None:
                try:
                    self._connection.execute(f"SET statement_timeout = {int(timeout * 1000)}")
                except BaseException:
                    self._connection.close()
                    raise
                self._watchdog = StatementWatchdog(timeout + _ABORT_MARGIN, self._abort)
        except psycopg.OperationalError as exc:  # (the server did not answer, or refused)
            why = f"report store {self.display()}: {_first_line(exc)}"
            raise StoreError(why, unreachable=True) from exc
        except psycopg.Error as exc:
            raise StoreError(f"report store {self.display()}: {_first_line(exc)}") from exc

    def _begin(self) -> None:
        self._raw("BEGIN")

    def _raw(self, sql: str, params: Params = ()) -> Any:
        with self._watched():
            return self._connection.execute(_pg(sql), params)

    def _raw_many(self, sql: str, rows: Sequence[Params]) -> None:
        with self._watched(), self._connection.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)

    def _raw_upsert(
        self, table: str, columns: str, key: str, action: str, rows: Sequence[Params]
    ) -> None:
        """The rows COPYed into a temporary table, then one ``INSERT ... SELECT`` of them in
        key order: a few round trips and one statement whatever the number of rows. (An
        ``executemany`` of upserts, even pipelined, is a bind, an execution and a result
        per row: about 5 times the client's CPU and 3 times the server's for a flush of 250
        rows.) The temporary table is made for this call from the table as it is now (a
        migration another process ran since is seen; a session's older copy would refuse
        the new columns) and dropped after it (a second call in the same transaction must
        not insert the first one's rows again); in the transaction itself, so that a
        pooler handing out another session finds nothing stale either. Each statement has
        the watchdog's whole time, as the server's statement_timeout gives it."""
        staging = f"mailauth_in_{table}"
        with self._connection.cursor() as cursor:
            with self._watched():
                cursor.execute(
                    f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "  # noqa: S608 - the caller's constants
                    f"SELECT {columns} FROM {table} WITH NO DATA"
                )
            with self._watched(), cursor.copy(f"COPY {staging} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            with self._watched():
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "  # noqa: S608 - the caller's constants
                    f"ORDER BY {key} ON CONFLICT ({key}) {action}"
                )
            with self._watched():
                cursor.execute(f"DROP TABLE {staging}")

    def _watched(self) -> contextlib.AbstractContextManager[None]:
        return self._watchdog.armed() if self._watchdog else contextlib.nullcontext()

    def _abort(self) -> None:
        """(The watchdog's thread: the statement has taken too long. A connection closed
        meanwhile, psycopg's error, or the socket's: nothing left to abort.)"""
        with contextlib.suppress(OSError, self._psycopg.Error):
            fd = self._connection.pgconn.socket
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    def stream(self, sql: str, params: Params = ()) -> Iterator[tuple[Any, ...]]:
        """(libpq's chunked rows mode: one round trip, a thousand rows held at a time.)"""
        with self._translated(), self._connection.cursor() as cursor:
            yield from cursor.stream(_pg(sql), params, size=1000)

    def _has_schema_table(self) -> bool:
        rows = self.fetchall("SELECT to_regclass('mailauth_schema') IS NOT NULL")
        return bool(rows[0][0])

    def _lock_for_migration(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_KEY,))

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)

    def _is_permanent(self, error: BaseException) -> bool:
        """What the same rows meet again: a cardinality violation (21: a key twice in one
        batch), data exceptions (22), integrity constraint violations (23), a program limit
        exceeded (54), and a value psycopg could not convert (a DataError raised by the
        client, with no SQLSTATE). Not the rest of psycopg's ProgrammingError: a privilege
        revoked (42501), a table or column not there yet (42P01, 42703), which an operator
        mends while the rows wait."""
        sqlstate = getattr(error, "sqlstate", None) or ""
        if not sqlstate:
            return isinstance(error, self._psycopg.DataError)
        return sqlstate[:2] in ("21", "22", "23", "54")

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        self._connection.close()


_ABORT_MARGIN = 2.0  # seconds past statement_timeout before the client gives a server up


def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")
