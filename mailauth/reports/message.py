"""The aggregate report e-mail (RFC 9990 3, "Email"), built with the stdlib ``email`` package.

One message per report and destination: From the Reporting Organization's contact address,
a text/plain annotation and the gzipped XML as an ``application/gzip`` attachment named
``receiver!policy-domain!begin!end[!unique-id].xml.gz``, the Subject
``Report Domain: <policy-domain> Submitter: <receiver> Report-ID: <ridtxt>``, and the
Report-ID as the Message-ID (RFC 9990 3: MAY). The message is DKIM-signed for the
submitter domain, which the From address is in, so that it passes DMARC aligned (RFC 9990
3: "MUST conform to the DMARC mechanism ... aligned pass").

Given the same inputs -- report, submitter, recipients, ``now`` -- the bytes are the same
(the MIME boundary derives from the Report-ID; the signature's t= from ``now``): a retry
re-sends the same file name and Report-ID (RFC 9990 3: "MUST use the same filename").

Out of scope: the XML itself (the store side writes it), uncompressed ``text/xml`` reports.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from mailauth.dkim import Signer
from mailauth.domains import at_or_under, host_name
from mailauth.errors import ConfigError, InvalidDomainError

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_RIDFMT = re.compile(rf"{_DOT_ATOM}(?:@{_DOT_ATOM})?\Z")  # RFC 9990 3.1 ridfmt
_UNIQUE = re.compile(r"[A-Za-z0-9]+\Z")  # RFC 9990 3: unique-id = 1*(ALPHA / DIGIT)
_FILENAME = re.compile(
    r"(?P<receiver>[^!]+)!(?P<policy>[^!]+)!(?P<begin>[0-9]+)!(?P<end>[0-9]+)"
    r"(?:!(?P<unique>[A-Za-z0-9]+))?\.xml(?:\.gz)?\Z"
)
MAX_REPORT_ID = 200  # the Subject stays one line well within RFC 5322's 998
# Parts are encoded with lines of 76 characters (RFC 2045 6.8), header fields written
# unfolded up to RFC 5322's 998: folded at 78, the email package would cut the attachment's
# file name into RFC 2231 continuations ("%21" for each "!"), which report consumers that
# look for the RFC 9990 name do not read.
_POLICY = email_policy.SMTP
_OUTPUT = email_policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True, slots=True)
class Submitter:
    """The Reporting Organization: its name, the contact address reports come from, and
    the submitter domain (the file name's ``receiver``, the Subject's ``Submitter:``)."""

    org_name: str
    email: str
    domain: str

    def __post_init__(self) -> None:
        try:
            domain = host_name(self.domain)
            local, at, mail_domain = self.email.rpartition("@")
            mail_domain = host_name(mail_domain) if at else ""
        except InvalidDomainError as exc:
            raise ConfigError(f"submitter: {exc}") from None
        if not at or not re.fullmatch(_DOT_ATOM, local):
            raise ConfigError(f"{self.email!r} is not an e-mail address")
        if not at_or_under(mail_domain, domain):
            # The report's DKIM signature (d=domain) must align with the From domain.
            raise ConfigError(f"the contact address {self.email} is not in {domain}")
        if not self.org_name.strip() or any(c in self.org_name for c in "\r\n"):
            raise ConfigError("the organization name must be one non-empty line")
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "email", f"{local}@{mail_domain}")


@dataclass(frozen=True, slots=True)
class AggregateReport:
    """One report ready to send: the policy domain, its period (Unix times), its Report-ID
    and file name (kept by the store, so that a retry uses the same ones) and the gzipped
    XML."""

    policy_domain: str
    begin: int
    end: int
    report_id: str
    filename: str
    gz: bytes

    def __post_init__(self) -> None:
        check_report_id(self.report_id)
        match = _FILENAME.match(self.filename)
        if match is None or not self.filename.endswith(".xml.gz"):
            raise ValueError(f"{self.filename!r} is not an RFC 9990 .xml.gz file name")
        policy = host_name(self.policy_domain)
        if (match["policy"], int(match["begin"]), int(match["end"])) != (
            policy,
            self.begin,
            self.end,
        ):
            raise ValueError(f"{self.filename!r} does not name {policy} {self.begin}-{self.end}")
        object.__setattr__(self, "policy_domain", policy)


def report_filename(
    receiver: str, policy_domain: str, begin: int, end: int, unique_id: str = ""
) -> str:
    """RFC 9990 3: ``receiver!policy-domain!begin!end[!unique-id].xml.gz``."""
    if unique_id and not _UNIQUE.match(unique_id):
        raise ValueError(f"unique-id {unique_id!r}: letters and digits only")
    if not 0 <= begin <= end:
        raise ValueError(f"bad period {begin}-{end}")
    parts = [host_name(receiver), host_name(policy_domain), str(begin), str(end)]
    return "!".join([*parts, unique_id] if unique_id else parts) + ".xml.gz"


def new_report_id(policy_domain: str, begin: int, submitter: str, unique: str) -> str:
    """A Report-ID (RFC 9990 3.1 ridfmt) unique among reports to one domain, from the
    period's start, a ``unique`` token the caller keeps (letters and digits) and the
    domains: ``<begin>.<unique>.<policy-domain>@<submitter>``."""
    if not _UNIQUE.match(unique):
        raise ValueError(f"unique {unique!r}: letters and digits only")
    return check_report_id(f"{begin}.{unique}.{host_name(policy_domain)}@{host_name(submitter)}")


def check_report_id(report_id: str) -> str:
    """The ridfmt inside a Report-ID (``<...>`` removed), or ValueError (RFC 9990 3.1)."""
    inner = report_id[1:-1] if report_id.startswith("<") and report_id.endswith(">") else report_id
    if not _RIDFMT.match(inner) or len(inner) > MAX_REPORT_ID:
        raise ValueError(f"{report_id[:80]!r} is not a Report-ID (dot-atom-text[@dot-atom-text])")
    return inner


def report_subject(policy_domain: str, submitter: str, report_id: str) -> str:
    """RFC 9990 3: ``Report Domain: <policy> Submitter: <submitter> Report-ID: <rid>``."""
    rid = check_report_id(report_id)
    return f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{rid}>"


def report_message_id(report_id: str, submitter: str) -> str:
    """The Report-ID as Message-ID (RFC 9990 3: MAY), in the submitter domain if it names
    no domain: the same on every retry, so that duplicates can be recognised."""
    rid = check_report_id(report_id)
    return f"<{rid}>" if "@" in rid else f"<{rid}@{submitter}>"


def build_aggregate_message(
    report: AggregateReport,
    submitter: Submitter,
    recipients: Sequence[str],
    *,
    now: float,
    signer: Signer | None = None,
) -> bytes:
    """The report e-mail to ``recipients`` (CRLF line endings), DKIM-signed by ``signer``
    (which must sign for the submitter domain) when given."""
    if not recipients:
        raise ValueError("a report message needs at least one recipient")
    message = EmailMessage(policy=_POLICY)
    message["From"] = Address(submitter.org_name, addr_spec=submitter.email)
    message["To"] = ", ".join(recipients)
    message["Subject"] = report_subject(report.policy_domain, submitter.domain, report.report_id)
    message["Date"] = format_datetime(datetime.fromtimestamp(int(now), UTC))
    message["Message-ID"] = report_message_id(report.report_id, submitter.domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    text = _annotation(report, submitter)
    message.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    message.add_attachment(
        report.gz,
        maintype="application",
        subtype="gzip",
        filename=report.filename,
        params={"name": report.filename},
    )
    for part in message.iter_parts():
        del part["MIME-Version"]  # (the email package puts one on each part)
    digest = hashlib.sha256(f"{report.report_id}\0{report.filename}".encode()).hexdigest()
    message.set_boundary(f"=_mailauth_report_{digest[:32]}")
    raw = message.as_bytes(policy=_OUTPUT)
    if signer is None:
        return raw
    check_aligned(signer, submitter)
    return signer.sign(raw, now=now)


def check_aligned(signer: Signer, submitter: Submitter) -> None:
    """The signature must be aligned with the From domain (relaxed, at least)."""
    mail_domain = submitter.email.rpartition("@")[2]
    if not (at_or_under(mail_domain, signer.domain) or at_or_under(signer.domain, mail_domain)):
        raise ConfigError(
            f"the signing domain {signer.domain} is not aligned with From: {submitter.email}"
        )


def _annotation(report: AggregateReport, submitter: Submitter) -> str:
    def day(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    return (
        f"This is a DMARC aggregate report (RFC 9990) for {report.policy_domain}\n"
        f"from {submitter.org_name} ({submitter.domain}),\n"
        f"covering {day(report.begin)} to {day(report.end)}.\n"
        f"\n"
        f"Report-ID: <{check_report_id(report.report_id)}>\n"
        f"Attachment: {report.filename}\n"
        f"Contact: {submitter.email}\n"
    )
