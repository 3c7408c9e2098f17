"""DMARC evaluation (RFC 9989 5.3; RFC 7489 behaviour by option).

:func:`evaluate_dmarc` is a plan: it takes the author (from the message), the SPF and DKIM
outcomes (never re-deriving them), finds the policy record, checks identifier alignment,
and decides the disposition: test mode (``t=y``) and, in RFC 7489 mode, ``pct`` sampling
lower it one step; local policy hooks (trusted forwarders, mailing lists, ARC sealers) may
override it, with a reason, without touching the DMARC result itself.

Results: ``pass``/``fail``; ``none`` when DMARC does not apply (no author domain, several
author domains, no policy record, a record that cannot apply); ``permerror`` for a message
whose From field breaks RFC 5322 (several fields, unparseable, no address); ``temperror``
when a needed DNS query failed temporarily (RFC 9989 5.3.6: neither pass nor fail), when
an SPF or DKIM identifier that would align failed temporarily and nothing else passed
(RFC 9989 "Determine Handling Policy"), or when a local override could not be decided
(a trusted sealer's ARC chain that could not be validated for a DNS failure). A
``temperror`` never carries a disposition.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from publicsuffixlist import PublicSuffixList

from mailauth.dmarc.discovery import (
    TreeWalk,
    dmarc_lookups,
    organizational_domain,
    psl_organizational_domain,
    select_records,
    tree_walk,
)
from mailauth.dmarc.memo import Discovery, DiscoveryMemo
from mailauth.dmarc.record import DmarcRecord
from mailauth.dns import DnsStatus, Query, RRType
from mailauth.domains import at_or_under, host_name, normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.message import Author
from mailauth.plan import Budget, Plan, bounded, parallel, resolve, shortest_ttl
from mailauth.results import (
    ArcOutcome,
    DkimOutcome,
    DkimResult,
    DmarcOutcome,
    DmarcResult,
    Policy,
    PublishedPolicy,
    SpfCheck,
    SpfResult,
)

_ONE_STEP_DOWN = {Policy.REJECT: Policy.QUARANTINE, Policy.QUARANTINE: Policy.NONE}


class DmarcMode(StrEnum):
    RFC9989 = "rfc9989"  # DNS Tree Walk, np, psd, t
    RFC7489 = "rfc7489"  # Public Suffix List, pct


class OverrideType(StrEnum):
    """Why a receiver did not apply the domain's policy (RFC 9990 PolicyOverrideType)."""

    TRUSTED_FORWARDER = "trusted_forwarder"
    MAILING_LIST = "mailing_list"
    LOCAL_POLICY = "local_policy"
    POLICY_TEST_MODE = "policy_test_mode"
    SAMPLED_OUT = "sampled_out"  # RFC 7489 pct
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PolicyOverride:
    """A local decision to apply ``disposition`` instead of the domain's policy."""

    kind: OverrideType
    comment: str = ""
    disposition: Policy = Policy.NONE


@dataclass(frozen=True, slots=True)
class OverrideContext:
    """What a local-policy hook sees: the SMTP facts, every method's outcome, and the DMARC
    outcome as DMARC alone decided it."""

    ip: str
    helo: str
    mail_from: str
    spf: SpfCheck | None
    dkim: tuple[DkimOutcome, ...]
    arc: ArcOutcome | None
    outcome: DmarcOutcome


@dataclass(frozen=True, slots=True)
class Undecided:
    """A hook's answer when a temporary failure keeps it from deciding (an ARC chain from a
    sealer it trusts, whose key lookup timed out): the DMARC result becomes ``temperror``
    and no disposition applies, rather than a reject an override might have prevented."""

    reason: str


OverrideHook = Callable[[OverrideContext], PolicyOverride | Undecided | None]


