"""One verdict as an aggregate report counts it (RFC 9990 "record"), pure.

:func:`observe` turns a :class:`~mailauth.results.Verdict` and the SMTP envelope into an
:class:`Observation`: the policy domain, the report row's key (source IP, identifiers,
DKIM and SPF results, DMARC alignment, disposition, override reasons) and the published
policy. Messages with the same key in one period are one row with a count. Only messages
whose DMARC evaluation found a policy record and ended in ``pass`` or ``fail`` are
observed: a ``temperror`` has no disposition (the message is deferred or accepted
unchecked, docs/milter.md), and with ``none`` there is no one to report to.

``disposition`` is what the receiver applied (RFC 9990 "policy_evaluated"): DMARC's
disposition (after ``t=y`` and local overrides), lowered to ``none`` where the receiver
does not act on it (the milter's ``reject_dmarc``/``quarantine_dmarc`` off), with a
``local_policy`` reason; ``pass`` for a message that passed under an enforcing policy.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.results import DmarcResult, Policy, PublishedPolicy, Verdict

# RFC 9990 "DKIM Signatures in Aggregate Reports": no more than 100 per row.
MAX_DKIM_RESULTS = 100
# RFC 9990 PolicyOverrideType has no RFC 7489 "sampled_out": reported as "other".
_OVERRIDE_TYPES = {"local_policy", "mailing_list", "other", "policy_test_mode"}
_OVERRIDE_TYPES |= {"trusted_forwarder"}
MAX_COMMENT = 200  # characters of an override comment kept
# Characters of a name kept (a domain name's limit): a DKIM-Signature that does not parse
# keeps whatever d=/s= it carries, up to the header section's size (1 MiB in the milter).
MAX_NAME = 253


@dataclass(frozen=True, slots=True)
class Enforcement:
    """Which DMARC dispositions the receiver acts on (the milter's ``reject_dmarc`` and
    ``quarantine_dmarc``; a library caller that applies them all says so)."""

    reject: bool = False
    quarantine: bool = False


@dataclass(frozen=True, slots=True)
class Observation:
    """One message as an aggregate report row counts it. ``dkim``: (d=, s=, result) in RFC
    9990's order of preference; ``reasons``: (type, comment) override reasons."""

    policy_domain: str
    source_ip: str
    header_from: str
    envelope_from: str
    envelope_to: str
    dkim: tuple[tuple[str, str, str], ...]
    spf_domain: str
    spf_scope: str
    spf_result: str
    dmarc_dkim: str
    dmarc_spf: str
    disposition: str
    reasons: tuple[tuple[str, str], ...]
    policy: PublishedPolicy

    def key(self) -> tuple[str, ...]:
        """The report row this message counts in, within its policy domain and period: the
        store's columns, DKIM results and reasons as JSON lists."""
        dkim = _as_json(self.dkim) if self.dkim else "[]"
        reasons = _as_json(self.reasons) if self.reasons else "[]"
        return (
            self.source_ip, self.header_from, self.envelope_from, self.envelope_to, dkim,
            self.spf_domain, self.spf_scope, self.spf_result, self.dmarc_dkim,
            self.dmarc_spf, self.disposition, reasons,
        )  # fmt: skip


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@functools.lru_cache(maxsize=8192)
def _as_json(items: tuple[tuple[str, ...], ...]) -> str:
    """(Memoised: the same DKIM lists recur message after message.)"""
    return _ENCODE(items)


def row_key(policy_domain: str, key: tuple[str, ...]) -> str:
    """A short, stable name for a row's key (the store's unique index holds this, not the
    key's text, whose DKIM list may be long)."""
    text = "\x1e".join((policy_domain, *key)).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def observe(
    verdict: Verdict,
    *,
    ip: str,
    mail_from: str,
    recipients: tuple[str, ...] = (),
    enforcement: Enforcement | None = None,
) -> Observation | None:
    """The observation of one verdict, or None when no report would count it.
    ``recipients``: the RCPT TO addresses, when envelope_to is recorded (the first one's
    domain is reported: a message counts once)."""
    dmarc = verdict.dmarc
    if dmarc is None or dmarc.published is None or not dmarc.policy_domain:
        return None
    if dmarc.result not in (DmarcResult.PASS, DmarcResult.FAIL):
        return None
    enforcement = enforcement or Enforcement()
    header_from = dmarc.domain
    aligned = set(dmarc.dkim_aligned)

    def rank(outcome: tuple[str, str, str]) -> int:
        d, _, result = outcome
        if result != "pass":
            return 3
        if d in aligned:
            return 0 if d == header_from else 1
        return 2

    dkim = tuple(
        sorted(
            ((_name(o.domain), _name(o.selector), str(o.result)) for o in verdict.dkim or ()),
            key=rank,
        )[:MAX_DKIM_RESULTS]
    )
    spf = verdict.spf.mailfrom if verdict.spf is not None else None
    disposition, reasons = _applied(verdict, enforcement)
    return Observation(
        policy_domain=_name(dmarc.policy_domain),
        source_ip=ip,
        header_from=_name(header_from),
        envelope_from=_domain_of(mail_from),
        envelope_to=_domain_of(recipients[0]) if recipients else "",
        dkim=dkim,
        spf_domain=_name(spf.domain) if spf else "",
        spf_scope="mfrom" if spf else "",
        spf_result=str(spf.result) if spf else "",
        dmarc_dkim="pass" if dmarc.dkim_aligned else "fail",
        dmarc_spf="pass" if dmarc.spf_aligned else "fail",
        disposition=disposition,
        reasons=reasons,
        policy=dmarc.published,
    )


def _applied(verdict: Verdict, enforcement: Enforcement) -> tuple[str, tuple[tuple[str, str], ...]]:
    """RFC 9990 "policy_evaluated": the disposition applied and why it is not the policy."""
    dmarc = verdict.dmarc
    assert dmarc is not None
    if dmarc.result is DmarcResult.PASS:
        enforcing = dmarc.policy in (Policy.QUARANTINE, Policy.REJECT)
        return ("pass" if enforcing else "none"), ()
    reasons: list[tuple[str, str]] = []
    if dmarc.override:
        kind = dmarc.override if dmarc.override in _OVERRIDE_TYPES else "other"
        comment = dmarc.override_comment
        if kind != dmarc.override:
            comment = f"{dmarc.override}: {comment}" if comment else dmarc.override
        reasons.append((kind, _text(comment[:MAX_COMMENT])))
    disposition = dmarc.disposition
    enforced = {
        Policy.REJECT: enforcement.reject,
        Policy.QUARANTINE: enforcement.quarantine,
        Policy.NONE: True,
    }
    if not enforced[disposition]:
        reasons.append(("local_policy", f"the receiver does not enforce {disposition}"))
        disposition = Policy.NONE
    return str(disposition), tuple(reasons)


@functools.lru_cache(maxsize=8192)
def _domain_of(address: str) -> str:
    """The domain of an SMTP address ("" for a null reverse-path), lowercase A-label when
    it is a domain name; otherwise its text as given (sanitised)."""
    domain = address.strip().strip("<>").rpartition("@")[2]
    try:
        return _text(normalize_domain(domain)) if domain else ""
    except InvalidDomainError:
        return _name(domain.lower())


def _name(value: str) -> str:
    """A name from the message or its signatures, as text, at most MAX_NAME characters."""
    return _text(value[:MAX_NAME])


def _text(value: str) -> str:
    """Text that XML 1.0 can carry: C0 controls but TAB, LF, CR become U+FFFD."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() or c in "\t\n\r" else "\ufffd" for c in value)
