"""The report store on PostgreSQL (:class:`~.store.Store`'s engine for a ``postgresql://``
URL: a fleet of MTAs writing to one store) through psycopg 3.2+: upserts through a
``COPY``ed staging table, claims with ``FOR UPDATE SKIP LOCKED``, migrations under an
advisory lock and a ``lock_timeout`` (who blocks them logged: :mod:`.pg_blockers`),
statements bounded in time (:class:`~.watchdog.StatementWatchdog`), a COMMIT whose answer
was lost settled over a new connection (:meth:`PostgresStore._settle`)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

from mailauth.reports import store as store_module
from mailauth.reports.pg_blockers import BlockerWatch
from mailauth.reports.store import Params, Store, StoreError, first_line
from mailauth.reports.watchdog import StatementWatchdog

log = logging.getLogger("mailauth.reports")

_ADVISORY_KEY = 0x6D61696C61757468  # "mailauth": the migration lock's advisory-lock key
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
    prune_writes = (  # (two writers pruning at once: each skips the other's rows, no wait)
        "DELETE FROM report_writes WHERE id IN "
        "(SELECT id FROM report_writes WHERE at < ? FOR UPDATE SKIP LOCKED)"
    )

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
        self._timeout = timeout
        self._write_backend = (0, "")  # (the backend pid and xid of a tracked write)
        self._migrating_pid: int | None = None
        if timeout is not None:
            self._watchdog = StatementWatchdog(timeout + _ABORT_MARGIN, self._abort)
        try:
            given = psycopg.conninfo.conninfo_to_dict(url)
            extra = {k: v for k, v in _PG_DEFAULTS.items() if k not in given}
            self._conninfo = psycopg.conninfo.make_conninfo(url, **extra)
            self._connection = self._connect()
        except psycopg.Error as exc:
            if self._watchdog is not None:
                self._watchdog.stop()
            why = f"report store {self.display()}: {first_line(exc)}"
            # (OperationalError: the server did not answer, refused, or was given up on)
            unreachable = isinstance(exc, psycopg.OperationalError)
            raise StoreError(why, unreachable=unreachable) from exc

    def _connect(self) -> Any:
        """A new connection (``self._connection``), its statements bounded by the store's
        ``timeout``: setting it is bounded too, by the watchdog (a pooler that accepts and
        then waits for a backend that does not come)."""
        connection = self._psycopg.connect(self._conninfo, autocommit=True)
        self._connection = connection
        if self._timeout is not None:
            try:
                with self._watched():
                    connection.execute(f"SET statement_timeout = {int(self._timeout * 1000)}")
            except BaseException:
                connection.close()
                raise
        return connection

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
        the watchdog's whole time, as the server's statement_timeout gives it.

        A few rows (at most :data:`_FEW_ROWS`: a single message of ``verify --record``,
        the pieces a writer tries while isolating a row the store refuses) go in one
        ``INSERT ... SELECT FROM unnest(...)`` of one array per column instead: the
        temporary table's creation and drop cost about 12 ms whatever the rows (30 ms
        under a savepoint), the arrays about 1.5 ms for one row, more than COPY past
        about a hundred (measured)."""
        types = _array_types(rows) if len(rows) <= _FEW_ROWS else None
        if types is not None:
            arrays = ", ".join(f"?::{kind}[]" for kind in types)
            self._raw(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "  # noqa: S608 - the caller's constants
                f"AS v ({columns}) ORDER BY {key} ON CONFLICT ({key}) {action}",
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
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

    def _lock_for_migration(self, lock_timeout: float) -> None:
        """Each statement of the migration waits at most ``lock_timeout`` for a lock: an
        ``ALTER TABLE`` waiting for ACCESS EXCLUSIVE behind a long reader queues every
        later statement on that table behind it (other hosts' writers, ``reports send``).
        The advisory lock too: another process migrating for longer is waited for by the
        next attempt, not for ever."""
        self.execute(f"SET LOCAL lock_timeout = {max(1, int(lock_timeout * 1000))}")
        self._migrating_pid = int(self.fetchall("SELECT pg_backend_pid()")[0][0])
        self.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_KEY,))

    @contextlib.contextmanager
    def _lock_waits_shown(self, attempt: int, attempts: int, lock_timeout: float) -> Iterator[None]:
        self._migrating_pid = None
        every = min(1.0, lock_timeout / 4)
        watch = BlockerWatch(self._watch_connection, lambda: self._migrating_pid, every).start()
        try:
            yield
        except StoreError as exc:
            if exc.busy:
                pause = store_module.MIGRATION_PAUSE
                after = f"again in {pause:g} s" if attempt < attempts else "given up for now"
                log.warning(
                    "report store %s: the migration waited %g s for a lock held by %s "
                    "(attempt %d of %d, %s)", self.display(), lock_timeout,
                    watch.described() or "another session", attempt, attempts, after,
                )  # fmt: skip
            raise
        finally:
            watch.stop()

    def _watch_connection(self) -> Any:
        return self._psycopg.connect(self._conninfo, autocommit=True)

    def _record_write(self, write_id: str, at: int) -> None:
        """(The backend and transaction that wrote it, to end it if its COMMIT's answer is
        lost: behind a pooler the pid is the server's, of this transaction.)"""
        row = self.fetchall(
            "INSERT INTO report_writes (id, at) VALUES (?, ?) "
            "RETURNING pg_backend_pid(), (txid_current() % 4294967296)::text",
            (write_id, at),
        )[0]
        self._write_backend = (int(row[0]), str(row[1]))

    def _settle(self, write_id: str) -> bool | None:
        """Whether the write ``write_id`` committed, its COMMIT having failed. A connection
        lost: a new one; the old backend, if it is still idle in that transaction (its
        COMMIT never arrived: holding its row locks until the server notices), is ended
        (one still running its COMMIT -- a synchronous replica slow to answer -- is not);
        then an insert of the same id, which waits for that transaction to end (the unique
        index), tells: a conflict, it committed; none, it did not (the probe is rolled
        back). A few attempts a second apart, each bounded (``connect_timeout``, a
        ``lock_timeout``); None when none answers."""
        for attempt in range(_SETTLE_ATTEMPTS):
            if attempt:
                time.sleep(1.0)
            try:
                if self._connection.broken or self._connection.closed:
                    with contextlib.suppress(self._psycopg.Error):
                        self._connection.close()
                    self._connection = self._connect()
                    self._end_old_write()
                else:
                    with contextlib.suppress(self._psycopg.Error):
                        self._raw("ROLLBACK")
                return self._probe(write_id)
            except self._psycopg.Error as exc:
                log.debug("report store %s: settling write %s: %s", self.display(), write_id,
                          first_line(exc))  # fmt: skip
        return None

    def _end_old_write(self) -> None:
        pid, xid = self._write_backend
        with contextlib.suppress(self._psycopg.Error):  # (not allowed: the probe waits)
            self._raw(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ? "
                "AND backend_xid::text = ? AND state LIKE 'idle in transaction%'",
                (pid, xid),
            )

    def _probe(self, write_id: str) -> bool:
        self._raw("BEGIN")
        try:
            self._raw(f"SET LOCAL lock_timeout = {int(_SETTLE_LOCK_TIMEOUT * 1000)}")
            inserted: int = self._raw(
                "INSERT INTO report_writes (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (write_id, int(time.time())),
            ).rowcount
        finally:
            with contextlib.suppress(self._psycopg.Error):
                self._raw("ROLLBACK")
        return inserted == 0

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

    def _is_busy(self, error: BaseException) -> bool:
        """A lock not had within ``lock_timeout`` (55P03), a statement cancelled at its
        bound (57014)."""
        return getattr(error, "sqlstate", None) in ("55P03", "57014")

    def _is_unreachable(self, error: BaseException) -> bool:
        """The connection lost (the server gone, or given up on by the watchdog)."""
        return bool(self._connection.broken or self._connection.closed)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        self._connection.close()


_ABORT_MARGIN = 2.0  # seconds past statement_timeout before the client gives a server up
_SETTLE_ATTEMPTS = 3  # tries to learn whether a COMMIT whose answer was lost went through
_SETTLE_LOCK_TIMEOUT = 5.0  # ... each waiting at most this long for the old transaction
_FEW_ROWS = 64  # rows an upsert sends as arrays rather than through a temporary table
_ARRAY_TYPES = {str: "text", int: "bigint", float: "double precision", bytes: "bytea",
                bool: "boolean"}  # fmt: skip


def _array_types(rows: Sequence[Params]) -> list[str] | None:
    """The SQL type of each column's array, from its first value that is not None (None
    when one has no such value or a type not in :data:`_ARRAY_TYPES`: COPY then)."""
    types = []
    for column in zip(*rows, strict=True):
        kind = next((type(v) for v in column if v is not None), None)
        if kind not in _ARRAY_TYPES:
            return None
        types.append(_ARRAY_TYPES[kind])
    return types


def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")
