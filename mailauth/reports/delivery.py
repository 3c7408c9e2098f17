"""Sending the aggregate reports that are due: destinations, messages, outcomes, retries.

For each pending report (anything with the attributes of :class:`PendingReport`, as the
report store hands them out), :func:`send_reports`:

1. parses its ``rua`` URIs (mailto: only; malformed ones ignored with a reason) and leaves
   out those an earlier attempt reached;
2. verifies external destinations through the resolver (RFC 9990 4), as a plan;
3. builds one message per URI (RFC 9990 3: every URI gets its own; the same file name and
   Report-ID on every attempt), DKIM-signed, and hands it to the transport (the relay);
4. tells the store what became of it through :class:`ReportMarks`: each destination
   reached, as soon as the relay has accepted its message (``reached``: a run that dies
   after the first of three URIs does not send to it again); ``sent`` once every
   destination has it or has refused it for good, ``failed`` with the URIs reached so far
   when some destination failed temporarily (a DNS temporary failure during verification,
   a 4xx, the relay unreachable), ``give_up`` after ``max_attempts`` or when no destination
   could ever take it.

Nothing here opens a store, a file or a socket: the command line wires those in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from mailauth.dkim import Signer
from mailauth.dns import DnsResolver
from mailauth.plan import run_plan
from mailauth.reports.message import AggregateReport, Submitter, build_aggregate_message
from mailauth.reports.smtp import RecipientOutcome, RecipientStatus
from mailauth.reports.uri import (
    Destination,
    DestinationStatus,
    OrgDomainPlan,
    ReportAddress,
    parse_report_uris,
    treewalk_org_domain,
    verify_destinations,
)

MAX_ATTEMPTS = 10  # (a day's report retried on ten runs: about ten days with a daily timer)


class PendingReport(Protocol):
    """One report due, as the store hands it out (read-only attributes)."""

    @property
    def policy_domain(self) -> str: ...
    @property
    def begin(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def rua(self) -> tuple[str, ...]: ...
    @property
    def delivered(self) -> tuple[str, ...]: ...
    @property
    def report_id(self) -> str: ...
    @property
    def file_name(self) -> str: ...
    @property
    def xml_gz(self) -> bytes: ...
    @property
    def attempts(self) -> int: ...


class ReportMarks(Protocol):
    """How the outcome goes back to the store."""

    def reached(self, report: PendingReport, delivered: tuple[str, ...]) -> bool:
        """The URIs that have the report so far (earlier attempts' and this run's), told
        as each is reached; False when the claim was lost (another run has the report)."""
        ...

    def sent(self, report: PendingReport, *, now: float) -> bool: ...

    def failed(
        self,
        report: PendingReport,
        error: str,
        *,
        now: float,
        delivered: tuple[str, ...],
        give_up: bool,
    ) -> bool: ...


class ReportSource(ReportMarks, Protocol):
    """The reports due and where their outcomes go (the store, in production:
    ``mailauth reports send``)."""

    def pending(self, now: float) -> Iterable[PendingReport]: ...
    def release(self, report: PendingReport, *, now: float) -> None: ...
    def close(self) -> None: ...


Transport = Callable[[bytes, str, Sequence[str]], tuple[RecipientOutcome, ...]]
"""Send one message (raw bytes, envelope sender, recipients): ``SmtpRelay.send``."""


class ReportState(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one run did with one report: its state, the URIs that have it (this run's and
    earlier ones), and a line per problem (URIs ignored, refused, failed)."""

    policy_domain: str
    report_id: str
    file_name: str
    state: ReportState
    delivered: tuple[str, ...]
    problems: tuple[str, ...] = ()


def aggregate_report(report: PendingReport) -> AggregateReport:
    """The message module's view of a pending report."""
    return AggregateReport(
        report.policy_domain, report.begin, report.end, report.report_id, report.file_name,
        report.xml_gz,
    )  # fmt: skip