# Author Domains evaluated for one multi-valued From field: RFC 9989's security
# considerations ("Denial of DMARC Processing Attacks") advise a limit.
MAX_AUTHOR_DOMAINS = 5
_STRICTNESS = {Policy.NONE: 0, Policy.QUARANTINE: 1, Policy.REJECT: 2}


@dataclass(frozen=True, slots=True)
class DmarcLocalPolicy:
    """The receiver's choices. ``sampler`` returns a number in [0, 1) for RFC 7489 ``pct``;
    ``overrides`` are asked in order when a failing message's disposition is not none (the
    first answer counts); ``psl`` replaces the bundled Public Suffix List (RFC 7489 mode)."""

    mode: DmarcMode = DmarcMode.RFC9989
    sampler: Callable[[], float] = random.random
    overrides: tuple[OverrideHook, ...] = ()
    psl: PublicSuffixList | None = field(default=None, compare=False)
    max_author_domains: int = MAX_AUTHOR_DOMAINS


def extract_author_domains(author: Author) -> tuple[tuple[str, ...], DmarcResult | None, str]:
    """The Author Domains (RFC 9989 5.3.1), distinct, in order; or the result and reason when
    there is none. One From field may list several mailboxes, and so several domains.

    Several From fields break RFC 5322: the result is permerror, but their domains come
    with it, so that a failing one still counts (a second From field must not hide a spoof).
    """
    if author.field_count == 0:
        return (), DmarcResult.NONE, "no From field"
    if author.error:  # malformed: the domains a reader would see still count if they fail
        seen = [*(m.domain for m in author.mailboxes if m.domain), *author.salvaged]
        return _valid_domains(seen), DmarcResult.PERMERROR, author.error
    if not author.mailboxes:
        return (), DmarcResult.PERMERROR, "From field has no address"
    named = [d for d in author.domains if d]  # ("": a domain literal, with no policy)
    try:
        domains = tuple(dict.fromkeys(normalize_domain(d) for d in named))
    except InvalidDomainError as exc:  # the valid ones still count if they fail
        return _valid_domains(named), DmarcResult.PERMERROR, f"invalid author domain: {exc}"
    if author.field_count > 1:
        reason = f"{author.field_count} From fields (RFC 5322 allows one)"
        return domains, DmarcResult.PERMERROR, reason
    if not domains:
        return (), DmarcResult.NONE, "From address with a domain literal has no Author Domain"
    return domains, None, ""


def _valid_domains(names: Sequence[str]) -> tuple[str, ...]:
    """The names that are host names (RFC 1123), normalised, distinct, in order."""
    valid = []
    for name in names:
        with contextlib.suppress(InvalidDomainError):
            valid.append(host_name(name))
    return tuple(dict.fromkeys(valid))


def evaluate_dmarc(
    author: Author,
    *,
    spf: SpfCheck | None,
    dkim: Sequence[DkimOutcome],
    arc: ArcOutcome | None = None,
    ip: str = "",
    helo: str = "",
    mail_from: str = "",
    local: DmarcLocalPolicy | None = None,
    budget: tuple[int, float | None] | None = None,
    memo: DiscoveryMemo | None = None,
) -> Plan[DmarcOutcome]:
    """Evaluate DMARC for a message whose SPF and DKIM outcomes are known; ``memo``: policy
    discoveries of Author Domains seen moments ago (:mod:`mailauth.dmarc.memo`).

    A From field with mailboxes in several domains is evaluated once per domain (up to
    ``local.max_author_domains``), and the strictest policy among the domains that fail
    applies (RFC 9989's security considerations, "Denial of DMARC Processing Attacks", as
    RFC 7489 6.6.1 had it): ``From: ceo@bank.example, x@elsewhere.example`` must not escape
    the bank's policy. ``budget`` (DNS questions, seconds) is for each Author Domain: they
    are evaluated side by side, each within its own budget, so that other author domains a
    sender chose can neither hold up nor starve the evaluation of the one it spoofs.
    """
    local = local or DmarcLocalPolicy()
    domains, result, reason = extract_author_domains(author)
    if result is not None and not domains:
        return DmarcOutcome(result, "", reason=reason)
    facts = _Facts(spf, tuple(dkim), arc, ip, helo, mail_from, memo)

    def evaluate(domain: str) -> Plan[DmarcOutcome]:
        plan = _evaluate_domain(domain, facts, local)
        return plan if budget is None else bounded(plan, Budget(f"DMARC {domain}", *budget))

    if len(domains) == 1 and result is None:
        return (yield from evaluate(domains[0]))
    chosen = domains[: local.max_author_domains]
    outcomes = list((yield from parallel(*(evaluate(domain) for domain in chosen))))
    combined = _combine(domains, outcomes)
    if result is None:
        return combined
    if combined.result is DmarcResult.TEMPERROR:  # a domain that may fail is not known yet
        return replace(combined, reason=f"{reason}; {combined.reason}")
    if combined.result is not DmarcResult.FAIL:  # malformed: only a failure counts
        return DmarcOutcome(result, "", reason=reason)
    return replace(combined, reason=f"{reason}; {combined.reason}")


