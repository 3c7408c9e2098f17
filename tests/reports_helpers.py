"""Verdicts made by hand for the report tests (what the pipeline would conclude)."""

from __future__ import annotations

from mailauth.results import (
    DkimOutcome,
    DkimResult,
    DmarcOutcome,
    DmarcResult,
    Policy,
    PublishedPolicy,
    SpfCheck,
    SpfOutcome,
    SpfResult,
    Verdict,
)

DAY = 86400
T0 = 1_700_006_400  # 2023-11-15 00:00:00 UTC, a period's start


def verdict(
    domain: str = "example.com",
    *,
    result: DmarcResult = DmarcResult.PASS,
    policy: Policy = Policy.REJECT,
    disposition: Policy = Policy.NONE,
    spf: SpfResult = SpfResult.PASS,
    spf_domain: str = "",
    dkim: tuple[tuple[str, str, DkimResult], ...] = (),
    rua: tuple[str, ...] = ("mailto:dmarc@example.com",),
    policy_domain: str = "",
    override: str = "",
    override_comment: str = "",
) -> Verdict:
    published = PublishedPolicy(p=policy, sp=Policy.QUARANTINE, adkim="r", aspf="r", rua=rua)
    dkim_outcomes = tuple(DkimOutcome(r, d, s, "rsa-sha256") for d, s, r in dkim)
    aligned = tuple(d for d, _, r in dkim if r is DkimResult.PASS and d.endswith(domain))
    spf_check = SpfCheck(SpfOutcome(spf, "mailfrom", spf_domain or domain))
    dmarc = DmarcOutcome(
        result,
        domain,
        policy=policy,
        disposition=disposition,
        policy_domain=policy_domain or domain,
        policy_tag="p",
        spf_aligned=spf is SpfResult.PASS and result is DmarcResult.PASS and not dkim,
        dkim_aligned=aligned,
        override=override,
        override_comment=override_comment,
        published=published,
    )
    return Verdict("mx.example.net", "Authentication-Results: x", spf=spf_check,
                   dkim=dkim_outcomes, dmarc=dmarc)  # fmt: skip
