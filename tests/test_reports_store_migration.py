"""Migrating a shared PostgreSQL store while others use it (REVIEW25B 4 and 5), against a
real server: a migration waits a bounded time for its locks (``lock_timeout``, the blockers
named in the log), so that a long reader (a ``pg_dump``) neither stops the milter from
starting nor queues other hosts' statements behind the waiting ``ALTER TABLE``; a writer's
reconnect is one bounded connection, with no look at the schema once it is known current,
and a migration gets a connection of its own, bounded by an hour, only when one is due."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest

from mailauth.reports import BackgroundRecorder, open_store
from mailauth.reports import store as store_module
from mailauth.reports.schema import SCHEMA_VERSION
from mailauth.reports.store_postgres import PostgresStore
from mailauth.reports.writer_store import WriterStores
from tests.reports_helpers import T0, verdict


def _at_schema_6(url: str) -> None:
    """A store as schema 6 left it (before failure_reports.queue_owner and report_writes)."""
    open_store(url).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS report_writes")  # (schema 8)
        connection.execute("DROP INDEX failure_reports_owner")
        connection.execute("ALTER TABLE failure_reports DROP COLUMN queue_owner")
        connection.execute("UPDATE mailauth_schema SET version = 6")


def _version(url: str) -> int:
    with psycopg.connect(url) as connection:
        return int(connection.execute("SELECT version FROM mailauth_schema").fetchall()[0][0])


def _other_host_reads(url: str) -> float:
    """Another host's statement on failure_reports (its collector; bounded at 20 s): the
    seconds it took."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SET statement_timeout = 20000")
        started = time.monotonic()
        other.execute("SELECT COUNT(*) FROM failure_reports").fetchall()
        return time.monotonic() - started


def test_the_milter_starts_while_a_long_reader_holds_the_table_a_migration_alters(
    postgres_server: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Schema 7 alters failure_reports (ACCESS EXCLUSIVE) while a pg_dump holds ACCESS
    SHARE on it. Before: the milter's start waited for the dump to end (mail deferred
    meanwhile), and another host's statement on the table was cancelled at its bound,
    queued behind the waiting ALTER. Now the start gives up the migration after its
    lock_timeout (5 s), names the blocker, starts and records in memory; the other host
    waits at most that long."""
    from mailauth.cli.serve import start_recorder
    from mailauth.config import MilterConfig, ReportsConfig

    url = postgres_server.new_database()
    _at_schema_6(url)
    dump = psycopg.connect(url)  # (a transaction: the lock held until it ends)
    dump.execute("LOCK TABLE failure_reports IN ACCESS SHARE MODE")
    reader = dump.info.backend_pid
    started: dict[str, Any] = {}

    def start() -> None:
        began = time.monotonic()
        started["recorder"] = start_recorder(MilterConfig(reports=ReportsConfig(store=url)))
        started["seconds"] = time.monotonic() - began

    thread = threading.Thread(target=start, daemon=True)
    try:
        with caplog.at_level(logging.WARNING, "mailauth.reports"):
            thread.start()
            time.sleep(1.0)  # (the migration waits for its lock by now)
            other = _other_host_reads(url)
            thread.join(15)
            assert not thread.is_alive(), "the milter's start waited for the reader"
    finally:
        dump.rollback()  # (the dump ends, whatever happened)
        thread.join(30)
        dump.close()
    recorder = started["recorder"]
    try:
        assert started["seconds"] < 10 and other < 7
        assert "recording in memory" in capsys.readouterr().err
        assert f"pid {reader} (user postgres, idle in transaction" in caplog.text
        began = time.monotonic()
        recorder.record(verdict(), ip="192.0.2.1", mail_from="", now=T0)  # (mail not held)
        assert time.monotonic() - began < 0.1 and recorder.pending == 1
    finally:
        recorder.close(timeout=1)


def test_a_writer_migrates_once_the_reader_is_gone_and_waits_between_tries(
    postgres_server: Any,
) -> None:
    """The writer's migration has the same bound, and after a lock not had waits (a pause
    that doubles) before trying again, the rows held in memory; once the reader has ended
    it migrates and writes them."""
    url = postgres_server.new_database()
    _at_schema_6(url)
    opener = WriterStores(lock_timeout=1.0, backoff=(1.5, 3.0))
    recorder = BackgroundRecorder(url, opener=opener, clock=lambda: T0)
    recorder.record(verdict(), ip="192.0.2.1", mail_from="", now=T0)
    with psycopg.connect(url) as dump:
        dump.execute("LOCK TABLE failure_reports IN SHARE MODE")
        began = time.monotonic()
        assert not recorder.flush()  # (tried: a second's wait)
        assert 0.9 < time.monotonic() - began < 5
        began = time.monotonic()
        assert not recorder.flush()  # (within the pause: not tried at all)
        assert time.monotonic() - began < 0.5
        assert recorder.pending == 1 and _version(url) == 6
        dump.rollback()
    time.sleep(1.6)
    assert recorder.flush() and recorder.written == 1
    assert _version(url) == SCHEMA_VERSION
    recorder.close()


def test_a_cli_migration_tries_a_few_times_then_says_it_is_busy(
    postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reports migrate`` (and every command) behind the reader: a few attempts, each
    bounded, then an error that says so (before: it waited for as long as the reader)."""
    from mailauth.reports.store import StoreError

    monkeypatch.setattr(store_module, "MIGRATION_PAUSE", 0.2)
    url = postgres_server.new_database()
    _at_schema_6(url)
    with psycopg.connect(url) as dump:
        dump.execute("LOCK TABLE failure_reports IN ACCESS SHARE MODE")
        store = open_store(url, migrate=False)
        began = time.monotonic()
        with pytest.raises(StoreError) as caught:
            store.migrate(attempts=2, lock_timeout=0.5)
        assert 1.0 < time.monotonic() - began < 5
        assert caught.value.busy and "lock timeout" in str(caught.value)
        dump.rollback()
        assert store.migrate() == (6, SCHEMA_VERSION)
        store.close()