@dataclass(frozen=True, slots=True)
class _Facts:
    spf: SpfCheck | None
    dkim: tuple[DkimOutcome, ...]
    arc: ArcOutcome | None
    ip: str
    helo: str
    mail_from: str
    memo: DiscoveryMemo | None = None


def _combine(domains: tuple[str, ...], outcomes: list[DmarcOutcome]) -> DmarcOutcome:
    """One outcome for several Author Domains: the failing one with the strictest
    disposition; else a temporary error; else (when every domain was checked) a pass."""
    listed = ", ".join(domains[:4]) + (", ..." if len(domains) > 4 else "")
    note = f"{len(domains)} author domain{'s' * (len(domains) > 1)} ({listed})"
    failing = [o for o in outcomes if o.result is DmarcResult.FAIL]
    if failing:
        worst = max(failing, key=lambda o: _STRICTNESS[o.disposition])  # (the first of equals)
        why = f"{note}: the strictest failing policy applies"
        return replace(worst, reason="; ".join(filter(None, (why, worst.reason))))
    for outcome in outcomes:
        if outcome.result is DmarcResult.TEMPERROR:
            return replace(outcome, reason=f"{note}: {outcome.reason}")
    if len(outcomes) < len(domains):
        reason = f"{note}: only the first {len(outcomes)} checked, none of them failing"
        return DmarcOutcome(DmarcResult.PERMERROR, domains[0], reason=reason)
    passing = [o for o in outcomes if o.result is DmarcResult.PASS]
    chosen = passing[0] if passing else outcomes[0]
    return replace(chosen, reason="; ".join(filter(None, (note, chosen.reason))))


