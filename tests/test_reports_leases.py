"""Leases on a real PostgreSQL run on the server's clock (REVIEW25B 6): two hosts whose
clocks differ by more than a lease (a VM restored from a snapshot, NTP broken) still agree
on whether a claim is live. Before, each host compared the expiry with its own clock: one
running two hours ahead took, and delivered, every report another host was delivering;
one running behind wrote claims (and renewals) that had ended already."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mailauth.reports import closed_reports, mark_sent, open_store
from mailauth.reports.delivery import ReportState
from mailauth.reports.failure_claims import claim_failures, new_claim_token, renew_failure
from mailauth.reports.failure_send import send_failures
from mailauth.reports.smtp import RecipientOutcome
from tests.failure_helpers import AGREES, ARRIVAL, resolver
from tests.test_reports_failure_claims import _queue
from tests.test_reports_failure_queue import SIGNER, SUBMITTER, Relay
from tests.test_reports_store import AFTER, SETTINGS, _fill

SKEW = 2 * 3600.0  # two leases


def ahead() -> float:
    """Host B's clock: two hours ahead of the others."""
    return time.time() + SKEW


def behind() -> float:
    """Host C's clock: two hours behind."""
    return time.time() - SKEW


def test_a_host_whose_clock_is_ahead_takes_no_failure_report_another_is_delivering(
    postgres_server: Any,
) -> None:
    """Host A delivers a failure report; while it does, host B (two hours ahead) runs
    `reports send`: B takes nothing, and A's outcome is marked, not "claim lost"."""
    url = str(postgres_server.new_database())
    a_store, b_store = open_store(url), open_store(url)
    b_relay, b_outcomes = Relay(), []

    class WhileADelivers(Relay):
        def __call__(
            self, raw: bytes, mail_from: str, rcpts: Sequence[str]
        ) -> tuple[RecipientOutcome, ...]:
            b_outcomes.extend(send_failures(
                b_store, submitter=SUBMITTER, signer=SIGNER, resolver=resolver(extra=AGREES),
                transport=b_relay, now=ARRIVAL + 60, clock=ahead,
            ))  # fmt: skip
            return super().__call__(raw, mail_from, rcpts)

    a_relay = WhileADelivers()
    try:
        (report_id,) = _queue(a_store, 1)
        outcomes = send_failures(
            a_store, submitter=SUBMITTER, signer=SIGNER, resolver=resolver(extra=AGREES),
            transport=a_relay, now=ARRIVAL + 60, clock=time.time,
        )  # fmt: skip
        assert b_outcomes == [] and b_relay.sent == []
        assert [(o.id, o.state, o.problems) for o in outcomes] == [
            (report_id, ReportState.SENT, ())
        ]
        assert len(a_relay.sent) == 1
        assert a_store.fetchall("SELECT state, attempts FROM failure_reports") == [("sent", 1)]
    finally:
        a_store.close()
        b_store.close()


def test_a_claim_or_renewal_by_a_host_whose_clock_is_behind_lasts_its_lease(
    postgres_server: Any,
) -> None:
    url = str(postgres_server.new_database())
    c_store, a_store = open_store(url), open_store(url)
    try:
        _queue(c_store, 2)
        (first, second) = claim_failures(c_store, ARRIVAL, new_claim_token(), clock=behind)
        assert claim_failures(a_store, ARRIVAL, new_claim_token(), clock=time.time) == []
        assert claim_failures(a_store, ARRIVAL, new_claim_token(), clock=ahead) == []
        assert renew_failure(c_store, first, 3600, clock=behind)
        assert claim_failures(a_store, ARRIVAL, new_claim_token(), clock=ahead) == []
        (until,) = c_store.fetchall(
            "SELECT claimed_until - EXTRACT(EPOCH FROM clock_timestamp()) FROM failure_reports "
            "WHERE id = ?",
            (second.id,),
        )[0]
        assert 3500 < until <= 3600  # (an hour of the server's clock)
    finally:
        c_store.close()
        a_store.close()


def test_a_host_whose_clock_is_ahead_takes_no_aggregate_report_another_holds(
    postgres_server: Any,
) -> None:
    url = str(postgres_server.new_database())
    _fill(url, 3)
    a_store, b_store = open_store(url), open_store(url)
    try:
        a_run = closed_reports(a_store, SETTINGS, now=AFTER, batch=3, clock=behind)
        first = next(a_run)  # (all three claimed, the first renewed)
        assert list(closed_reports(b_store, SETTINGS, now=AFTER, clock=ahead)) == []
        assert mark_sent(a_store, first, now=AFTER)
        rest = list(a_run)  # (each renewed as it is handed out, on the server's clock)
        assert len(rest) == 2 and all(mark_sent(a_store, r, now=AFTER) for r in rest)
        assert list(closed_reports(b_store, SETTINGS, now=AFTER, clock=ahead)) == []
    finally:
        a_store.close()
        b_store.close()
