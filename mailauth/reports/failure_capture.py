"""What the failure collector (:mod:`.failure_collect`) takes from a message and turns
into queue rows: the :class:`Capture` handed over on the event loop, whether a verdict
calls for reports at all (RFC 9989 4.7 ``fo=``, RFC 9991 2), the original message as a
report carries it (cut to ``failure_max_size``), and the rows of one capture."""

from __future__ import annotations

from dataclasses import dataclass

from mailauth.config_failure import FailureConfig
from mailauth.reports.failure import FailureFacts, failure_facts, verdict_failure_types
from mailauth.reports.failure_queue import QueuedFailure
from mailauth.results import DmarcResult, Verdict

MAX_RECIPIENTS = 100  # Original-Rcpt-To fields at most


@dataclass(frozen=True, slots=True)
class Capture:
    """What one message's reports need, as handed over on the event loop: the verdict, the
    envelope and what became of the message, the header section as received (CRLF), the
    body copy (or None) and the report types chosen. (The facts are made from it later,
    off the loop.)"""

    verdict: Verdict
    types: tuple[str, ...]
    header: bytes
    body: bytes | bytearray | None
    arrival: float
    ip: str
    mail_from: str
    recipients: tuple[str, ...]
    delivery_result: str

    def facts(self, config: FailureConfig) -> FailureFacts:
        return failure_facts(
            self.verdict,
            ip=self.ip,
            arrival=self.arrival,
            mail_from=self.mail_from,
            rcpt_to=self.recipients[:MAX_RECIPIENTS] if config.include_recipients else (),
            delivery_result=self.delivery_result,
        )


@dataclass(frozen=True, slots=True)
class Captures:
    """Captures written in one transaction (a :class:`~.background.Piece`)."""

    items: tuple[Capture, ...]

    def rows(self) -> int:
        return len(self.items)

    def halves(self) -> tuple[Captures, Captures]:
        middle = len(self.items) // 2
        return Captures(self.items[:middle]), Captures(self.items[middle:])

    def size(self) -> int:
        """The octets of their messages (the buffer's bound)."""
        return sum(len(c.header) + len(c.body or b"") for c in self.items)

    def reports(self) -> int:
        return sum(len(c.types) for c in self.items)


def may_report(verdict: Verdict) -> bool:
    """Whether the verdict's policy asks for failure reports at all: a DMARC ``pass`` or
    ``fail`` (never ``none``: no policy; never ``temperror``: not concluded) under a record
    with ``ruf=`` and without ``psd=y`` (RFC 9991 2)."""
    dmarc = verdict.dmarc
    if dmarc is None or dmarc.result not in (DmarcResult.PASS, DmarcResult.FAIL):
        return False
    published = dmarc.published
    return published is not None and bool(published.ruf) and published.psd != "y"


def report_types(verdict: Verdict) -> tuple[str, ...]:
    """The Auth-Failure types of the reports one verdict calls for (RFC 9989 4.7 fo=);
    empty when none is due."""
    return verdict_failure_types(verdict) if may_report(verdict) else ()


def original_message(header: bytes, body: bytes | bytearray | None, max_size: int) -> bytes:
    """The message as the report carries it: the header section (fields cut at the last
    whole field within ``max_size`` if it is longer), then the body when given and the whole
    fits in ``max_size``."""
    if not header.endswith(b"\r\n"):
        header += b"\r\n"
    if len(header) > max_size:
        end = len(header)
        while end > max_size or header[end : end + 1] in (b" ", b"\t"):
            end = header.rfind(b"\r\n", 0, end - 1) + 2
            if end <= 2:  # (the first field alone is longer than the cap: cut)
                return header[: min(header.find(b"\r\n"), max_size - 2)] + b"\r\n"
        header = header[:end]
    if body is None or len(header) + 2 + len(body) > max_size:
        return header
    return header + b"\r\n" + bytes(body)


def queued_reports(capture: Capture, config: FailureConfig) -> list[QueuedFailure]:
    """The queue rows of one capture: one per type."""
    dmarc = capture.verdict.dmarc
    assert dmarc is not None and dmarc.published is not None
    original = original_message(
        capture.header, capture.body if config.include_body else None, config.max_size
    )
    has_body = len(original) > len(capture.header) + 2 if capture.body is not None else False
    facts = capture.facts(config)
    return [
        QueuedFailure(
            policy_domain=dmarc.policy_domain or dmarc.domain,
            auth_failure=kind,
            ruf=dmarc.published.ruf,
            facts=facts,
            original=original,
            has_body=has_body and config.include_body,
            created=capture.arrival,
        )
        for kind in capture.types
    ]
