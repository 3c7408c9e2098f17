"""A `reports send` run that ends in the middle (REVIEW25B 6), aggregate and failure reports,
on SQLite and a real PostgreSQL: each destination is recorded as soon as the relay has the
report, so a run killed after the first of three URIs does not send to it again; a run whose
store goes away (a server restarted, a failover) while it renews a claim or marks an outcome
gives back the claims it has not tried, over a new connection, instead of leaving them for
their leases (an hour)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mailauth.cli.report_send import open_store_source
from mailauth.reports import DirectRecorder, closed_reports, open_store
from mailauth.reports.delivery import ReportState, send_reports
from mailauth.reports.failure_claims import failure_status
from mailauth.reports.failure_queue import enqueue_failures
from mailauth.reports.failure_send import FailureOutcome, send_failures
from mailauth.reports.smtp import RecipientOutcome
from mailauth.reports.store import Store, StoreError
from mailauth.reports.uri import psl_org_domain
from tests.dkim_helpers import zone
from tests.failure_helpers import AGREES, ARRIVAL, resolver
from tests.lease_helpers import LeaseClock
from tests.reports_helpers import DAY, T0, verdict
from tests.test_reports_delivery import SIGNER as AGGREGATE_SIGNER
from tests.test_reports_delivery import SUBMITTER as AGGREGATE_SUBMITTER
from tests.test_reports_failure_queue import SHARED, SIGNER, SUBMITTER, Relay, _report

THREE = ("mailto:a@example.com", "mailto:b@example.com", "mailto:c@example.com")
AFTER = T0 + DAY + 600  # (the first period closed)
SETTINGS = {"org_name": "Example Receiver", "email": AGGREGATE_SUBMITTER.email,
            "submitter": AGGREGATE_SUBMITTER.domain}  # fmt: skip


def _interrupted_at_b(rcpts: Sequence[str]) -> None:
    """The run is killed (SIGINT) as the message for ``b@`` is handed over."""
    if any(r.startswith("b@") for r in rcpts):
        raise KeyboardInterrupt


class Killed(Relay):
    """A relay through which the run is killed (SIGINT) as it hands over the message for
    ``b@``: the messages before it went out."""

    def __call__(
        self, raw: bytes, mail_from: str, rcpts: Sequence[str]
    ) -> tuple[RecipientOutcome, ...]:
        _interrupted_at_b(rcpts)
        return super().__call__(raw, mail_from, rcpts)


class AnyRelay(Relay):
    """Takes every message (the aggregate reports come from another submitter)."""

    def __call__(
        self, raw: bytes, mail_from: str, rcpts: Sequence[str]
    ) -> tuple[RecipientOutcome, ...]:
        self.sent.append((raw, list(rcpts)))
        return tuple(RecipientOutcome(r, self.status, 250) for r in rcpts)


class KilledAny(AnyRelay):
    def __call__(
        self, raw: bytes, mail_from: str, rcpts: Sequence[str]
    ) -> tuple[RecipientOutcome, ...]:
        _interrupted_at_b(rcpts)
        return super().__call__(raw, mail_from, rcpts)


def gone_at(store: Store, marker: str, skip: int = 0) -> None:
    """The store's connection closes (a server restarted, a failover) just before the
    statement containing ``marker`` after ``skip`` such statements."""
    raw, seen = store._raw, [0]

    def dying(sql: str, params: Any = ()) -> Any:
        if marker in sql:
            seen[0] += 1
            if seen[0] > skip:
                store.close()
        return raw(sql, params)

    store._raw = dying  # type: ignore[method-assign]


def _send_failures(store: Store, relay: Relay, clock: Callable[[], float]) -> list[FailureOutcome]:
    return send_failures(store, submitter=SUBMITTER, signer=SIGNER,
                         resolver=resolver(extra=AGREES), transport=relay, now=ARRIVAL + 60,
                         clock=clock)  # fmt: skip


def _queue(store: Store, *rufs: tuple[str, ...]) -> list[str]:
    reports = [_report(ruf=ruf, created=ARRIVAL + i) for i, ruf in enumerate(rufs)]
    enqueue_failures(store, reports, limit=10, period=3600, max_queued=100, **SHARED,
                     now=ARRIVAL)  # fmt: skip
    return [row[0] for row in store.fetchall("SELECT id FROM failure_reports ORDER BY created")]


def test_a_failure_report_run_killed_after_one_destination_does_not_send_to_it_again(
    store_url: str,
) -> None:
    store = open_store(store_url)
    try:
        _queue(store, THREE)
        wall = LeaseClock(store, "failure_reports", time.time())
        killed = Killed()
        with pytest.raises(KeyboardInterrupt):
            _send_failures(store, killed, wall)
        assert [rcpts for _, rcpts in killed.sent] == [["a@example.com"]]
        assert [s.state for s in failure_status(store)] == ["claimed"]  # (its lease holds)
        assert store.fetchall("SELECT delivered FROM failure_reports") == [(THREE[0],)]
        wall.advance(3601)  # (the killed run's lease ends)
        relay = Relay()
        (outcome,) = _send_failures(store, relay, wall)
        assert [rcpts for _, rcpts in relay.sent] == [["b@example.com"], ["c@example.com"]]
        assert (outcome.state, outcome.delivered) == (ReportState.SENT, THREE)
    finally:
        store.close()


def _fill(url: str, domains: int, rua: tuple[str, ...] = ()) -> None:
    """Reports for d0.example, d1.example, ...: to ``rua``, or each to its own domain."""
    store = open_store(url)
    try:
        for index in range(domains):
            domain = f"d{index}.example"
            DirectRecorder(store).record(verdict(domain, rua=rua or (f"mailto:dmarc@{domain}",)),
                                         ip="192.0.2.1", mail_from="", now=T0)  # fmt: skip
    finally:
        store.close()


def test_an_aggregate_report_run_killed_after_one_destination_does_not_send_to_it_again(
    store_url: str,
) -> None:
    rua = tuple(uri.replace("example.com", "d0.example") for uri in THREE)
    _fill(store_url, 1, rua)
    source = open_store_source(store_url, SETTINGS, AFTER)
    send = functools.partial(send_reports, submitter=AGGREGATE_SUBMITTER,
                             signer=AGGREGATE_SIGNER, resolver=zone({}), marks=source,
                             now=AFTER, org_domain=psl_org_domain)  # fmt: skip
    try:
        killed = KilledAny()
        with pytest.raises(KeyboardInterrupt):
            send(source.pending(AFTER), transport=killed)
        assert [rcpts for _, rcpts in killed.sent] == [["a@d0.example"]]
        store: Store = source.store  # type: ignore[attr-defined]
        assert store.fetchall("SELECT state, delivered FROM outgoing_reports") == [
            ("claimed", rua[0])
        ]
        clock = LeaseClock(store, "outgoing_reports", time.time())
        clock.advance(3601)  # (the killed run's lease ends)
        relay = AnyRelay()
        again = closed_reports(store, source.settings, AFTER, clock=clock)  # type: ignore[attr-defined]
        (outcome,) = send(again, transport=relay)
        assert [rcpts for _, rcpts in relay.sent] == [["b@d0.example"], ["c@d0.example"]]
        assert (outcome.state, outcome.delivered) == (ReportState.SENT, rua)
    finally:
        source.close()


# What goes away: the statement that marks the first report sent, or the one that renews
# the second report's claim before it is sent.
GONE = {"mark": ("sent_at = ?", 0), "renew": ("SET claimed_until", 1)}


@pytest.mark.parametrize("where", sorted(GONE))
def test_a_failure_report_run_whose_store_goes_away_gives_its_claims_back(
    store_url: str, where: str
) -> None:
    store = open_store(store_url)
    ids = _queue(store, *[(f"mailto:r{i}@example.com",) for i in range(3)])
    gone_at(store, *GONE[where])
    relay = Relay()
    with pytest.raises(StoreError):
        _send_failures(store, relay, time.time)
    check = open_store(store_url)
    try:
        states = {s.id: (s.state, s.attempts) for s in failure_status(check)}
        if where == "mark":  # (sent, and the destination recorded: kept claimed for it)
            assert len(relay.sent) == 1 and states[ids[0]] == ("claimed", 1)
            delivered = check.fetchall("SELECT delivered FROM failure_reports WHERE id = ?",
                                       (ids[0],))  # fmt: skip
            assert delivered == [("mailto:r0@example.com",)]
        else:  # (the first one sent and marked)
            assert len(relay.sent) == 1 and ids[0] not in states
        assert states[ids[1]] == states[ids[2]] == ("pending", 0)  # (given back)
        again = Relay()  # (the next run: the others at once, the first after its lease)
        assert len(_send_failures(check, again, time.time)) == 2
        assert len(again.sent) == 2
    finally:
        check.close()


@pytest.mark.parametrize("where", sorted(GONE))
def test_an_aggregate_report_run_whose_store_goes_away_gives_its_claims_back(
    store_url: str, where: str
) -> None:
    _fill(store_url, 3)
    source = open_store_source(store_url, SETTINGS, AFTER)
    gone_at(source.store, *GONE[where])  # type: ignore[attr-defined]
    relay = AnyRelay()
    with pytest.raises(StoreError):
        send_reports(source.pending(AFTER), submitter=AGGREGATE_SUBMITTER,
                     signer=AGGREGATE_SIGNER, resolver=zone({}), transport=relay,
                     marks=source, now=AFTER, org_domain=psl_org_domain)  # fmt: skip
    check = open_store(store_url)
    try:
        rows = check.fetchall(
            "SELECT policy_domain, state, attempts FROM outgoing_reports ORDER BY policy_domain"
        )
        first = ("d0.example", "claimed", 1) if where == "mark" else ("d0.example", "sent", 1)
        assert rows == [first, ("d1.example", "pending", 0), ("d2.example", "pending", 0)]
        assert len(relay.sent) == 1
    finally:
        check.close()
        source.close()