def send_reports(
    reports: Iterable[PendingReport],
    *,
    submitter: Submitter,
    signer: Signer,
    resolver: DnsResolver,
    transport: Transport,
    marks: ReportMarks,
    now: float,
    org_domain: OrgDomainPlan = treewalk_org_domain,
    max_attempts: int = MAX_ATTEMPTS,
) -> list[SendOutcome]:
    """Send every report; each one's outcome is marked in the store before the next. An
    exception (the store gone, an interrupt) closes ``reports`` when it is a generator
    (:func:`~.outgoing.closed_reports`: the claims it has not handed out are given back)."""
    outcomes = []
    try:
        for report in reports:
            outcomes.append(_send_and_mark(report, marks, now, functools.partial(
                send_report, submitter=submitter, signer=signer, resolver=resolver,
                transport=transport, now=now, org_domain=org_domain, max_attempts=max_attempts,
            )))  # fmt: skip
    except BaseException:
        if isinstance(reports, Generator):
            reports.close()
        raise
    return outcomes


def _send_and_mark(
    report: PendingReport, marks: ReportMarks, now: float, send: Callable[..., SendOutcome]
) -> SendOutcome:
    reached = recording(report.delivered, functools.partial(marks.reached, report))
    outcome = send(report, on_delivered=reached)
    if outcome.state is ReportState.SENT:
        kept = marks.sent(report, now=now)
    else:
        error, give_up = failure_note(outcome.state, outcome.problems)
        kept = marks.failed(report, error, now=now, delivered=outcome.delivered, give_up=give_up)
    if not kept:  # (its lease ended during this run and another run took it)
        lost = "claim lost: another run took this report meanwhile (it may go out twice)"
        outcome = replace(outcome, problems=(*outcome.problems, lost))
    return outcome


def send_report(
    report: PendingReport,
    *,
    submitter: Submitter,
    signer: Signer,
    resolver: DnsResolver,
    transport: Transport,
    now: float,
    org_domain: OrgDomainPlan = treewalk_org_domain,
    max_attempts: int = MAX_ATTEMPTS,
    on_delivered: Record | None = None,
) -> SendOutcome:
    """One report to each of its destinations not reached yet (``on_delivered``: told each
    URI as it is reached, :func:`send_to_uris`)."""
    try:
        message = aggregate_report(report)
    except ValueError as exc:
        # A policy domain that is no host name (an attacker's "_dmarc.x_y.example", RFC
        # 5322 domains may hold "_" or "!") cannot be named in the RFC 9990 file name and
        # Subject: that report ends here, the run goes on with the next.
        why = f"cannot be sent: {exc}"
        return SendOutcome(
            report.policy_domain, report.report_id, report.file_name, ReportState.ABANDONED,
            tuple(report.delivered), (why,),
        )  # fmt: skip
    todo, problems = uris_due(report.rua, report.delivered)
    plan = verify_destinations(message.policy_domain, todo, tag="rua", org_domain=org_domain)
    checks = run_plan(plan, resolver)

    def build(recipients: list[str]) -> bytes:
        return build_aggregate_message(message, submitter, recipients, now=now, signer=signer)

    reached, temporary = send_to_uris(
        todo, checks, build=build, transport=transport, mail_from=submitter.email,
        problems=problems, on_delivered=on_delivered,
    )  # fmt: skip
    delivered = [*report.delivered, *reached]
    state = conclude(temporary, bool(delivered), report.attempts, max_attempts, problems)
    return SendOutcome(
        message.policy_domain,
        report.report_id,
        report.file_name,
        state,
        tuple(delivered),
        tuple(problems),
    )


def uris_due(
    uris: Sequence[str], delivered: Sequence[str]
) -> tuple[list[ReportAddress], list[str]]:
    """The addresses of ``uris`` (mailto: only, RFC 9990 3 / RFC 9991 2) whose URI an
    earlier attempt did not reach, and a problem line per URI ignored."""
    parsed = parse_report_uris(uris)
    done = set(delivered)
    todo = [a for a in parsed.addresses if a.uri not in done]
    return todo, [f"{i.uri}: {i.reason}" for i in parsed.ignored]


def failure_note(state: ReportState, problems: Sequence[str]) -> tuple[str, bool]:
    """What the store keeps of a report not sent: the error (its problems, at most 1,000
    characters) and whether it is given up."""
    return "; ".join(problems)[:1000] or "not delivered", state is ReportState.ABANDONED


