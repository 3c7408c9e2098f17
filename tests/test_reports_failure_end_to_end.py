"""Issue 16 item 4 end to end through real parts: a spoof of example.com (whose DMARC record
asks for failure reports, ruf= at home and at an external destination that agrees) and a
genuine message pass a real Postfix whose milter (``mailauth milter``, a subprocess, DNS from
a server on loopback, ``failure_reports = true``) queues the reports in a SQLite store;
``mailauth reports send`` then delivers them through a second Postfix on loopback to its
smtp-sink. Read back: ARF (multipart/report; report-type=feedback-report, Feedback-Type:
auth-failure, Auth-Failure: dmarc, the original header as text/rfc822-headers, no body), one
per destination, once; the DKIM signature verifies (mailauth and dkimpy) and is aligned."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import pytest

from mailauth.cli import main
from mailauth.dkim.keys import private_key_pem
from mailauth.pipeline import Authenticator
from mailauth.results import DmarcResult
from tests.dkim_helpers import RSA_KEY, dkimpy_dns, zone
from tests.dnsserver import LoopbackDnsServer
from tests.failure_helpers import (
    AGREES,
    BAD,
    DEMO_MESSAGE,
    EXTERNAL,
    GOOD,
    RUF,
    SPOOF,
    dmarc_record,
    zone_text,
)
from tests.postfix import ThrowawayPostfix, free_port
from tests.test_milter_postfix import _send
from tests.test_reports_end_to_end import REPORTER
from tests.test_reports_failure import _fields

AVAILABLE = shutil.which("postfix") is not None and os.geteuid() == 0
if not AVAILABLE:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Postfix and root for the report tests (.ci/run installs it)")
    pytest.skip("needs Debian's postfix package and root", allow_module_level=True)

RECORD = dmarc_record(f"rua=mailto:dmarc-reports@example.com; ruf={RUF},{EXTERNAL}; fo=1")


def test_failure_reports_go_out_through_postfix_as_signed_arf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, zone_file = tmp_path / "reports.sqlite", tmp_path / "world.zone"
    zone_file.write_text(zone_text(RECORD, AGREES))
    config = tmp_path / "milter.toml"
    with LoopbackDnsServer(zone_text(RECORD)) as dns:
        port = free_port()
        config.write_text(
            f'listen = "inet:{port}@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
            f'[dns]\nnameservers = ["{dns.address}"]\n'
            f'[reports]\nstore = "{store}"\nfailure_reports = true\n'
        )
        command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
        milter = subprocess.Popen(command, stderr=subprocess.PIPE)
        try:
            assert milter.stderr is not None
            assert b"listening" in milter.stderr.readline()
            with ThrowawayPostfix(port) as postfix:
                # (unchanged: SPF and DKIM pass aligned, so fo=1 asks for no report)
                _send(postfix, DEMO_MESSAGE, GOOD["ip"], GOOD["helo"], GOOD["mail_from"])
                _send(postfix, SPOOF, BAD["ip"], BAD["helo"], BAD["mail_from"])
                postfix.delivered(2, timeout=60)
        finally:
            milter.terminate()  # SIGTERM: the collector writes what it holds
            milter.wait(timeout=30)
    key = tmp_path / "rep2026.pem"
    key.write_bytes(private_key_pem(RSA_KEY))
    key.chmod(0o600)
    now = int(time.time()) + 60
    with ThrowawayPostfix(None) as relay:
        argv = ["reports", "send", "--store", str(store), "--org-name", "Example Receiver",
                "--email", "dmarc-noreply@example.org", "--submitter", "example.org",
                "--sign-key", str(key), "--sign-selector", "rep2026",
                "--relay", f"127.0.0.1:{relay.port}", "--relay-tls", "none",
                "--dns-zone", str(zone_file), "--now", str(now)]  # fmt: skip
        assert main(argv) == 0  # (no aggregate period has ended yet: failure reports only)
        delivered = relay.delivered(2, timeout=60)
        assert main(argv) == 0  # a second run sends nothing again
        time.sleep(1)
        assert len(list(relay.sink_dir.iterdir())) == 2
    recipients = set()
    for data in delivered:
        raw = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # (smtp-sink writes LF)
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        recipients.add(str(parsed["To"]))
        assert parsed.get_content_type() == "multipart/report"
        assert parsed.get_param("report-type") == "feedback-report"
        text, feedback, original = parsed.iter_parts()
        assert text.get_content_type() == "text/plain"
        assert feedback.get_content_type() == "message/feedback-report"
        fields = dict(_fields(feedback))
        assert fields["Feedback-Type"] == "auth-failure"
        assert fields["Auth-Failure"] == "dmarc"
        assert fields["Identity-Alignment"] == "dkim, spf"
        assert fields["Reported-Domain"] == "example.com"
        assert fields["Source-IP"] == BAD["ip"]
        assert fields["Original-Mail-From"] == f"<{BAD['mail_from']}>"
        assert fields["Delivery-Result"] == "delivered"
        assert "Original-Rcpt-To" not in fields  # (only on opt-in)
        assert original.get_content_type() == "text/rfc822-headers"
        header = original.get_payload(decode=True)
        assert isinstance(header, bytes)
        assert b"Subject: urgent wire transfer" in header and b"Received: from" in header
        assert b"account 1234" not in raw  # header only
        verdict = Authenticator("mx.example.net", zone(REPORTER)).verify(
            raw, ip="127.0.0.1", mail_from="dmarc-noreply@example.org", now=now + 60
        )
        assert verdict.dkim and verdict.dkim[0].result.value == "pass", verdict.dkim
        assert verdict.dmarc is not None and verdict.dmarc.result is DmarcResult.PASS
        assert verdict.dmarc.dkim_aligned == ("example.org",)
        with monkeypatch.context() as clock:
            clock.setattr(dkimpy.time, "time", lambda: now + 60)
            assert dkimpy.verify(raw, dnsfunc=dkimpy_dns(REPORTER))
    assert recipients == {"ruf@example.com", "ruf@reports.example.net"}
