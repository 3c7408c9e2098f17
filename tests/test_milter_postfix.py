"""The milter behind a real Postfix (Debian's package; .ci/run installs it in CI).

A throwaway Postfix on loopback (tests/postfix.py) calls ``mailauth milter`` (started as a
subprocess, with DNS from a server on loopback) and relays to Postfix's smtp-sink, which
writes every delivered message to a file. Messages go in over SMTP with XCLIENT, so that
SPF sees a real client address (192.0.2.10 and 198.51.100.7 are only data here).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailauth.arc import verify_arc
from mailauth.dkim import Signer, public_key_record
from mailauth.dkim.keys import private_key_pem
from mailauth.message import Message
from mailauth.plan import run_plan
from mailauth.results import ArcResult
from tests.dkim_helpers import dkimpy_dns, dkimpy_verify, verify, zone
from tests.dnsserver import LoopbackDnsServer
from tests.postfix import ThrowawayPostfix, free_port

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
AVAILABLE = shutil.which("postfix") is not None and os.geteuid() == 0

if not AVAILABLE:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Postfix and root for the milter tests (.ci/run installs it)")
    pytest.skip("needs Debian's postfix package and root", allow_module_level=True)


SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayPostfix]:
    key_file = tmp_path_factory.mktemp("keys") / "out2026.pem"
    key_file.write_bytes(private_key_pem(SIGNING_KEY))
    key_file.chmod(0o600)
    # news.example.com has a DMARC record of its own, p=quarantine, and no authorised senders.
    zone = (DEMO / "example.com.zone").read_text() + (
        'news IN TXT "v=spf1 -all"\n_dmarc.news IN TXT "v=DMARC1; p=quarantine"\n'
    )
    # The key of selector "slow" never answers: a DNS timeout (the milter's 2 s per attempt).
    faults = {"slow._domainkey.example.com.": "silent"}
    with LoopbackDnsServer(zone, faults=faults) as dns:
        port = free_port()
        command = [sys.executable, "-m", "mailauth", "milter", "--listen", f"inet:{port}@127.0.0.1"]
        command += ["--authserv-id", "mx.example.org", "--nameserver", dns.address]
        command += ["--dns-timeout", "3"]
        command += ["--reject-dmarc", "--quarantine-dmarc", "--trusted-network", "192.0.2.128/25"]
        command += ["--sign", f"example.com:out2026:{key_file}"]
        command += ["--arc-seal", f"example.org:arc2026:{key_file}"]
        milter = subprocess.Popen(command, stderr=subprocess.PIPE)
        try:
            assert milter.stderr is not None
            assert b"listening" in milter.stderr.readline()
            with ThrowawayPostfix(port) as instance:
                yield instance
        finally:
            milter.terminate()
            milter.wait(timeout=30)


def _send(postfix: ThrowawayPostfix, raw: bytes, ip: str, helo: str, sender: str) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=60) as smtp:
        smtp.ehlo("client.example")
        code, reply = smtp.docmd("XCLIENT", f"ADDR={ip} NAME=[UNAVAILABLE] HELO={helo}")
        assert code == 220, reply
        smtp.ehlo(helo)
        smtp.sendmail(sender, ["bob@example.net"], raw)


def _delivered_with(postfix: ThrowawayPostfix, marker: bytes) -> bytes:
    """The delivered copy containing ``marker``, once smtp-sink has finished writing it."""
    deadline = time.monotonic() + 30
    seen: dict[Path, bytes] = {}
    while time.monotonic() < deadline:
        for path in postfix.sink_dir.iterdir():
            data = path.read_bytes()
            if marker in data and seen.get(path) == data:
                return data  # unchanged since the last look: complete
            seen[path] = data
        time.sleep(0.2)
    raise AssertionError(f"nothing delivered with {marker!r}; log:\n{postfix.log()[-3000:]}")


def _authentication_results(message: bytes) -> list[str]:
    """The Authentication-Results fields of a delivered copy, unfolded (smtp-sink writes LF)."""
    head = message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    unfolded = head.replace("\n ", " ").replace("\n\t", " ")
    lines = unfolded.split("\n")
    return [line for line in lines if line.lower().startswith("authentication-results:")]


def test_a_signed_message_gets_passes_in_one_header(postfix: ThrowawayPostfix) -> None:
    raw = (DEMO / "message.eml").read_bytes()
    _send(postfix, raw, "192.0.2.10", "mail.example.com", "alice@example.com")
    delivered = _delivered_with(postfix, b"Message-ID: <demo-1@example.com>")
    (header,) = _authentication_results(delivered)
    assert header.startswith("Authentication-Results: mx.example.org;")
    for clause in ("spf=pass", "dkim=pass", "dmarc=pass"):
        assert clause in header, header
    # --arc-seal: the delivered copy carries our ARC set, valid for mailauth and for dkimpy
    message = delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    records = {"arc2026._domainkey.example.org": public_key_record(SIGNING_KEY)}
    outcome = run_plan(verify_arc(Message.parse(message)), zone(records))
    assert (outcome.result, outcome.domains) == (ArcResult.PASS, ("example.org",)), outcome.reason
    assert dkimpy.arc_verify(message, dnsfunc=dkimpy_dns(records))[0] == b"pass"


def test_a_spoofed_message_is_refused_with_550(postfix: ThrowawayPostfix) -> None:
    raw = (
        b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: spoof\r\n"
        b"Message-ID: <spoof-1@attacker.example>\r\n\r\nSend money.\r\n"
    )
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(postfix, raw, "198.51.100.7", "attacker.example", "alice@example.com")
    assert refused.value.smtp_code == 550
    assert b"DMARC policy of example.com says reject" in refused.value.smtp_error


def test_a_forged_authentication_results_is_gone(postfix: ThrowawayPostfix) -> None:
    # RFC 8601 5: every field carrying our authserv-id, however it is written, goes.
    forged = (
        b"Authentication-Results: mx.example.org; dkim=pass header.d=bank.example\r\n"
        b"authentication-results: MX.Example.ORG; dkim=pass header.d=bank.example\r\n"
        b"Authentication-Results : mx.example.org; dkim=pass header.d=bank.example\r\n"
        b"Authentication-Results:\r\n mx.example.org;\r\n dkim=pass header.d=bank.example\r\n"
        b"Authentication-Results: (ours) mx.example.org (1); dkim=pass header.d=bank.example\r\n"
        b'Authentication-Results: "mx.example.org"; dkim=pass header.d=bank.example\r\n'
        b"Authentication-Results:mx.example.org;dkim=pass header.d=bank.example\r\n"
    )
    other = b"Authentication-Results: relay.example; spf=pass smtp.mailfrom=x@example.com\r\n"
    raw = (DEMO / "message.eml").read_bytes()
    raw = raw.replace(b"Message-ID: <demo-1@example.com>", b"Message-ID: <demo-2@example.com>")
    _send(postfix, forged + other + raw, "192.0.2.10", "mail.example.com", "alice@example.com")
    delivered = _delivered_with(postfix, b"<demo-2@example.com>")
    headers = _authentication_results(delivered)
    assert b"bank.example" not in delivered  # (also where the name is written differently)
    assert any(h.startswith("Authentication-Results: relay.example;") for h in headers)
    ours = [h for h in headers if h.startswith("Authentication-Results: mx.example.org;")]
    assert len(ours) == 1 and "spf=pass" in ours[0]


def test_mail_from_a_trusted_network_is_delivered_dkim_signed(postfix: ThrowawayPostfix) -> None:
    raw = (DEMO / "message.eml").read_bytes()
    raw = raw[raw.index(b"From: ") :].replace(b"<demo-1@example.com>", b"<outbound-1@example.com>")
    _send(postfix, raw, "192.0.2.200", "laptop.example.com", "alice@example.com")
    delivered = _delivered_with(postfix, b"<outbound-1@example.com>")
    message = delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"DKIM-Signature:" in message
    assert not _authentication_results(message)  # outbound mail is signed, not verified
    assert b"ARC-Seal:" not in message  # nor sealed
    records = {"out2026._domainkey.example.com": public_key_record(SIGNING_KEY)}
    (outcome,) = verify(message, zone(records), now=time.time())
    assert (outcome.result, outcome.selector) == ("pass", "out2026")
    assert dkimpy_verify(message, records)


def test_mail_submitted_on_the_host_is_signed_not_verified(postfix: ThrowawayPostfix) -> None:
    """Postfix's non_smtpd_milters present local submission as a client at 127.0.0.1, which
    the milter trusts by default (as OpenDKIM does): signed, never refused by DMARC."""
    raw = (
        b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: cron\n"
        b"Message-ID: <local-1@example.com>\n\nThe nightly report.\n"
    )
    postfix.sendmail(raw, "alice@example.com", "bob@example.net")
    delivered = _delivered_with(postfix, b"<local-1@example.com>")
    message = delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert not _authentication_results(message)
    records = {"out2026._domainkey.example.com": public_key_record(SIGNING_KEY)}
    (outcome,) = verify(message, zone(records), now=time.time())
    assert (outcome.result, outcome.selector) == ("pass", "out2026")
    assert dkimpy_verify(message, records)


def test_over_a_unix_socket_named_relative_to_the_queue_directory() -> None:
    """The docs' recipe for a chrooted Postfix: the socket inside the queue directory, named
    relative to it in main.cf (``unix:mailauth/milter.sock``)."""
    with LoopbackDnsServer((DEMO / "example.com.zone").read_text()) as dns:
        instance = ThrowawayPostfix("unix:mailauth/milter.sock")
        (instance.queue / "mailauth").mkdir(parents=True)
        socket_path = instance.queue / "mailauth" / "milter.sock"
        command = [sys.executable, "-m", "mailauth", "milter", "--listen", f"unix:{socket_path}"]
        # (666 here: the test runs as root and Postfix's daemons as postfix, in no group of ours)
        command += ["--socket-mode", "666", "--authserv-id", "mx.example.org"]
        command += ["--nameserver", dns.address]
        milter = subprocess.Popen(command, stderr=subprocess.PIPE)
        try:
            assert milter.stderr is not None
            assert b"listening" in milter.stderr.readline()
            with instance as postfix:
                raw = (DEMO / "message.eml").read_bytes()
                _send(postfix, raw, "192.0.2.10", "mail.example.com", "alice@example.com")
                delivered = _delivered_with(postfix, b"Message-ID: <demo-1@example.com>")
        finally:
            milter.terminate()
            milter.wait(timeout=30)
    (header,) = _authentication_results(delivered)
    assert "spf=pass" in header and "dkim=pass" in header and "dmarc=pass" in header


def test_a_quarantined_message_is_held_by_postfix(postfix: ThrowawayPostfix) -> None:
    raw = (
        b"From: News <news@news.example.com>\r\nTo: bob@example.net\r\nSubject: offer\r\n"
        b"Message-ID: <held-1@attacker.example>\r\n\r\nClick here.\r\n"
    )
    _send(postfix, raw, "198.51.100.7", "attacker.example", "news@news.example.com")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ours = [e for e in postfix.queue_listing() if e["sender"] == "news@news.example.com"]
        if ours:
            break
        time.sleep(0.2)
    assert [entry["queue_name"] for entry in ours] == ["hold"], postfix.log()[-2000:]
    assert not any(b"held-1@attacker.example" in p.read_bytes() for p in postfix.sink_dir.iterdir())


def test_a_dkim_key_timeout_is_deferred_not_rejected(postfix: ThrowawayPostfix) -> None:
    """A DNS timeout on the DKIM key of a p=reject domain, the message from an address SPF
    fails for: no aligned pass, and the aligned signature's result is temperror. RFC 9989:
    no DMARC failure can be concluded, so --reject-dmarc must not refuse it (before: 550);
    the policy at stake is one the milter acts on, so it is deferred (dmarc_temperror =
    tempfail, the default): the sender retries, a spoof that caused the error gets nothing."""
    raw = (
        b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: report\r\n"
        b"Message-ID: <slow-1@example.com>\r\n\r\nThe report.\r\n"
    )
    signed = Signer("example.com", "slow", SIGNING_KEY).sign(raw)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        _send(postfix, signed, "198.51.100.7", "fwd.example.net", "alice@example.com")
    assert deferred.value.smtp_code == 451
    assert b"DMARC for example.com could not be evaluated" in deferred.value.smtp_error
