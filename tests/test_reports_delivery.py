"""Sending due reports: destinations verified, one message per URI, outcomes back to the
store, retries with the same file name and Report-ID (a fake store and transport here)."""

from __future__ import annotations

import email
import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from email import policy

from mailauth.dkim import Signer
from mailauth.reports.delivery import (
    PendingReport,
    ReportState,
    SendOutcome,
    preview_message,
    send_reports,
)
from mailauth.reports.message import Submitter, report_filename
from mailauth.reports.smtp import RecipientOutcome, RecipientStatus
from mailauth.reports.uri import psl_org_domain
from tests.dkim_helpers import RSA_KEY, zone

SUBMITTER = Submitter("Example Receiver", "dmarc-noreply@example.org", "example.org")
SIGNER = Signer("example.org", "rep2026", RSA_KEY)
NOW = 1_795_090_000.0
BEGIN, END = 1_795_000_000, 1_795_086_399
RID = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Due:
    """A pending report as the store hands it out."""

    policy_domain: str = "example.com"
    begin: int = BEGIN
    end: int = END
    rua: tuple[str, ...] = ("mailto:dmarc@example.com",)
    delivered: tuple[str, ...] = ()
    report_id: str = RID
    file_name: str = report_filename("example.org", "example.com", BEGIN, END, RID)
    xml_gz: bytes = gzip.compress(b"<feedback/>", mtime=0)
    attempts: int = 1


@dataclass
class Marks:
    calls: list[tuple[str, str, tuple[str, ...], bool]] = field(default_factory=list)
    reached_so_far: list[tuple[str, ...]] = field(default_factory=list)

    def reached(self, report: PendingReport, delivered: tuple[str, ...]) -> bool:
        self.reached_so_far.append(delivered)
        return True

    def sent(self, report: PendingReport, *, now: float) -> bool:
        self.calls.append(("sent", report.report_id, (), False))
        return True

    def failed(
        self,
        report: PendingReport,
        error: str,
        *,
        now: float,
        delivered: tuple[str, ...],
        give_up: bool,
    ) -> bool:
        self.calls.append(("failed", error, delivered, give_up))
        return True


@dataclass
class Relay:
    """Replies by recipient local part: ``busy`` 451, ``gone`` 550, else 250."""

    sent: list[tuple[bytes, str, list[str]]] = field(default_factory=list)

    def __call__(
        self, raw: bytes, mail_from: str, recipients: Sequence[str]
    ) -> tuple[RecipientOutcome, ...]:
        self.sent.append((raw, mail_from, list(recipients)))
        return tuple(self._one(r) for r in recipients)

    @staticmethod
    def _one(rcpt: str) -> RecipientOutcome:
        if rcpt.startswith("busy"):
            return RecipientOutcome(rcpt, RecipientStatus.TEMPORARY, 451, "try later")
        if rcpt.startswith("gone"):
            return RecipientOutcome(rcpt, RecipientStatus.PERMANENT, 550, "no such user")
        return RecipientOutcome(rcpt, RecipientStatus.SENT, 250, "ok")


ZONE = {
    "example.com._report._dmarc.example.net": "v=DMARC1",
}


def _run(
    *reports: Due, faults: dict[str, str] | None = None
) -> tuple[list[SendOutcome], Relay, Marks]:
    relay, marks = Relay(), Marks()
    outcomes = send_reports(
        reports,
        submitter=SUBMITTER,
        signer=SIGNER,
        resolver=zone(ZONE, faults),
        transport=relay,
        marks=marks,
        now=NOW,
        org_domain=psl_org_domain,
    )
    return outcomes, relay, marks


def test_one_message_per_uri_each_verified() -> None:
    due = Due(
        rua=(
            "mailto:dmarc@example.com",
            "mailto:agg@example.net!10m",  # external, authorized; the size ignored
            "mailto:agg@example.org",  # external, not authorized: ignored
            "https://example.com/reports",  # unsupported scheme: ignored
        )
    )
    (outcome,), relay, marks = _run(due)
    assert outcome.state is ReportState.SENT
    assert outcome.delivered == ("mailto:dmarc@example.com", "mailto:agg@example.net")
    assert [rcpts for _, _, rcpts in relay.sent] == [["dmarc@example.com"], ["agg@example.net"]]
    assert {sender for _, sender, _ in relay.sent} == {"dmarc-noreply@example.org"}
    assert any("not authorized" in p for p in outcome.problems)
    assert any("scheme https" in p for p in outcome.problems)
    assert marks.calls == [("sent", RID, (), False)]
    for raw, _, _ in relay.sent:
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert parsed["Subject"].endswith(f"Report-ID: <{RID}>")
        assert parsed["DKIM-Signature"] is not None


def test_temporary_failures_are_retried_with_the_same_file_name_and_report_id() -> None:
    due = Due(rua=("mailto:dmarc@example.com", "mailto:busy@example.com"))
    (first,), relay, marks = _run(due)
    assert first.state is ReportState.RETRY
    assert first.delivered == ("mailto:dmarc@example.com",)
    ((kind, error, delivered, give_up),) = marks.calls
    assert (kind, delivered, give_up) == ("failed", ("mailto:dmarc@example.com",), False)
    assert "451" in error
    # the next run: only the URI not reached yet, the same message bytes for it
    retry = replace(due, delivered=first.delivered, attempts=2)
    (second,), relay2, _ = _run(retry)
    assert [rcpts for _, _, rcpts in relay2.sent] == [["busy@example.com"]]
    assert relay2.sent[0][0] == relay.sent[1][0]
    assert second.state is ReportState.RETRY


