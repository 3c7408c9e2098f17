"""DMARC reporting for receivers (RFC 9990 aggregate reports): the report store, recording
verdicts into it, and the reports built from it.

Modules: :mod:`.observe` (a verdict as a report row, pure), :mod:`.schema` (the versioned
schema), :mod:`.store` (SQLite or PostgreSQL behind one class; the engines
:mod:`.store_sqlite`, :mod:`.store_postgres`), :mod:`.recorder` (buffered recording off
the mail path; :mod:`.batch`, the counts in memory and their upsert), :mod:`.aggregate`
(RFC 9990 XML, streamed), :mod:`.outgoing` (closed reports claimed under the store's lock,
for the delivery side; :mod:`.leases`, the clock their claims run on; :mod:`.outgoing_status`,
what ``reports show`` lists); RFC 9991 failure reports: :mod:`.failure` (the ARF report),
:mod:`.failure_collect` (the milter's collector; :mod:`.failure_capture`, what it
takes), :mod:`.failure_queue` (the queue in the store), :mod:`.failure_claims` (the
sender's claims on it), :mod:`.failure_send` (delivery).
docs/reports.md.
"""

from __future__ import annotations

from mailauth.reports.batch import period_of, write_batch
from mailauth.reports.observe import Enforcement, Observation, observe
from mailauth.reports.outgoing import (
    PendingReport,
    ReportSettings,
    closed_reports,
    mark_delivered,
    mark_failed,
    mark_sent,
    release,
)
from mailauth.reports.outgoing_status import ReportStatus, report_status
from mailauth.reports.recorder import (
    BackgroundRecorder,
    DirectRecorder,
    RecordingSettings,
)
from mailauth.reports.store import Store, StoreError, open_store

__all__ = [
    "BackgroundRecorder",
    "DirectRecorder",
    "Enforcement",
    "Observation",
    "PendingReport",
    "RecordingSettings",
    "ReportSettings",
    "ReportStatus",
    "Store",
    "StoreError",
    "closed_reports",
    "mark_delivered",
    "mark_failed",
    "mark_sent",
    "observe",
    "open_store",
    "period_of",
    "release",
    "report_status",
    "write_batch",
]
