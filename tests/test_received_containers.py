"""What received reports come in (mailauth.reports.received.containers, .mail, .reader): plain
XML, gzip (one member or several), zip (several files), report e-mails found by media type,
file name or content, nesting bounded."""

from __future__ import annotations

import pytest

from mailauth.reports.received import AggregateReport
from mailauth.reports.received.containers import Budget, gunzip
from mailauth.reports.received.limits import ReadLimits, ReportReadError
from mailauth.reports.received.reader import read_reports, sniff
from tests.received_helpers import aggregate_xml, gzipped, report_mail, tls_json, zipped


def _ids(data: bytes, limits: ReadLimits | None = None) -> list[tuple[str, str]]:
    """(part, report_id or the error) of each outcome."""
    outcomes = read_reports(data) if limits is None else read_reports(data, limits)
    return [(o.part, o.report.report_id if o.report else o.error) for o in outcomes]


def test_plain_gzip_and_concatenated_gzip_members() -> None:
    xml = aggregate_xml().encode()
    assert _ids(xml) == [("", "id-1")]
    assert _ids(gzipped(xml)) == [("", "id-1")]
    half = len(xml) // 2
    assert _ids(gzipped(xml[:half]) + gzipped(xml[half:])) == [("", "id-1")]


def test_a_report_in_many_tiny_gzip_members_is_read_whole() -> None:
    # (a writer that flushes a member per write, some of them empty: not "truncated")
    xml = aggregate_xml().encode()
    pieces = [xml[at : at + 20] for at in range(0, len(xml), 20)]
    assert 50 < len(pieces) < 90
    members = [gzipped(b""), *(gzipped(p) + gzipped(b"") for p in pieces[:5]),
               *map(gzipped, pieces[5:]), gzipped(b"")]  # fmt: skip
    assert len(members) < 100
    assert gunzip(b"".join(members), Budget(1 << 20, 1 << 20)) == xml
    assert _ids(b"".join(members)) == [("", "id-1")]


def test_empty_gzip_members_and_a_cut_one() -> None:
    assert gunzip(gzipped(b""), Budget(10, 10)) == b""
    assert gunzip(gzipped(b"") * 99, Budget(10, 10)) == b""
    assert gunzip(gzipped(b"a") + gzipped(b"") + gzipped(b"b"), Budget(10, 10)) == b"ab"
    for cut in (1, 4, 8, 12):  # (the trailer, the data, an empty member's own)
        with pytest.raises(ReportReadError, match=r"^gzip data is truncated$"):
            gunzip(gzipped(b"a") + gzipped(b"")[:-cut], Budget(10, 10))
    with pytest.raises(ReportReadError, match=r"^refused: gzip data of more than 100 members$"):
        gunzip(gzipped(b"") * 101, Budget(10, 10))


def test_a_zip_with_several_reports_and_a_bad_one() -> None:
    data = zipped({
        "a.xml": aggregate_xml(report_id="a").encode(),
        "dir/": b"",
        "b.xml.gz": gzipped(aggregate_xml(report_id="b").encode()),
        "c.xml": b"<feedback><oops",
        "d.json": tls_json(),
    })  # fmt: skip
    assert _ids(data) == [
        ("a.xml", "a"),
        ("b.xml.gz", "b"),
        ("c.xml", "not well-formed XML: the XML ends before its policy_published (truncated?)"),
        ("d.json", "5065427c-23d3-47ca-b6e0-946ea0e8c4be"),
    ]


@pytest.mark.parametrize(
    ("name", "media_type", "content"),
    [
        ("r.xml", "text/xml", b"XML"),
        ("r.xml", "application/xml", b"XML"),
        ("r.xml.gz", "application/gzip", b"GZ"),
        ("r.xml.gz", "application/x-gzip", b"GZ"),
        ("r.zip", "application/zip", b"ZIP"),
        ("r.zip", "application/x-zip-compressed", b"ZIP"),
        ("r.zip", "application/octet-stream", b"ZIP"),
        ("report", "application/octet-stream", b"GZ"),  # (no name: the content says gzip)
        ("r.xml", "text/plain", b"XML"),  # (a wrong type: the name says XML)
    ],
)  # fmt: skip
def test_report_attachments_found_by_type_name_or_content(
    name: str, media_type: str, content: bytes
) -> None:
    xml = aggregate_xml().encode()
    payload = {b"XML": xml, b"GZ": gzipped(xml), b"ZIP": zipped({"r.xml": xml})}[content]
    outcomes = read_reports(report_mail([(name, media_type, payload)]))
    assert [o.report.report_id for o in outcomes if o.report] == ["id-1"]
    assert outcomes[0].part.startswith(name)


