"""The sender's side of the RFC 9991 failure queue (:mod:`.failure_queue`): claims, leases
and conclusions, like aggregate reports' (:mod:`.outgoing`).

:func:`claim_failures`, :func:`mark_failure_delivered` (each destination as it is reached),
:func:`mark_failure_sent`, :func:`mark_failure_failed` and :func:`release_failure` mirror
:mod:`.outgoing`: a claim is a lease (``state='claimed'``,
the claimer's token, an expiry; PostgreSQL ``FOR UPDATE SKIP LOCKED``), concluded by one
conditional ``UPDATE``; a report once ``sent`` is never claimed again. Leases run on the
store's clock on PostgreSQL and the wall clock (``clock``) on SQLite (:mod:`.leases`), not
on the run's ``now`` (``reports send --now`` in the past or future must not shorten or
stretch them), and the sender renews each claim
(:func:`renew_failure`) before it delivers: a claim whose lease ended and that another run
took is not delivered again nor marked by the first. A report that failed
temporarily waits before its next attempt (``next_try``: 5 minutes, doubling, at most 6
hours). A concluded report keeps no message data (the original header and the facts are
blanked), only its metadata, removed after 30 days by :func:`prune_failures`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailauth.reports.failure import FailureFacts
from mailauth.reports.failure_queue import facts_from_json
from mailauth.reports.leases import Clock, lease_now
from mailauth.reports.store import Store

FIRST_RETRY = 300  # seconds before the second attempt; doubled after each failure ...
LAST_RETRY = 6 * 3600  # ... up to this
KEEP_CONCLUDED = 30 * 86400  # seconds a sent/abandoned report's metadata is kept


@dataclass(frozen=True, slots=True)
class ClaimedFailure:
    """A failure report claimed for this run: deliver to ``ruf`` (minus ``delivered``),
    then mark it."""

    id: str
    policy_domain: str
    auth_failure: str
    ruf: tuple[str, ...]
    facts: FailureFacts
    original: bytes
    has_body: bool
    attempts: int
    delivered: tuple[str, ...]
    claim: str
    problem: str = ""  # why its queued data cannot be read (the report is abandoned)


@dataclass(frozen=True, slots=True)
class FailureStatus:
    """A queued failure report as ``reports show`` lists it."""

    id: str
    policy_domain: str
    auth_failure: str
    ruf: tuple[str, ...]
    state: str
    attempts: int
    next_try: int
    created: int
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "policy_domain": self.policy_domain,
            "auth_failure": self.auth_failure,
            "ruf": list(self.ruf),
            "state": self.state,
            "attempts": self.attempts,
            "next_try": self.next_try,
            "created": self.created,
            "last_error": self.last_error,
        }


def claim_failures(
    store: Store,
    now: float,
    token: str,
    *,
    limit: int = 20,
    lease: int = 3600,
    clock: Clock = time.time,
) -> list[ClaimedFailure]:
    """Claim up to ``limit`` reports due (pending and past ``next_try`` at ``now``, or
    claimed by a run whose lease has ended), oldest first, for ``lease`` seconds of the
    leases' clock (:mod:`.leases`: the store's on PostgreSQL, ``clock`` on SQLite)."""
    with store.write():
        wall, at = lease_now(store, clock)
        rows = store.fetchall(
            f"""SELECT o.id, o.policy_domain, o.auth_failure, o.ruf, o.facts, o.original,
            o.has_body, o.attempts, o.delivered FROM failure_reports o
            WHERE (o.state = 'pending' AND o.next_try <= ?)
               OR (o.state = 'claimed' AND o.claimed_until <= {wall})
            ORDER BY o.created, o.id LIMIT ?"""  # noqa: S608 - constant text
            + store.skip_locked,
            (int(now), *at, limit),
        )
        store.executemany(
            f"""UPDATE failure_reports SET state = 'claimed', claimed_by = ?,
            claimed_until = {wall} + ?, attempts = attempts + 1 WHERE id = ?""",  # noqa: S608
            [(token, *at, lease, row[0]) for row in rows],
        )
    return [_claimed(row, token) for row in rows]


def renew_failure(
    store: Store, report: ClaimedFailure, lease: int, *, clock: Clock = time.time
) -> bool:
    """Extend the claim on ``report`` to ``lease`` seconds from now on the leases' clock;
    False when it was lost: its lease ended and another run took it (or concluded it)."""
    wall, at = lease_now(store, clock)
    changed = store.execute(
        f"""UPDATE failure_reports SET claimed_until = {wall} + ? WHERE id = ?
        AND state = 'claimed' AND claimed_by = ?""",  # noqa: S608 - constant text
        (*at, lease, report.id, report.claim),
    )
    return changed == 1


def _claimed(row: tuple[Any, ...], token: str) -> ClaimedFailure:
    problem = ""
    try:
        facts = facts_from_json(row[4])
    except ValueError as exc:
        facts, problem = FailureFacts(row[1], "", 0.0, ""), str(exc)
    return ClaimedFailure(
        id=row[0],
        policy_domain=row[1],
        auth_failure=row[2],
        ruf=tuple(row[3].split()),
        facts=facts,
        original=bytes(row[5]),
        has_body=bool(row[6]),
        attempts=int(row[7]) + 1,
        delivered=tuple(row[8].split()),
        claim=token,
        problem=problem,
    )


def new_claim_token() -> str:
    return uuid.uuid4().hex


def mark_failure_delivered(store: Store, report: ClaimedFailure, delivered: Sequence[str]) -> bool:
    """Record the URIs that have the report so far (told as each one is reached, so that
    a run that dies in the middle does not send to them again). False when the claim was
    lost."""
    changed = store.execute(
        """UPDATE failure_reports SET delivered = ? WHERE id = ? AND state = 'claimed'
        AND claimed_by = ?""",
        (" ".join(delivered), report.id, report.claim),
    )
    return changed == 1


def mark_failure_sent(store: Store, report: ClaimedFailure, now: float) -> bool:
    """Delivered to every destination (or refused for good by some): never sent again;
    its message data is blanked. False when the claim was lost."""
    return _conclude(store, report, "sent", error="", delivered=report.delivered, now=now)


def mark_failure_failed(
    store: Store,
    report: ClaimedFailure,
    error: str,
    now: float,
    *,
    delivered: Sequence[str] = (),
    give_up: bool = False,
) -> bool:
    """Not delivered (to all): retried after a backoff, skipping ``delivered``, or
    ``abandoned`` (its message data blanked) with ``give_up``. False when the claim was
    lost."""
    reached = tuple(dict.fromkeys((*report.delivered, *delivered)))
    if give_up:
        return _conclude(store, report, "abandoned", error=error, delivered=reached, now=now)
    wait = min(LAST_RETRY, FIRST_RETRY * 2 ** max(0, report.attempts - 1))
    changed = store.execute(
        """UPDATE failure_reports SET state = 'pending', claimed_by = '', claimed_until = 0,
        next_try = ?, delivered = ?, last_error = ? WHERE id = ? AND state = 'claimed'
        AND claimed_by = ?""",
        (int(now) + wait, " ".join(reached), error[:1000], report.id, report.claim),
    )
    return changed == 1


def _conclude(
    store: Store,
    report: ClaimedFailure,
    state: str,
    *,
    error: str,
    delivered: Sequence[str],
    now: float,
) -> bool:
    changed = store.execute(
        """UPDATE failure_reports SET state = ?, claimed_by = '', claimed_until = 0,
        delivered = ?, last_error = ?, sent_at = ?, facts = '{}', original = ?
        WHERE id = ? AND state = 'claimed' AND claimed_by = ?""",
        (state, " ".join(delivered), error[:1000], int(now), b"", report.id, report.claim),
    )
    return changed == 1


def release_failure(store: Store, report: ClaimedFailure) -> bool:
    """Give a claim back as if no attempt had been made (``--dry-run``)."""
    changed = store.execute(
        """UPDATE failure_reports SET state = 'pending', claimed_by = '', claimed_until = 0,
        attempts = attempts - 1 WHERE id = ? AND state = 'claimed' AND claimed_by = ?""",
        (report.id, report.claim),
    )
    return changed == 1


def prune_failures(store: Store, now: float) -> int:
    """Remove concluded reports older than :data:`KEEP_CONCLUDED`; the number removed."""
    return store.execute(
        "DELETE FROM failure_reports WHERE state IN ('sent', 'abandoned') AND sent_at < ?",
        (int(now) - KEEP_CONCLUDED,),
    )


def failure_status(store: Store) -> list[FailureStatus]:
    """The failure reports waiting (pending or claimed), oldest first."""
    rows = store.fetchall(
        """SELECT id, policy_domain, auth_failure, ruf, state, attempts, next_try, created,
        last_error FROM failure_reports WHERE state IN ('pending', 'claimed')
        ORDER BY created, id"""
    )
    return [
        FailureStatus(i, d, a, tuple(r.split()), s, int(n), int(t), int(c), e)
        for i, d, a, r, s, n, t, c, e in rows
    ]
