"""The reports a domain owner receives (issue 17): DMARC aggregate reports (RFC 9990, RFC
7489 and the drafts before it), failure reports (RFC 9991 / RFC 6591 ARF, and plain-text
ones) and SMTP TLS reports (RFC 8460), read from whatever they arrive in and kept in the
report store (docs/reports.md, "Reports you receive").

Modules, pure except :mod:`.storage`, :mod:`.lock` and :mod:`.queries`: :mod:`.model` (the
reports as values), :mod:`.limits` (what one input may cost; the one read error),
:mod:`.containers` (gzip, zip, bounded),
:mod:`.aggregate_xml` and :mod:`.xml_repair` (RFC 9990 / RFC 7489 XML, defusedxml, the
repairs), :mod:`.failure_arf` (ARF and plain-text failure reports), :mod:`.tls_json` (RFC
8460), :mod:`.mail` (the report parts of an e-mail), :mod:`.reader` (one input to its
reports), :mod:`.authenticate` (a report e-mail's aligned DKIM signature, a plan for the
injected resolver), :mod:`.storage` (written once by their key), :mod:`.lock` (a report's
copies written one at a time), :mod:`.queries` (what summaries are built on),
:mod:`.importer` (items of any source into the store).
"""

from __future__ import annotations

from mailauth.reports.received.importer import (
    ImportResult,
    SourceItem,
    import_item,
    import_reports,
)
from mailauth.reports.received.limits import DEFAULT_LIMITS, ReadLimits, ReportReadError
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
from mailauth.reports.received.queries import (
    DomainTotals,
    ReceivedRecord,
    ReceivedReport,
    ReceivedTlsPolicy,
    received_domains,
    received_failures,
    received_records,
    received_reports,
    received_tls_policies,
)
from mailauth.reports.received.reader import ReadOutcome, read_reports
from mailauth.reports.received.storage import save_report

__all__ = [
    "DEFAULT_LIMITS",
    "AggregateRecord",
    "AggregateReport",
    "DkimAuth",
    "DomainTotals",
    "FailureReport",
    "ImportResult",
    "ReadLimits",
    "ReadOutcome",
    "Reason",
    "ReceivedRecord",
    "ReceivedReport",
    "ReceivedTlsPolicy",
    "Report",
    "ReportKind",
    "ReportReadError",
    "ReportedPolicy",
    "SourceItem",
    "SpfAuth",
    "TlsFailure",
    "TlsPolicy",
    "TlsReport",
    "import_item",
    "import_reports",
    "read_reports",
    "received_domains",
    "received_failures",
    "received_records",
    "received_reports",
    "received_tls_policies",
    "report_key",
    "save_report",
]
