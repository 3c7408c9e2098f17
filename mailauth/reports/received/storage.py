"""The received reports in the store (schema migration 2, :mod:`mailauth.reports.schema`):
writing a report once, and the queries that summaries and dashboards are built on.

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

The queries take a domain and a period (``since`` <= the report's begin < ``until``, Unix
times) and read one index range (``(policy_domain, date_begin)``); rows are streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mailauth.reports.received.authenticate import trust_of
from mailauth.reports.received.lock import lock_report
from mailauth.reports.received.model import (
    BARE_FILE,
    AggregateRecord,
    AggregateReport,
    AuthResult,
    DkimAuth,
    FailureReport,
    Reason,
    Report,
    ReportAuth,
    ReportedPolicy,
    SpfAuth,
    TlsFailure,
    TlsPolicy,
    TlsReport,
    Trust,
)
from mailauth.reports.store import Store

FOREVER = 1 << 62  # the default ``until``: no end


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


def stored_aggregate(store: Store, key: str) -> StoredAggregate | None:
    """The stored aggregate report with ``key``; None when there is none."""
    rows = store.fetchall(
        "SELECT policy_domain, records, messages, notes FROM received_aggregate "
        "WHERE report_key = ?",
        (key,),
    )
    if not rows:
        return None
    domain, records, messages, notes = rows[0]
    return StoredAggregate(str(domain), int(records), int(messages),
                           tuple(str(n) for n in json.loads(notes)))  # fmt: skip


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


_FAILURE_COLUMNS = (
    "reporter", "email", "report_id", "arrival_date", "source_ip", "reported_domain",
    "feedback_type", "auth_failure", "identity_alignment", "header_from",
    "original_mail_from", "original_rcpt_to", "dkim_domain", "dkim_identity", "dkim_selector",
    "spf_dns", "authentication_results", "delivery_result", "message_id", "subject",
    "user_agent", "arf", "original_headers",
)  # fmt: skip


def _save_failure(store: Store, r: FailureReport, source: str, now: int) -> bool:
    values = [getattr(r, name) for name in _FAILURE_COLUMNS]
    values[_FAILURE_COLUMNS.index("arf")] = "arf" if r.arf else "text"
    columns = ", ".join(_FAILURE_COLUMNS)
    marks = ", ".join("?" * (len(_FAILURE_COLUMNS) + 6))
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


# -- queries ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DomainTotals:
    """A policy domain's aggregate reports in the store: how many, messages, dates."""

    domain: str
    reports: int
    messages: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """A stored aggregate record with the report it came in (key, reporter, period)."""

    report_key: str
    org_name: str
    policy_domain: str
    begin: int
    end: int
    record: AggregateRecord


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """A stored aggregate report's metadata (its records: :func:`received_records`)."""

    report_key: str
    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    policy: ReportedPolicy
    records: int
    messages: int
    format: str
    source: str
    imported_at: int
    auth: ReportAuth = BARE_FILE
    trust: Trust = Trust.UNAUTHENTICATED


@dataclass(frozen=True, slots=True)
class ReceivedTlsPolicy:
    """A stored TLS report policy with its report's reporter and period."""

    report_key: str
    org_name: str
    report_id: str
    begin: int
    end: int
    policy: TlsPolicy


def received_domains(store: Store) -> list[DomainTotals]:
    """Every policy domain with aggregate reports, by name."""
    rows = store.fetchall(
        "SELECT policy_domain, COUNT(*), SUM(messages), MIN(date_begin), MAX(date_end) "
        "FROM received_aggregate GROUP BY policy_domain ORDER BY policy_domain"
    )
    return [DomainTotals(str(d), int(n), int(m or 0), int(a), int(b)) for d, n, m, a, b in rows]


