"""Issue 16, end to end through real parts: messages from several domains pass a real
Postfix whose milter (``mailauth milter``, a subprocess, DNS from a server on loopback)
records into a SQLite report store; ``mailauth reports send`` then delivers the aggregate
reports through a second Postfix on loopback to its smtp-sink. Read back: Subject, file
name, media type, XML valid against the RFC 9990 schema with the counts that were sent,
and a DKIM signature that verifies (mailauth and dkimpy) and is aligned."""

from __future__ import annotations

import email
import gzip
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import pytest

from mailauth.cli import main
from mailauth.dkim import public_key_record
from mailauth.dkim.keys import private_key_pem
from mailauth.pipeline import Authenticator
from mailauth.results import DmarcResult
from tests.dkim_helpers import RSA_KEY, dkimpy_dns, zone
from tests.dnsserver import LoopbackDnsServer
from tests.postfix import ThrowawayPostfix, free_port
from tests.test_milter_postfix import DEMO, _send
from tests.test_reports_aggregate import SCHEMA

AVAILABLE = shutil.which("postfix") is not None and os.geteuid() == 0
if not AVAILABLE:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Postfix and root for the report tests (.ci/run installs it)")
    pytest.skip("needs Debian's postfix package and root", allow_module_level=True)

# example.com (the demo zone: DKIM-signed demo message, p=reject, rua at example.com);
# news.example.com (p=quarantine, its own rua, nobody authorised: fails); shop.example.com
# (p=none, its own DMARC record, rua at example.net: an external destination that agrees
# to receive them; its record is in the zone file that `reports send` reads).
ZONE = (DEMO / "example.com.zone").read_text() + (
    'news IN TXT "v=spf1 -all"\n'
    '_dmarc.news IN TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.com"\n'
    'shop IN TXT "v=spf1 ip4:203.0.113.0/24 -all"\n'
    '_dmarc.shop IN TXT "v=DMARC1; p=none; rua=mailto:agg@example.net"\n'
)
DESTINATIONS = 'shop.example.com._report._dmarc.example.net. IN TXT "v=DMARC1"\n'
REPORTER = {  # what the report's readers find: the submitter's key and policy
    "rep2026._domainkey.example.org": public_key_record(RSA_KEY),
    "_dmarc.example.org": "v=DMARC1; p=reject; adkim=s; aspf=s",
}
SENT = {"example.com": 3, "news.example.com": 2, "shop.example.com": 1}


def _message(sender: str, n: int) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: bob@example.net\r\nSubject: note {n}\r\n"
        f"Message-ID: <e2e-{n}-{sender}>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\n"
        f"hello {n}\r\n"
    ).encode()


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The store after the messages of SENT passed the milter, and the zone file."""
    store, zone_file = tmp_path / "reports.sqlite", tmp_path / "world.zone"
    zone_file.write_text("$ORIGIN example.com.\n" + ZONE + DESTINATIONS)
    config = tmp_path / "milter.toml"
    with LoopbackDnsServer(ZONE) as dns:
        port = free_port()
        config.write_text(
            f'listen = "inet:{port}@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
            f'[dns]\nnameservers = ["{dns.address}"]\n'
            f'[reports]\nstore = "{store}"\norg_name = "Example Receiver"\n'
            'email = "dmarc-noreply@example.org"\nsubmitter = "example.org"\n'
        )
        command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
        milter = subprocess.Popen(command, stderr=subprocess.PIPE)
        try:
            assert milter.stderr is not None
            assert b"listening" in milter.stderr.readline()
            with ThrowawayPostfix(port) as postfix:
                demo = (DEMO / "message.eml").read_bytes()
                for n in range(SENT["example.com"]):
                    raw = demo.replace(b"demo-1@example.com", f"demo-{n}@e2e".encode())
                    _send(postfix, raw, "192.0.2.10", "mail.example.com", "alice@example.com")
                for n in range(SENT["news.example.com"]):
                    raw = _message("news@news.example.com", n)
                    _send(postfix, raw, "198.51.100.7", "attacker.example", "news@news.example.com")
                for n in range(SENT["shop.example.com"]):
                    raw = _message("orders@shop.example.com", n)
                    _send(postfix, raw, "203.0.113.5", "out.shop.example.com",
                          "orders@shop.example.com")  # fmt: skip
                postfix.delivered(sum(SENT.values()), timeout=60)
        finally:
            milter.terminate()  # SIGTERM: the recorder writes what it holds
            milter.wait(timeout=30)
    yield store, zone_file


def test_milter_records_then_reports_go_out_through_postfix(
    recorded: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, zone_file = recorded
    key = tmp_path / "rep2026.pem"
    key.write_bytes(private_key_pem(RSA_KEY))
    key.chmod(0o600)
    later = int(time.time()) + 2 * 86400  # every period of today's messages is closed
    with ThrowawayPostfix(None) as relay:
        argv = ["reports", "send", "--store", str(store), "--org-name", "Example Receiver",
                "--email", "dmarc-noreply@example.org", "--submitter", "example.org",
                "--sign-key", str(key), "--sign-selector", "rep2026",
                "--relay", f"127.0.0.1:{relay.port}", "--relay-tls", "none",
                "--dns-zone", str(zone_file), "--now", str(later)]  # fmt: skip
        assert main(argv) == 0
        delivered = relay.delivered(len(SENT), timeout=60)
        assert main(argv) == 0  # a second run sends nothing again
        time.sleep(1)
        assert len(list(relay.sink_dir.iterdir())) == len(SENT)
    counts = {}
    for data in delivered:
        raw = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # (smtp-sink writes LF)
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        domain = re.match(r"Report Domain: (\S+) Submitter: example\.org Report-ID: <[^>]+>$",
                          parsed["Subject"])  # fmt: skip
        assert domain is not None, parsed["Subject"]
        (attachment,) = parsed.iter_attachments()
        assert attachment.get_content_type() == "application/gzip"
        name = attachment.get_filename()
        assert name is not None and name.startswith(f"example.org!{domain.group(1)}!")
        assert name.endswith(".xml.gz")
        xml = gzip.decompress(attachment.get_content()).decode()
        SCHEMA.validate(xml)
        counts[domain.group(1)] = sum(int(c) for c in re.findall(r"<count>(\d+)</count>", xml))
        verdict = Authenticator("mx.example.net", zone(REPORTER)).verify(
            raw, ip="127.0.0.1", mail_from="dmarc-noreply@example.org", now=later + 60
        )
        assert verdict.dkim and verdict.dkim[0].result.value == "pass", verdict.dkim
        with monkeypatch.context() as clock:  # (signed at --now: read then too)
            clock.setattr(dkimpy.time, "time", lambda: later + 60)
            assert dkimpy.verify(raw, dnsfunc=dkimpy_dns(REPORTER))
        assert verdict.dmarc is not None and verdict.dmarc.result is DmarcResult.PASS
        assert verdict.dmarc.dkim_aligned == ("example.org",)
    assert counts == SENT
