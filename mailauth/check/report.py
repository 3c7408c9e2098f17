"""Findings of the domain audit: one value per check, with a stable id and a one-line fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mailauth.dns import Lookup


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class Area(StrEnum):
    DOMAIN = "domain"  # the name itself: invalid, too long, or not existing
    SPF = "spf"
    DMARC = "dmarc"
    DKIM = "dkim"
    MX = "mx"
    MTA_STS = "mta-sts"
    TLS_RPT = "tls-rpt"
    BIMI = "bimi"


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding. ``id`` is stable (documented in docs/check.md); ``fix`` says what to do."""

    area: Area
    id: str
    status: Status
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "area": str(self.area),
            "id": self.id,
            "status": str(self.status),
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class DomainReport:
    """Everything ``mailauth check`` found for one domain; ``details`` per area as JSON data."""

    domain: str
    findings: tuple[Finding, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(f.status is Status.FAIL for f in self.findings)

    @property
    def status(self) -> Status:
        """The domain's status, in the JSON and the human summary alike: ``fail`` when any
        finding fails, else ``warn`` when any warns, else ``pass``."""
        if self.failed:
            return Status.FAIL
        return Status.WARN if any(f.status is Status.WARN for f in self.findings) else Status.PASS

    @property
    def dns_errors(self) -> bool:
        """Whether a lookup failed temporarily (a ``*.dns-error`` finding): the report is
        incomplete, and another run may say more."""
        return any(f.id.endswith(".dns-error") for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "status": str(self.status),
            "findings": [f.to_dict() for f in self.findings],
            **self.details,
        }


def dns_error(area: Area, lookup: Lookup, what: str = "") -> Finding:
    """``<area>.dns-error``: a lookup failed temporarily. A DNS problem, never reported as a
    missing record: nothing is known about the record."""
    message = f"{what or f'{lookup.rdtype} {lookup.name}'}: {lookup.reason or 'DNS failure'}"
    fix = "check the domain's nameservers, then run the check again"
    return Finding(area, f"{area}.dns-error", Status.FAIL, message, fix)
