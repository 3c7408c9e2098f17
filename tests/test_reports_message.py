"""The aggregate report e-mail (RFC 9990 3): names, fields, media type, signature, retries."""

from __future__ import annotations

import email
import gzip
import re
from email import policy

import dkim as dkimpy
import pytest

from mailauth.dkim import Signer, public_key_record
from mailauth.errors import ConfigError
from mailauth.pipeline import Authenticator
from mailauth.reports.message import (
    AggregateReport,
    Submitter,
    build_aggregate_message,
    new_report_id,
    report_filename,
    report_subject,
)
from mailauth.results import DkimResult, DmarcResult
from tests.dkim_helpers import RSA_KEY, dkimpy_dns, zone

XML = b'<?xml version="1.0"?><feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0"/>'
SUBMITTER = Submitter("Example Receiver", "dmarc-noreply@example.org", "example.org")
BEGIN, END = 1_795_000_000, 1_795_086_399
NOW = 1_795_090_000.0
SIGNER = Signer("example.org", "rep2026", RSA_KEY)
RECORDS = {
    "rep2026._domainkey.example.org": public_key_record(RSA_KEY),
    "_dmarc.example.org": "v=DMARC1; p=reject; adkim=s",
    "example.org": "v=spf1 -all",
}


def _report(unique: str = "0001") -> AggregateReport:
    return AggregateReport(
        "example.com",
        BEGIN,
        END,
        new_report_id("example.com", BEGIN, "example.org", unique),
        report_filename("example.org", "example.com", BEGIN, END, unique),
        gzip.compress(XML, mtime=0),
    )


def _build(**kw: object) -> bytes:
    return build_aggregate_message(
        _report(), SUBMITTER, ["dmarc@example.com"], now=NOW, signer=SIGNER, **kw
    )


def test_rfc9990_3_file_name() -> None:
    assert report_filename("Example.ORG", "example.com", 1013662812, 1013749130) == (
        "example.org!example.com!1013662812!1013749130.xml.gz"
    )
    assert report_filename("example.org", "example.com", 1, 2, "abc123") == (
        "example.org!example.com!1!2!abc123.xml.gz"
    )
    with pytest.raises(ValueError, match="letters and digits"):
        report_filename("example.org", "example.com", 1, 2, "a-b")
    with pytest.raises(ValueError, match="does not name"):
        AggregateReport("example.net", BEGIN, END, "r1@example.org", _report().filename, b"")


def test_rfc9990_3_subject_and_report_id() -> None:
    subject = report_subject(
        "example.com", "example.org", "1795000000.0001.example.com@example.org"
    )
    assert subject == (
        "Report Domain: example.com Submitter: example.org "
        "Report-ID: <1795000000.0001.example.com@example.org>"
    )
    assert report_subject("example.com", "example.org", "<abc@x>").endswith("Report-ID: <abc@x>")
    for bad in ("two words", "a@b@c", "<unclosed", ""):
        with pytest.raises(ValueError, match="not a Report-ID"):
            report_subject("example.com", "example.org", bad)


def test_rfc9990_3_message_fields_and_media_type() -> None:
    raw = _build()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=policy.default)
    report = _report()
    assert parsed["Subject"] == (
        f"Report Domain: example.com Submitter: example.org Report-ID: <{report.report_id}>"
    )
    assert parsed["Message-ID"] == f"<{report.report_id}>"
    assert parsed["From"].addresses[0].addr_spec == "dmarc-noreply@example.org"
    assert parsed["To"] == "dmarc@example.com"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() == "multipart/mixed"
    text, attachment = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert report.report_id in text.get_content()
    assert attachment.get_content_type() == "application/gzip"
    assert attachment.get_filename() == "example.org!example.com!1795000000!1795086399!0001.xml.gz"
    # the name is written plainly (no RFC 2231 continuations), for consumers that grep for it
    assert f'filename="{report.filename}"'.encode() in raw
    assert gzip.decompress(attachment.get_content()) == XML
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_rfc9990_3_a_retry_is_the_same_message() -> None:
    """Same inputs, same bytes: the same file name and Report-ID on every retry."""
    assert _build() == _build()
    other = build_aggregate_message(
        _report("0002"), SUBMITTER, ["dmarc@example.com"], now=NOW, signer=SIGNER
    )
    assert other != _build()


def test_the_signature_verifies_and_dmarc_passes_aligned() -> None:
    """RFC 9990 3: the report stream MUST produce an aligned DMARC pass (here: DKIM, with
    adkim=s; SPF fails, so the pass is the signature's)."""
    raw = _build()
    authenticator = Authenticator(authserv_id="mx.example.com", resolver=zone(RECORDS))
    verdict = authenticator.verify(
        raw, ip="192.0.2.99", helo="mx.example.org", mail_from="dmarc-noreply@example.org", now=NOW
    )
    assert verdict.dkim is not None and verdict.dmarc is not None
    assert [(d.result, d.domain) for d in verdict.dkim] == [(DkimResult.PASS, "example.org")]
    assert verdict.dmarc.result is DmarcResult.PASS
    assert verdict.dmarc.dkim_aligned == ("example.org",)


def test_the_signature_verifies_with_dkimpy() -> None:
    raw = _build()
    assert dkimpy.verify(raw, dnsfunc=dkimpy_dns(RECORDS))


def test_submitter_and_signer_must_align() -> None:
    with pytest.raises(ConfigError, match=r"not in example\.org"):
        Submitter("X", "reports@example.net", "example.org")
    with pytest.raises(ConfigError, match="not an e-mail address"):
        Submitter("X", "no address", "example.org")
    with pytest.raises(ConfigError, match="one non-empty line"):
        Submitter("X\r\nBcc: a@b", "r@example.org", "example.org")
    other = Signer("example.net", "s1", RSA_KEY)
    with pytest.raises(ConfigError, match="not aligned"):
        build_aggregate_message(_report(), SUBMITTER, ["a@example.com"], now=NOW, signer=other)


def test_a_non_ascii_organization_name_is_encoded() -> None:
    submitter = Submitter("Réception Exemple", "dmarc@example.org", "example.org")
    raw = build_aggregate_message(_report(), submitter, ["a@example.com"], now=NOW)
    assert raw.isascii()
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["From"].addresses[0].display_name == "Réception Exemple"
    assert "Réception Exemple" in next(parsed.iter_parts()).get_content()
    assert re.search(rb"boundary=\"=_mailauth_report_[0-9a-f]{32}\"", raw)
