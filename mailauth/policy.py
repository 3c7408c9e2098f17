"""Local policy hooks built on the verdict's parts (above the protocol modules).

:func:`trust_arc_sealers` makes a DMARC override hook (RFC 8617 7.2.1, RFC 9989 5.4): when
DMARC fails but the ARC chain passes and a sealer the receiver trusts recorded, in its own
ARC-Authentication-Results, a DMARC pass for the same author domain, the disposition becomes
``none`` with the override type ``local_policy`` and an RFC 8617 7.2.2 comment
(``arc=pass as[2].d=... as[2].s=...``). The DMARC result itself stays ``fail``. A trusted
set counts only when it is the newest, or when its ARC-Message-Signature and every later one
still validate (``oldest_pass`` <= its instance, RFC 8617 5.2 step 5): otherwise it may be a
genuine set lifted from another message, under a set the sender sealed itself. When the
chain could not be validated for a DNS failure (``arc=temperror``) at the keys of a trusted
newest set whose ARC-Authentication-Results shows such a pass, the hook cannot decide: it
answers :class:`~mailauth.dmarc.Undecided` and DMARC is ``temperror`` (no reject for mail
an override might have let through). Any other ``temperror`` gives no override.

:func:`trust_mailing_lists` makes another (RFC 9989 5.4, RFC 9990 ``mailing_list``): when the
message was provably sent by a list server the receiver names (DKIM pass with its ``d=``, or
SPF pass for its MAIL FROM domain, at or under a named domain), the disposition becomes
``none`` with the override type ``mailing_list``. When the list server's authentication
failed temporarily instead (DKIM ``temperror`` with such a ``d=``: its key lookup timed out;
or SPF ``temperror`` for such a MAIL FROM domain) and nothing else shows the list, the hook
cannot decide: :class:`~mailauth.dmarc.Undecided`, and DMARC is ``temperror``. Otherwise a
DNS blip at the list's key would reject the list's mail, which the override lets through
when DNS works.
"""

from __future__ import annotations

from collections.abc import Iterable

import authres

from mailauth.dmarc import OverrideContext, OverrideHook, OverrideType, PolicyOverride, Undecided
from mailauth.domains import host_name, name_and_parents, normalize_domain
from mailauth.results import ArcResult, ArcSetInfo, DkimResult, Policy, SpfResult


def trust_arc_sealers(domains: Iterable[str]) -> OverrideHook:
    """An override hook trusting ARC sets sealed by these domains (exact d= match)."""
    trusted = frozenset(normalize_domain(d) for d in domains)

    def hook(context: OverrideContext) -> PolicyOverride | Undecided | None:
        arc = context.arc
        if arc is None or arc.result not in (ArcResult.PASS, ArcResult.TEMPERROR):
            return None
        author = context.outcome.domain
        for arc_set in reversed(arc.sets):  # the newest trusted testimony first
            if arc_set.domain not in trusted or not _shows_dmarc_pass(arc_set, author):
                continue
            newest = arc_set.instance == len(arc.sets)
            if arc.result is ArcResult.TEMPERROR:
                # Undecided only when the lookups that failed include this set's own keys
                # and no set follows it: a later sealer's key (anyone's) failing must not
                # turn a replayed set's testimony into a temperror that on_error may accept.
                if not (newest and arc_set.instance in arc.temporary):
                    return None
                why = f"ARC chain sealed by trusted {arc_set.domain} not validated"
                return Undecided(f"{why}: {arc.reason}")
            if not (newest or _still_validates(arc.oldest_pass, arc_set.instance)):
                continue
            comment = " ".join(
                f"as[{s.instance}].d={s.domain} as[{s.instance}].s={s.selector}"
                for s in reversed(arc.sets)
            )
            return PolicyOverride(OverrideType.LOCAL_POLICY, f"arc=pass {comment}", Policy.NONE)
        return None

    return hook


def _still_validates(oldest_pass: int | None, instance: int) -> bool:
    """Whether the AMSs of set ``instance`` and of every later set validate (RFC 8617 5.2
    step 5: ``oldest_pass`` <= instance; 0 when all do): the message is then as that set's
    sealer saw it, not a set lifted onto another message that a later sealer signed."""
    return oldest_pass is not None and oldest_pass <= instance


def trust_mailing_lists(domains: Iterable[str]) -> OverrideHook:
    """An override hook for mail that a listed domain's list server authenticated itself."""
    trusted = frozenset(host_name(d) for d in domains)

    def under(domain: str) -> str | None:
        names = name_and_parents(domain.lower().rstrip("."))
        return next((name for name in names if name in trusted), None)

    def hook(context: OverrideContext) -> PolicyOverride | Undecided | None:
        undecided = ""
        for outcome in context.dkim:
            found = under(outcome.domain)
            if found and outcome.result is DkimResult.PASS:
                comment = f"mailing list {found}: dkim=pass header.d={outcome.domain}"
                return PolicyOverride(OverrideType.MAILING_LIST, comment, Policy.NONE)
            if found and outcome.result is DkimResult.TEMPERROR and not undecided:
                undecided = f"mailing list {found}: dkim=temperror header.d={outcome.domain}"
                undecided += f" ({outcome.reason})" if outcome.reason else ""
        spf = context.spf.mailfrom if context.spf else None
        found = under(spf.domain) if spf is not None else None
        if spf is not None and found and spf.result is SpfResult.PASS:
            comment = f"mailing list {found}: spf=pass smtp.mailfrom={spf.domain}"
            return PolicyOverride(OverrideType.MAILING_LIST, comment, Policy.NONE)
        if spf is not None and found and spf.result is SpfResult.TEMPERROR and not undecided:
            undecided = f"mailing list {found}: spf=temperror smtp.mailfrom={spf.domain}"
        return Undecided(undecided) if undecided else None

    return hook


_MAX_TRUSTED_RESULTS = 4096


def _shows_dmarc_pass(arc_set: ArcSetInfo, author: str) -> bool:
    """Whether an AAR records dmarc=pass with header.from equal to the author domain.

    authres parses at about 20 ms per KB (1.8 s for 99 KB); real payloads are under 2 KB, so
    one over _MAX_TRUSTED_RESULTS counts as showing no pass, unparsed.
    """
    if len(arc_set.results) > _MAX_TRUSTED_RESULTS:
        return False
    try:
        header = authres.AuthenticationResultsHeader.parse(
            f"Authentication-Results: {arc_set.results}"
        )
    except (authres.AuthResError, ValueError):
        return False
    for result in header.results:
        if str(result.method).lower() != "dmarc" or str(result.result).lower() != "pass":
            continue
        for prop in result.properties:
            if f"{prop.type}.{prop.name}".lower() == "header.from":
                try:
                    if normalize_domain(str(prop.value).rpartition("@")[2]) == author:
                        return True
                except ValueError:
                    continue
    return False
