"""Claims' leases, aggregate reports' (:mod:`.outgoing`) and failure reports'
(:mod:`.failure_claims`): the clock they run on, and claims given back when a run ends by
an exception.

A lease is a claim's expiry in seconds since the epoch, written into the store by the host
that claims a report and compared by every other host's ``reports send``. On PostgreSQL (a
fleet of hosts on one store) it is the store's clock, read in the very statement that sets
or compares it: hosts whose own clocks disagree (a VM restored from a snapshot, NTP broken)
then still agree on whether a claim is live. On their own clocks, a host running more than a
lease ahead saw every other host's claim as expired and took the reports they were
delivering. ``clock_timestamp()``, not ``now()``: ``now()`` is the transaction's start,
which a claim that waited for a lock would date back. SQLite is one host's file: its clock
(``clock``: ``time.time``; tests give their own).

A run that ends by an exception gives back the claims it has not tried
(:func:`give_back`), so that they do not wait out a lease (an hour). When the exception is
the store's (a server restarted, a failover: the connection is gone), they are given back
over a new connection; only when that fails too do they wait for their leases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mailauth.reports.store import Store, StoreError, open_store

log = logging.getLogger("mailauth.reports")
RELEASE_TIMEOUT = 30.0  # seconds a statement giving claims back may take on a new connection

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


def give_back(store: Store, release: Callable[[Store], None]) -> None:
    """Run ``release`` (claims given back after an exception) on ``store``, or, when that
    fails, once on a new connection to the same store; if that fails too, the claims wait
    for their leases, logged. Never raises a StoreError: the caller is raising one of its
    own."""
    try:
        release(store)
        return
    except StoreError:
        pass  # (the connection is gone, or its transaction: a new one)
    try:
        fresh = open_store(store.url, migrate=False, create=False, timeout=RELEASE_TIMEOUT)
    except StoreError as exc:
        log.warning("claims not given back (%s): claimable again when their leases end", exc)
        return
    try:
        release(fresh)
    except StoreError as exc:
        log.warning("claims not given back (%s): claimable again when their leases end", exc)
    finally:
        fresh.close()
