"""The values of a summary (:mod:`.summary`) of the aggregate reports a domain owner
received: per source, per organisation, the readiness verdict, the reports left out, the
reporters; each with the JSON object (``to_dict``) and the lines the table shows
(docs/reports.md "What each column means"). No store, no DNS: numbers in, numbers and text
out. Their text is attacker-controlled report data, carried as such; the renderers escape
it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mailauth.reports.reverse import NOT_ASKED, ReverseName

UNKNOWN_ORG = "unknown"


@dataclass(frozen=True, slots=True)
class Reporter:
    """Who reported a source: for an authenticated report, the organisational domain of
    the domain that signed its e-mail (``verified``); for an unauthenticated one (counted
    only with ``include_unauthenticated``), the ``org_name`` its XML claims, which anyone
    can write (not ``verified``)."""

    name: str
    messages: int
    verified: bool

    @property
    def label(self) -> str:
        """The name as shown in the table, the CSV and the dashboard."""
        return self.name if self.verified else f"{self.name} (unverified)"

    def to_dict(self) -> dict[str, Any]:
        return {"reporter": self.name, "messages": self.messages, "verified": self.verified}


@dataclass(slots=True)
class SourceSummary:
    """One source IP. ``organisation``: the organisational domain (RFC 7489 3.2, on the public
    suffix list) of its verified reverse name, else of the passing DKIM d= or SPF domain
    that names it (docs/reports.md); ``organisation_from`` says which (``ptr``, ``dkim``,
    ``spf``, ``""``)."""

    ip: str
    messages: int = 0
    spf_aligned: int = 0
    dkim_aligned: int = 0
    dmarc_pass: int = 0
    dispositions: dict[str, int] = field(default_factory=dict)
    reporters: list[Reporter] = field(default_factory=list)
    reverse: ReverseName = NOT_ASKED
    organisation: str = UNKNOWN_ORG
    organisation_from: str = ""
    dkim_domains: Counter[str] = field(default_factory=Counter)  # passing d=, messages
    spf_domains: Counter[str] = field(default_factory=Counter)  # passing SPF domains

    @property
    def dmarc_fail(self) -> int:
        return self.messages - self.dmarc_pass

    def rate(self, count: int) -> float:
        return count / self.messages if self.messages else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_ip": self.ip,
            "reverse_name": self.reverse.name,
            "reverse_status": str(self.reverse.status),
            "organisation": self.organisation,
            "organisation_from": self.organisation_from,
            "messages": self.messages,
            "spf_aligned_pass": self.spf_aligned,
            "dkim_aligned_pass": self.dkim_aligned,
            "dmarc_pass": self.dmarc_pass,
            "dmarc_fail": self.dmarc_fail,
            "spf_aligned_rate": round(self.rate(self.spf_aligned), 4),
            "dkim_aligned_rate": round(self.rate(self.dkim_aligned), 4),
            "dmarc_pass_rate": round(self.rate(self.dmarc_pass), 4),
            "dispositions": dict(self.dispositions),
            "reporters": [r.to_dict() for r in self.reporters],
        }


@dataclass(frozen=True, slots=True)
class OrganisationSummary:
    name: str
    sources: int
    messages: int
    spf_aligned: int
    dkim_aligned: int
    dmarc_pass: int

    def to_dict(self) -> dict[str, Any]:
        rate = (lambda n: round(n / self.messages, 4)) if self.messages else (lambda n: 0.0)
        return {
            "organisation": self.name,
            "sources": self.sources,
            "messages": self.messages,
            "spf_aligned_rate": rate(self.spf_aligned),
            "dkim_aligned_rate": rate(self.dkim_aligned),
            "dmarc_pass_rate": rate(self.dmarc_pass),
            "dmarc_fail": self.messages - self.dmarc_pass,
        }


@dataclass(frozen=True, slots=True)
class Readiness:
    """What a stricter policy would do to the mail the reports counted: every message that
    failed DMARC (neither aligned SPF nor aligned DKIM passed) would be rejected under
    p=reject, quarantined under p=quarantine (before any receiver's local policy)."""

    messages: int  # all messages counted
    failing: int
    failing_sources: int
    largest: tuple[tuple[str, str, int], ...]  # (source IP, organisation, failing messages)

    def lines(self) -> list[str]:
        if not self.messages:
            return ["no messages reported for this domain in this period"]
        if not self.failing:
            return [
                f"all {self.messages:,} messages passed DMARC: none would be rejected under "
                "p=reject or quarantined under p=quarantine"
            ]
        share = f"{100 * self.failing / self.messages:.1f} %"
        largest = ", ".join(f"{ip} ({org}) {n:,}" for ip, org, n in self.largest)
        sources = "source" if self.failing_sources == 1 else "sources"
        return [
            f"{self.failing:,} messages ({share}) from {self.failing_sources:,} {sources} would be "
            f"rejected under p=reject; the largest: {largest}",
            f"the same {self.failing:,} messages would be quarantined under p=quarantine",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "dmarc_fail": self.failing,
            "failing_sources": self.failing_sources,
            "would_reject": self.failing,
            "would_quarantine": self.failing,
            "largest": [
                {"source_ip": ip, "organisation": org, "dmarc_fail": n}
                for ip, org, n in self.largest
            ],
            "verdict": self.lines(),
        }


@dataclass(frozen=True, slots=True)
class Unauthenticated:
    """The period's aggregate reports that were not authenticated by their reporter:
    ``reports`` and ``messages`` (the superseded copies of authenticated reports among
    them: ``superseded``, never counted), and whether they were counted (``included``)."""

    reports: int = 0
    messages: int = 0
    superseded: int = 0
    included: bool = False

    def lines(self) -> list[str]:
        if not self.reports:
            return []
        copies = f" ({self.superseded:,} of them copies of authenticated reports, never " \
            "counted)" if self.superseded else ""  # fmt: skip
        how = (
            "counted above (--include-unauthenticated)"
            if self.included
            else "left out of the verdict and the rates (--include-unauthenticated counts them)"
        )
        return [f"unauthenticated reports: {self.reports:,}, {self.messages:,} messages"
                f"{copies}: {how}"]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "reports": self.reports,
            "messages": self.messages,
            "superseded": self.superseded,
            "included": self.included,
        }


@dataclass(frozen=True, slots=True)
class Summary:
    domain: str
    since: int  # Unix times: reports whose period begins in [since, until)
    until: int
    reports: int
    reporters: int
    sources: tuple[SourceSummary, ...]  # the most messages first
    organisations: tuple[OrganisationSummary, ...]
    readiness: Readiness
    unauthenticated: Unauthenticated = Unauthenticated()

    @property
    def messages(self) -> int:
        return self.readiness.messages

    def verdict(self) -> list[str]:
        """The readiness verdict's lines, then what was left out."""
        return [*self.readiness.lines(), *self.unauthenticated.lines()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "since": self.since,
            "until": self.until,
            "reports": self.reports,
            "reporters": self.reporters,
            "messages": self.messages,
            "readiness": self.readiness.to_dict(),
            "unauthenticated": self.unauthenticated.to_dict(),
            "organisations": [o.to_dict() for o in self.organisations],
            "sources": [s.to_dict() for s in self.sources],
        }