def preview_recipients(uris: Sequence[str], submitter: Submitter) -> list[str]:
    """Who a ``--dry-run`` message is addressed to: every mailto: address of ``uris``,
    unverified (no DNS), or the submitter when there is none."""
    return [a.address for a in parse_report_uris(uris).addresses] or [submitter.email]


Record = Callable[[str], bool]
"""Told each URI as the relay accepts its message (the store records it at once); False
when the claim on the report was lost: the rest is another run's."""


def recording(before: Sequence[str], store: Callable[[tuple[str, ...]], bool]) -> Record:
    """A :data:`Record` that hands ``store`` every URI reached so far, ``before`` (earlier
    attempts') first."""
    done = list(before)

    def record(uri: str) -> bool:
        done.append(uri)
        return store(tuple(dict.fromkeys(done)))

    return record


def send_to_uris(
    todo: Sequence[ReportAddress],
    checks: Sequence[Destination],
    *,
    build: Callable[[list[str]], bytes],
    transport: Transport,
    mail_from: str,
    problems: list[str],
    on_delivered: Record | None = None,
) -> tuple[list[str], bool]:
    """One message per URI of ``todo`` (RFC 9990 3 / RFC 9991 2: every URI gets its own),
    built by ``build`` for the URI's verified recipients: the URIs reached, and whether
    some failed temporarily (or were not tried: ``on_delivered`` said the claim was lost,
    and the URIs after it are left to the run that has the report); ``problems`` gets a
    line per note."""
    reached, temporary = [], False
    for uri in dict.fromkeys(a.uri for a in todo):
        mine = [c for c in checks if c.address.uri == uri]
        result, notes = _send_uri(mine, build, transport, mail_from)
        problems.extend(f"{uri}: {n}" for n in notes)
        if result == "delivered":
            reached.append(uri)
            if on_delivered is not None and not on_delivered(uri):
                return reached, True
        temporary = temporary or result == "temporary"
    return reached, temporary


def conclude(
    temporary: bool, delivered: bool, attempts: int, max_attempts: int, problems: list[str]
) -> ReportState:
    """Retry after a temporary failure (abandoned after ``max_attempts``); sent once some
    destination has it and none is waiting; abandoned when none can take it."""
    if temporary:
        return ReportState.ABANDONED if attempts >= max_attempts else ReportState.RETRY
    if delivered:
        return ReportState.SENT
    problems.append("no destination can take this report")
    return ReportState.ABANDONED


def _send_uri(
    checks: list[Destination],
    build: Callable[[list[str]], bytes],
    transport: Transport,
    mail_from: str,
) -> tuple[str, list[str]]:
    """``delivered``, ``temporary`` or ``refused`` for one URI, and notes."""
    waiting = [c for c in checks if c.status is DestinationStatus.TEMPFAIL]
    if waiting:  # RFC 9990 4 step 5: verification repeated later, the URI kept for then
        return "temporary", [c.reason for c in waiting]
    notes = [c.reason for c in checks if c.reason and not c.usable]
    recipients = list(dict.fromkeys(a.address for c in checks if c.usable for a in c.addresses))
    if not recipients:
        return "refused", notes
    outcomes = transport(build(recipients), mail_from, recipients)
    failed = [o for o in outcomes if o.status is not RecipientStatus.SENT]
    notes.extend(f"{o.recipient}: {o.status} {o.code or ''} {o.reply}".strip() for o in failed)
    if any(o.status is RecipientStatus.TEMPORARY for o in failed):
        return "temporary", notes
    if len(failed) == len(outcomes):
        return "refused", notes
    return "delivered", notes


def preview_message(
    report: PendingReport, *, submitter: Submitter, signer: Signer, now: float
) -> bytes:
    """The message ``--dry-run`` writes: to every mailto: address of the report's URIs,
    unverified (no DNS), signed as it would be sent."""
    recipients = preview_recipients(report.rua, submitter)
    return build_aggregate_message(
        aggregate_report(report), submitter, recipients, now=now, signer=signer
    )
