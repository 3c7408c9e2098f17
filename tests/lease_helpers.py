"""Time passing for claims' leases (mailauth.reports.leases), on both engines."""

from __future__ import annotations

from mailauth.reports.store import Store

WALL = 2_000_000_000.0  # where a test's wall clock starts (SQLite's leases run on it)


class LeaseClock:
    """The wall clock a test hands to the claiming functions (``clock=``), and
    :meth:`advance` to let time pass for the leases of ``table``. On SQLite the leases
    run on this clock, which moves on; on PostgreSQL they run on the server's clock,
    which a test cannot move: the claims' expiries are moved back by as much instead
    (the same thing for every claim already made, which is what a test looks at)."""

    def __init__(self, store: Store, table: str, start: float = WALL) -> None:
        self.store, self.table, self.now = store, table, start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self.store.engine == "postgresql":
            self.store.execute(
                f"UPDATE {self.table} SET claimed_until = claimed_until - ? "
                "WHERE state = 'claimed'",
                (int(seconds),),
            )
