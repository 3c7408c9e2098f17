"""Sending the queued RFC 9991 failure reports: destinations, the SPF record, the ARF
message, outcomes, retries (``mailauth reports send``, beside the aggregate reports).

For each report claimed from the queue (:mod:`.failure_queue`), :func:`send_failures`:

1. parses its ruf URIs (mailto: only), leaving out those an earlier attempt reached, and
   verifies external destinations through the resolver (RFC 9991 5: RFC 9990 4's
   procedure with ``ruf``), as a plan;
2. when SPF did not give an aligned pass, looks up the SPF record of the domain checked
   (``SPF-DNS``, RFC 6591 3.2; RFC 9991 4: REQUIRED for an SPF failure of an aligned
   identifier) -- at send time, through the same resolver, beside step 1;
3. builds one ARF message per URI (:func:`~mailauth.reports.failure.build_failure_report`),
   its Message-ID from the queue's id (the same on every retry), DKIM-signed for the
   submitter domain (RFC 9991 6: SHOULD be aligned), and hands it to the relay; each URI
   the relay accepts is recorded at once (:func:`~.failure_claims.mark_failure_delivered`:
   a run that dies after the first of three does not send to it again);
4. marks it ``sent`` once every destination has it or refused it for good; ``retry`` (after
   a backoff) when some destination, the relay or DNS failed temporarily; ``abandoned``
   after ``max_attempts`` or when no destination can take it.

Each claim is renewed just before its report is sent (:func:`~.failure_claims.renew_failure`):
a claim lost meanwhile (its lease ended while earlier reports were sent, and another run
took it) stops that report, logged: it is neither delivered again nor marked by this run.
A claim lost during the delivery itself (slower than a lease) is noted in the outcome: the
other run may send it too. Claims not yet tried when the run ends by an exception (the
store gone while a claim was renewed or an outcome marked, an interrupt) are given back
(:func:`~.leases.give_back`: over a new connection when the store's is gone), not left to
wait out their leases; the report being delivered stays claimed (the relay may have it).

Nothing here opens a store, a file or a socket; the command line wires them in.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from mailauth.dkim import Signer
from mailauth.dns import DnsResolver, DnsStatus, Query, RRType
from mailauth.domains import host_name
from mailauth.errors import InvalidDomainError, MailauthError
from mailauth.plan import Plan, parallel, resolve, run_plan
from mailauth.reports.delivery import (
    MAX_ATTEMPTS,
    Record,
    ReportState,
    Transport,
    conclude,
    failure_note,
    preview_recipients,
    recording,
    send_to_uris,
    uris_due,
)
from mailauth.reports.failure import FailureFacts, build_failure_report
from mailauth.reports.failure_claims import (
    ClaimedFailure,
    claim_failures,
    mark_failure_delivered,
    mark_failure_failed,
    mark_failure_sent,
    new_claim_token,
    prune_failures,
    release_failure,
    renew_failure,
)
from mailauth.reports.leases import give_back
from mailauth.reports.message import Submitter, check_aligned
from mailauth.reports.store import Store, StoreError
from mailauth.reports.uri import OrgDomainPlan, treewalk_org_domain, verify_destinations
from mailauth.spf.record import is_spf_record

log = logging.getLogger("mailauth.reports")
LOST = "claim lost: another run took this report meanwhile (it may go out twice)"


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """What one run did with one failure report."""

    id: str
    policy_domain: str
    auth_failure: str
    state: ReportState
    delivered: tuple[str, ...]
    problems: tuple[str, ...] = ()


def spf_record(domain: str) -> Plan[tuple[str, bool]]:
    """The SPF record published at ``domain`` (RFC 7208 4.5: the one TXT record starting
    with ``v=spf1``; "" when there is none, or more than one) and whether DNS failed
    temporarily."""
    try:
        name = host_name(domain)
    except InvalidDomainError:
        return "", False
    (lookup,) = yield from resolve(Query.of(name, RRType.TXT))
    if lookup.status is DnsStatus.TEMPFAIL:
        return "", True
    found = [t for t in lookup.texts if is_spf_record(t)]
    return (found[0].decode("ascii", "replace") if len(found) == 1 else ""), False


def _needs_spf_record(facts: FailureFacts) -> bool:
    return not facts.spf_aligned and bool(facts.spf_domain) and not facts.spf_record


def send_failures(
    store: Store,
    *,
    submitter: Submitter,
    signer: Signer,
    resolver: DnsResolver,
    transport: Transport,
    now: float,
    org_domain: OrgDomainPlan = treewalk_org_domain,
    max_attempts: int = MAX_ATTEMPTS,
    lease: int = 3600,
    clock: Callable[[], float] = time.time,
) -> list[FailureOutcome]:
    """Claim and send every failure report due, 20 at a time (leases of ``lease`` seconds
    of ``clock``); each one's claim is renewed before it is sent (a claim lost stops the
    report: no outcome, a log line) and its outcome marked before the next batch is
    claimed. A report that cannot be built (its queued data unreadable) is abandoned with
    the reason; a signer not aligned with the submitter is a ConfigError before anything
    is claimed."""
    check_aligned(signer, submitter)
    send = functools.partial(
        send_failure, submitter=submitter, signer=signer, resolver=resolver,
        transport=transport, now=now, org_domain=org_domain, max_attempts=max_attempts,
    )  # fmt: skip
    token, outcomes = new_claim_token(), []
    while claimed := claim_failures(store, now, token, lease=lease, clock=clock):
        for index, report in enumerate(claimed):
            tried = False  # (once tried, a report may have reached its relay: kept claimed)
            try:
                if not renew_failure(store, report, lease, clock=clock):
                    log.warning("failure report %s (%s): claim lost: another run took this "
                                "report meanwhile; not sent by this run", report.id,
                                report.policy_domain)  # fmt: skip
                    continue
                tried = True
                reached = _recorder(store, report)
                outcome = _send_one(functools.partial(send, on_delivered=reached), report)
                outcomes.append(_mark(store, report, outcome, now))
            except BaseException:
                left = claimed[index + 1 if tried else index :]
                give_back(store, functools.partial(_release_all, reports=left))
                raise
    prune_failures(store, now)
    return outcomes


def _recorder(store: Store, report: ClaimedFailure) -> Record:
    """Each URI recorded in the store as the relay accepts it (on the report's claim)."""
    return recording(report.delivered, functools.partial(mark_failure_delivered, store, report))


def _release_all(store: Store, reports: Sequence[ClaimedFailure]) -> None:
    for report in reports:
        release_failure(store, report)


def _send_one(
    send: Callable[[ClaimedFailure], FailureOutcome], report: ClaimedFailure
) -> FailureOutcome:
    try:
        return send(report)
    except StoreError:
        raise  # (recording a destination reached: the store's, not the report's)
    except (MailauthError, ValueError) as exc:
        return FailureOutcome(
            report.id, report.policy_domain, report.auth_failure,
            ReportState.ABANDONED, report.delivered, (f"cannot be built: {exc}",),
        )  # fmt: skip


def _mark(
    store: Store, report: ClaimedFailure, outcome: FailureOutcome, now: float
) -> FailureOutcome:
    """The outcome marked in the store, or noted (and logged) when the claim was lost
    during the delivery."""
    if outcome.state is ReportState.SENT:
        kept = mark_failure_sent(store, replace(report, delivered=outcome.delivered), now)
    else:
        error, give_up = failure_note(outcome.state, outcome.problems)
        kept = mark_failure_failed(
            store, report, error, now, delivered=outcome.delivered, give_up=give_up
        )
    if kept:
        return outcome
    log.warning("failure report %s (%s): %s", report.id, report.policy_domain, LOST)
    return replace(outcome, problems=(*outcome.problems, LOST))


def send_failure(
    report: ClaimedFailure,
    *,
    submitter: Submitter,
    signer: Signer,
    resolver: DnsResolver,
    transport: Transport,
    now: float,
    org_domain: OrgDomainPlan = treewalk_org_domain,
    max_attempts: int = MAX_ATTEMPTS,
    on_delivered: Record | None = None,
) -> FailureOutcome:
    """One failure report to each of its destinations not reached yet (ValueError when its
    queued data cannot be read; ``on_delivered``: told each URI as it is reached)."""
    if report.problem:
        raise ValueError(report.problem)
    todo, problems = uris_due(report.ruf, report.delivered)
    facts = report.facts
    checks, (record, spf_tempfail) = run_plan(
        parallel(
            verify_destinations(report.policy_domain, todo, tag="ruf", org_domain=org_domain),
            spf_record(facts.spf_domain) if _needs_spf_record(facts) else _known(facts),
        ),
        resolver,
    )
    delivered, temporary = list(report.delivered), spf_tempfail
    if spf_tempfail:
        problems.append(f"SPF record of {facts.spf_domain}: temporary DNS failure")
    else:
        facts = replace(facts, spf_record=record or facts.spf_record)

        def build(recipients: list[str]) -> bytes:
            return failure_message(report, facts, submitter, recipients, signer=signer, now=now)

        reached, temporary = send_to_uris(
            todo, checks, build=build, transport=transport, mail_from=submitter.email,
            problems=problems, on_delivered=on_delivered,
        )  # fmt: skip
        delivered.extend(reached)
    state = conclude(temporary, bool(delivered), report.attempts, max_attempts, problems)
    return FailureOutcome(
        report.id, report.policy_domain, report.auth_failure, state, tuple(delivered),
        tuple(problems),
    )  # fmt: skip


def _known(facts: FailureFacts) -> Plan[tuple[str, bool]]:
    yield from ()  # (a plan that asks nothing)
    return facts.spf_record, False


def failure_message(
    report: ClaimedFailure,
    facts: FailureFacts,
    submitter: Submitter,
    recipients: Sequence[str],
    *,
    signer: Signer,
    now: float,
) -> bytes:
    """The signed ARF message of a queued report (its Message-ID from the queue's id)."""
    return build_failure_report(
        facts,
        report.original,
        submitter,
        recipients,
        now=now,
        auth_failure=report.auth_failure,
        include_body=report.has_body,
        signer=signer,
        report_id=report.id,
    )


def preview_failure(
    report: ClaimedFailure, *, submitter: Submitter, signer: Signer, now: float
) -> bytes:
    """What ``--dry-run`` writes: to every mailto: address of the ruf URIs, unverified, no
    DNS (no SPF-DNS unless it was known)."""
    recipients = preview_recipients(report.ruf, submitter)
    return failure_message(report, report.facts, submitter, recipients, signer=signer, now=now)
