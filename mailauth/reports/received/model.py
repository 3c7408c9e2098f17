"""The reports a domain owner receives, as values: RFC 9990 / RFC 7489 aggregate reports,
RFC 9991 / RFC 6591 failure reports, RFC 8460 SMTP TLS reports.

Pure data: the readers (:mod:`.aggregate_xml`, :mod:`.failure_arf`, :mod:`.tls_json`) build
them, :mod:`.storage` writes and reads them. Every text is a ``str`` ("" when the report
leaves it out), every date a Unix time in seconds (0 when unknown), every result word lower
case as the RFCs spell it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

from mailauth.domains import name_problem, normalize_domain


class ReportKind(StrEnum):
    AGGREGATE = "aggregate"
    FAILURE = "failure"
    TLS = "tls"


def report_key(kind: ReportKind, org_name: str, email: str, report_id: str,
               signer: str = "") -> str:  # fmt: skip
    """The store's key of a report: the same (kind, reporter, Report-ID, who signed it)
    gives the same key, however often and from wherever it is imported (reporter names
    compared without case). A report not authenticated keeps the key of schema versions
    2-4 (so that the rows stored before version 5 are still found); one authenticated
    gets :func:`authenticated_key` of its ``signer`` (:attr:`ReportAuth.signer`: the
    authenticated domain and the From address), so that no other copy, however forged,
    can take the real one's place."""
    text = "\0".join((kind.value, org_name.strip().lower(), email.strip().lower(), report_id))
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return authenticated_key(key, signer)


def authenticated_key(key: str, signer: str) -> str:
    """``key`` (of an unauthenticated report) for the same report authenticated as
    ``signer`` ("": ``key`` itself)."""
    if not signer:
        return key
    text = f"{key}\0{signer.lower()}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class AuthResult(StrEnum):
    """How the report e-mail authenticated (docs/reports.md "Authenticated reports"):
    ``pass``, a DKIM signature passed whose d= is aligned (relaxed) with the From domain;
    ``fail``, signed, but no such signature passed; ``none``, no DKIM signature, or not an
    e-mail at all (a bare file); ``temperror``, the key of an aligned signature could not
    be looked up (DNS failed: no verdict, the report may be checked again); ``permerror``,
    the From field names no single domain; ``""``, imported before schema version 5."""

    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    UNKNOWN = ""


class Trust(StrEnum):
    """Whether a stored aggregate report counts in summaries: ``authenticated``, by a domain
    whose organisational domain is the reporter's; ``unauthenticated``, counted only with
    ``--include-unauthenticated``; ``superseded``, an unauthenticated copy of a report that
    is also stored authenticated (never counted twice)."""

    AUTHENTICATED = "authenticated"
    UNAUTHENTICATED = "unauthenticated"
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class ReportAuth:
    """The report e-mail's authentication: ``result``, ``domain`` (the d= of the aligned
    passing signature, "" otherwise), ``from_domain`` (the report e-mail's From domain, ""
    for a bare file), ``reason`` (why it did not pass: shown at import, not stored, not
    compared), ``from_address`` (the From address, lower case: compared with the report's
    own address by :func:`.authenticate.trust_of`; not stored)."""

    result: AuthResult = AuthResult.NONE
    domain: str = ""
    from_domain: str = ""
    reason: str = field(default="", compare=False)
    from_address: str = field(default="", compare=False)

    @property
    def signer(self) -> str:
        """What of the authentication goes into a report's key (:func:`report_key`): the
        authenticated domain and the From address, so that no other copy -- unsigned, signed
        by another domain, or sent from another mailbox of the same domain (a user of a
        provider that also reports) -- has the real report's key and takes its place; ""
        when unauthenticated."""
        return f"{self.domain} {self.from_address}" if self.domain else ""


def claimed_address(text: str) -> str:
    """The address a report names (``<>`` and spaces around it dropped, its domain
    normalised, lower case), or "" when ``text`` is no address with a host name."""
    local, at, domain = text.strip().strip("<>").strip().rpartition("@")
    if not (local and at) or not domain or name_problem(domain):
        return ""
    return f"{local}@{normalize_domain(domain)}".lower()


BARE_FILE = ReportAuth(AuthResult.NONE, reason="a bare file, not an e-mail")


# -- aggregate reports (RFC 9990 section 3; RFC 7489 appendix C) ------------------------------
@dataclass(frozen=True, slots=True)
class Reason:
    """policy_evaluated/reason: an override's type and comment."""

    type: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class DkimAuth:
    """auth_results/dkim."""

    domain: str
    selector: str
    result: str
    human_result: str = ""


