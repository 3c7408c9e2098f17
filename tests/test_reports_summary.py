"""mailauth.reports.summary and ``mailauth reports summary``: the numbers of a hand-built set
of received reports (the expected values written here, worked out by hand), on SQLite and a
real PostgreSQL; organisations; reverse names over a zone resolver; JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.cli.common import CliError
from mailauth.cli.report_summary import CSV_COLUMNS, parse_when
from mailauth.dns import DnsStatus, Lookup, ZoneResolver
from mailauth.plan import Resolve
from mailauth.reports.reverse import (
    BATCH,
    ReverseName,
    ReverseStatus,
    resolve_reverse_names,
    reverse_names_plan,
)
from mailauth.reports.store import open_store
from mailauth.reports.summary import (
    Reporter,
    SourceSummary,
    organisation_of,
    readiness,
    summarize,
)
from tests.report_auth_helpers import zone_file
from tests.summary_data import day, hand_built_reports, store_reports

JANUARY = (day("2026-01-01"), day("2026-02-01"))

ZONE = """$ORIGIN example.
$TTL 300
; mailauth-fault: 1.2.0.192.in-addr.arpa. servfail
9.113.0.203.in-addr.arpa. PTR mta7.bulk-mailer.co.uk.
mta7.bulk-mailer.co.uk. A 203.0.113.9
7.100.51.198.in-addr.arpa. PTR o1.ptr.sendgrid.example.
o1.ptr.sendgrid.example. A 198.51.100.99
"""


@pytest.fixture
def filled(store_url: str) -> str:
    store = open_store(store_url)
    try:
        store_reports(store, hand_built_reports())
    finally:
        store.close()
    return store_url


def test_summary_numbers(filled: str) -> None:
    """192.0.2.1: 100 (google, DKIM+SPF aligned) + 50 (Yahoo, DKIM only) = 150, SPF 100/150,
    DKIM 150/150, DMARC 150. 198.51.100.7: 40 (DKIM aligned) + 10 (SPF aligned) = 50, SPF
    10/50, DKIM 40/50, DMARC 50. 203.0.113.9: 10 + 5, nothing aligned: 15 fail, 5 rejected.
    Left out: example.org's report and December's."""
    store = open_store(filled)
    try:
        found = summarize(store, "Example.COM", *JANUARY)
    finally:
        store.close()
    assert (found.domain, found.messages, found.reports, found.reporters) == (
        "example.com", 215, 2, 2,
    )  # fmt: skip
    rows = {
        s.ip: (s.messages, s.spf_aligned, s.dkim_aligned, s.dmarc_pass, s.dmarc_fail)
        for s in found.sources
    }
    assert rows == {
        "192.0.2.1": (150, 100, 150, 150, 0),
        "198.51.100.7": (50, 10, 40, 50, 0),
        "203.0.113.9": (15, 0, 0, 0, 15),
    }
    assert [s.ip for s in found.sources] == ["192.0.2.1", "198.51.100.7", "203.0.113.9"]
    first, second, third = found.sources
    assert round(first.rate(first.spf_aligned), 4) == 0.6667
    assert second.rate(second.dkim_aligned) == 0.8
    assert third.dispositions == {"none": 10, "reject": 5}
    # (listed by the domain that signed each report, the organisational domain of
    # dmarc@yahoo's d=, not by the org_name "Yahoo" the XML claims)
    assert first.reporters == [Reporter("google.com", 100, True), Reporter("yahoo", 50, True)]
    assert third.reporters == [Reporter("google.com", 10, True), Reporter("yahoo", 5, True)]
    assert [(s.organisation, s.organisation_from) for s in found.sources] == [
        ("example.com", "dkim"),  # only the owner's own signature passed
        ("sendgrid.net", "dkim"),  # an ESP's own d= beside the owner's
        ("unknown", ""),  # nothing passed
    ]
    assert [(o.name, o.sources, o.messages, o.dmarc_pass) for o in found.organisations] == [
        ("example.com", 1, 150, 150), ("sendgrid.net", 1, 50, 50), ("unknown", 1, 15, 0),
    ]  # fmt: skip
    assert (found.readiness.failing, found.readiness.failing_sources) == (15, 1)
    assert found.readiness.lines() == [
        "15 messages (7.0 %) from 1 source would be rejected under p=reject; the largest: "
        "203.0.113.9 (unknown) 15",
        "the same 15 messages would be quarantined under p=quarantine",
    ]


def test_summary_period_and_domain(filled: str) -> None:
    """Only reports whose period begins in [since, until): 10 January alone is google's
    report (150 messages); December holds the 7 of the earlier report; example.org its own."""
    store = open_store(filled)
    try:
        tenth = summarize(store, "example.com", day("2026-01-10"), day("2026-01-11"))
        december = summarize(store, "example.com", day("2025-12-01"), day("2026-01-01"))
        other = summarize(store, "example.org", *JANUARY)
        nothing = summarize(store, "example.net", *JANUARY)
    finally:
        store.close()
    assert (tenth.messages, tenth.reports, len(tenth.sources)) == (150, 1, 3)
    assert (december.messages, december.readiness.failing) == (7, 7)
    assert (other.messages, other.readiness.failing) == (1000, 1000)
    assert (nothing.messages, nothing.sources, nothing.readiness.lines()) == (
        0, (), ["no messages reported for this domain in this period"],
    )  # fmt: skip


def test_readiness_when_everything_passes(filled: str) -> None:
    store = open_store(filled)
    try:
        found = summarize(store, "example.com", *JANUARY)
    finally:
        store.close()
    passing = tuple(s for s in found.sources if not s.dmarc_fail)
    verdict = readiness(passing)
    assert (verdict.messages, verdict.failing, verdict.largest) == (200, 0, ())
    assert verdict.lines() == [
        "all 200 messages passed DMARC: none would be rejected under p=reject or quarantined "
        "under p=quarantine"
    ]


def _source(**counts: dict[str, int]) -> SourceSummary:
    source = SourceSummary("192.0.2.1")
    source.dkim_domains.update(counts.get("dkim", {}))
    source.spf_domains.update(counts.get("spf", {}))
    return source


def test_organisation_rules() -> None:
    """A verified reverse name wins; then a passing d= other than the owner's (by messages),
    then a passing SPF domain other than the owner's; then the owner's own; else unknown.
    Organisational domains by the public suffix list (co.uk is a suffix)."""
    ptr = _source(dkim={"sendgrid.net": 5})
    ptr.reverse = ReverseName(ReverseStatus.VERIFIED, "mta7.bulk-mailer.co.uk")
    assert organisation_of(ptr, "example.com") == ("bulk-mailer.co.uk", "ptr")
    unverified = _source(spf={"mail.amazonses.com": 3})
    unverified.reverse = ReverseName(ReverseStatus.UNVERIFIED, "mta7.bulk-mailer.co.uk")
    assert organisation_of(unverified, "example.com") == ("amazonses.com", "spf")
    both = _source(dkim={"example.com": 90, "s.mailchimp.example.net": 10, "x.sendgrid.net": 20})
    assert organisation_of(both, "mail.example.com") == ("sendgrid.net", "dkim")
    own = _source(dkim={"example.com": 9}, spf={"bounce.example.com": 9})
    assert organisation_of(own, "news.example.com") == ("example.com", "dkim")
    assert organisation_of(_source(spf={"example.com": 1}), "example.com") == ("example.com", "spf")
    assert organisation_of(_source(), "example.com") == ("unknown", "")


def test_reverse_names_from_dns() -> None:
    """Verified (PTR name resolves back), unverified, none (NXDOMAIN), unknown (SERVFAIL,
    an address that is not one)."""
    resolver = ZoneResolver.from_text(ZONE)
    found = resolve_reverse_names(
        ["203.0.113.9", "198.51.100.7", "192.0.2.77", "192.0.2.1", "not-an-ip"], resolver
    )
    assert found == {
        "203.0.113.9": ReverseName(ReverseStatus.VERIFIED, "mta7.bulk-mailer.co.uk"),
        "198.51.100.7": ReverseName(ReverseStatus.UNVERIFIED, "o1.ptr.sendgrid.example"),
        "192.0.2.77": ReverseName(ReverseStatus.NONE),
        "192.0.2.1": ReverseName(ReverseStatus.UNKNOWN),
        "not-an-ip": ReverseName(ReverseStatus.UNKNOWN),
    }


def test_reverse_names_in_batches_within_budget() -> None:
    """At most BATCH questions per step (the asyncio runner asks one step concurrently);
    with 3 questions per address and a time limit, a slow resolver yields ``unknown``."""
    addresses = [f"192.0.2.{n}" for n in range(1, 101)]
    plan = reverse_names_plan(addresses)
    sizes = []
    effect = next(plan)
    try:
        while True:
            assert isinstance(effect, Resolve)
            sizes.append(len(effect.queries))
            effect = plan.send(
                tuple(Lookup(q.name, q.rdtype, DnsStatus.NXDOMAIN) for q in effect.queries)
            )
    except StopIteration as stop:
        result = stop.value
    assert sizes == [BATCH, BATCH, BATCH, 100 - 3 * BATCH]
    assert {r.status for r in result.values()} == {ReverseStatus.NONE}


def test_reverse_names_never_fatal() -> None:
    """Every question timing out: every source unknown, no exception."""
    zone = "; mailauth-fault: 2.0.192.in-addr.arpa. timeout\n"
    resolver = ZoneResolver.from_text(zone + "$ORIGIN example.\nx 300 A 192.0.2.1\n")
    found = resolve_reverse_names(["192.0.2.1", "192.0.2.2"], resolver)
    assert {r.status for r in found.values()} <= {ReverseStatus.UNKNOWN, ReverseStatus.NONE}


# -- the command -------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["reports", "summary", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_shape(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "example.com", "--store", filled, "--since", "2026-01-01", "--until",
        "2026-02-01", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == {
        "domain", "since", "until", "reports", "reporters", "messages", "readiness",
        "organisations", "sources", "unauthenticated",
    }  # fmt: skip
    assert data["unauthenticated"] == {"reports": 0, "messages": 0, "superseded": 0,
                                       "included": False}  # fmt: skip
    assert (data["since"], data["until"], data["messages"]) == (*JANUARY, 215)
    assert data["readiness"]["would_reject"] == data["readiness"]["would_quarantine"] == 15
    assert data["readiness"]["largest"] == [
        {"source_ip": "203.0.113.9", "organisation": "unknown", "dmarc_fail": 15}
    ]
    assert data["sources"][1] == {
        "source_ip": "198.51.100.7", "reverse_name": "", "reverse_status": "not asked",
        "organisation": "sendgrid.net", "organisation_from": "dkim", "messages": 50,
        "spf_aligned_pass": 10, "dkim_aligned_pass": 40, "dmarc_pass": 50, "dmarc_fail": 0,
        "spf_aligned_rate": 0.2, "dkim_aligned_rate": 0.8, "dmarc_pass_rate": 1.0,
        "dispositions": {"none": 50},
        "reporters": [{"reporter": "google.com", "messages": 40, "verified": True},
                      {"reporter": "yahoo", "messages": 10, "verified": True}],
    }  # fmt: skip
    assert data["organisations"][0] == {
        "organisation": "example.com", "sources": 1, "messages": 150,
        "spf_aligned_rate": 0.6667, "dkim_aligned_rate": 1.0, "dmarc_pass_rate": 1.0,
        "dmarc_fail": 0,
    }  # fmt: skip


def test_cli_csv_shape(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "example.com", "--store", filled, "--since", "2026-01-01", "--until",
        "2026-02-01", "--csv",
    )  # fmt: skip
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1:] == [
        ["example.com", "192.0.2.1", "", "not asked", "150", "0.6667", "1.0", "1.0", "0",
         "150", "0", "0", "0", "google.com=100 yahoo=50"],
        ["sendgrid.net", "198.51.100.7", "", "not asked", "50", "0.2", "0.8", "1.0", "0",
         "50", "0", "0", "0", "google.com=40 yahoo=10"],
        ["unknown", "203.0.113.9", "", "not asked", "15", "0.0", "0.0", "0.0", "15",
         "10", "0", "0", "5", "google.com=10 yahoo=5"],
    ]  # fmt: skip


def test_cli_table_and_resolve(filled: str, capsys: pytest.CaptureFixture[str],
                               tmp_path: Path) -> None:  # fmt: skip
    zone = tmp_path / "reverse.zone"
    zone.write_text(ZONE)
    code, out, err = _run(
        capsys, "example.com", "--store", filled, "--since", "2026-01-01", "--until",
        "2026-02-01", "--resolve", "--dns-zone", str(zone),
    )  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        "example.com: 215 messages from 3 sources in 2 reports by 2 reporters "
        "(2026-01-01 00:00 - 2026-02-01 00:00 UTC)"
    )
    assert lines[1].startswith("15 messages (7.0 %) from 1 source would be rejected under ")
    assert "203.0.113.9 (bulk-mailer.co.uk) 15" in lines[1]
    assert any(
        line.split()[:4] == ["203.0.113.9", "mta7.bulk-mailer.co.uk", "bulk-mailer.co.uk", "15"]
        for line in lines
    )
    assert any("o1.ptr.sendgrid.example (unverified)" in line for line in lines)
    assert any(line.split()[:2] == ["192.0.2.1", "unknown"] for line in lines)


def test_cli_since_spans_and_errors(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    until = day("2026-01-12")
    assert parse_when("2d", until) == day("2026-01-10")
    assert parse_when("1w", until) == day("2026-01-05")
    assert parse_when("12h", until) == until - 43_200
    assert parse_when("2026-01-10T06:30", 0) == day("2026-01-10") + 23_400
    with pytest.raises(CliError, match="not a date"):
        parse_when("yesterday", until)
    code, out, _ = _run(
        capsys, "example.com", "--store", filled, "--until", "2026-01-12", "--since", "1d",
        "--json",
    )  # fmt: skip
    assert (code, json.loads(out)["messages"]) == (0, 65)  # (Yahoo's report of the 11th)
    for args, message in (
        (("--since", "soon"), "not a date"),
        (("--since", "2026-02-01", "--until", "2026-01-01"), "--since must be before --until"),
        (("--top", "0"), "--top must be at least 1"),
    ):
        code, out, err = _run(capsys, "example.com", "--store", filled, *args)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and message in err
    code, _, err = _run(capsys, "exa mple.com", "--store", filled)
    assert code == 2 and err.count("\n") == 1


def test_cli_csv_cells_cannot_be_formulas(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from mailauth.reports.received import AggregateRecord, AggregateReport, ReportedPolicy

    url = str(tmp_path / "r.sqlite")
    store = open_store(url)
    record = AggregateRecord("192.0.2.5", 3, "none", "fail", "fail")
    report = AggregateReport(
        '=HYPERLINK("http://x")', "a@b", "1", day("2026-01-03"), day("2026-01-04") - 1,
        ReportedPolicy("example.com"), (record,),
    )  # fmt: skip
    store_reports(store, [report], authenticated=False)  # (its org_name is shown)
    store.close()
    code, out, _ = _run(capsys, "example.com", "--store", url, "--since", "2026-01-01",
                        "--until", "2026-02-01", "--csv", "--include-unauthenticated")  # fmt: skip
    assert code == 0
    row = list(csv.reader(io.StringIO(out)))[1]
    assert row[-1] == "[unverified]%3DHYPERLINK%28%22http:%2F%2Fx%22%29=3"


def test_summary_of_imported_real_world_reports(
    tmp_path: Path, fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reports import`` of the real-world samples (fixtures/dmarc-reports/real-world), then
    the summary of example.com over all of them: 12 messages from 8 sources; 7 of them, from
    5 sources, failed DMARC (the figures read from the samples' XML). They are bare files and
    e-mails whose signatures cannot be checked any more: unauthenticated, counted only with
    --include-unauthenticated."""
    url = str(tmp_path / "r.sqlite")
    samples = fixtures / "dmarc-reports" / "real-world"
    zone = zone_file(tmp_path)
    assert main(["reports", "import", str(samples), "--store", url, "--dns-zone", str(zone)]) == 1
    capsys.readouterr()
    code, out, _ = _run(capsys, "example.com", "--store", url, "--since", "2000-01-01", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["messages"], data["sources"], data["reports"]) == (0, [], 0)
    assert data["unauthenticated"] == {"reports": 9, "messages": 12, "superseded": 0,
                                       "included": False}  # fmt: skip
    code, out, _ = _run(capsys, "example.com", "--store", url, "--since", "2000-01-01", "--json",
                        "--include-unauthenticated")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["unauthenticated"]["included"] is True
    assert (data["messages"], len(data["sources"]), data["reports"]) == (12, 8, 9)
    assert (data["readiness"]["dmarc_fail"], data["readiness"]["failing_sources"]) == (7, 5)
    first = data["sources"][0]
    assert (first["source_ip"], first["messages"], first["dmarc_fail"]) == ("199.230.200.36", 3, 3)


def test_cli_resolve_with_dns_unreachable(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Reverse names are a nicety: with no nameserver answering, a warning and every source
    ``unknown``; the summary itself is complete (exit 0)."""
    code, out, err = _run(
        capsys, "example.com", "--store", filled, "--since", "2026-01-01", "--until",
        "2026-02-01", "--resolve", "--nameserver", "127.0.0.1:9", "--dns-timeout", "0.5",
        "--json",
    )  # fmt: skip
    assert code == 0
    assert err.startswith("mailauth: warning: DNS unreachable") and err.count("\n") == 1
    data = json.loads(out)
    assert data["messages"] == 215
    assert {s["reverse_status"] for s in data["sources"]} == {"unknown"}
