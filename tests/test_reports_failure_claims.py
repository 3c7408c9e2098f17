"""Claims on queued RFC 9991 failure reports, on SQLite and a real PostgreSQL: leases run on
the leases' clock (the server's on PostgreSQL) whatever the run's ``now`` says; a sender
whose claim was lost (its lease ended, another ``send`` run took the report) neither
delivers it again nor marks it; claims not yet tried when a run ends by an exception are
given back."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from mailauth.reports import open_store
from mailauth.reports.delivery import ReportState
from mailauth.reports.failure_claims import (
    claim_failures,
    failure_status,
    new_claim_token,
)
from mailauth.reports.failure_queue import enqueue_failures
from mailauth.reports.failure_send import LOST, send_failures
from mailauth.reports.smtp import RecipientOutcome
from mailauth.reports.store import Store
from tests.failure_helpers import AGREES, ARRIVAL, resolver
from tests.lease_helpers import WALL, LeaseClock
from tests.test_reports_failure_queue import SHARED, SIGNER, SUBMITTER, Relay, _report


def _queue(store: Store, reports: int) -> list[str]:
    enqueue_failures(store, [_report(created=ARRIVAL + i) for i in range(reports)], limit=10,
                     period=3600, max_queued=100, **SHARED, now=ARRIVAL)  # fmt: skip
    return [row[0] for row in store.fetchall("SELECT id FROM failure_reports ORDER BY created")]


def test_a_lease_runs_on_the_leases_clock_whatever_now_says(store_url: str) -> None:
    store = open_store(store_url)
    try:
        _queue(store, 3)
        wall = LeaseClock(store, "failure_reports")
        assert len(claim_failures(store, ARRIVAL, new_claim_token(), limit=2, clock=wall)) == 2
        far = ARRIVAL + 10 * 86400  # (--now ten days on: the leases still hold)
        assert len(claim_failures(store, far, new_claim_token(), clock=wall)) == 1
        wall.advance(3540)
        assert claim_failures(store, far, new_claim_token(), clock=wall) == []
        wall.advance(60)  # (an hour: the leases end)
        assert len(claim_failures(store, ARRIVAL, new_claim_token(), clock=wall)) == 3
    finally:
        store.close()


def test_a_lost_claim_is_neither_delivered_again_nor_marked(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Sender A claims two reports; while it delivers the first, its leases end and sender
    B takes both and sends them. A must not deliver the second (its claim is gone), and
    says that the first, delivered meanwhile by both, was lost."""
    first_store, second_store = open_store(store_url), open_store(store_url)
    wall = LeaseClock(second_store, "failure_reports")
    second_outcomes = []
    second_relay = Relay()

    class Racing(Relay):
        def __call__(
            self, raw: bytes, mail_from: str, rcpts: Sequence[str]
        ) -> tuple[RecipientOutcome, ...]:
            if not self.sent:  # (A's first delivery is slow: its leases end meanwhile)
                wall.advance(3601)
                second_outcomes.extend(send_failures(
                    second_store, submitter=SUBMITTER, signer=SIGNER,
                    resolver=resolver(extra=AGREES), transport=second_relay, now=ARRIVAL + 60,
                    clock=wall,
                ))  # fmt: skip
            return super().__call__(raw, mail_from, rcpts)

    first_relay = Racing()
    try:
        ids = _queue(first_store, 2)
        with caplog.at_level(logging.WARNING, "mailauth.reports"):
            outcomes = send_failures(
                first_store, submitter=SUBMITTER, signer=SIGNER, resolver=resolver(extra=AGREES),
                transport=first_relay, now=ARRIVAL + 60, clock=wall,
            )  # fmt: skip
        assert [(o.id, o.state) for o in second_outcomes] == [(i, ReportState.SENT) for i in ids]
        assert len(second_relay.sent) == 2
        assert len(first_relay.sent) == 1  # (the first only: the second's claim was lost)
        assert [(o.id, o.problems[-1]) for o in outcomes] == [(ids[0], LOST)]
        assert sum("not sent by this run" in r.message for r in caplog.records) == 1
        rows = first_store.fetchall("SELECT state, attempts FROM failure_reports")
        assert sorted(rows) == [("sent", 2), ("sent", 2)]  # (marked once, by B)
    finally:
        first_store.close()
        second_store.close()


def test_claims_not_tried_are_given_back_when_a_run_ends_by_an_exception(
    store_url: str,
) -> None:
    class Broken(Relay):
        def __call__(
            self, raw: bytes, mail_from: str, rcpts: Sequence[str]
        ) -> tuple[RecipientOutcome, ...]:
            raise KeyboardInterrupt

    store = open_store(store_url)
    try:
        ids = _queue(store, 3)
        with pytest.raises(KeyboardInterrupt):
            send_failures(store, submitter=SUBMITTER, signer=SIGNER,
                          resolver=resolver(extra=AGREES), transport=Broken(),
                          now=ARRIVAL + 60, clock=lambda: WALL)  # fmt: skip
        states = {s.id: (s.state, s.attempts) for s in failure_status(store)}
        assert states == {ids[0]: ("claimed", 1), ids[1]: ("pending", 0), ids[2]: ("pending", 0)}
    finally:
        store.close()
