"""The report store on SQLite (:class:`~.store.Store`'s engine for a file path or a
``sqlite:///`` URL, the default): the standard library's ``sqlite3`` in WAL mode, one
writer at a time."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from mailauth.reports.store import Params, Store, StoreError, first_line

_BUSY_MS = 30_000  # how long a SQLite writer waits for another's transaction to end


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
            raise StoreError(f"report store {path}: {first_line(exc)}") from exc
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
