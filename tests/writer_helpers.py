"""What the tests of the writers off the mail path share (test_reports_isolation,
test_reports_surprises): recording a message, reading the counts back, a store that refuses
some rows for good, an opener counting transactions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailauth.reports import BackgroundRecorder, open_store
from mailauth.reports.store import Store
from tests.reports_helpers import T0, verdict


def record(recorder: BackgroundRecorder, domain: str, now: float = T0) -> None:
    recorder.record(verdict(domain), ip="192.0.2.1", mail_from="", now=now)


def stored(url: str) -> dict[str, int]:
    store = open_store(url)
    try:
        rows = store.fetchall(
            "SELECT policy_domain, SUM(messages) FROM report_counts GROUP BY policy_domain"
        )
        return {domain: int(messages) for domain, messages in rows}
    finally:
        store.close()


def refuse_where(url: str, table: str, sqlite_when: str, pg_check: str) -> None:
    """A trigger (SQLite) or a CHECK constraint (PostgreSQL) refusing some rows for good."""
    store = open_store(url)
    try:
        if store.engine == "sqlite":
            store.execute(f"CREATE TRIGGER refuse_some BEFORE INSERT ON {table} WHEN "
                          f"{sqlite_when} BEGIN SELECT RAISE(ABORT, 'refused'); END")  # fmt: skip
        else:
            store.execute(f"ALTER TABLE {table} ADD CONSTRAINT refuse_some CHECK ({pg_check})")
    finally:
        store.close()


def counting(transactions: list[int], rows: list[int] | None = None) -> Callable[[str], Store]:
    """An opener whose stores count their write transactions in ``transactions[-1]`` (and
    append to ``rows`` the rows each transaction is given, when it is a list)."""

    def opener(url: str) -> Store:
        store = open_store(url)
        real_write, real_upsert = store.write, store.upsert

        def write() -> Any:
            transactions[-1] += 1
            if rows is not None:
                rows.append(0)
            return real_write()

        def upsert(table: str, *args: Any) -> None:
            if rows is not None:
                rows[-1] += len(args[-1])
            real_upsert(table, *args)

        store.write = write  # type: ignore[method-assign]
        store.upsert = upsert  # type: ignore[method-assign,assignment]
        return store

    return opener
