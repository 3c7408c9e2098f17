"""Reading received aggregate reports (mailauth.reports.received.aggregate_xml, .reader): every
real-world sample with its counts written here, RFC 9990 and RFC 7489 formats, the tolerant
reading (case, missing elements, repairs) and the strict one (one error line)."""

from __future__ import annotations

import pytest

from mailauth.reports.received import AggregateReport, DkimAuth, SpfAuth
from mailauth.reports.received.aggregate_xml import read_aggregate
from mailauth.reports.received.limits import ReadLimits, ReportReadError
from mailauth.reports.received.reader import read_reports
from tests.received_helpers import REAL_WORLD, aggregate_xml

# file -> (part inside it, format, org_name, report_id, policy domain, records, messages,
#          repaired)
SAMPLES = {
    "!example.com!1538204542!1538463818.xml":
        ("", "rfc7489", "", "example.com:1538463741", "example.com", 1, 1, False),
    "Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174.eml":
        ("google.com!borschow.com!1549929600!1550015999.zip > "
         "google.com!borschow.com!1549929600!1550015999.xml", "rfc7489", "google.com",
         "949348866075514174", "borschow.com", 1, 1, False),
    "addisonfoods.com!example.com!1536105600!1536191999.xml":
        ("", "rfc7489", "addisonfoods.com", "3ceb5548498640beaeb47327e202b0b9", "example.com",
         1, 1, False),
    "empty_reason.xml":
        ("", "rfc7489", "example.org", "20240125141224705995", "example.com", 1, 2, False),
    "estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip":
        ("estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml",
         "rfc7489", "XYZ Corporation", "2940", "example.com", 1, 1, False),
    "example.net!example.com!1529366400!1529452799.xml":
        ("", "rfc7489", "example.net", "b043f0e264cf4ea995e93765242f6dfb", "example.com", 1, 1,
         False),
    "ikea.com!example.de!1538690400!1538776800.xml":
        ("", "rfc7489", "ikea.com", "aggr_report_2018_10_05_5bc7e9b4f3e8a", "example.de", 1, 1,
         True),
    "invalid_xml.xml":
        ("", "rfc7489", "veeam.com", "sonexushealth.com:1530233361", "example.com", 1, 1, True),
    "old_draft_from_wiki.xml":
        ("", "rfc7489", "acme.com", "9391651994964116463", "example.com", 1, 2, False),
    "report_with_upper_cased_pass.xml":
        ("", "rfc7489", "example.com", "aggr_report_example.com_20191202_1638", "example.com",
         1, 1, False),
    "rfc9990-sample.xml":
        ("", "rfc9990", "Sample Reporter", "3v98abbp8ya9n3va8yr8oa3ya", "example.com", 1, 123,
         False),
    "usssa.com!example.com!1538784000!1538870399.xml":
        ("", "rfc7489", "usssa.com", "8953b4d4a4ee4218b6ac0e2cb2667ee1", "example.com", 2, 2,
         False),
}  # fmt: skip


def test_every_aggregate_sample_is_listed() -> None:
    assert sorted(p.name for p in (REAL_WORLD / "aggregate").iterdir()) == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_real_world_aggregate_sample(name: str) -> None:
    part, fmt, org, report_id, domain, records, messages, repaired = SAMPLES[name]
    [outcome] = read_reports((REAL_WORLD / "aggregate" / name).read_bytes())
    report = outcome.report
    assert isinstance(report, AggregateReport), outcome.error
    assert outcome.part == part
    assert (report.format, report.org_name, report.report_id, report.domain) == (
        fmt, org, report_id, domain
    )  # fmt: skip
    assert (len(report.records), report.messages) == (records, messages)
    assert any(note.startswith("repaired XML") for note in report.notes) is repaired


def _sample(name: str) -> AggregateReport:
    return read_aggregate((REAL_WORLD / "aggregate" / name).read_bytes())


