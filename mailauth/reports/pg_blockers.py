"""Who blocks a PostgreSQL migration (:meth:`~.store_postgres.PostgresStore.migrate`): while
the migration runs, a thread polls ``pg_blocking_pids`` of its backend from a second
connection (the first one is busy waiting), so that a migration that times out waiting
for a lock (``lock_timeout``) can say which sessions held it -- a ``pg_dump``, a long
dashboard query, a session left idle in a transaction -- and the operator can act.

The watch opens its connection only once the migration has run ``every`` seconds (a
migration that takes no lock wait costs nothing), bounds its own statements, and gives up
quietly when the server does not answer: it only informs the log line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

# (pg_stat_activity shows another role's query as "<insufficient privilege>", unless the
# user has pg_read_all_stats; the pid, the user and the state are shown to all.)
log = logging.getLogger("mailauth.reports")
_BLOCKERS = (
    "SELECT pid, COALESCE(usename, ''), COALESCE(state, ''), "
    "COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - xact_start)::bigint, 0), "
    "left(regexp_replace(COALESCE(query, ''), '\\s+', ' ', 'g'), 80) "
    "FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid LIMIT 5"
)


class BlockerWatch:
    """Polls who blocks backend ``pid()`` every ``every`` seconds (``seen``: the last
    sessions found) until :meth:`stop`. ``connect``: a new autocommit psycopg
    connection."""

    def __init__(self, connect: Callable[[], Any], pid: Callable[[], int | None], every: float):
        self._connect, self._pid, self._every = connect, pid, every
        self._stopped = threading.Event()
        self.seen: list[tuple[Any, ...]] = []
        self._thread = threading.Thread(target=self._run, name="mailauth-store-blockers",
                                        daemon=True)  # fmt: skip

    def start(self) -> BlockerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """(Does not wait for a poll in progress for long: the thread closes its connection
        when that poll ends.)"""
        self._stopped.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        connection: Any = None
        try:
            while not self._stopped.wait(self._every):
                pid = self._pid()
                if pid is None:
                    continue
                if connection is None:
                    connection = self._connect()
                    connection.execute("SET statement_timeout = 2000")
                rows = connection.execute(_BLOCKERS, (pid,)).fetchall()
                if rows:
                    self.seen = rows
        except Exception as exc:  # (the watch only informs a log line: it just stops)
            log.debug("watch for a migration's blockers stopped: %s: %s", type(exc).__name__, exc)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()

    def described(self) -> str:
        """The blockers seen, for the log: ``pid 123 (user backup, idle in transaction,
        its transaction open 40 s: "LOCK TABLE ...")``."""
        return "; ".join(
            f"pid {pid} (user {user or '?'}, {state or '?'}, its transaction open {seconds} s:"
            f' "{query}")'
            for pid, user, state, seconds, query in self.seen
        )
