"""The received reports in the store, read back (:mod:`.storage` writes them): the queries
that summaries and dashboards are built on, for library users too (docs/reports.md "What is
stored").

Each takes a domain and a period (``since`` <= the report's begin < ``until``, Unix times)
and reads one index range (``(policy_domain, date_begin)``); rows are streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mailauth.reports.received.model import (
    BARE_FILE,
    AggregateRecord,
    AuthResult,
    DkimAuth,
    FailureReport,
    Reason,
    ReportAuth,
    ReportedPolicy,
    SpfAuth,
    TlsFailure,
    TlsPolicy,
    Trust,
)
from mailauth.reports.received.storage import FAILURE_COLUMNS
from mailauth.reports.store import Store

FOREVER = 1 << 62  # the default ``until``: no end


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
    columns = ", ".join(FAILURE_COLUMNS)
    rows = store.fetchall(
        f"SELECT {columns}, auth_result, auth_domain, from_domain FROM received_failures "  # noqa: S608 - column names are constants
        "WHERE reported_domain = ? AND arrival_date >= ? AND arrival_date < ? "
        "ORDER BY arrival_date DESC, report_key LIMIT ?",
        (domain, since, until, limit),
    )
    out = []
    for row in rows:
        values: dict[str, Any] = dict(zip(FAILURE_COLUMNS, row[:-3], strict=True))
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