def test_upper_case_result_words_read_as_lower_case() -> None:
    [record] = _sample("report_with_upper_cased_pass.xml").records
    assert (record.disposition, record.dkim, record.spf) == ("none", "pass", "pass")
    assert record.auth_dkim == (
        DkimAuth("example.com", "", "pass", "verify result: all signatures verified"),
    )
    assert record.auth_spf == (SpfAuth("example.com", "", "pass"),)


def test_an_empty_reason_is_no_reason_and_envelope_to_is_read() -> None:
    report = _sample("empty_reason.xml")
    [record] = report.records
    assert record.reasons == ()
    assert (record.envelope_to, record.envelope_from) == ("example.net", "example.edu")
    assert report.extra_contact_info == "https://support.example.org/dmarc"
    assert report.policy.pct == "100" and report.policy.fo == "1"


def test_missing_optional_elements_read_as_empty() -> None:
    report = _sample("!example.com!1538204542!1538463818.xml")
    assert (report.org_name, report.email) == ("", "administrator@accurateplastics.com")
    [record] = report.records
    assert (record.envelope_from, record.auth_dkim) == ("", ())
    assert record.auth_spf == (SpfAuth("", "", "none"),)


def test_text_after_an_element_is_ignored() -> None:
    # (example.net's report has "<sp>none</sp>11")
    assert _sample("example.net!example.com!1529366400!1529452799.xml").policy.sp == "none"


def test_the_rfc9990_sample_reads_every_field() -> None:
    report = _sample("rfc9990-sample.xml")
    assert report.generator == "Example DMARC Aggregate Reporter v1.2"
    assert (report.begin, report.end) == (302832000, 302918399)
    policy = report.policy
    assert (policy.p, policy.sp, policy.np, policy.testing, policy.discovery_method) == (
        "quarantine", "none", "none", "n", "treewalk"
    )  # fmt: skip
    [record] = report.records
    assert (record.source_ip, record.count, record.disposition) == ("192.0.2.123", 123, "pass")
    assert record.auth_dkim == (DkimAuth("example.com", "abc123", "pass"),)


def test_a_stray_less_than_inside_a_value_is_kept_as_text() -> None:
    report = _sample("invalid_xml.xml")
    assert report.email == "<bad-xml@bad-xml.net>"
    assert report.records[0].header_from == "bad<xml.net"
    assert report.notes == ("repaired XML: not well-formed (invalid token): line 5, column 17",)


def test_a_report_inside_an_unclosed_wrapper_element_is_repaired() -> None:
    report = _sample("ikea.com!example.de!1538690400!1538776800.xml")
    assert report.notes == ("repaired XML: the root element is <schema>, not <feedback>",)
    assert report.records[0].auth_spf == (SpfAuth("mailrelay.com", "helo", "none"),)


def test_a_bare_ampersand_is_repaired() -> None:
    report = read_aggregate(aggregate_xml(org="AT&T Mail").encode())
    assert report.org_name == "AT&T Mail"
    assert report.notes[0].startswith("repaired XML: not well-formed (invalid token)")


def test_a_report_cut_after_a_complete_record_is_read_with_a_note() -> None:
    text = aggregate_xml(3)
    cut = text[: text.rindex("</record>") + len("</record>")] + "\n  </fee"
    report = read_aggregate(cut.encode())
    assert len(report.records) == 3
    assert report.notes == (
        "the XML ends before </feedback> (truncated?): 3 complete records read",
    )


def test_a_report_cut_inside_a_record_is_refused() -> None:
    text = aggregate_xml(3)
    cut = text[: text.rindex("<count>")]
    with pytest.raises(ReportReadError, match=r"^not well-formed XML: the XML ends inside "
                       r"record 3 \(truncated\?\)$"):  # fmt: skip
        read_aggregate(cut.encode())


