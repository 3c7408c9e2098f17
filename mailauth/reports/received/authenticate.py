"""Who sent a report e-mail: its DKIM signatures checked with mailauth's own verifier
(RFC 6376, :mod:`mailauth.dkim.verify`) through the one injected resolver, as a plan.

Anyone can send a report to a ``rua=`` address, naming any reporter and any Report-ID: the
report's own ``org_name`` and ``email`` prove nothing. What does is a DKIM signature of the
report e-mail that passes and whose d= is aligned (relaxed: the same organisational domain,
RFC 9989 4.4, on the public suffix list) with the e-mail's From domain. Its d= is the
report's *authenticated domain*; an aggregate report then counts in summaries when the
e-mail's From address is the report's own ``<email>`` (:func:`trust_of`). The same
organisation is not enough: a user of a mailbox provider that also reports (its users'
addresses in the reporting domain) could sign a report naming the provider's reporting
address, with a Report-ID the provider will use, and have the real one stored superseded.

Out of scope: SPF (an imported e-mail has no connecting IP address), ARC (a forwarding
mailbox provider vouching for a report is not the reporter), DMARC policy (the reporter's
``p=`` says nothing about who may claim to be it). Work per e-mail: at most
``DkimPolicy.max_signatures`` signatures checked (those beyond: ``policy``, unchecked), one
DNS question each, within ``SECONDS``.

A temporary DNS failure on an aligned signature's key is ``temperror``: no verdict; the
report is stored unauthenticated with that word, and importing the e-mail again checks it
again (docs/reports.md "Authenticated reports").
"""

from __future__ import annotations

from dataclasses import replace

from mailauth.dkim import DkimPolicy, verify_dkim
from mailauth.dmarc.discovery import psl_organizational_domain
from mailauth.dmarc.evaluate import extract_author_domains
from mailauth.dns import DnsResolver
from mailauth.domains import name_problem, normalize_domain
from mailauth.errors import MessageParseError
from mailauth.message import Message
from mailauth.plan import Budget, Plan, bounded, run_plan
from mailauth.reports.received.model import (
    AuthResult,
    Report,
    ReportAuth,
    Trust,
    claimed_address,
)
from mailauth.results import DkimOutcome, DkimResult

SECONDS = 10.0  # the DKIM checks of one report e-mail (as the pipeline's DKIM budget)
# Fields that decide how the e-mail's parts are read. A DKIM verifier reads the last of a
# repeated field (RFC 6376 5.4.2), a MIME parser the first: a field prepended to a mail the
# reporter really signed would make the importer read an attachment the signature never
# vouched for. One of each at most, or the e-mail is not authenticated.
_ONCE = ("from", "content-type", "content-transfer-encoding", "mime-version")
# What a passing signature must cover (else ``policy``: not a pass, RFC 6376 6.1.1 and 8.2).
# Content-Type in h=: it names the MIME structure and its boundary; unsigned, it can be
# replaced (or, when the e-mail has none, added) under an intact body hash so that the
# importer reads other parts of the same signed octets -- or text the signature never
# vouched for -- as the attachment. No l= shorter than the body: what follows it (another
# attachment) is unsigned.
REPORT_POLICY = DkimPolicy(reject_partial_body=True, required_headers=("from", "content-type"))


def authenticate_mail(raw: bytes, *, now: float,
                      policy: DkimPolicy | None = None) -> Plan[ReportAuth]:  # fmt: skip
    """The authentication of the report e-mail ``raw`` (a plan: its key lookups go to the
    runner's resolver)."""
    try:
        message = Message.parse(raw)
    except MessageParseError as exc:
        return ReportAuth(AuthResult.PERMERROR, reason=str(exc))
    domains, problem, reason = extract_author_domains(message.author())
    if problem is not None or len(domains) != 1:
        reason = reason or f"{len(domains)} From domains (one is needed)"
        return ReportAuth(AuthResult.PERMERROR, reason=f"From field: {reason}")
    from_domain = domains[0]
    for name in _ONCE:
        if len(message.get_all(name)) > 1:
            return ReportAuth(AuthResult.PERMERROR, "", from_domain, f"more than one {name} field")
    policy = policy or REPORT_POLICY
    budget = Budget("DKIM", policy.max_signatures, SECONDS)
    outcomes = yield from bounded(verify_dkim(message, now=now, policy=policy), budget)
    mailboxes = message.author().mailboxes
    address = mailboxes[0].address.lower() if len(mailboxes) == 1 else ""
    return replace(judge(outcomes, from_domain), from_address=address)


def judge(outcomes: tuple[DkimOutcome, ...], from_domain: str) -> ReportAuth:
    """The authentication that DKIM ``outcomes`` give an e-mail from ``from_domain``."""
    if not outcomes:
        return ReportAuth(AuthResult.NONE, "", from_domain, "no DKIM signature")
    org = psl_organizational_domain(from_domain)
    aligned = [(o, d) for o in outcomes if (d := _domain(o.domain)) and
               psl_organizational_domain(d) == org]  # fmt: skip
    for outcome, domain in aligned:
        if outcome.result == DkimResult.PASS:
            return ReportAuth(AuthResult.PASS, domain, from_domain)
    for outcome, domain in aligned:
        if outcome.result == DkimResult.TEMPERROR:
            reason = f"DKIM d={domain} s={outcome.selector}: {outcome.reason}"
            return ReportAuth(AuthResult.TEMPERROR, "", from_domain, reason)
    passing = sorted(
        {d for o in outcomes if o.result == DkimResult.PASS and (d := _domain(o.domain))}
    )
    if passing:
        reason = f"DKIM passed for {', '.join(passing)}, not aligned with From {from_domain}"
    elif aligned:
        first = aligned[0][0]
        reason = f"DKIM d={aligned[0][1]} {first.result}: {first.reason}"
    else:
        reason = f"no DKIM signature aligned with From {from_domain}"
    return ReportAuth(AuthResult.FAIL, "", from_domain, reason)


def _domain(name: str) -> str:
    """``name`` normalised, or "" when it is no host name."""
    if not name or name_problem(name):
        return ""
    return normalize_domain(name)


def authenticate(raw: bytes, resolver: DnsResolver, *, now: float,
                 policy: DkimPolicy | None = None) -> ReportAuth:  # fmt: skip
    """:func:`authenticate_mail`, run now with ``resolver``."""
    return run_plan(authenticate_mail(raw, now=now, policy=policy), resolver)


def trust_of(report: Report) -> Trust:
    """``authenticated`` when the report e-mail passed (an aligned signature), its From
    address is the report's own address (``<email>``, compared in any case) and the
    authenticated domain's organisation is that address's; else ``unauthenticated`` (a
    bare file, an unsigned or forged e-mail, one from another mailbox than the one the
    report names, a report that names none: it could never be told from another's)."""
    auth = report.auth
    claimed = claimed_address(report.email)
    if auth.result != AuthResult.PASS or not auth.domain or not claimed:
        return Trust.UNAUTHENTICATED
    if claimed != auth.from_address:
        return Trust.UNAUTHENTICATED
    reporter = claimed.rpartition("@")[2]
    same = psl_organizational_domain(auth.domain) == psl_organizational_domain(reporter)
    return Trust.AUTHENTICATED if same else Trust.UNAUTHENTICATED
