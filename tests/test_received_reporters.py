"""Who a summary says reported (issue 17, item 2) and which failure samples the dashboard
shows (4b). A report's ``org_name`` is whatever its XML says: anyone can write "google.com".
Summaries, their JSON and CSV and the dashboard list an authenticated report's reporter as
the organisational domain that signed its e-mail, and an unauthenticated one's (counted
only with --include-unauthenticated) as its org_name marked unverified. Failure reports
follow the aggregate reports' rule: the unauthenticated ones only with
--include-unauthenticated, and a report stored both ways once. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.reports.dashboard import failure_samples, render_dashboard
from mailauth.reports.received.model import (
    AggregateRecord,
    AggregateReport,
    AuthResult,
    ReportAuth,
    ReportedPolicy,
)
from mailauth.reports.received.storage import save_report
from mailauth.reports.schema import MIGRATIONS, SCHEMA_VERSION
from mailauth.reports.store import Store, open_store
from mailauth.reports.summary import Reporter, summarize
from tests.summary_data import day, failure_sample

JANUARY = (day("2026-01-01"), day("2026-02-01"))


def _report(org: str, email: str, report_id: str, ip: str, count: int) -> AggregateReport:
    record = AggregateRecord(ip, count, "none", "pass", "pass", header_from="example.com")
    start = day("2026-01-10")
    return AggregateReport(org, email, report_id, start, start + 86_399,
                           ReportedPolicy("example.com", p="none"), (record,))  # fmt: skip


def _signed(report: AggregateReport, domain: str) -> AggregateReport:
    """``report`` as imported from an e-mail from its <email> that ``domain`` signed."""
    sender = report.email.lower()
    auth = ReportAuth(AuthResult.PASS, domain, sender.rpartition("@")[2], from_address=sender)
    return replace(report, auth=auth)


def _fill(store: Store) -> None:
    """google.com's real report (signed by mail.google.com); a report claiming org_name
    "google.com", sent and signed by evil.example from its own address (authenticated: by
    evil.example); a bare file claiming "Yahoo" (unauthenticated)."""
    now = day("2026-02-01")
    real = _report("google.com", "noreply-dmarc-support@google.com", "g-1", "192.0.2.1", 100)
    claimed = _report("google.com", "dmarc@evil.example", "e-1", "192.0.2.1", 7)
    bare = _report("Yahoo", "dmarc@yahoo.com", "y-1", "192.0.2.1", 3)
    save_report(store, _signed(real, "mail.google.com"), source="t", now=now)
    save_report(store, _signed(claimed, "evil.example"), source="t", now=now)
    save_report(store, bare, source="t", now=now)


@pytest.fixture
def filled(store_url: str) -> str:
    store = open_store(store_url)
    try:
        _fill(store)
    finally:
        store.close()
    return store_url


def test_an_authenticated_reporter_is_its_signing_organisation_not_its_org_name(
    filled: str,
) -> None:
    store = open_store(filled)
    try:
        found = summarize(store, "example.com", *JANUARY)
        everything = summarize(store, "example.com", *JANUARY, include_unauthenticated=True)
    finally:
        store.close()
    [source] = found.sources
    assert source.reporters == [Reporter("google.com", 100, True),
                                Reporter("evil.example", 7, True)]  # fmt: skip
    assert (found.reports, found.reporters) == (2, 2)
    [source] = everything.sources
    assert source.reporters == [Reporter("google.com", 100, True),
                                Reporter("evil.example", 7, True),
                                Reporter("Yahoo", 3, False)]  # fmt: skip
    assert (everything.reports, everything.reporters) == (3, 3)
    assert [r.label for r in source.reporters] == ["google.com", "evil.example",
                                                   "Yahoo (unverified)"]  # fmt: skip


def test_an_unverified_org_name_never_merges_with_a_verified_domain(store_url: str) -> None:
    """A bare file claiming org_name "google.com" is listed apart from the real google.com,
    marked unverified."""
    store = open_store(store_url)
    try:
        real = _report("google.com", "noreply-dmarc-support@google.com", "g-1", "192.0.2.1", 100)
        fake = _report("google.com", "noreply-dmarc-support@google.com", "g-2", "192.0.2.1", 9)
        save_report(store, _signed(real, "google.com"), source="t", now=0)
        save_report(store, fake, source="t", now=0)
        found = summarize(store, "example.com", *JANUARY, include_unauthenticated=True)
    finally:
        store.close()
    assert found.sources[0].reporters == [Reporter("google.com", 100, True),
                                          Reporter("google.com", 9, False)]  # fmt: skip
    assert found.reporters == 2


def _cli(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> str:
    code = main(["reports", "summary", "example.com", "--store", url, "--since", "2026-01-01",
                 "--until", "2026-02-01", *extra])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    return out


def test_json_csv_and_table_show_the_verified_reporter(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(_cli(capsys, filled, "--json", "--include-unauthenticated"))
    assert data["sources"][0]["reporters"] == [
        {"reporter": "google.com", "messages": 100, "verified": True},
        {"reporter": "evil.example", "messages": 7, "verified": True},
        {"reporter": "Yahoo", "messages": 3, "verified": False},
    ]
    assert data["reporters"] == 3
    rows = list(csv.reader(io.StringIO(_cli(capsys, filled, "--csv",
                                            "--include-unauthenticated"))))  # fmt: skip
    assert rows[1][-1] == "google.com=100 evil.example=7 [unverified]Yahoo=3"
    table = _cli(capsys, filled, "--include-unauthenticated")
    assert "google.com, evil.example, Yahoo (unverified)" in table
    default = json.loads(_cli(capsys, filled, "--json"))
    names = [r["reporter"] for r in default["sources"][0]["reporters"]]
    assert names == ["google.com", "evil.example"]


def test_the_dashboard_shows_the_verified_reporter(filled: str) -> None:
    store = open_store(filled)
    try:
        found = summarize(store, "example.com", *JANUARY, include_unauthenticated=True)
        page = render_dashboard(store, found, generated=day("2026-02-01"))
    finally:
        store.close()
    row = page[page.index('<td data-sort="google.com">') :].split("</td>", 1)[0]
    assert "google.com (100), evil.example (7), " in row
    assert '<span class="unverified"' in row and "Yahoo (unverified)</span> (3)" in row


# -- failure samples (4b) ---------------------------------------------------------------------
def _failures(store: Store) -> None:
    """An authenticated failure report (reporter.example signed it), an unauthenticated one
    (a bare file), and a report stored both ways (a temperror copy, then the signed one)."""
    now = day("2026-02-01")
    signed = failure_sample("mta.reporter.example", "signed", "H: 1", "2026-01-10")
    sender = signed.email
    auth = ReportAuth(AuthResult.PASS, "reporter.example", "reporter.example",
                      from_address=sender)  # fmt: skip
    save_report(store, replace(signed, auth=auth), source="t", now=now)
    bare = failure_sample("forger.example", "bare", "H: 2", "2026-01-11")
    save_report(store, bare, source="t", now=now)
    twice = failure_sample("other.example", "twice", "H: 3", "2026-01-12")
    temperror = ReportAuth(AuthResult.TEMPERROR, "", "other.example")
    save_report(store, replace(twice, auth=temperror), source="t", now=now)
    passed = ReportAuth(AuthResult.PASS, "other.example", "other.example",
                        from_address=twice.email)  # fmt: skip
    save_report(store, replace(twice, auth=passed), source="t", now=now)


def test_failure_samples_unauthenticated_only_when_included_and_each_report_once(
    store_url: str,
) -> None:
    store = open_store(store_url)
    try:
        _failures(store)
        default = failure_samples(store, "example.com", *JANUARY)
        included = failure_samples(store, "example.com", *JANUARY, include_unauthenticated=True)
    finally:
        store.close()
    assert [(s.subject, s.reporter, s.verified) for s in default] == [
        ("twice", "other.example", True), ("signed", "reporter.example", True)]  # fmt: skip
    assert [(s.subject, s.reporter, s.verified) for s in included] == [
        ("twice", "other.example", True), ("bare", "forger.example", False),
        ("signed", "reporter.example", True)]  # fmt: skip


def test_the_dashboard_applies_the_rule_to_failure_samples(store_url: str) -> None:
    store = open_store(store_url)
    try:
        _failures(store)
        _fill(store)
        found = summarize(store, "example.com", *JANUARY)
        page = render_dashboard(store, found, generated=day("2026-02-01"))
        found_all = summarize(store, "example.com", *JANUARY, include_unauthenticated=True)
        page_all = render_dashboard(store, found_all, generated=day("2026-02-01"))
    finally:
        store.close()
    assert "From example.com &middot; signed" in page
    assert "&middot; bare" not in page
    assert page.count("&middot; twice") == 1
    assert "forger.example (unverified)</span>" in page_all and "&middot; bare" in page_all
    assert page_all.count("&middot; twice") == 1


def test_migration_6_copies_the_signing_domain_into_the_records(store_url: str) -> None:
    """A store of schema version 5 with an authenticated report: after the migration the
    summary names its reporter by the signing domain."""
    store = open_store(store_url, migrate=False)
    try:
        with store.write():
            for statements in MIGRATIONS[:5]:
                for statement in statements:
                    store.execute(statement)
            store.execute("CREATE TABLE mailauth_schema (version INTEGER NOT NULL)")
            store.execute("INSERT INTO mailauth_schema (version) VALUES (5)")
        # (written as version 5 wrote it: no auth_domain in the records)
        report = _signed(_report("Google Inc.", "dmarc@google.com", "g-9", "192.0.2.1", 4),
                         "google.com")  # fmt: skip
        with store.write():
            store.execute(
                "INSERT INTO received_aggregate (report_key, org_name, email, "
                "extra_contact_info, report_id, policy_domain, date_begin, date_end, p, sp, "
                "np, adkim, aspf, pct, fo, testing, discovery_method, format, generator, "
                "errors, notes, records, messages, source, imported_at, auth_domain, "
                "auth_result, from_domain, trust) VALUES (?, 'Google Inc.', 'dmarc@google.com',"
                " '', 'g-9', 'example.com', ?, ?, 'none', '', '', '', '', '', '', '', '', "
                "'rfc9990', '', '[]', '[]', 1, 4, 't', 0, 'google.com', 'pass', 'google.com', "
                "'authenticated')",
                (report.key, report.begin, report.end),
            )
            store.execute(
                "INSERT INTO received_records (report_key, record_no, org_name, policy_domain,"
                " date_begin, date_end, source_ip, messages, disposition, dkim, spf, reasons, "
                "header_from, envelope_from, envelope_to, auth_dkim, auth_spf, trust) VALUES "
                "(?, 0, 'Google Inc.', 'example.com', ?, ?, '192.0.2.1', 4, 'none', 'pass', "
                "'pass', '[]', 'example.com', '', '', '[]', '[]', 'authenticated')",
                (report.key, report.begin, report.end),
            )
            # (and a record whose report row was deleted by hand: '' for it, not a failed
            # migration -- the backfill's NULL in a NOT NULL column stopped the milter)
            store.execute(
                "INSERT INTO received_records (report_key, record_no, org_name, policy_domain,"
                " date_begin, date_end, source_ip, messages, disposition, dkim, spf, reasons, "
                "header_from, envelope_from, envelope_to, auth_dkim, auth_spf, trust) VALUES "
                "('gone', 0, 'Gone', 'gone.example', ?, ?, '192.0.2.2', 1, 'none', 'pass', "
                "'pass', '[]', 'gone.example', '', '', '[]', '[]', 'authenticated')",
                (report.begin, report.end),
            )
        assert store.migrate() == (5, SCHEMA_VERSION)
        gone = store.fetchall("SELECT auth_domain FROM received_records WHERE report_key = 'gone'")
        found = summarize(store, "example.com", *JANUARY)
    finally:
        store.close()
    assert found.sources[0].reporters == [Reporter("google.com", 4, True)]
    assert [tuple(row) for row in gone] == [("",)]


def test_the_docs_name_the_new_keys() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs/reports.md").read_text()
    for key in ("`verified`", "`auth_result`", "`auth_note`", "(unverified)"):
        assert key in text, key


def test_a_report_s_org_name_cannot_pass_for_a_verified_reporter_in_the_csv() -> None:
    from mailauth.cli.report_summary import _reporter_token

    forged = Reporter("google.com=250000 x", 3, False)
    assert _reporter_token(forged) == "[unverified]google.com%3D250000%20x=3"
    assert _reporter_token(Reporter("google.com", 100, True)) == "google.com=100"