def test_a_wrong_encoding_declaration_is_read_as_utf8() -> None:
    for declared in ("UTF-16", "no-such-charset"):
        declaration = f'<?xml version="1.0" encoding="{declared}"?>\n'
        report = read_aggregate(aggregate_xml(org="Zürich Mail", declaration=declaration)
                                .encode())  # fmt: skip
        assert report.org_name == "Zürich Mail"
        assert report.notes == ("the XML declaration names the wrong encoding: read as UTF-8",)


def test_a_declared_latin1_report_is_read_in_latin1() -> None:
    declaration = '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
    data = aggregate_xml(org="Zürich Mail", declaration=declaration).encode("latin-1")
    assert read_aggregate(data).org_name == "Zürich Mail"


def test_other_namespaces_and_no_version_read_as_a_draft() -> None:
    text = aggregate_xml(namespace=False).replace(
        "<feedback>", '<feedback xmlns="http://dmarc.org/dmarc-xml/0.1">'
    ).replace("<version>1.0</version>", "")  # fmt: skip
    report = read_aggregate(text.encode())
    assert (report.format, len(report.records)) == ("draft", 2)


def test_prefixed_rfc9990_elements_are_read() -> None:
    body = aggregate_xml()
    prefixed = body.replace("<", "<d:").replace("<d:/", "</d:").replace("<d:?", "<?")
    prefixed = prefixed.replace("<d:feedback xmlns=", "<d:feedback xmlns:d=")
    report = read_aggregate(prefixed.encode())
    assert (report.format, len(report.records)) == ("rfc9990", 2)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("<report_id>id-1</report_id>", ""), "no <report_id> in <report_metadata>"),
        (("<begin>1700000000</begin>", ""),
         "no <date_range> with <begin> and <end> in <report_metadata>"),
        (("<begin>1700000000</begin>", "<begin>yesterday</begin>"),
         "date_range begin is not a number: 'yesterday'"),
        (("<domain>example.com</domain><p>", "<p>"), "no <domain> in <policy_published>"),
        (("<count>1</count>", "<count>-1</count>"), "record 1: count is not a number: '-1'"),
        (("<source_ip>192.0.2.1</source_ip>", "<source_ip>mx.example</source_ip>"),
         "record 1: source_ip is not an IP address: 'mx.example'"),
        (("<feedback", "<other"), "not a DMARC aggregate report: the root element is <other>, "
                                  "not <feedback>"),
    ],
)  # fmt: skip
def test_what_matters_is_strict(change: tuple[str, str], error: str) -> None:
    text = aggregate_xml().replace(*change, 1)
    if change[0] == "<feedback":
        text = text.replace("</feedback>", "</other>")
    with pytest.raises(ReportReadError) as caught:
        read_aggregate(text.encode())
    assert str(caught.value) == error


def test_an_ipv6_source_is_normalised() -> None:
    text = aggregate_xml(1).replace("192.0.2.1", "2001:DB8:0:0::1")
    assert read_aggregate(text.encode()).records[0].source_ip == "2001:db8::1"


def test_records_and_text_are_capped() -> None:
    limits = ReadLimits(max_records=5, max_text=12)
    with pytest.raises(ReportReadError, match=r"^refused: more than 5 records$"):
        read_aggregate(aggregate_xml(6).encode(), limits)
    report = read_aggregate(aggregate_xml(5, org="A" * 50).encode(), limits)
    assert (report.org_name, report.email) == ("A" * 12, "dmarc@receiv")
    assert report.notes == ("text longer than 12 characters cut: email, org_name",)


def test_xml_that_cannot_be_repaired_is_one_error() -> None:
    with pytest.raises(ReportReadError, match=r"^not well-formed XML: mismatched tag"):
        read_aggregate(aggregate_xml().replace("</row>", "</rowx>", 1).encode())
    with pytest.raises(ReportReadError, match=r"^not well-formed XML: "):
        read_aggregate(b"<nothing")