def _evaluate_domain(domain: str, facts: _Facts, local: DmarcLocalPolicy) -> Plan[DmarcOutcome]:
    """RFC 9989 5.3 for one Author Domain."""
    spf, dkim, arc = facts.spf, facts.dkim, facts.arc
    ip, helo, mail_from = facts.ip, facts.helo, facts.mail_from
    found = yield from _discover(domain, local, facts.memo)
    if found.problem:
        return DmarcOutcome(DmarcResult.TEMPERROR, domain, reason=found.problem)
    record = found.record
    if record is None:
        return DmarcOutcome(DmarcResult.NONE, domain, reason="no DMARC policy record")
    notes = []
    if not (record.policy_valid and record.subdomain_policies_valid):
        # RFC 9989 4.10.1: no valid p=, or an invalid sp=/np=: p=none if rua= is usable,
        # otherwise no DMARC processing.
        if not record.rua:
            reason = f"record at _dmarc.{found.policy_domain} has no valid p= and no rua="
            return DmarcOutcome(DmarcResult.NONE, domain, reason=reason)
        record = replace(record, policy=Policy.NONE, subdomain_policy=None, nonexistent_policy=None)
        notes.append("no valid p=/sp=/np=: treated as p=none")
    spf_id = spf.mailfrom.domain if spf and spf.mailfrom.result is SpfResult.PASS else ""
    dkim_ids = list(dict.fromkeys(d.domain for d in dkim if d.result is DkimResult.PASS))
    orgs: dict[str, str | None] = {domain: found.org_domain}
    spf_aligned, problem = yield from _aligned(spf_id, domain, record.aspf, orgs, local)
    dkim_aligned: list[str] = []
    for identifier in dkim_ids:
        aligned, issue = yield from _aligned(identifier, domain, record.adkim, orgs, local)
        if aligned:
            dkim_aligned.append(identifier)
        problem = problem or issue
    outcome = DmarcOutcome(
        DmarcResult.PASS if spf_aligned or dkim_aligned else DmarcResult.FAIL,
        domain,
        policy_domain=found.policy_domain,
        org_domain=found.org_domain or "",
        spf_aligned=spf_aligned,
        dkim_aligned=tuple(dkim_aligned),
        testing=record.testing and local.mode is DmarcMode.RFC9989,
        reason="; ".join(notes),
        published=published_policy(record, local.mode),
    )
    if outcome.result is DmarcResult.FAIL and not problem:
        problem = yield from _unsettled(domain, record, facts, orgs, local)
    if outcome.result is DmarcResult.FAIL and problem:
        return _undecided(outcome, record, local, problem)
    outcome = yield from _apply_policy(outcome, record, local)
    if outcome.result is DmarcResult.FAIL and outcome.disposition is not Policy.NONE:
        context = OverrideContext(ip, helo, mail_from, spf, tuple(dkim), arc, outcome)
        for hook in local.overrides:
            override = hook(context)
            if isinstance(override, Undecided):
                return _undecided(outcome, record, local, override.reason)
            if override is not None:
                return replace(
                    outcome,
                    disposition=override.disposition,
                    override=str(override.kind),
                    override_comment=override.comment,
                )
    return outcome


def published_policy(record: DmarcRecord, mode: DmarcMode) -> PublishedPolicy:
    """The record as an aggregate report shows it (RFC 9990 "policy_published"); in RFC
    7489 mode without the tags that mode ignores (np, t, psd)."""
    rfc9989 = mode is DmarcMode.RFC9989
    return PublishedPolicy(
        p=record.policy or Policy.NONE,
        sp=record.subdomain_policy,
        np=record.nonexistent_policy if rfc9989 else None,
        adkim=record.adkim,
        aspf=record.aspf,
        testing=record.testing and rfc9989,
        psd=record.psd if rfc9989 else "u",
        fo=":".join(record.fo),
        discovery="treewalk" if rfc9989 else "psl",
        rua=tuple(u.uri for u in record.rua),
        ruf=tuple(u.uri for u in record.ruf),
    )


def _unsettled(
    domain: str,
    record: DmarcRecord,
    facts: _Facts,
    orgs: dict[str, str | None],
    local: DmarcLocalPolicy,
) -> Plan[str]:
    """Why a failure cannot be concluded, or "": an SPF or DKIM identifier whose result is
    ``temperror`` would align with the Author Domain. RFC 9989 ("Determine Handling
    Policy"): when no mechanism passes for an aligned identifier and one failed temporarily,
    the receiver cannot conclude a DMARC failure and does not apply the policy (RFC 7489
    mode alike: a DNS blip must not turn legitimate mail into a reject)."""
    spf = facts.spf.mailfrom if facts.spf is not None else None
    if spf is not None and spf.result is SpfResult.TEMPERROR and spf.domain:
        aligned, issue = yield from _aligned(spf.domain, domain, record.aspf, orgs, local)
        if aligned or issue:
            return _joined(f"spf=temperror for aligned smtp.mailfrom={spf.domain}", spf.reason)
    for outcome in facts.dkim:
        if outcome.result is not DkimResult.TEMPERROR or not outcome.domain:
            continue
        aligned, issue = yield from _aligned(outcome.domain, domain, record.adkim, orgs, local)
        if aligned or issue:
            why = f"dkim=temperror for aligned header.d={outcome.domain} s={outcome.selector}"
            return _joined(why, outcome.reason)
    return ""


