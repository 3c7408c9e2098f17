"""RFC 9990 aggregate report XML: every report generated validates against the schema
(fixtures/dmarc-reports/dmarc-2.0.xsd); observations as RFC 9990 counts them."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from mailauth.dns import RRType, ZoneResolver
from mailauth.pipeline import Authenticator
from mailauth.reports import (
    DirectRecorder,
    Enforcement,
    RecordingSettings,
    ReportSettings,
    closed_reports,
    observe,
    open_store,
)
from mailauth.reports.aggregate import NAMESPACE, PolicyColumns, ReportMetadata, render_report
from mailauth.results import DkimResult, DmarcResult, Policy, SpfResult
from tests.reports_helpers import DAY, T0, verdict

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCHEMA = xmlschema.XMLSchema(FIXTURES / "dmarc-reports" / "dmarc-2.0.xsd")
NS = {"d": NAMESPACE}
SETTINGS = ReportSettings(
    org_name="Example <Mail> & Co",
    email="dmarc@example.net",
    submitter="example.net",
    extra_contact_info="https://example.net/dmarc",
)
AFTER = T0 + DAY + SETTINGS.grace


def _reports(url: str) -> dict[str, ET.Element]:
    store = open_store(url)
    try:
        found = {}
        for report in closed_reports(store, SETTINGS, now=AFTER):
            text = gzip.decompress(report.xml_gz)
            SCHEMA.validate(text.decode())  # raises on any deviation
            found[report.policy_domain] = ET.fromstring(text)
        return found
    finally:
        store.close()


def test_the_schema_validates_the_rfc_sample() -> None:
    SCHEMA.validate(str(FIXTURES / "dmarc-reports" / "sample-report.xml"))


def test_a_generated_report_validates_and_counts(store_url: str) -> None:
    store = open_store(store_url)
    recorder = DirectRecorder(store, RecordingSettings(record_envelope_to=True))
    dkim = (("example.com", "s1", DkimResult.PASS), ("esp.example", "k&<", DkimResult.FAIL))
    for _ in range(4):
        recorder.record(verdict(dkim=dkim), ip="192.0.2.1", mail_from="bounce@example.com",
                        recipients=("u@example.net",), now=T0 + 1)  # fmt: skip
    failing = verdict(result=DmarcResult.FAIL, spf=SpfResult.FAIL, disposition=Policy.QUARANTINE,
                      override="mailing_list", override_comment="list <x>")  # fmt: skip
    recorder.record(failing, ip="2001:db8::1", mail_from="", recipients=("v@example.org",),
                    now=T0 + 2)  # fmt: skip
    sub = verdict("sub.example.com", policy_domain="example.com", spf=SpfResult.NONE)
    recorder.record(sub, ip="192.0.2.9", mail_from="a@sub.example.com", now=T0 + 3)
    store.close()
    (feedback,) = _reports(store_url).values()
    assert feedback.findtext("d:report_metadata/d:org_name", namespaces=NS) == SETTINGS.org_name
    assert feedback.findtext("d:policy_published/d:p", namespaces=NS) == "reject"
    assert feedback.findtext("d:policy_published/d:discovery_method", namespaces=NS) == ("treewalk")
    records = feedback.findall("d:record", NS)
    counts = {
        r.findtext("d:row/d:source_ip", namespaces=NS): int(r.findtext("d:row/d:count", "0", NS))
        for r in records
    }
    assert counts == {"192.0.2.1": 4, "2001:db8::1": 1, "192.0.2.9": 1}
    first = next(
        r for r in records if r.findtext("d:row/d:source_ip", namespaces=NS) == "192.0.2.1"
    )
    assert first.findtext("d:row/d:policy_evaluated/d:disposition", namespaces=NS) == "pass"
    assert first.findtext("d:identifiers/d:envelope_to", namespaces=NS) == "example.net"
    selectors = [
        d.findtext("d:selector", namespaces=NS) for d in first.findall("d:auth_results/d:dkim", NS)
    ]
    assert selectors == ["s1", "k&<"]
    spoof = next(
        r for r in records if r.findtext("d:row/d:source_ip", namespaces=NS) == "2001:db8::1"
    )
    reasons = spoof.findall("d:row/d:policy_evaluated/d:reason", NS)
    assert [
        (r.findtext("d:type", namespaces=NS), r.findtext("d:comment", namespaces=NS))
        for r in reasons
    ] == [
        ("mailing_list", "list <x>"),
        ("local_policy", "the receiver does not enforce quarantine"),
    ]
    assert spoof.findtext("d:identifiers/d:envelope_from", namespaces=NS) == ""


def test_many_rows_stream_and_validate() -> None:
    metadata = ReportMetadata("Org", "a@b.example", "abc", T0, T0 + DAY - 1)
    policy = PolicyColumns("example.com", "none", "", "", "r", "r", "n", "u", "0", "psl", "", "")
    rows = (
        (f"10.0.{i // 256}.{i % 256}", "example.com", "example.com", "", "[]", "example.com",
         "mfrom", "pass", "fail", "pass", "none", "[]", i + 1)
        for i in range(3000)
    )  # fmt: skip
    text = "".join(render_report(metadata, policy, rows))
    SCHEMA.validate(text)
    assert text.count("<record>") == 3000


@pytest.mark.parametrize(
    ("result", "policy", "disposition", "enforcement", "expected"),
    [
        (DmarcResult.PASS, Policy.NONE, Policy.NONE, Enforcement(), "none"),
        (DmarcResult.PASS, Policy.REJECT, Policy.NONE, Enforcement(), "pass"),
        (DmarcResult.FAIL, Policy.REJECT, Policy.REJECT, Enforcement(reject=True), "reject"),
        (DmarcResult.FAIL, Policy.REJECT, Policy.REJECT, Enforcement(quarantine=True), "none"),
        (DmarcResult.FAIL, Policy.QUARANTINE, Policy.QUARANTINE, Enforcement(quarantine=True),
         "quarantine"),
        (DmarcResult.FAIL, Policy.NONE, Policy.NONE, Enforcement(), "none"),
    ],
)  # fmt: skip
def test_disposition_is_what_the_receiver_applied(
    result: DmarcResult, policy: Policy, disposition: Policy, enforcement: Enforcement,
    expected: str,
) -> None:  # fmt: skip
    v = verdict(result=result, policy=policy, disposition=disposition)
    observation = observe(v, ip="192.0.2.1", mail_from="", enforcement=enforcement)
    assert observation is not None
    assert observation.disposition == expected


def test_rfc7489_sampled_out_is_reported_as_other() -> None:
    v = verdict(result=DmarcResult.FAIL, disposition=Policy.QUARANTINE, override="sampled_out",
                override_comment="pct=50: not sampled")  # fmt: skip
    observation = observe(v, ip="192.0.2.1", mail_from="", enforcement=Enforcement(True, True))
    assert observation is not None
    assert observation.reasons == (("other", "sampled_out: pct=50: not sampled"),)


def test_control_characters_never_reach_the_xml() -> None:
    dkim = (("ex\x01ample.com", "s\x00el", DkimResult.PERMERROR),)
    observation = observe(verdict(dkim=dkim), ip="192.0.2.1", mail_from="a@b\x07c")
    assert observation is not None
    assert observation.dkim == (("ex\ufffdample.com", "s\ufffdel", "permerror"),)
    assert observation.envelope_from == "b\ufffdc"


def test_the_authenticator_hands_verdicts_to_its_recorder(tmp_path: Path) -> None:
    zone = {
        ("_dmarc.example.com", RRType.TXT): (
            300,
            (b"v=DMARC1; p=reject; rua=mailto:d@example.com",),
        ),
        ("example.com", RRType.TXT): (300, (b"v=spf1 ip4:192.0.2.0/24 -all",)),
    }
    url = str(tmp_path / "r.sqlite")
    store = open_store(url)
    auth = Authenticator("mx.example.net", ZoneResolver(zone), recorder=DirectRecorder(store))
    message = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: x\r\n\r\nhi\r\n"
    result = auth.verify(message, ip="192.0.2.7", helo="mail.example.com",
                         mail_from="a@example.com", now=T0 + 10)  # fmt: skip
    assert result.dmarc is not None and result.dmarc.result is DmarcResult.PASS
    assert result.dmarc.published is not None
    assert result.dmarc.published.rua == ("mailto:d@example.com",)
    store.close()
    (feedback,) = _reports(url).values()
    assert feedback.findtext("d:record/d:row/d:count", namespaces=NS) == "1"
    assert feedback.findtext("d:record/d:auth_results/d:spf/d:result", namespaces=NS) == "pass"


def test_characters_xml_cannot_carry_never_reach_the_report() -> None:
    """Whatever a value holds (an --org-name with a control character, a row an older
    version or another tool wrote: C0 controls, U+FFFE, a lone surrogate), the report is
    well-formed XML 1.0 and can be encoded."""
    metadata = ReportMetadata(
        "Org\x01\ufffe", "a@example.org", "rid", T0, T0 + DAY - 1, extra_contact_info="x\x0bz"
    )
    policy = PolicyColumns(
        "example.com", "reject", "", "", "r", "r", "n", "u", "0", "treewalk", "", ""
    )
    row = ("192.0.2.1", "ex\udcffample.com", "\x00", "", '[["d\\u0001","s","pass"]]',
           "example.com", "mfrom", "pass", "pass", "pass", "none", "[]", 1)  # fmt: skip
    xml = "".join(render_report(metadata, policy, [row])).encode("utf-8")
    root = ET.fromstring(xml)
    org = root.find(f"{{{NAMESPACE}}}report_metadata/{{{NAMESPACE}}}org_name")
    assert org is not None and org.text == "Org\ufffd\ufffd"
