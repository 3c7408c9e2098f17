"""Results and outcomes of every method, and the verdict that holds them.

Result enums are ``StrEnum`` whose values are the tokens of the IANA Email Authentication
Result Names registry (RFC 8601 2.7, RFC 8617 10.2, RFC 9989): ``str(result)`` is what goes
into Authentication-Results. Outcomes are frozen values; a method that was not evaluated is
``None`` in the verdict, never an invented result.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class SpfResult(StrEnum):
    """RFC 7208 2.6, RFC 8601 2.7.2."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class DkimResult(StrEnum):
    """RFC 6376 6.1, RFC 8601 2.7.1."""

    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"
    NONE = "none"
    POLICY = "policy"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class DmarcResult(StrEnum):
    """RFC 9989 (Authentication-Results registration of RFC 7489 11.1)."""

    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class ArcResult(StrEnum):
    """RFC 8617 4.4, 10.2; ``temperror`` (RFC 8601 2.7's word) when a key lookup failed
    temporarily and nothing else broke the chain: not a result RFC 8617 registers, and
    never written into an ARC-Seal (docs/arc.md)."""

    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"


class Policy(StrEnum):
    """A DMARC policy (p=, sp=, np=) or the disposition finally applied."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """The SPF result for one identity (RFC 7208 2.3 HELO, 2.4 MAIL FROM).

    ``domain`` is the domain checked, ``sender`` the address checked (``postmaster@<helo>``
    for a null reverse-path), ``explanation`` the expanded exp= text of a fail.
    """

    result: SpfResult
    identity: str
    domain: str
    sender: str = ""
    reason: str = ""
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": str(self.result),
            "domain": self.domain,
            "sender": self.sender,
            "reason": self.reason,
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class SpfCheck:
    """SPF for a message: the MAIL FROM outcome and, when HELO was a domain, its outcome."""

    mailfrom: SpfOutcome
    helo: SpfOutcome | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.mailfrom.to_dict()
        out["helo"] = self.helo.to_dict() if self.helo else None
        return out


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    """One DKIM-Signature field's outcome (RFC 6376 6.1)."""

    result: DkimResult
    domain: str
    selector: str
    algorithm: str
    reason: str = ""
    identity: str = ""
    key_bits: int | None = None
    signature_prefix: str = ""
    testing: bool = False
    body_length: int | None = None  # l=, when the signature covers only part of the body

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": str(self.result),
            "domain": self.domain,
            "selector": self.selector,
            "algorithm": self.algorithm,
            "reason": self.reason,
            "identity": self.identity,
            "key_bits": self.key_bits,
            "testing": self.testing,
            "body_length": self.body_length,
        }


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    """The DMARC Policy Record that applied, as an aggregate report shows it (RFC 9990
    "policy_published"): tags absent from the record hold their defaults (``sp``/``np``:
    None when absent); ``discovery`` is ``treewalk`` (RFC 9989) or ``psl`` (RFC 7489);
    ``rua``/``ruf`` the reporting URIs as published (RFC 9989 4.6), unverified."""

    p: Policy
    sp: Policy | None = None
    np: Policy | None = None
    adkim: str = "r"
    aspf: str = "r"
    testing: bool = False
    psd: str = "u"
    fo: str = "0"
    discovery: str = "treewalk"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "p": str(self.p),
            "sp": str(self.sp) if self.sp else None,
            "np": str(self.np) if self.np else None,
            "adkim": self.adkim,
            "aspf": self.aspf,
            "t": "y" if self.testing else "n",
            "psd": self.psd,
            "fo": self.fo,
            "discovery_method": self.discovery,
            "rua": list(self.rua),
            "ruf": list(self.ruf),
        }


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    """The DMARC result for the author domain, and the disposition after local policy.

    ``policy`` is the domain owner's policy that applies to this message (from the ``p``,
    ``sp`` or ``np`` tag named in ``policy_tag`` of the record at ``policy_domain``; for a
    ``temperror`` with the record known, the strictest one a failure could have had);
    ``disposition`` is what the receiver applies after test mode (``t=y``), RFC 7489
    sampling and local overrides; ``override`` names the RFC 9990 PolicyOverride type when
    the disposition differs from ``policy`` on a fail, ``override_comment`` says why;
    ``published``: the record at ``policy_domain`` (what an aggregate report needs), when
    one was found.
    """

    result: DmarcResult
    domain: str
    policy: Policy | None = None
    disposition: Policy = Policy.NONE
    reason: str = ""
    policy_domain: str = ""
    policy_tag: str = ""
    org_domain: str = ""
    spf_aligned: bool = False
    dkim_aligned: tuple[str, ...] = ()
    testing: bool = False
    override: str = ""
    override_comment: str = ""
    published: PublishedPolicy | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": str(self.result),
            "domain": self.domain,
            "policy": str(self.policy) if self.policy else None,
            "disposition": str(self.disposition),
            "reason": self.reason,
            "policy_domain": self.policy_domain,
            "policy_tag": self.policy_tag,
            "org_domain": self.org_domain,
            "spf_aligned": self.spf_aligned,
            "dkim_aligned": list(self.dkim_aligned),
            "testing": self.testing,
            "override": self.override,
            "override_comment": self.override_comment,
            "published": self.published.to_dict() if self.published else None,
        }


@dataclass(frozen=True, slots=True)
class ArcSetInfo:
    """One ARC Set as found: its instance, the sealer's d= and s=, the seal's cv=, and the
    ARC-Authentication-Results payload (after ``i=N;``, unfolded)."""

    instance: int
    domain: str
    selector: str
    cv: str
    results: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "domain": self.domain,
            "selector": self.selector,
            "cv": self.cv,
            "results": self.results,
        }


@dataclass(frozen=True, slots=True)
class ArcOutcome:
    """The ARC chain validation result (RFC 8617 5.2).

    ``oldest_pass`` is the lowest instance whose AMS still validates (0 when all do; RFC 8617
    5.2 step 5; None when not known, a key lookup having failed temporarily); ``sets``
    describe the chain, oldest first (empty when it could not be read); ``temporary``: for
    ``temperror``, the instances whose key lookups failed temporarily.
    """

    result: ArcResult
    reason: str = ""
    oldest_pass: int | None = None
    domains: tuple[str, ...] = ()
    sets: tuple[ArcSetInfo, ...] = ()
    temporary: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": str(self.result),
            "reason": self.reason,
            "oldest_pass": self.oldest_pass,
            "domains": list(self.domains),
            "sets": [s.to_dict() for s in self.sets],
            "temporary": list(self.temporary),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """Everything mailauth concluded about one message.

    ``authentication_results`` is the whole header field (``Authentication-Results: ...``),
    folded with CRLF, without a final line ending; ``received_spf`` likewise the
    Received-SPF field (RFC 7208 9.1) for the MAIL FROM identity. Methods not evaluated are
    ``None``.
    """

    authserv_id: str
    authentication_results: str
    received_spf: str | None = None
    spf: SpfCheck | None = None
    dkim: tuple[DkimOutcome, ...] | None = None
    dmarc: DmarcOutcome | None = None
    arc: ArcOutcome | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the keys spf, dkim, dmarc, arc, authentication_results."""
        return {
            "authserv_id": self.authserv_id,
            "spf": self.spf.to_dict() if self.spf else None,
            "dkim": [d.to_dict() for d in self.dkim] if self.dkim is not None else None,
            "dmarc": self.dmarc.to_dict() if self.dmarc else None,
            "arc": self.arc.to_dict() if self.arc else None,
            "authentication_results": self.authentication_results,
            "received_spf": self.received_spf,
        }