def _joined(what: str, reason: str) -> str:
    return f"{what}: {reason}" if reason else what


def _undecided(
    outcome: DmarcOutcome, record: DmarcRecord, local: DmarcLocalPolicy, reason: str
) -> DmarcOutcome:
    """``temperror``: no failure can be concluded and no disposition applies; ``policy`` is
    what is at stake -- the strictest policy the record could apply to a failure here (``sp``
    or ``np`` when existence is unknown), ``testing`` its t=y -- so that a receiver can
    defer rather than accept what would otherwise be rejected (docs/milter.md)."""
    subdomain = outcome.policy_domain != outcome.domain
    candidates = [record.policy_for(subdomain=subdomain, exists=True)]
    if subdomain and local.mode is DmarcMode.RFC9989:
        candidates.append(record.policy_for(subdomain=True, exists=False))
    policy, tag = max(candidates, key=lambda c: _STRICTNESS[c[0]])
    return replace(
        outcome,
        result=DmarcResult.TEMPERROR,
        policy=policy,
        policy_tag=tag,
        disposition=Policy.NONE,
        testing=record.testing and local.mode is DmarcMode.RFC9989,
        override="",
        override_comment="",
        reason=reason,
    )


def _discover(domain: str, local: DmarcLocalPolicy, memo: DiscoveryMemo | None) -> Plan[Discovery]:
    """Policy discovery for one Author Domain, from ``memo`` while it remembers the domain."""
    known = memo.get(local.mode, domain) if memo is not None else None
    if known is not None:
        return known
    if local.mode is DmarcMode.RFC7489:
        plan = _discover_rfc7489(domain, local.psl)
    else:
        plan = _discover_rfc9989(domain)
    if memo is None:
        return (yield from plan)
    found, ttl = yield from shortest_ttl(plan)
    memo.put(local.mode, domain, found, ttl)
    return found


def _discover_rfc9989(domain: str) -> Plan[Discovery]:
    """RFC 9989 4.10.1: the Author Domain's record, else its Organizational Domain's or PSD's."""
    (first,) = yield from dmarc_lookups(domain)
    if first.status is DnsStatus.TEMPFAIL:
        return Discovery(None, problem=f"_dmarc.{domain}: {first.reason or 'DNS failure'}")
    walk = yield from tree_walk(domain, skip_first=first)
    own = walk.record_at(domain)
    if walk.tempfail:
        if own is None:  # the policy cannot be found
            return Discovery(None, problem=walk.tempfail)
        return Discovery(own, domain, None)  # the policy is known, the org domain is not
    org = organizational_domain(walk)
    if own is not None:
        return Discovery(own, domain, org)
    for candidate in (org, _psd_of(walk)):
        record = walk.record_at(candidate) if candidate else None
        if record is not None:
            return Discovery(record, candidate, org)
    return Discovery(None, "", org)


def _psd_of(walk: TreeWalk) -> str:
    return next((f.domain for f in walk.records if f.record.psd == "y"), "")


def _discover_rfc7489(domain: str, psl: PublicSuffixList | None) -> Plan[Discovery]:
    """RFC 7489 6.6.3: the Author Domain's record, else the PSL Organizational Domain's."""
    org = psl_organizational_domain(domain, psl)
    names = [domain] if org == domain else [domain, org]
    lookups = yield from dmarc_lookups(*names)
    for name, lookup in zip(names, lookups, strict=True):
        if lookup.status is DnsStatus.TEMPFAIL:
            return Discovery(None, problem=f"_dmarc.{name}: {lookup.reason or 'DNS failure'}")
        selected, _ = select_records(name, lookup)
        if selected is not None:
            return Discovery(selected.record, name, org)
    return Discovery(None, "", org)