def test_dns_temporary_failure_in_verification_is_a_retry_not_a_refusal() -> None:
    due = Due(rua=("mailto:agg@example.info",))
    faults = {"example.com._report._dmarc.example.info": "timeout"}
    (outcome,), relay, marks = _run(due, faults=faults)
    assert (outcome.state, relay.sent) == (ReportState.RETRY, [])
    assert marks.calls[0][3] is False  # not given up


def test_permanent_refusals_and_nowhere_to_send_end_the_report() -> None:
    (gone,), _, marks = _run(Due(rua=("mailto:gone@example.com",)))
    assert gone.state is ReportState.ABANDONED
    assert marks.calls[0][0] == "failed" and marks.calls[0][3] is True
    (nowhere,), relay, _ = _run(Due(rua=("mailto:x@example.org", "ftp://example.com/x")))
    assert (nowhere.state, relay.sent) == (ReportState.ABANDONED, [])
    (mixed,), _, _ = _run(Due(rua=("mailto:gone@example.com", "mailto:ok@example.com")))
    assert mixed.state is ReportState.SENT


def test_too_many_attempts_give_up() -> None:
    (outcome,), _, marks = _run(Due(rua=("mailto:busy@example.com",), attempts=10))
    assert outcome.state is ReportState.ABANDONED
    assert marks.calls[0][3] is True


def test_preview_goes_to_every_address_unverified() -> None:
    due = Due(rua=("mailto:a@example.com", "mailto:b@example.net"))
    raw = preview_message(due, submitter=SUBMITTER, signer=SIGNER, now=NOW)
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["To"] == "a@example.com, b@example.net"


def test_a_policy_domain_no_file_name_can_hold_is_abandoned_and_the_run_goes_on() -> None:
    # An attacker's own record at _dmarc.x_y.attacker.example (RFC 5322 domains may hold
    # "_"): its report cannot be named (RFC 9990 file name, Subject), and must not stop the
    # reports after it.
    odd = Due(
        policy_domain="x_y.attacker.example",
        rua=("mailto:r@attacker.example",),
        file_name=f"example.org!x_y.attacker.example!{BEGIN}!{END}!{RID}.xml.gz",
    )
    (first, second), relay, marks = _run(odd, Due())
    assert first.state is ReportState.ABANDONED
    assert any("x_y.attacker.example" in p for p in first.problems)
    assert second.state is ReportState.SENT
    assert [rcpts for _, _, rcpts in relay.sent] == [["dmarc@example.com"]]
    assert [(kind, give_up) for kind, _, _, give_up in marks.calls] == [
        ("failed", True),
        ("sent", False),
    ]


def test_a_lost_claim_is_said() -> None:
    """When the store says the claim was lost (its lease ended and another run took the
    report: it may go out twice), the outcome says so rather than nothing."""

    class Lost(Marks):
        def sent(self, report: PendingReport, *, now: float) -> bool:
            super().sent(report, now=now)
            return False

    marks = Lost()
    (outcome,) = send_reports(
        [Due()],
        submitter=SUBMITTER,
        signer=SIGNER,
        resolver=zone(ZONE),
        transport=Relay(),
        marks=marks,
        now=NOW,
        org_domain=psl_org_domain,
    )
    assert outcome.state is ReportState.SENT
    assert any("claim" in p and "another run" in p for p in outcome.problems)


def test_each_destination_is_told_as_it_is_reached_and_a_lost_claim_stops_the_rest() -> None:
    """REVIEW25B 6: the store hears of each URI as the relay accepts it (a run killed
    after the first does not send to it again); when the store says the claim is gone
    (another run has the report), the URIs after it are that run's, not sent here."""
    rua = ("mailto:a@example.com", "mailto:b@example.com", "mailto:c@example.com")
    (outcome,), relay, marks = _run(Due(rua=rua, delivered=("mailto:z@example.com",)))
    assert marks.reached_so_far == [
        ("mailto:z@example.com", rua[0]),
        ("mailto:z@example.com", rua[0], rua[1]),
        ("mailto:z@example.com", *rua),
    ]

    class Lost(Marks):
        def reached(self, report: PendingReport, delivered: tuple[str, ...]) -> bool:
            super().reached(report, delivered)
            return False

        def failed(
            self,
            report: PendingReport,
            error: str,
            *,
            now: float,
            delivered: tuple[str, ...],
            give_up: bool,
        ) -> bool:
            super().failed(report, error, now=now, delivered=delivered, give_up=give_up)
            return False

    relay, marks = Relay(), Lost()
    (outcome,) = send_reports([Due(rua=rua)], submitter=SUBMITTER, signer=SIGNER,
                              resolver=zone(ZONE), transport=relay, marks=marks, now=NOW,
                              org_domain=psl_org_domain)  # fmt: skip
    assert [rcpts for _, _, rcpts in relay.sent] == [["a@example.com"]]
    assert marks.reached_so_far == [(rua[0],)]
    assert outcome.state is ReportState.RETRY and outcome.delivered == (rua[0],)
    assert any("claim lost" in p for p in outcome.problems)