@dataclass(frozen=True, slots=True)
class SpfAuth:
    """auth_results/spf (``scope``: ``mfrom`` or ``helo``; "" when left out)."""

    domain: str
    scope: str
    result: str
    human_result: str = ""


@dataclass(frozen=True, slots=True)
class AggregateRecord:
    """One record: a row (source IP, count, policy evaluated), identifiers, auth_results."""

    source_ip: str
    count: int
    disposition: str
    dkim: str
    spf: str
    reasons: tuple[Reason, ...] = ()
    header_from: str = ""
    envelope_from: str = ""
    envelope_to: str = ""
    auth_dkim: tuple[DkimAuth, ...] = ()
    auth_spf: tuple[SpfAuth, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportedPolicy:
    """policy_published: the DMARC policy the receiver found (``pct``: RFC 7489 only;
    ``testing``, ``np``, ``discovery_method``: RFC 9990 only)."""

    domain: str
    p: str = ""
    sp: str = ""
    np: str = ""
    adkim: str = ""
    aspf: str = ""
    pct: str = ""
    fo: str = ""
    testing: str = ""
    discovery_method: str = ""


@dataclass(frozen=True, slots=True)
class AggregateReport:
    """``format``: ``rfc9990`` (the dmarc-2.0 namespace) or ``rfc7489`` (no namespace: RFC
    7489 and the drafts before it). ``notes``: what the tolerant reader repaired."""

    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    policy: ReportedPolicy
    records: tuple[AggregateRecord, ...]
    extra_contact_info: str = ""
    generator: str = ""
    errors: tuple[str, ...] = ()
    format: str = "rfc9990"
    notes: tuple[str, ...] = ()
    auth: ReportAuth = BARE_FILE

    kind = ReportKind.AGGREGATE

    @property
    def domain(self) -> str:
        return self.policy.domain

    @property
    def messages(self) -> int:
        return sum(record.count for record in self.records)

    @property
    def key(self) -> str:
        return report_key(self.kind, self.org_name, self.email, self.report_id, self.auth.signer)


# -- failure reports (RFC 9991; RFC 6591 ARF auth-failure) -----------------------------------
@dataclass(frozen=True, slots=True)
class FailureReport:
    """One failure report. ``reporter``: the Reporting-MTA's name, or the domain of the report
    message's From; ``email``: that From address; ``report_id``: the report message's
    Message-ID (a digest of the report when it has none). ``arf``: the report carried a
    message/feedback-report part (false: a plain-text report, read for what it names).
    ``original_headers``: the reported message's header section, capped."""

    reporter: str
    email: str
    report_id: str
    feedback_type: str = ""
    auth_failure: str = ""
    arrival_date: int = 0
    source_ip: str = ""
    reported_domain: str = ""
    identity_alignment: str = ""
    header_from: str = ""
    original_mail_from: str = ""
    original_rcpt_to: str = ""
    dkim_domain: str = ""
    dkim_identity: str = ""
    dkim_selector: str = ""
    spf_dns: str = ""
    authentication_results: str = ""
    delivery_result: str = ""
    message_id: str = ""
    subject: str = ""
    user_agent: str = ""
    arf: bool = True
    original_headers: str = ""
    notes: tuple[str, ...] = ()
    auth: ReportAuth = BARE_FILE

    kind = ReportKind.FAILURE

    @property
    def domain(self) -> str:
        return self.reported_domain

    @property
    def org_name(self) -> str:
        return self.reporter

    @property
    def key(self) -> str:
        return report_key(self.kind, self.reporter, self.email, self.report_id, self.auth.signer)


# -- SMTP TLS reports (RFC 8460 section 4) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class TlsFailure:
    """failure-details: one kind of failed session and how many."""

    result_type: str
    failed_session_count: int
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_mx_helo: str = ""
    receiving_ip: str = ""
    additional_information: str = ""
    failure_reason_code: str = ""


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """One policy of a TLS report (``policy_type``: ``sts``, ``tlsa`` or ``no-policy-found``)."""

    policy_type: str
    policy_domain: str
    success: int
    failure: int
    policy_strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()
    failures: tuple[TlsFailure, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TlsReport:
    """``email``: the report's contact-info."""

    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    policies: tuple[TlsPolicy, ...]
    notes: tuple[str, ...] = ()
    auth: ReportAuth = BARE_FILE

    kind = ReportKind.TLS

    @property
    def domain(self) -> str:
        return self.policies[0].policy_domain if self.policies else ""

    @property
    def key(self) -> str:
        return report_key(self.kind, self.org_name, self.email, self.report_id, self.auth.signer)


Report = AggregateReport | FailureReport | TlsReport