def _aligned(
    identifier: str,
    author: str,
    mode: str,
    orgs: dict[str, str | None],
    local: DmarcLocalPolicy,
) -> Plan[tuple[bool, str]]:
    """Whether an authenticated identifier aligns with the author domain (RFC 9989 4.4),
    and the temporary failure that kept it from being decided ("" when none)."""
    if not identifier:
        return False, ""
    if identifier == author:
        return True, ""
    if mode == "s":  # strict: identical names only
        return False, ""
    author_org = yield from _org_domain(author, orgs, local)
    if author_org is None:
        return False, f"organizational domain of {author} unknown (DNS failure)"
    # The identifier's org domain is a suffix of it: if the author's is not, they differ.
    if not at_or_under(identifier, author_org):
        return False, ""
    org = yield from _org_domain(identifier, orgs, local)
    if org is None:
        return False, f"organizational domain of {identifier} unknown (DNS failure)"
    return org == author_org, ""


def _org_domain(
    domain: str, orgs: dict[str, str | None], local: DmarcLocalPolicy
) -> Plan[str | None]:
    """The Organizational Domain, or None when a temporary DNS failure keeps it unknown;
    each domain walked once per evaluation (a failed walk is not asked again for every
    identifier: with a silent server each walk costs the DNS lifetime)."""
    if domain in orgs:
        return orgs[domain]
    if local.mode is DmarcMode.RFC7489:
        org: str | None = psl_organizational_domain(domain, local.psl)
    else:
        walk = yield from tree_walk(domain)
        org = None if walk.tempfail else organizational_domain(walk)
    orgs[domain] = org
    return org


def _apply_policy(
    outcome: DmarcOutcome, record: DmarcRecord, local: DmarcLocalPolicy
) -> Plan[DmarcOutcome]:
    """The policy that applies (p, sp or np) and the disposition before local overrides."""
    subdomain = outcome.policy_domain != outcome.domain
    exists = True
    if subdomain and record.nonexistent_policy is not None and local.mode is DmarcMode.RFC9989:
        # RFC 9989 3.2.13 (RFC 8020): NXDOMAIN for the name means it does not exist; not
        # an NXDOMAIN at the end of a CNAME the name owns (RFC 6604 3).
        (lookup,) = yield from resolve(Query.of(outcome.domain, RRType.A))
        if lookup.status is DnsStatus.TEMPFAIL and outcome.result is DmarcResult.FAIL:
            reason = f"{outcome.domain}: existence unknown ({lookup.reason or 'DNS failure'})"
            return _undecided(outcome, record, local, reason)
        exists = not lookup.name_does_not_exist
    if local.mode is DmarcMode.RFC7489:
        record = replace(record, nonexistent_policy=None)
    policy, tag = record.policy_for(subdomain=subdomain, exists=exists)
    outcome = replace(outcome, policy=policy, policy_tag=tag)
    if outcome.result is not DmarcResult.FAIL or policy is Policy.NONE:
        return outcome
    if local.mode is DmarcMode.RFC9989 and record.testing:
        # RFC 9989 4.7 t=y: apply the policy one step below the one published.
        return replace(
            outcome,
            disposition=_ONE_STEP_DOWN[policy],
            override=str(OverrideType.POLICY_TEST_MODE),
            override_comment="t=y: the domain is testing its policy",
        )
    if local.mode is DmarcMode.RFC7489 and record.pct < 100 and local.sampler() * 100 >= record.pct:
        # RFC 7489 6.6.4: a message not sampled gets the next less strict policy.
        return replace(
            outcome,
            disposition=_ONE_STEP_DOWN[policy],
            override=str(OverrideType.SAMPLED_OUT),
            override_comment=f"pct={record.pct}: not sampled",
        )
    return replace(outcome, disposition=policy)
