"""One report's copies written one at a time (issue 17): the check of what the store holds
and the insert that follows it are atomic per report, whatever the number of importers.

Every copy of a report -- from an e-mail authenticated or not, from a bare file, signed by
one domain or another -- has a key of its own (:func:`.model.report_key`), and the key's
primary index keeps each copy once. What it cannot do alone is order the *copies*: storing
one reads the others (:mod:`.storage`: which is authenticated, which is superseded), and
two importers storing two copies at once (an IMAP run and a directory, two cron jobs) could
each read "no other copy" and both count. So each report's write transaction first takes a
lock named by what all its copies share: kind, reporter and Report-ID
(:func:`.model.report_key` without a signer).

- PostgreSQL: ``pg_advisory_xact_lock`` on a 64-bit number from that key, released at the
  transaction's end (commit or rollback: never left behind by a process that died). Writers
  of other reports do not wait (two reports' numbers collide once in 2^64: they would only
  wait for each other). One lock per transaction, taken before any row lock: no deadlock.
- SQLite: nothing more to take; the write transaction is ``BEGIN IMMEDIATE``, the
  database's only write lock, held from before the check to the commit.
"""

from __future__ import annotations

from mailauth.reports.received.model import Report, report_key
from mailauth.reports.store import Store


def lock_number(report: Report) -> int:
    """The advisory-lock number of ``report`` and all its copies: a signed 64-bit integer
    (PostgreSQL's bigint) from their shared key."""
    key = report_key(report.kind, report.org_name, report.email, report.report_id)
    number = int(key[:16], 16)
    return number - (1 << 64) if number >= 1 << 63 else number


def lock_report(store: Store, report: Report) -> None:
    """Wait for, and hold to the end of the caller's write transaction, the lock of
    ``report``'s copies."""
    if store.engine == "postgresql":
        store.execute("SELECT pg_advisory_xact_lock(?)", (lock_number(report),))