def test_an_email_with_two_reports_and_unrelated_attachments() -> None:
    mail = report_mail([
        ("logo.png", "image/png", b"\x89PNG..."),
        ("a.xml.gz", "application/gzip", gzipped(aggregate_xml(report_id="a").encode())),
        ("notes.bin", "application/octet-stream", b"not a report"),
        ("b.zip", "application/zip", zipped({"b.xml": aggregate_xml(report_id="b").encode()})),
    ])  # fmt: skip
    assert _ids(mail) == [("a.xml.gz", "a"), ("b.zip > b.xml", "b")]


def test_a_forwarded_report_email_is_read_in_turn() -> None:
    inner = report_mail([("r.xml", "text/xml", aggregate_xml(report_id="fw").encode())])
    outer = report_mail([], subject="Fwd: report")
    from email import message_from_bytes
    from email.message import Message

    message = message_from_bytes(outer)
    wrapper = Message()
    wrapper.set_type("multipart/mixed")
    wrapper["Subject"] = "Fwd: report"
    part = Message()
    part.set_type("message/rfc822")
    part.set_payload([message_from_bytes(inner)])
    wrapper.set_payload([message, part])
    assert _ids(wrapper.as_bytes()) == [("forwarded message > r.xml", "fw")]


def test_nesting_is_bounded() -> None:
    xml = aggregate_xml().encode()
    three = zipped({"b.zip": zipped({"c.xml.gz": gzipped(xml)})})
    assert _ids(three) == [("b.zip > c.xml.gz", "id-1")]
    four = zipped({"a.zip": three})
    assert _ids(four) == [("a.zip > b.zip > c.xml.gz", "refused: containers nested more than "
                                                        "3 deep")]  # fmt: skip
    assert _ids(four, ReadLimits(max_depth=4)) == [("a.zip > b.zip > c.xml.gz", "id-1")]


def test_what_is_no_report() -> None:
    assert _ids(b"\x00\x01binary") == [
        ("", "not a report: neither XML, JSON, gzip, zip nor an e-mail")
    ]
    bad = "not valid gzip data: Error -3 while decompressing data: unknown compression method"
    assert _ids(b"\x1f\x8bnot gzip") == [("", bad)]
    assert _ids(gzipped(b"<feedback/>")[:-12]) == [("", "gzip data is truncated")]
    assert _ids(b"PK\x03\x04 no end") == [
        ("", "not a valid zip archive: no end of central directory record")
    ]


def test_sniffing() -> None:
    assert sniff(b"\xef\xbb\xbf  <?xml") == "xml"
    assert sniff("<?xml".encode("utf-16")) == "xml"
    assert sniff(b"\n{") == "json"
    assert sniff(b"From x@y Mon Jan  1 00:00:00 2024\nSubject: x\n\n") == "mail"
    assert sniff(b"Received: from x\r\n") == "mail"
    assert sniff(b"hello world") == "unknown"


def test_a_utf16_report() -> None:
    text = aggregate_xml(declaration='<?xml version="1.0" encoding="UTF-16"?>\n')
    [outcome] = read_reports(text.encode("utf-16"))
    assert isinstance(outcome.report, AggregateReport)


def test_gunzip_keeps_to_its_budget() -> None:
    data = gzipped(b"x" * 1000)
    assert gunzip(data, Budget(1000, 1000)) == b"x" * 1000
    with pytest.raises(ReportReadError, match=r"^refused: gzip data expands beyond 999 octets"):
        gunzip(data, Budget(999, 999))
