"""Reading received failure reports (mailauth.reports.received.failure_arf, through .reader):
both real-world ARF samples, RFC 9991 fields, text/rfc822-headers, plain-text reports."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailauth.reports.received import FailureReport, ReportKind
from mailauth.reports.received.reader import read_reports
from tests.received_helpers import REAL_WORLD


def _failure(data: bytes) -> FailureReport:
    [outcome] = read_reports(data)
    assert isinstance(outcome.report, FailureReport), outcome.error
    assert outcome.kind is ReportKind.FAILURE
    return outcome.report


def test_every_failure_sample_is_read_as_a_failure_report() -> None:
    names = sorted(p.name for p in (REAL_WORLD / "failure").iterdir())
    assert len(names) == 2
    for name in names:
        report = _failure((REAL_WORLD / "failure" / name).read_bytes())
        assert (report.feedback_type, report.auth_failure, report.arf) == (
            "auth-failure", "dmarc", True
        )  # fmt: skip


def test_the_linkedin_sample() -> None:
    report = _failure((REAL_WORLD / "failure/dmarc_ruf_report_linkedin.eml").read_bytes())
    assert (report.reporter, report.email) == ("linkedin.com", "dmarc-noreply@linkedin.com")
    assert report.report_id == "<BB.91.26019.C3EA7CC5@mail516.prod.linkedin.com>"
    assert (report.source_ip, report.reported_domain, report.header_from) == (
        "10.10.10.10", "example.com", "example.com"
    )  # fmt: skip
    assert report.arrival_date == 1556590140  # Tue, 30 Apr 2019 02:09:00 +0000
    assert (report.original_mail_from, report.original_rcpt_to) == ("", "recipient@linkedin.com")
    assert report.delivery_result == "delivered"
    assert report.authentication_results == "dmarc=fail (p=none; dis=none) header.from=example.com"
    assert report.subject == "Subject line, could be UTF8 encoded"
    assert report.message_id == "<01010101010101010101010101010101@ABAB01MS0016.someserver.loc>"
    assert report.original_headers.startswith("Return-Path: <>\nAuthentication-Results: ")
    assert "X-Linkedin-fe: false" in report.original_headers
    assert "HTML Text" not in report.original_headers  # (headers only, not the body)


def test_the_domain_de_sample() -> None:
    name = ("DMARC Failure Report for domain.de (mail-from=sharepoint@domain.de, "
            "ip=10.10.10.10).eml")  # fmt: skip
    report = _failure((REAL_WORLD / "failure" / name).read_bytes())
    assert (report.reporter, report.reported_domain) == ("domain.de", "domain.de")
    assert report.arrival_date == 1538385627  # Mon, 01 Oct 2018 11:20:27 +0200
    assert (report.original_mail_from, report.original_rcpt_to) == (
        "sharepoint@domain.de", "peter.pan@domain.de"
    )  # fmt: skip
    assert report.delivery_result == "smg-policy-action"
    assert report.user_agent == "Lua/1.0"


def _arf(fields: str, original: str, original_type: str = "message/rfc822") -> bytes:
    return (
        "From: Receiver <ruf@receiver.example>\r\nTo: ruf@example.com\r\n"
        "Subject: Failure report\r\nMessage-ID: <f1@receiver.example>\r\n"
        "Date: Wed, 15 Nov 2023 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nA failure report.\r\n"
        f"--b\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n"
        f"--b\r\nContent-Type: {original_type}\r\n\r\n{original}\r\n--b--\r\n"
    ).encode()


RFC9991_FIELDS = (
    "Feedback-Type: auth-failure\r\nUser-Agent: Example/1.0\r\nVersion: 1\r\n"
    "Original-Mail-From: <bounce@example.com>\r\nOriginal-Rcpt-To: <a@receiver.example>\r\n"
    "Original-Rcpt-To: <b@receiver.example>\r\n"
    "Arrival-Date: Wed, 15 Nov 2023 11:59:00 +0000\r\nReporting-MTA: dns; mx.receiver.example\r\n"
    "Source-IP: 2001:DB8::25\r\nAuth-Failure: dkim\r\nDKIM-Domain: Example.COM\r\n"
    "DKIM-Identity: @example.com\r\nDKIM-Selector: s2023\r\nIdentity-Alignment: dkim\r\n"
    "Delivery-Result: reject\r\nReported-Domain: example.com\r\n"
)


def test_rfc9991_fields_and_a_header_only_original() -> None:
    original = "From: Alice <alice@example.com>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    report = _failure(_arf(RFC9991_FIELDS, original, "text/rfc822-headers"))
    assert (report.reporter, report.email, report.report_id) == (
        "mx.receiver.example", "ruf@receiver.example", "<f1@receiver.example>"
    )  # fmt: skip
    assert (report.auth_failure, report.source_ip, report.identity_alignment) == (
        "dkim", "2001:db8::25", "dkim"
    )  # fmt: skip
    assert (report.dkim_domain, report.dkim_identity, report.dkim_selector) == (
        "example.com", "@example.com", "s2023"
    )  # fmt: skip
    assert report.original_mail_from == "bounce@example.com"
    assert report.original_rcpt_to == "<a@receiver.example>, <b@receiver.example>"
    assert (report.header_from, report.subject) == ("example.com", "Grüße")
    assert report.arrival_date == 1700049540
    assert report.notes == ()


def test_no_arrival_date_uses_the_report_date() -> None:
    fields = RFC9991_FIELDS.replace("Arrival-Date: Wed, 15 Nov 2023 11:59:00 +0000\r\n", "")
    report = _failure(_arf(fields, "From: a@example.com\r\n\r\nbody\r\n"))
    assert report.arrival_date == 1700049600
    assert report.notes == ("no Arrival-Date: the report's Date is used",)


def test_a_plain_text_failure_report_is_read_for_what_it_names() -> None:
    message = EmailMessage()
    message["From"] = "noreply@receiver.example"
    message["Subject"] = "DMARC Failure Report for example.com"
    message["Message-ID"] = "<plain-1@receiver.example>"
    message["Date"] = "Wed, 15 Nov 2023 12:00:00 +0000"
    message.set_content(
        "A message claiming to be from you failed DMARC.\n\n"
        "Sender Domain: example.com\nSender IP Address: 192.0.2.77\n"
        "Received Date: Wed, 15 Nov 2023 11:00:00 +0000\nSPF Alignment: no\n"
    )
    message.add_attachment(b"From: x@example.com\r\nSubject: hi\r\n", maintype="text",
                           subtype="rfc822-headers")  # fmt: skip
    report = _failure(message.as_bytes())
    assert report.arf is False
    assert (report.reported_domain, report.source_ip, report.arrival_date) == (
        "example.com", "192.0.2.77", 1700046000
    )  # fmt: skip
    assert report.header_from == "example.com" and report.subject == "hi"
    assert report.notes == ("no ARF part: the fields were read from the report's text",)


def test_a_plain_text_report_with_its_words_only_in_the_subject() -> None:
    message = EmailMessage()
    message["From"] = "dmarc@receiver.example"
    message["Subject"] = ("DMARC Failure Report for example.org (mail-from=x@example.org, "
                          "ip=198.51.100.4)")  # fmt: skip
    message.set_content("see subject")
    report = _failure(message.as_bytes())
    assert (report.reported_domain, report.source_ip, report.original_mail_from) == (
        "example.org", "198.51.100.4", "x@example.org"
    )  # fmt: skip
    assert report.report_id.startswith("sha256:")  # (no Message-ID)


def test_an_ordinary_email_is_no_report() -> None:
    message = EmailMessage()
    message["From"] = "friend@example.org"
    message["Subject"] = "lunch?"
    message.set_content("tomorrow at noon")
    [outcome] = read_reports(message.as_bytes())
    assert outcome.report is None
    assert outcome.error == (
        "no report in this e-mail (no aggregate or TLS report attachment, no failure report)"
    )


@pytest.mark.parametrize("value", ["not a date", "Mon, 99 Foo 99999 99:99:99 +9999", ""])
def test_a_bad_arrival_date_is_unknown_not_an_error(value: str) -> None:
    fields = RFC9991_FIELDS.replace("Wed, 15 Nov 2023 11:59:00 +0000", value)
    report = _failure(_arf(fields, "From: a@example.com\r\n\r\nbody\r\n"))
    assert report.arrival_date == 1700049600  # (the report's Date)