def received_reports(
    store: Store, domain: str, since: int = 0, until: int = FOREVER
) -> list[ReceivedReport]:
    """The aggregate reports about ``domain`` that begin in [since, until), oldest first."""
    rows = store.fetchall(
        "SELECT report_key, org_name, email, report_id, date_begin, date_end, policy_domain, "
        "p, sp, np, adkim, aspf, pct, fo, testing, discovery_method, records, messages, "
        "format, source, imported_at, auth_result, auth_domain, from_domain, trust "
        "FROM received_aggregate WHERE policy_domain = ? "
        "AND date_begin >= ? AND date_begin < ? ORDER BY date_begin, report_key",
        (domain, since, until),
    )
    return [
        ReceivedReport(
            report_key=str(r[0]),
            org_name=str(r[1]),
            email=str(r[2]),
            report_id=str(r[3]),
            begin=int(r[4]),
            end=int(r[5]),
            policy=ReportedPolicy(*(str(x) for x in r[6:16])),
            records=int(r[16]),
            messages=int(r[17]),
            format=str(r[18]),
            source=str(r[19]),
            imported_at=int(r[20]),
            auth=ReportAuth(AuthResult(str(r[21])), str(r[22]), str(r[23])),
            trust=Trust(str(r[24])),
        )
        for r in rows
    ]


def received_records(
    store: Store, domain: str, since: int = 0, until: int = FOREVER
) -> Iterator[ReceivedRecord]:
    """The aggregate records about ``domain`` from reports that begin in [since, until),
    streamed (memory: one batch of rows), by report date."""
    for r in store.stream(
        "SELECT report_key, org_name, policy_domain, date_begin, date_end, source_ip, "
        "messages, disposition, dkim, spf, reasons, header_from, envelope_from, envelope_to, "
        "auth_dkim, auth_spf FROM received_records WHERE policy_domain = ? "
        "AND date_begin >= ? AND date_begin < ? ORDER BY date_begin, report_key, record_no",
        (domain, since, until),
    ):
        record = AggregateRecord(
            source_ip=str(r[5]),
            count=int(r[6]),
            disposition=str(r[7]),
            dkim=str(r[8]),
            spf=str(r[9]),
            reasons=tuple(Reason(str(t), str(c)) for t, c in json.loads(r[10])),
            header_from=str(r[11]),
            envelope_from=str(r[12]),
            envelope_to=str(r[13]),
            auth_dkim=tuple(DkimAuth(*map(str, d)) for d in json.loads(r[14])),
            auth_spf=tuple(SpfAuth(*map(str, s)) for s in json.loads(r[15])),
        )
        yield ReceivedRecord(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), record)


def received_failures(
    store: Store, domain: str, since: int = 0, until: int = FOREVER, limit: int = 1000
) -> list[FailureReport]:
    """The failure reports about ``domain`` that arrived in [since, until), newest first, at
    most ``limit``."""
    columns = ", ".join(_FAILURE_COLUMNS)
    rows = store.fetchall(
        f"SELECT {columns}, auth_result, auth_domain, from_domain FROM received_failures "  # noqa: S608 - column names are constants
        "WHERE reported_domain = ? AND arrival_date >= ? AND arrival_date < ? "
        "ORDER BY arrival_date DESC, report_key LIMIT ?",
        (domain, since, until, limit),
    )
    out = []
    for row in rows:
        values: dict[str, Any] = dict(zip(_FAILURE_COLUMNS, row[:-3], strict=True))
        values["arrival_date"] = int(values["arrival_date"])
        values["arf"] = values["arf"] == "arf"
        auth = ReportAuth(AuthResult(str(row[-3])), str(row[-2]), str(row[-1]))
        out.append(FailureReport(**values, auth=auth))
    return out


def received_tls_policies(
    store: Store, domain: str, since: int = 0, until: int = FOREVER
) -> list[ReceivedTlsPolicy]:
    """The TLS report policies about ``domain`` from reports that begin in [since, until)."""
    rows = store.fetchall(
        "SELECT p.report_key, t.org_name, t.report_id, p.date_begin, p.date_end, "
        "p.policy_type, p.policy_domain, p.success, p.failure, p.policy_strings, p.mx_hosts, "
        "p.failure_details FROM received_tls_policies p JOIN received_tls t "
        "ON t.report_key = p.report_key WHERE p.policy_domain = ? AND p.date_begin >= ? "
        "AND p.date_begin < ? ORDER BY p.date_begin, p.report_key, p.policy_no",
        (domain, since, until),
    )
    out = []
    for r in rows:
        failures = tuple(TlsFailure(**f) for f in json.loads(r[11]))
        policy = TlsPolicy(str(r[5]), str(r[6]), int(r[7]), int(r[8]),
                           tuple(json.loads(r[9])), tuple(json.loads(r[10])), failures)  # fmt: skip
        out.append(ReceivedTlsPolicy(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]),
                                     policy))  # fmt: skip
    return out
