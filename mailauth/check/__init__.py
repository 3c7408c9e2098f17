"""``mailauth check``: audit a domain's mail-authentication DNS (SPF, DMARC, DKIM, MX,
MTA-STS, TLS-RPT, BIMI) with the project's own parsers and the injected resolver.

Findings have stable ids (docs/check.md); each says pass, warn or fail and, when not pass,
how to fix it.
"""

from __future__ import annotations

from mailauth.check.mtasts import MtaStsFetcher, parse_policy
from mailauth.check.records import COMMON_SELECTORS
from mailauth.check.report import Area, DomainReport, Finding, Status
from mailauth.check.run import check_domain, check_domains
from mailauth.check.spf import check_spf

__all__ = [
    "COMMON_SELECTORS",
    "Area",
    "DomainReport",
    "Finding",
    "MtaStsFetcher",
    "Status",
    "check_domain",
    "check_domains",
    "check_spf",
    "parse_policy",
]
