"""DMARC failure reports (RFC 9991): RFC 6591 ``auth-failure`` reports in ARF (RFC 5965).

Off unless the receiver turns them on (privacy: a report carries one message's header, and
its body only on an explicit opt-in). :func:`failure_types` decides from the record's
``fo=`` (RFC 9989 4.7) which reports one evaluation calls for; :func:`build_failure_report`
writes one: ``multipart/report; report-type=feedback-report`` with a text/plain part, the
``message/feedback-report`` fields (the RFC 5965 ones, RFC 6591's ``Auth-Failure`` and
``Delivery-Result``/``DKIM-*``/``SPF-DNS``, RFC 9991's ``Identity-Alignment``) and the
original header as ``text/rfc822-headers`` (the whole message as ``message/rfc822`` when
``include_body``). It is DKIM-signed like an aggregate report (RFC 9991 6: SHOULD be
aligned). :class:`RateLimiter` caps the reports per destination (RFC 9991 2, 6: MAY).

Destinations come from ``ruf=`` through :mod:`mailauth.reports.uri`, external ones verified
(RFC 9991 5); ``ruf=`` of a record with ``psd=y`` is never used (RFC 9991 2).

Out of scope: RFC 6651/6652 DKIM- and SPF-specific reporting requests (``r=``/``ra=``);
aggregating like incidents into one report (``Incidents:``); redaction (RFC 6590).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from io import BytesIO

from mailauth.dkim import Signer
from mailauth.dmarc.record import DmarcRecord
from mailauth.domains import at_or_under
from mailauth.message import Message
from mailauth.reports.message import Submitter, check_aligned
from mailauth.results import DkimResult, PublishedPolicy, SpfResult, Verdict

DELIVERY_RESULTS = ("delivered", "spam", "policy", "reject", "other")  # RFC 6591 3.2
_FAILED_DKIM = (DkimResult.FAIL, DkimResult.PERMERROR)
_FAILED_SPF = (SpfResult.FAIL, SpfResult.PERMERROR)
_OUTPUT = email_policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True, slots=True)
class DkimFailure:
    """A DKIM signature that did not pass: d=, s=, i= and whether its domain is aligned
    with the author domain."""

    domain: str
    selector: str
    identity: str = ""
    aligned: bool = False
    bodyhash: bool = False  # the body hash did not match (Auth-Failure: bodyhash)


@dataclass(frozen=True, slots=True)
class FailureFacts:
    """What a failure report says about one message, as plain values.

    ``spf_aligned``/``dkim_aligned``: SPF / some DKIM signature produced an aligned pass.
    ``spf_result``/``spf_domain``: the MAIL FROM check; ``spf_record``: the SPF record text
    for ``SPF-DNS`` ("" when not known). ``delivery_result``: one of
    :data:`DELIVERY_RESULTS` or "". ``authentication_results``: the receiver's
    Authentication-Results value (after the field name).
    """

    reported_domain: str
    source_ip: str
    arrival: float
    authentication_results: str
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()
    envelope_id: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False
    spf_result: str = "none"
    spf_domain: str = ""
    spf_record: str = ""
    dkim_failures: tuple[DkimFailure, ...] = ()
    delivery_result: str = ""

    @property
    def identity_alignment(self) -> str:
        """RFC 9991 4: the mechanisms that failed to authenticate an aligned identity."""
        failed = [m for m, ok in (("dkim", self.dkim_aligned), ("spf", self.spf_aligned)) if not ok]
        return ", ".join(failed) or "none"


def failure_facts(
    verdict: Verdict,
    *,
    ip: str,
    arrival: float,
    mail_from: str = "",
    rcpt_to: Sequence[str] = (),
    delivery_result: str = "",
    spf_record: str = "",
) -> FailureFacts:
    """The facts of a verdict with a DMARC outcome. A DKIM domain counts as aligned when it
    is the Organizational Domain or under it (relaxed alignment, RFC 9989 4.4.1)."""
    dmarc = verdict.dmarc
    if dmarc is None:
        raise ValueError("failure reports need a DMARC outcome")
    org = dmarc.org_domain or dmarc.domain
    failures = tuple(
        DkimFailure(
            d.domain,
            d.selector,
            d.identity,
            aligned=bool(d.domain) and at_or_under(d.domain, org),
            bodyhash="body hash" in d.reason,
        )
        for d in verdict.dkim or ()
        if d.result in _FAILED_DKIM
    )
    spf = verdict.spf.mailfrom if verdict.spf else None
    return FailureFacts(
        reported_domain=dmarc.domain,
        source_ip=ip,
        arrival=arrival,
        authentication_results=verdict.authentication_results.partition(":")[2].strip(),
        mail_from=mail_from,
        rcpt_to=tuple(rcpt_to),
        spf_aligned=dmarc.spf_aligned,
        dkim_aligned=bool(dmarc.dkim_aligned),
        spf_result=str(spf.result) if spf else "none",
        spf_domain=spf.domain if spf else "",
        spf_record=spf_record,
        dkim_failures=failures,
        delivery_result=delivery_result,
    )


def failure_types(record: DmarcRecord | PublishedPolicy, facts: FailureFacts) -> tuple[str, ...]:
    """The Auth-Failure types of the reports ``record`` asks for (RFC 9989 4.7 fo=); none
    without ``ruf=``, or with ``psd=y`` (RFC 9991 2). ``record``: the parsed record, or the
    policy a verdict carries (``DmarcOutcome.published``, fo= as ``1:d``)."""
    return choose_failure_types(
        record,
        spf_aligned=facts.spf_aligned,
        dkim_aligned=facts.dkim_aligned,
        failed_signatures=[f.bodyhash for f in facts.dkim_failures],
        spf_failed=facts.spf_result in _FAILED_SPF,
    )


def verdict_failure_types(verdict: Verdict) -> tuple[str, ...]:
    """:func:`failure_types` of a verdict under the policy it carries, without building
    its facts (cheap: what the milter asks on the event loop); () without a policy."""
    dmarc = verdict.dmarc
    if dmarc is None or dmarc.published is None:
        return ()
    spf = verdict.spf.mailfrom.result if verdict.spf else None
    return choose_failure_types(
        dmarc.published,
        spf_aligned=dmarc.spf_aligned,
        dkim_aligned=bool(dmarc.dkim_aligned),
        failed_signatures=[
            "body hash" in d.reason for d in verdict.dkim or () if d.result in _FAILED_DKIM
        ],
        spf_failed=spf in _FAILED_SPF,
    )


def choose_failure_types(
    record: DmarcRecord | PublishedPolicy,
    *,
    spf_aligned: bool,
    dkim_aligned: bool,
    failed_signatures: Sequence[bool],
    spf_failed: bool,
) -> tuple[str, ...]:
    """RFC 9989 4.7 fo=: ``failed_signatures`` holds, per DKIM signature that failed (fail
    or permerror), whether it failed on its body hash."""
    if not record.ruf or record.psd == "y":
        return ()
    fo = set(record.fo.split(":")) if isinstance(record.fo, str) else set(record.fo)
    types: list[str] = []
    no_aligned_pass = not (spf_aligned or dkim_aligned)
    some_unaligned = not (spf_aligned and dkim_aligned)
    if ("0" in fo and no_aligned_pass) or ("1" in fo and some_unaligned):
        types.append("dmarc")
    if "d" in fo and failed_signatures:  # a signature failed, aligned or not
        types.append("bodyhash" if all(failed_signatures) else "signature")
    if "s" in fo and spf_failed:  # SPF failed, aligned or not
        types.append("spf")
    return tuple(types)


def build_failure_report(
    facts: FailureFacts,
    original: bytes,
    submitter: Submitter,
    recipients: Sequence[str],
    *,
    now: float,
    auth_failure: str = "dmarc",
    include_body: bool = False,
    include_recipients: bool = True,
    signer: Signer | None = None,
    user_agent: str = "mailauth",
    report_id: str = "",
) -> bytes:
    """The ARF report (CRLF line endings), DKIM-signed by ``signer`` when given.
    ``report_id`` (letters and digits): the Message-ID's and MIME boundary's token, kept by
    the queue so that a retry re-sends the same message (default: from the content)."""
    if not recipients:
        raise ValueError("a failure report needs at least one recipient")
    if report_id and not (report_id.isascii() and report_id.isalnum()):
        raise ValueError(f"report id {report_id[:40]!r}: letters and digits only")
    message = EmailMessage(policy=email_policy.SMTP)
    message["From"] = Address(submitter.org_name, addr_spec=submitter.email)
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"DMARC failure report for {_clean(facts.reported_domain)}"
    message["Date"] = format_datetime(datetime.fromtimestamp(int(now), UTC))
    digest = report_id or hashlib.sha256(original[:65536] + str(now).encode()).hexdigest()[:32]
    message["Message-ID"] = f"<{digest}.ruf@{submitter.domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message["MIME-Version"] = "1.0"
    message.make_mixed()
    message.replace_header("Content-Type", "multipart/report; report-type=feedback-report")
    message.attach(_text_part(facts, auth_failure))
    message.attach(_feedback_part(facts, auth_failure, user_agent, include_recipients))
    message.attach(_original_part(original, include_body))
    message.set_boundary(f"=_mailauth_ruf_{digest}")
    out = BytesIO()
    _Generator(out, policy=_OUTPUT).flatten(message)
    raw = out.getvalue()
    if signer is None:
        return raw
    check_aligned(signer, submitter)
    return signer.sign(raw, now=now)


def _text_part(facts: FailureFacts, auth_failure: str) -> EmailMessage:
    part = EmailMessage(policy=email_policy.SMTP)
    arrival = format_datetime(datetime.fromtimestamp(int(facts.arrival), UTC))
    text = (
        f"This is an authentication failure report ({auth_failure}) for a message\n"
        f"received from IP {_clean(facts.source_ip)} on {arrival},\n"
        f"claiming to be from {_clean(facts.reported_domain)}.\n"
    )
    part.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    del part["MIME-Version"]
    return part


def _feedback_part(
    facts: FailureFacts, auth_failure: str, user_agent: str, include_recipients: bool
) -> EmailMessage:
    fields = [
        ("Feedback-Type", "auth-failure"),  # RFC 5965 3.1, RFC 6591 3
        ("User-Agent", user_agent),
        ("Version", "1"),
        ("Auth-Failure", auth_failure),  # RFC 6591 3.1 (RFC 9991 4: "dmarc")
        ("Authentication-Results", facts.authentication_results),
        ("Identity-Alignment", facts.identity_alignment),  # RFC 9991 4: REQUIRED
    ]
    if facts.envelope_id:
        fields.append(("Original-Envelope-Id", facts.envelope_id))
    fields.append(("Original-Mail-From", f"<{facts.mail_from}>"))
    if include_recipients:
        fields.extend(("Original-Rcpt-To", f"<{r}>") for r in facts.rcpt_to)
    fields.append(
        ("Arrival-Date", format_datetime(datetime.fromtimestamp(int(facts.arrival), UTC)))
    )
    fields.append(("Source-IP", facts.source_ip))
    fields.append(("Reported-Domain", facts.reported_domain))
    if facts.delivery_result in DELIVERY_RESULTS:
        fields.append(("Delivery-Result", facts.delivery_result))
    # RFC 9991 4: REQUIRED for the DKIM failure of an aligned identifier; RFC 6591 3.1: a
    # DKIM report (signature, bodyhash) names the signature that failed.
    failed = sorted(facts.dkim_failures, key=lambda f: not f.aligned)
    blamed = failed[0] if failed else None
    dkim_report = auth_failure in ("signature", "bodyhash")
    if blamed is not None and (dkim_report or (blamed.aligned and not facts.dkim_aligned)):
        fields.append(("DKIM-Domain", blamed.domain))
        fields.append(("DKIM-Identity", blamed.identity or f"@{blamed.domain}"))
        fields.append(("DKIM-Selector", blamed.selector))
    if not facts.spf_aligned and facts.spf_domain and facts.spf_record:
        record = _clean(facts.spf_record).replace("\\", "\\\\").replace('"', '\\"')
        fields.append(("SPF-DNS", f'txt : {facts.spf_domain} : "{record}"'))  # RFC 6591 3.2
    text = "".join(_fold(f"{name}: {_clean(value)}") + "\r\n" for name, value in fields)
    part = EmailMessage(policy=email_policy.SMTP)
    part.set_payload(text.encode("utf-8", "surrogateescape").decode("ascii", "surrogateescape"))
    part["Content-Type"] = "message/feedback-report"
    part["Content-Transfer-Encoding"] = "7bit" if text.isascii() else "8bit"
    return part


def _original_part(original: bytes, include_body: bool) -> EmailMessage:
    """The header only (text/rfc822-headers, RFC 6591 3.3 / RFC 5965 2), or the whole
    message on opt-in; line endings made CRLF, content otherwise as received."""
    parsed = Message.parse(original)
    head = original[: parsed.body_offset] if parsed.body_offset else original
    data = original if include_body else head.rstrip(b"\r\n") + b"\n"
    text = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").decode("ascii", "surrogateescape")
    part = EmailMessage(policy=email_policy.SMTP)
    part.set_payload(text)
    part["Content-Type"] = "message/rfc822" if include_body else "text/rfc822-headers"
    part["Content-Transfer-Encoding"] = "7bit" if data.isascii() else "8bit"
    return part


class _Generator(BytesGenerator):
    """Writes the message/* parts' text as octets: the original message as received and
    UTF-8 feedback fields (an SMTPUTF8 MAIL FROM) are 8-bit, which the stock generator
    refuses (it encodes message/* payloads as strict ASCII)."""

    def _encode(self, s: str) -> bytes:
        return s.encode("ascii", "surrogateescape")


def _fold(line: str, width: int = 78) -> str:
    """A field folded at spaces into lines of about ``width`` (RFC 5322 2.2.3) when longer:
    a line past 998 octets is refused or broken by relays (Postfix's
    smtp_line_length_limit inserts a fold, which breaks the report's DKIM signature). A
    single word longer than the line stays whole."""
    if len(line) <= width:
        return line
    lines: list[str] = []
    for word in line.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\r\n ".join(lines)


def _clean(value: str) -> str:
    """One line: CR, LF and other controls (from DNS or the message) become spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


class RateLimiter:
    """At most ``reports`` failure reports per destination in any ``period`` seconds (a
    token bucket per destination, refilled continuously), in memory: a restart forgets the
    counts, and past ``max_destinations`` the least recently used destination is forgotten
    (memory stays bounded whatever the senders do). ``clock``: for tests."""

    def __init__(
        self,
        reports: int = 10,
        period: float = 3600.0,
        *,
        max_destinations: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if reports < 1 or period <= 0:
            raise ValueError("the rate limit must allow at least one report per period")
        self.reports, self.period, self.clock = reports, period, clock
        self.max_destinations = max_destinations
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.refused = 0

    def allow(self, destination: str) -> bool:
        """Whether one more report may go to ``destination`` now (and count it if so)."""
        now = self.clock()
        key = destination.lower()
        tokens, last = self._buckets.pop(key, (float(self.reports), now))
        tokens = min(float(self.reports), tokens + (now - last) * self.reports / self.period)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_destinations:
            self._buckets.popitem(last=False)
        if not allowed:
            self.refused += 1
        return allowed
