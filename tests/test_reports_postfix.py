"""Aggregate reports delivered through a real Postfix (Debian's package; .ci/run installs it)
on loopback to smtp-sink (tests/postfix.py), then read back: Subject, file name, media type,
the gzipped XML, and a DKIM signature that verifies (mailauth and dkimpy) and is aligned."""

from __future__ import annotations

import email
import gzip
import os
import shutil
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage

import dkim as dkimpy
import pytest

from mailauth.dkim import Signer, public_key_record
from mailauth.pipeline import Authenticator
from mailauth.reports.delivery import ReportState, send_reports
from mailauth.reports.smtp import RelaySettings, SmtpRelay
from mailauth.reports.uri import psl_org_domain
from mailauth.results import DmarcResult
from tests.dkim_helpers import RSA_KEY, dkimpy_dns, zone
from tests.postfix import ThrowawayPostfix
from tests.test_reports_delivery import SUBMITTER, Due, Marks

AVAILABLE = shutil.which("postfix") is not None and os.geteuid() == 0
if not AVAILABLE:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Postfix and root for the report tests (.ci/run installs it)")
    pytest.skip("needs Debian's postfix package and root", allow_module_level=True)

NOW = 1_795_090_000.0
XML = b'<?xml version="1.0"?><feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0"></feedback>'
RECORDS = {
    "rep2026._domainkey.example.org": public_key_record(RSA_KEY),
    "_dmarc.example.org": "v=DMARC1; p=reject; adkim=s; aspf=s",
    "example.com._report._dmarc.example.net": "v=DMARC1",
}


@pytest.fixture(scope="module")
def postfix() -> Iterator[ThrowawayPostfix]:
    with ThrowawayPostfix(None) as instance:
        yield instance


def test_reports_go_through_postfix_and_verify(postfix: ThrowawayPostfix) -> None:
    due = Due(
        rua=("mailto:dmarc@example.com", "mailto:agg@example.net"),
        xml_gz=gzip.compress(XML, mtime=0),
    )
    marks = Marks()
    signer = Signer("example.org", "rep2026", RSA_KEY)
    with SmtpRelay(RelaySettings("127.0.0.1", postfix.port, timeout=30)) as relay:
        (outcome,) = send_reports(
            [due],
            submitter=SUBMITTER,
            signer=signer,
            resolver=zone(RECORDS),
            transport=relay.send,
            marks=marks,
            now=NOW,
            org_domain=psl_org_domain,
        )
    assert outcome.state is ReportState.SENT, outcome.problems
    assert marks.calls == [("sent", due.report_id, (), False)]
    delivered = postfix.delivered(2)
    recipients = []
    for data in delivered:
        raw = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # (smtp-sink writes LF)
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        recipients.append(parsed["To"])
        assert parsed["Subject"] == (
            f"Report Domain: example.com Submitter: example.org Report-ID: <{due.report_id}>"
        )
        (attachment,) = parsed.iter_attachments()
        assert attachment.get_content_type() == "application/gzip"
        assert attachment.get_filename() == due.file_name
        assert gzip.decompress(attachment.get_content()) == XML
        assert dkimpy.verify(raw, dnsfunc=dkimpy_dns(RECORDS))
        authenticator = Authenticator(authserv_id="mx.example.com", resolver=zone(RECORDS))
        verdict = authenticator.verify(
            raw, ip="127.0.0.1", mail_from="dmarc-noreply@example.org", now=NOW
        )
        assert verdict.dmarc is not None
        assert verdict.dmarc.result is DmarcResult.PASS
        assert verdict.dmarc.dkim_aligned == ("example.org",)
    assert sorted(recipients) == ["agg@example.net", "dmarc@example.com"]
