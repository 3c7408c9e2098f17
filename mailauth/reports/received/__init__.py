"""The reports a domain owner receives (issue 17): DMARC aggregate reports (RFC 9990, RFC
7489 and the drafts before it), failure reports (RFC 9991 / RFC 6591 ARF, and plain-text
ones) and SMTP TLS reports (RFC 8460), read from whatever they arrive in and kept in the
report store (docs/reports.md, "Reports you receive").

Modules: :mod:`.model` (the reports as values), :mod:`.storage` (written once by their key;
the queries summaries are built on).
"""

from __future__ import annotations

from mailauth.reports.received.model import (
    AggregateRecord,
    AggregateReport,
    DkimAuth,
    FailureReport,
    Reason,
    Report,
    ReportedPolicy,
    ReportKind,
    SpfAuth,
    TlsFailure,
    TlsPolicy,
    TlsReport,
    report_key,
)
from mailauth.reports.received.storage import (
    DomainTotals,
    ReceivedRecord,
    ReceivedReport,
    ReceivedTlsPolicy,
    received_domains,
    received_failures,
    received_records,
    received_reports,
    received_tls_policies,
    save_report,
)

__all__ = [
    "AggregateRecord",
    "AggregateReport",
    "DkimAuth",
    "DomainTotals",
    "FailureReport",
    "Reason",
    "ReceivedRecord",
    "ReceivedReport",
    "ReceivedTlsPolicy",
    "Report",
    "ReportKind",
    "ReportedPolicy",
    "SpfAuth",
    "TlsFailure",
    "TlsPolicy",
    "TlsReport",
    "received_domains",
    "received_failures",
    "received_records",
    "received_reports",
    "received_tls_policies",
    "report_key",
    "save_report",
]
