"""Local policy hooks built on the verdict's parts (above the protocol modules).

:func:`trust_arc_sealers` makes a DMARC override hook (RFC 8617 7.2.1, RFC 9989 5.4): when
DMARC fails but the ARC chain passes and a sealer the receiver trusts recorded, in its own
ARC-Authentication-Results, a DMARC pass for the same author domain, the disposition becomes
``none`` with the override type ``local_policy`` and an RFC 8617 7.2.2 comment
(``arc=pass as[2].d=... as[2].s=...``). The DMARC result itself stays ``fail``.
"""

from __future__ import annotations

from collections.abc import Iterable

import authres

from mailauth.dmarc import OverrideContext, OverrideHook, OverrideType, PolicyOverride
from mailauth.domains import normalize_domain
from mailauth.results import ArcResult, ArcSetInfo, Policy


def trust_arc_sealers(domains: Iterable[str]) -> OverrideHook:
    """An override hook trusting ARC sets sealed by these domains (exact d= match)."""
    trusted = frozenset(normalize_domain(d) for d in domains)

    def hook(context: OverrideContext) -> PolicyOverride | None:
        arc = context.arc
        if arc is None or arc.result is not ArcResult.PASS:
            return None
        author = context.outcome.domain
        for arc_set in reversed(arc.sets):  # the newest trusted testimony first
            if arc_set.domain in trusted and _shows_dmarc_pass(arc_set, author):
                comment = " ".join(
                    f"as[{s.instance}].d={s.domain} as[{s.instance}].s={s.selector}"
                    for s in reversed(arc.sets)
                )
                return PolicyOverride(OverrideType.LOCAL_POLICY, f"arc=pass {comment}", Policy.NONE)
        return None

    return hook


def _shows_dmarc_pass(arc_set: ArcSetInfo, author: str) -> bool:
    """Whether an AAR records dmarc=pass with header.from equal to the author domain."""
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
