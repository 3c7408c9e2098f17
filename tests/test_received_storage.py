"""Received reports in the store (schema migration 2), on SQLite and a real PostgreSQL: each
kind written once by its key, read back equal by the queries, a duplicate not written again."""

from __future__ import annotations

from mailauth.reports import open_store
from mailauth.reports.received import (
    AggregateRecord,
    AggregateReport,
    DkimAuth,
    FailureReport,
    Reason,
    ReportedPolicy,
    SpfAuth,
    TlsFailure,
    TlsPolicy,
    TlsReport,
    received_domains,
    received_failures,
    received_records,
    received_reports,
    received_tls_policies,
    save_report,
)

DAY = 86400
T0 = 1_700_006_400

RECORDS = (
    AggregateRecord("192.0.2.1", 12, "none", "pass", "fail",
                    reasons=(Reason("forwarded", "list"),), header_from="example.com",
                    envelope_from="lists.example.org", envelope_to="example.net",
                    auth_dkim=(DkimAuth("example.com", "s1", "pass", "2048-bit key"),),
                    auth_spf=(SpfAuth("lists.example.org", "mfrom", "pass"),)),
    AggregateRecord("2001:db8::1", 3, "reject", "fail", "fail", header_from="example.com"),
)  # fmt: skip


def aggregate(
    report_id: str = "r1", begin: int = T0, org: str = "Example Receiver"
) -> AggregateReport:
    policy = ReportedPolicy("example.com", p="reject", sp="quarantine", np="reject",
                            adkim="r", aspf="s", pct="100", fo="1", testing="n",
                            discovery_method="treewalk")  # fmt: skip
    return AggregateReport(org, "dmarc@receiver.example", report_id, begin, begin + DAY - 1,
                           policy, RECORDS, generator="g", format="rfc9990")  # fmt: skip


def test_an_aggregate_report_is_stored_once_and_read_back(store_url: str) -> None:
    store = open_store(store_url)
    try:
        report = aggregate()
        assert save_report(store, report, source="a.xml", now=T0 + 2 * DAY)
        assert not save_report(store, report, source="b.xml", now=T0 + 3 * DAY)
        # (the key ignores the reporter's case and its surrounding spaces)
        same = aggregate(org=" EXAMPLE receiver")
        assert not save_report(store, same, source="c.xml", now=T0 + 3 * DAY)
        assert save_report(store, aggregate("r2", T0 + DAY), source="d.xml", now=T0)
        assert received_domains(store)[0].domain == "example.com"
        totals = received_domains(store)[0]
        assert (totals.reports, totals.messages, totals.first) == (2, 30, T0)
        reports = received_reports(store, "example.com")
        assert [r.report_id for r in reports] == ["r1", "r2"]
        assert reports[0].policy == report.policy
        assert (reports[0].records, reports[0].messages, reports[0].source) == (2, 15, "a.xml")
        assert received_reports(store, "example.com", since=T0 + 1) == [reports[1]]
        assert received_reports(store, "example.org") == []
        records = list(received_records(store, "example.com", until=T0 + DAY))
        assert [r.record for r in records] == list(RECORDS)
        assert {(r.org_name, r.begin, r.end) for r in records} == {
            ("Example Receiver", T0, T0 + DAY - 1)
        }
    finally:
        store.close()


def test_a_failure_report_is_stored_once_and_read_back(store_url: str) -> None:
    store = open_store(store_url)
    try:
        report = FailureReport("mta.receiver.example", "dmarc@receiver.example", "<id@x>",
                               feedback_type="auth-failure", auth_failure="dmarc",
                               arrival_date=T0, source_ip="192.0.2.9",
                               reported_domain="example.com", original_headers="From: x\r\n",
                               arf=False)  # fmt: skip
        assert save_report(store, report, source="f.eml", now=T0)
        assert not save_report(store, report, source="f.eml", now=T0)
        assert received_failures(store, "example.com") == [report]
        assert received_failures(store, "example.com", since=T0 + 1) == []
    finally:
        store.close()


def test_a_tls_report_is_stored_once_and_read_back(store_url: str) -> None:
    store = open_store(store_url)
    try:
        failure = TlsFailure("certificate-expired", 3, sending_mta_ip="192.0.2.5",
                             receiving_mx_hostname="mx.example.com")  # fmt: skip
        policy = TlsPolicy("sts", "example.com", 100, 3, ("version: STSv1", "mode: enforce"),
                           ("mx.example.com",), (failure,))  # fmt: skip
        report = TlsReport("Example TLS", "mailto:tls@receiver.example", "2026-01-01T00:00:00Z",
                           T0, T0 + DAY - 1, (policy,))  # fmt: skip
        assert save_report(store, report, source="t.json.gz", now=T0)
        assert not save_report(store, report, source="t.json.gz", now=T0)
        [stored] = received_tls_policies(store, "example.com")
        assert (stored.org_name, stored.begin, stored.policy) == ("Example TLS", T0, policy)
        rows = store.fetchall("SELECT policies, success, failure FROM received_tls")
        assert [tuple(map(int, row)) for row in rows] == [(1, 100, 3)]
    finally:
        store.close()