def test_a_writer_reconnect_is_one_bounded_connection_and_no_schema_probe(
    postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every reconnect opened a second connection, unbounded, and looked at the
    schema over it (to_regclass, SELECT version): a pgbouncer with a hung backend held the
    writer for its query_wait_timeout. Now: one connection, its statements bounded; the
    schema looked at once per process; a migration, when due, over a connection of its
    own bounded by an hour, remembered once done."""
    from mailauth.reports import background

    url = postgres_server.new_database()
    open_store(url).close()
    connects: list[str] = []
    statements: list[str] = []
    connect, raw = psycopg.connect, PostgresStore._raw

    def counted_connect(*args: Any, **kwargs: Any) -> Any:
        connects.append(str(args[0]))
        return connect(*args, **kwargs)

    def counted_raw(self: PostgresStore, sql: str, params: Any = ()) -> Any:
        statements.append(sql)
        return raw(self, sql, params)

    monkeypatch.setattr(psycopg, "connect", counted_connect)
    monkeypatch.setattr(PostgresStore, "_raw", counted_raw)
    first = background.open_writer_store(url)  # (the first: the schema looked at)
    first.close()
    assert len(connects) == 1 and any("mailauth_schema" in s for s in statements)
    for _ in range(3):  # reconnects
        connects.clear()
        statements.clear()
        store = background.open_writer_store(url)
        try:
            assert len(connects) == 1 and statements == []
            assert store.fetchall("SHOW statement_timeout") == [("30s",)]
        finally:
            store.close()
    _at_schema_6(url)  # (a migration due)
    opener = WriterStores()
    connects.clear()
    statements.clear()
    opener(url).close()
    assert len(connects) == 2 and "SET LOCAL lock_timeout = 5000" in statements
    assert _version(url) == SCHEMA_VERSION
    connects.clear()
    statements.clear()
    opener(url).close()
    assert len(connects) == 1 and statements == []


def test_setting_a_writer_connection_s_bound_is_bounded_too(postgres_server: Any) -> None:
    """A pooler that accepts the connection and then never runs its first statement (SET
    statement_timeout): before, open_store(timeout=...) waited for ever there; now the
    watchdog gives up on it like on any other statement, and the store is unreachable."""
    import re

    from mailauth.reports.store import StoreError
    from tests.pgproxy import CommitProxy

    url = postgres_server.new_database()
    stall = re.compile(rb"SET statement_timeout")
    with CommitProxy(postgres_server.root, "stall", pattern=stall) as proxy:
        proxy.arm()
        outcome: dict[str, Any] = {}

        def connect() -> None:
            try:
                open_store(proxy.url(url), timeout=1.0, migrate=False).close()
            except StoreError as exc:
                outcome["error"] = exc

        began = time.monotonic()
        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(15)
        assert not thread.is_alive() and proxy.lost == 1
        assert time.monotonic() - began < 8 and outcome["error"].unreachable
