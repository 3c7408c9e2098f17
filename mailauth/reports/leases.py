"""The clock that claims' leases run on: aggregate reports' (:mod:`.outgoing`) and failure
reports' (:mod:`.failure_claims`).

A lease is a claim's expiry in seconds since the epoch, written into the store by the host
that claims a report and compared by every other host's ``reports send``. On PostgreSQL (a
fleet of hosts on one store) it is the store's clock, read in the very statement that sets
or compares it: hosts whose own clocks disagree (a VM restored from a snapshot, NTP broken)
then still agree on whether a claim is live. On their own clocks, a host running more than a
lease ahead saw every other host's claim as expired and took the reports they were
delivering. ``clock_timestamp()``, not ``now()``: ``now()`` is the transaction's start,
which a claim that waited for a lock would date back. SQLite is one host's file: its clock
(``clock``: ``time.time``; tests give their own).
"""

from __future__ import annotations

from collections.abc import Callable

from mailauth.reports.store import Store

Clock = Callable[[], float]
"""The wall clock that leases run on where the store has none of its own (SQLite)."""

# (A scalar subquery: evaluated once per statement, and usable as an index bound.)
_STORE_SECOND = "(SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT))"


def lease_now(store: Store, clock: Clock) -> tuple[str, tuple[int, ...]]:
    """The SQL for the current second of the leases' clock and the parameters it takes, in
    that order: the store's clock on PostgreSQL (no parameter), ``?`` with ``int(clock())``
    on SQLite."""
    if store.engine == "postgresql":
        return _STORE_SECOND, ()
    return "?", (int(clock()),)
