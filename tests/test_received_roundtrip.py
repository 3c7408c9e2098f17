"""Every aggregate report mailauth's own sender generates (mailauth.reports.aggregate, from
the store the recorder fills, as a file and as the whole report e-mail) is read back by the
received-report reader equal to what was written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from mailauth.reports import (
    DirectRecorder,
    RecordingSettings,
    ReportSettings,
    closed_reports,
    open_store,
)
from mailauth.reports.aggregate import PolicyColumns, ReportMetadata, Row, render_report
from mailauth.reports.delivery import aggregate_report
from mailauth.reports.message import Submitter, build_aggregate_message
from mailauth.reports.received import (
    AggregateRecord,
    AggregateReport,
    DkimAuth,
    Reason,
    ReportedPolicy,
    SpfAuth,
)
from mailauth.reports.received.aggregate_xml import read_aggregate
from mailauth.reports.received.reader import read_reports
from mailauth.results import DkimResult, DmarcResult, Policy, SpfResult
from tests.reports_helpers import DAY, T0, verdict

SETTINGS = ReportSettings(org_name="Example <Mail> & Co", email="dmarc@example.net",
                          submitter="example.net",
                          extra_contact_info="https://example.net/dmarc?a=1&b=2")  # fmt: skip


def _expected(row: Row) -> AggregateRecord:
    (ip, header_from, envelope_from, envelope_to, dkim, spf_domain, spf_scope, spf_result,
     dmarc_dkim, dmarc_spf, disposition, reasons, messages) = row  # fmt: skip
    return AggregateRecord(
        source_ip=ip, count=messages, disposition=disposition, dkim=dmarc_dkim, spf=dmarc_spf,
        reasons=tuple(Reason(k, c) for k, c in json.loads(reasons)),
        header_from=header_from, envelope_from=envelope_from, envelope_to=envelope_to,
        auth_dkim=tuple(DkimAuth(d, s, r) for d, s, r in json.loads(dkim)),
        auth_spf=(SpfAuth(spf_domain, spf_scope, spf_result),) if spf_domain else (),
    )  # fmt: skip


def test_a_rendered_report_reads_back_equal() -> None:
    metadata = ReportMetadata("Org & <Co>", "dmarc@example.net", "rid-1", T0, T0 + DAY - 1,
                              extra_contact_info="x", generator="mailauth")  # fmt: skip
    policy = PolicyColumns("example.com", "reject", "quarantine", "none", "s", "r", "y", "",
                           "1:d", "treewalk", "", "")  # fmt: skip
    rows: list[Row] = [
        ("192.0.2.1", "example.com", "bounce.example.com", "example.net",
         json.dumps([["example.com", "s1", "pass"], ["esp.example", "k&<", "fail"]]),
         "bounce.example.com", "mfrom", "pass", "pass", "pass", "none", "[]", 7),
        ("2001:db8::1", "example.com", "", "", "[]", "", "", "", "fail", "fail", "quarantine",
         json.dumps([["mailing_list", "list <x> & y"], ["local_policy", ""]]), 1),
    ]  # fmt: skip
    text = "".join(render_report(metadata, policy, rows)).encode()
    report = read_aggregate(text)
    assert report == AggregateReport(
        org_name="Org & <Co>", email="dmarc@example.net", report_id="rid-1", begin=T0,
        end=T0 + DAY - 1,
        policy=ReportedPolicy("example.com", p="reject", sp="quarantine", np="none", adkim="s",
                              aspf="r", fo="1:d", testing="y", discovery_method="treewalk"),
        records=tuple(_expected(row) for row in rows), extra_contact_info="x",
        generator="mailauth", format="rfc9990",
    )  # fmt: skip


def test_every_report_the_sender_generates_reads_back_equal(tmp_path: Path) -> None:
    url = str(tmp_path / "reports.sqlite")
    store = open_store(url)
    recorder = DirectRecorder(store, RecordingSettings(record_envelope_to=True))
    dkim = (("example.com", "s1", DkimResult.PASS), ("esp.example", "k&<", DkimResult.FAIL))
    for n in range(3):
        recorder.record(verdict(dkim=dkim), ip=f"192.0.2.{n + 1}", mail_from="b@example.com",
                        recipients=("u@example.net",), now=T0 + 1)  # fmt: skip
    failing = verdict("example.org", result=DmarcResult.FAIL, spf=SpfResult.FAIL,
                      disposition=Policy.QUARANTINE, override="mailing_list",
                      override_comment="list <x>")  # fmt: skip
    recorder.record(failing, ip="2001:db8::1", mail_from="", recipients=("v@example.org",),
                    now=T0 + 2)  # fmt: skip
    reports = list(closed_reports(store, SETTINGS, now=T0 + DAY + SETTINGS.grace))
    assert len(reports) == 2
    submitter = Submitter(SETTINGS.org_name, SETTINGS.email, SETTINGS.submitter)
    for pending in reports:
        rows = store.fetchall(
            "SELECT source_ip, header_from, envelope_from, envelope_to, dkim, spf_domain, "
            "spf_scope, spf_result, dmarc_dkim, dmarc_spf, disposition, reasons, messages "
            "FROM report_counts WHERE policy_domain = ?",
            (pending.policy_domain,),
        )
        expected = sorted((_expected(tuple(r)) for r in rows), key=repr)
        from_file = read_aggregate(gzip.decompress(pending.xml_gz))
        mail = build_aggregate_message(aggregate_report(pending), submitter, ["rua@x.example"],
                                       now=T0 + DAY + 4000)  # fmt: skip
        [outcome] = read_reports(mail)
        assert outcome.part == pending.file_name
        assert outcome.report == from_file
        assert (from_file.org_name, from_file.email, from_file.report_id) == (
            SETTINGS.org_name, SETTINGS.email, pending.report_id
        )  # fmt: skip
        assert (from_file.domain, from_file.begin, from_file.end) == (
            pending.policy_domain, pending.begin, pending.end
        )  # fmt: skip
        assert from_file.extra_contact_info == SETTINGS.extra_contact_info
        assert sorted(from_file.records, key=repr) == expected
        assert (len(from_file.records), from_file.messages) == (pending.records,
                                                                pending.messages)  # fmt: skip
        assert from_file.notes == ()
    store.close()
