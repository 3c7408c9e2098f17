"""The received reports in the store (schema migration 2, :mod:`mailauth.reports.schema`):
writing a report once. (The queries that summaries and dashboards are built on:
:mod:`.queries`.)

:func:`save_report` writes one report in one transaction: its row in ``received_aggregate``,
``received_failures`` or ``received_tls`` first, keyed by :func:`.model.report_key`
(``INSERT ... ON CONFLICT DO NOTHING``): when the key is there already, the report is a
duplicate and nothing else is written. Two importers racing on the same report store it
once (the primary key decides; SQLite's write lock, PostgreSQL's unique index), and the
copies of one report are written one at a time (:mod:`.lock`).

Each report is written with its authentication (schema migration 5) and, for an aggregate
report, its ``trust`` (:func:`.authenticate.trust_of`), copied into its records so that a
summary counts by one index scan. An aggregate report stored authenticated *supersedes*
the unauthenticated copies of the same report (same reporter, e-mail and Report-ID: a
forged one, or the same report from a bare file or an e-mail whose DNS check failed), and
an unauthenticated copy of a report already stored authenticated is stored superseded:
summaries never count both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mailauth.reports.received.authenticate import trust_of
from mailauth.reports.received.lock import lock_report
from mailauth.reports.received.model import (
    AggregateReport,
    FailureReport,
    Report,
    TlsFailure,
    TlsReport,
    Trust,
)
from mailauth.reports.store import Store


def save_report(store: Store, report: Report, *, source: str, now: int) -> bool:
    """Write ``report`` (read from ``source``, a file name or mailbox item, kept for the
    record) unless the store holds it already: True when written, False for a duplicate."""
    with store.write():
        lock_report(store, report)  # (the check of the other copies and the insert: atomic)
        if isinstance(report, AggregateReport):
            return _save_aggregate(store, report, source, now)
        if isinstance(report, FailureReport):
            return _save_failure(store, report, source, now)
        return _save_tls(store, report, source, now)


@dataclass(frozen=True, slots=True)
class StoredAggregate:
    """What the store keeps of an aggregate report beside its records (a duplicate's
    import result is told from it, without reading the duplicate's records)."""

    domain: str
    records: int
    messages: int
    notes: tuple[str, ...]
    imported_at: int = 0


def stored_aggregate(store: Store, key: str) -> StoredAggregate | None:
    """The stored aggregate report with ``key``; None when there is none."""
    rows = store.fetchall(
        "SELECT policy_domain, records, messages, notes, imported_at FROM received_aggregate "
        "WHERE report_key = ?",
        (key,),
    )
    if not rows:
        return None
    domain, records, messages, notes, imported_at = rows[0]
    return StoredAggregate(str(domain), int(records), int(messages),
                           tuple(str(n) for n in json.loads(notes)), int(imported_at))  # fmt: skip


def stored_at(store: Store, report: Report) -> int | None:
    """When the copy the store holds under ``report``'s key was imported (None: none)."""
    table = {AggregateReport: "received_aggregate", FailureReport: "received_failures"}.get(
        type(report), "received_tls"
    )
    rows = store.fetchall(
        f"SELECT imported_at FROM {table} WHERE report_key = ?",  # noqa: S608 - a constant
        (report.key,),
    )
    return int(rows[0][0]) if rows else None


def _save_aggregate(store: Store, r: AggregateReport, source: str, now: int) -> bool:
    key = r.key
    p, a = r.policy, r.auth
    trust = _trust(store, r)
    inserted = store.execute(
        "INSERT INTO received_aggregate (report_key, org_name, email, extra_contact_info, "
        "report_id, policy_domain, date_begin, date_end, p, sp, np, adkim, aspf, pct, fo, "
        "testing, discovery_method, format, generator, errors, notes, records, messages, "
        "source, imported_at, auth_domain, auth_result, from_domain, trust) VALUES (?, ?, ?, "
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (report_key) DO NOTHING",
        (key, r.org_name, r.email, r.extra_contact_info, r.report_id, p.domain, r.begin, r.end,
         p.p, p.sp, p.np, p.adkim, p.aspf, p.pct, p.fo, p.testing, p.discovery_method,
         r.format, r.generator, _json(list(r.errors)), _json(list(r.notes)), len(r.records),
         r.messages, source, now, a.domain, a.result.value, a.from_domain, trust.value),
    )  # fmt: skip
    if not inserted:
        return False
    rows = [
        (key, number, r.org_name, p.domain, r.begin, r.end, rec.source_ip, rec.count,
         rec.disposition, rec.dkim, rec.spf,
         _json([[x.type, x.comment] for x in rec.reasons]),
         rec.header_from, rec.envelope_from, rec.envelope_to,
         _json([[d.domain, d.selector, d.result, d.human_result] for d in rec.auth_dkim]),
         _json([[s.domain, s.scope, s.result, s.human_result] for s in rec.auth_spf]),
         trust.value, a.domain)
        for number, rec in enumerate(r.records)
    ]  # fmt: skip
    for start in range(0, len(rows), 5000):
        store.executemany(
            "INSERT INTO received_records (report_key, record_no, org_name, policy_domain, "
            "date_begin, date_end, source_ip, messages, disposition, dkim, spf, reasons, "
            "header_from, envelope_from, envelope_to, auth_dkim, auth_spf, trust, auth_domain) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows[start : start + 5000],
        )
    return True


def _trust(store: Store, r: AggregateReport) -> Trust:
    """``r``'s trust, and its copies' updated (in the caller's transaction): a report of
    which an authenticated copy is stored already (under another key: unauthenticated, or
    signed with another d= of the same organisation) is superseded; an authenticated one
    supersedes the unauthenticated copies of it."""
    trust = trust_of(r)
    copies = [
        (str(key), Trust(str(copy_trust)))
        for key, org_name, email, copy_trust in store.fetchall(
            "SELECT report_key, org_name, email, trust FROM received_aggregate "
            "WHERE report_id = ?",
            (r.report_id,),
        )
        if _same(str(org_name), r.org_name) and _same(str(email), r.email) and key != r.key
    ]  # fmt: skip
    if any(copy_trust == Trust.AUTHENTICATED for _, copy_trust in copies):
        return Trust.SUPERSEDED
    if trust == Trust.AUTHENTICATED:
        for key, copy_trust in copies:
            if copy_trust == Trust.UNAUTHENTICATED:
                for table in ("received_aggregate", "received_records"):
                    store.execute(
                        f"UPDATE {table} SET trust = ? WHERE report_key = ?",  # noqa: S608 - constant names
                        (Trust.SUPERSEDED.value, key),
                    )
    return trust


def _same(a: str, b: str) -> bool:
    """Reporter names as :func:`.model.report_key` compares them."""
    return a.strip().lower() == b.strip().lower()


FAILURE_COLUMNS = (
    "reporter", "email", "report_id", "arrival_date", "source_ip", "reported_domain",
    "feedback_type", "auth_failure", "identity_alignment", "header_from",
    "original_mail_from", "original_rcpt_to", "dkim_domain", "dkim_identity", "dkim_selector",
    "spf_dns", "authentication_results", "delivery_result", "message_id", "subject",
    "user_agent", "arf", "original_headers",
)  # fmt: skip


def _save_failure(store: Store, r: FailureReport, source: str, now: int) -> bool:
    values = [getattr(r, name) for name in FAILURE_COLUMNS]
    values[FAILURE_COLUMNS.index("arf")] = "arf" if r.arf else "text"
    columns = ", ".join(FAILURE_COLUMNS)
    marks = ", ".join("?" * (len(FAILURE_COLUMNS) + 6))
    a = r.auth
    return bool(
        store.execute(
            f"INSERT INTO received_failures (report_key, {columns}, source, imported_at, "  # noqa: S608 - column names are constants
            f"auth_domain, auth_result, from_domain) VALUES ({marks}) "
            "ON CONFLICT (report_key) DO NOTHING",
            (r.key, *values, source, now, a.domain, a.result.value, a.from_domain),
        )
    )


def _save_tls(store: Store, r: TlsReport, source: str, now: int) -> bool:
    key = r.key
    success = sum(p.success for p in r.policies)
    failure = sum(p.failure for p in r.policies)
    a = r.auth
    inserted = store.execute(
        "INSERT INTO received_tls (report_key, org_name, email, report_id, date_begin, "
        "date_end, policies, success, failure, source, imported_at, auth_domain, auth_result, "
        "from_domain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (report_key) DO NOTHING",
        (key, r.org_name, r.email, r.report_id, r.begin, r.end, len(r.policies), success,
         failure, source, now, a.domain, a.result.value, a.from_domain),
    )  # fmt: skip
    if not inserted:
        return False
    store.executemany(
        "INSERT INTO received_tls_policies (report_key, policy_no, policy_domain, date_begin, "
        "date_end, policy_type, policy_strings, mx_hosts, success, failure, failure_details) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (key, number, p.policy_domain, r.begin, r.end, p.policy_type,
             _json(list(p.policy_strings)), _json(list(p.mx_hosts)), p.success, p.failure,
             _json([_failure_dict(f) for f in p.failures]))
            for number, p in enumerate(r.policies)
        ],
    )  # fmt: skip
    return True


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json(value: list[Any]) -> str:
    """``value`` as compact JSON (most lists in a report are empty: no encoder call)."""
    return _ENCODE(value) if value else "[]"


def _failure_dict(f: TlsFailure) -> dict[str, Any]:
    return {
        "result_type": f.result_type,
        "failed_session_count": f.failed_session_count,
        "sending_mta_ip": f.sending_mta_ip,
        "receiving_mx_hostname": f.receiving_mx_hostname,
        "receiving_mx_helo": f.receiving_mx_helo,
        "receiving_ip": f.receiving_ip,
        "additional_information": f.additional_information,
        "failure_reason_code": f.failure_reason_code,
    }
