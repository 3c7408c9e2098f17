"""Two tiers of real Postfix (Debian's package; .ci/run installs it in CI): a border that
verifies (milter A, authserv-id border.example.org) and forwards with XFORWARD to an
internal Postfix whose milter (B, mx.example.org) trusts the border: its Authentication-
Results field is kept, and B's own is computed for the real client the border's Received
field names, not for the border's address (docs/milter.md, "Multi-tier inbound").

It also shows what Postfix gives a milter behind XFORWARD: the internal Postfix logs the
forwarded client (``orig_client=``), while milter B is told the border's address at
CONNECT (its log line's ``relay``): Postfix's milter macros and CONNECT carry the actual
client, XFORWARD or not.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailauth.dns import ZoneResolver
from mailauth.milter import Milter, negotiation
from mailauth.milter import protocol as p
from mailauth.pipeline import Authenticator
from tests.dnsserver import LoopbackDnsServer
from tests.postfix import ThrowawayPostfix, free_port
from tests.test_milter_postfix import _authentication_results, _delivered_with, _send

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
AVAILABLE = shutil.which("postfix") is not None and os.geteuid() == 0

if not AVAILABLE:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Postfix and root for the milter tests (.ci/run installs it)")
    pytest.skip("needs Debian's postfix package and root", allow_module_level=True)

BORDER_TOML = """\
listen = "inet:{port}@127.0.0.1"
authserv_id = "border.example.org"
[dns]
nameservers = ["{dns}"]
[inbound]
reject_dmarc = true
trusted_authserv_ids = ["mx.example.org"]   # the ADMD's other id: removed from outside mail
"""
INTERNAL_TOML = """\
listen = "inet:{port}@127.0.0.1"
authserv_id = "mx.example.org"
log_format = "json"
[dns]
nameservers = ["{dns}"]
[inbound]
reject_dmarc = true
trusted_authserv_ids = ["border.example.org"]
received_spf = true
[inbound.relay]
networks = ["127.0.0.1/32"]
received_by = ["border.example.org"]
"""
SYSLOG = """\
[logging]
syslog = true
syslog_socket = "{path}"
syslog_facility = "local3"
"""


def _milter(tmp: Path, name: str, text: str, dns: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    config = tmp / f"{name}.toml"
    config.write_text(text.format(port=port, dns=dns))
    command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    assert "listening" in process.stderr.readline()
    return process, port


@pytest.fixture(scope="module")
def tiers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ThrowawayPostfix, ThrowawayPostfix, socket.socket]]:
    """(border, internal, the syslog socket milter B logs to)."""
    tmp = tmp_path_factory.mktemp("tiers")
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(tmp / "log.sock"))
    syslog.setblocking(False)
    internal_toml = INTERNAL_TOML + SYSLOG.format(path=tmp / "log.sock")
    with syslog, LoopbackDnsServer((DEMO / "example.com.zone").read_text()) as dns:
        border_milter, border_port = _milter(tmp, "border", BORDER_TOML, dns.address)
        internal_milter, internal_port = _milter(tmp, "internal", internal_toml, dns.address)
        internal_cf = {"smtpd_authorized_xforward_hosts": "127.0.0.0/8"}
        try:
            with ThrowawayPostfix(internal_port, internal_cf) as internal:
                forward = f"smtp:[127.0.0.1]:{internal.port}"
                border_cf = {
                    "myhostname": "border.example.org",
                    "smtp_send_xforward_command": "yes",
                    "default_transport": forward,
                    "relay_transport": forward,
                }
                with ThrowawayPostfix(border_port, border_cf) as border:
                    yield border, internal, syslog
        finally:
            milters = {"border": border_milter, "internal": internal_milter}
            for process in milters.values():
                process.terminate()
            slow = []
            for name, process in milters.items():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    slow.append(name)
                    process.kill()  # (not left behind for the rest of the run)
                    process.wait()
            assert not slow, f"milters that did not stop within 30 s of SIGTERM: {slow}"


def test_two_tiers_deliver_the_border_results_and_ours_for_the_real_client(
    tiers: tuple[ThrowawayPostfix, ThrowawayPostfix, socket.socket],
) -> None:
    border, internal, _ = tiers
    forged = (
        b"Authentication-Results: border.example.org; dmarc=pass header.from=bank.example\r\n"
        b"Authentication-Results: mx.example.org; dmarc=pass header.from=bank.example\r\n"
        b"Received-SPF: pass (mx.example.org: forged) receiver=mx.example.org;\r\n"
    )
    raw = forged + b"X-Tier: tier-1\r\n" + (DEMO / "message.eml").read_bytes()
    _send(border, raw, "192.0.2.10", "mail.example.com", "alice@example.com")
    delivered = _delivered_with(internal, b"X-Tier: tier-1")
    assert b"bank.example" not in delivered  # both forgeries gone at the border
    headers = _authentication_results(delivered)
    assert len(headers) == 2, headers
    (upstream,) = [h for h in headers if h.startswith("Authentication-Results: border.example")]
    (ours,) = [h for h in headers if h.startswith("Authentication-Results: mx.example.org;")]
    for header in (upstream, ours):
        for clause in ("spf=pass", "dkim=pass", "dmarc=pass", "smtp.remote-ip=192.0.2.10"):
            assert clause in header, header
    assert "smtp.helo=mail.example.com" in ours  # (the border's address would fail SPF)
    received_spf = [
        line
        for line in delivered.decode().replace("\n ", " ").splitlines()
        if line.startswith("Received-SPF:")
    ]
    assert len(received_spf) == 1 and "client-ip=192.0.2.10;" in received_spf[0]
    assert "receiver=mx.example.org;" in received_spf[0]
    # XFORWARD reached the internal Postfix (it logs the border's client) ...
    assert "orig_client=unknown[192.0.2.10]" in internal.log(), internal.log()[-2000:]


def test_the_internal_hop_never_checks_spf_for_an_address_in_the_senders_helo(
    tiers: tuple[ThrowawayPostfix, ThrowawayPostfix, socket.socket],
) -> None:
    """Postfix writes HELO as given: ``Received: from [192.0.2.10] (unknown [198.51.100.7])``
    for a sender at 198.51.100.7 saying ``EHLO [192.0.2.10]`` (an address example.com's SPF
    lists). The internal hop checks SPF for 198.51.100.7, the address in the comment."""
    border, internal, _ = tiers
    raw = (
        b"From: Mallory <m@unsigned.example>\r\nTo: bob@example.net\r\nSubject: helo\r\n"
        b"X-Tier: tier-helo\r\nMessage-ID: <tier-helo@attacker.example>\r\n\r\nHi.\r\n"
    )
    _send(border, raw, "198.51.100.7", "[192.0.2.10]", "alice@example.com")
    delivered = _delivered_with(internal, b"X-Tier: tier-helo")
    assert b"from [192.0.2.10] (unknown [198.51.100.7])" in delivered  # (as Postfix writes it)
    headers = _authentication_results(delivered)
    (ours,) = [h for h in headers if h.startswith("Authentication-Results: mx.example.org;")]
    assert "smtp.remote-ip=198.51.100.7" in ours and "spf=fail" in ours, ours


def test_a_spoof_is_refused_at_the_border(
    tiers: tuple[ThrowawayPostfix, ThrowawayPostfix, socket.socket],
) -> None:
    border, _, _ = tiers
    raw = (
        b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: spoof\r\n"
        b"Message-ID: <tier-spoof@attacker.example>\r\n\r\nSend money.\r\n"
    )
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(border, raw, "198.51.100.7", "attacker.example", "alice@example.com")
    assert refused.value.smtp_code == 550


def test_straight_to_the_internal_host_the_border_id_is_not_trusted(
    tiers: tuple[ThrowawayPostfix, ThrowawayPostfix, socket.socket],
) -> None:
    """A message that did not come through the border (its client is not a relay): a field
    with the border's authserv-id is removed, and the message is verified as any other."""
    _, internal, _ = tiers
    forged = b"Authentication-Results: border.example.org; dmarc=pass header.from=bank.example\r\n"
    raw = forged + b"X-Tier: tier-2\r\n" + (DEMO / "message.eml").read_bytes()
    _send(internal, raw, "192.0.2.10", "mail.example.com", "alice@example.com")
    delivered = _delivered_with(internal, b"X-Tier: tier-2")
    assert b"bank.example" not in delivered
    (ours,) = _authentication_results(delivered)
    assert ours.startswith("Authentication-Results: mx.example.org;") and "dmarc=pass" in ours


def test_milter_b_logs_to_syslog_the_real_client_and_the_relay(
    tiers: tuple[ThrowawayPostfix, ThrowawayPostfix, socket.socket],
) -> None:
    """Milter B logs to a syslog socket (facility local3: <158> for info): its CONNECT came
    from the border (127.0.0.1, ``relay``), its ``client`` is the one the border saw."""
    border, internal, syslog = tiers
    raw = b"X-Tier: tier-3\r\n" + (DEMO / "message.eml").read_bytes()
    _send(border, raw, "192.0.2.10", "mail.example.com", "alice@example.com")
    _delivered_with(internal, b"X-Tier: tier-3")
    deadline = time.monotonic() + 20
    records: list[dict[str, str]] = []
    while time.monotonic() < deadline and not any(r.get("relay") for r in records):
        try:
            datagram = syslog.recv(65536).decode()
        except BlockingIOError:
            time.sleep(0.1)
            continue
        assert datagram.startswith("<158>mailauth[") or datagram.startswith("<156>"), datagram
        text = datagram.partition("]: milter: ")[2].rstrip("\0")
        if text.startswith("{"):
            records.append(json.loads(text))
    relayed = [r for r in records if r.get("relay")]
    assert relayed, records
    assert (relayed[-1]["relay"], relayed[-1]["client"], relayed[-1]["helo"]) == (
        "127.0.0.1",
        "192.0.2.10",
        "mail.example.com",
    )


def test_postfix_gives_a_milter_the_actual_client_behind_xforward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What Postfix passes when the client XFORWARDs another: the CONNECT step and the
    client macros -- asked for at every stage, smtpd's and cleanup's -- all carry the
    connecting host (here 127.0.0.1), never the forwarded 192.0.2.10. This is why the
    milter reads the border's Received field rather than macros."""
    wanted = "{client_addr} {client_name} _ {client_ptr}"
    monkeypatch.setattr(negotiation, "MACROS", dict.fromkeys(negotiation.MACROS, wanted))
    seen: list[tuple[bytes, str]] = []

    class Probe(Milter):
        async def _dispatch(self, session: Any, command: bytes, data: bytes) -> bytes | None:
            if command == p.CONNECT:
                seen.append((command, p.parse_connect(data).address))
            elif command in (p.HELO, p.MAIL, p.HEADER, p.EOM):
                seen.append((command, session.macros.get("client_addr", "")))
            return await super()._dispatch(session, command, data)

    port = free_port()
    loop = asyncio.new_event_loop()
    resolver = ZoneResolver.from_files([DEMO / "example.com.zone"])
    milter = Probe(Authenticator("mx.example.org", resolver))
    started = loop.run_until_complete(asyncio.start_server(milter.handle, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with ThrowawayPostfix(port, {"smtpd_authorized_xforward_hosts": "127.0.0.0/8"}) as mta:
            with smtplib.SMTP("127.0.0.1", mta.port, timeout=60) as smtp:
                smtp.ehlo("border.example.org")
                forwarded = "ADDR=192.0.2.10 NAME=mail.example.com HELO=mail.example.com"
                assert smtp.docmd("XFORWARD", forwarded)[0] == 250
                smtp.sendmail("alice@example.com", ["bob@example.net"], b"Subject: x\r\n\r\nx\r\n")
            mta.delivered(1)
    finally:
        loop.call_soon_threadsafe(started.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    steps = {command for command, _ in seen}
    assert {p.CONNECT, p.HELO, p.MAIL, p.HEADER, p.EOM} <= steps, seen
    assert {address for _, address in seen} == {"127.0.0.1"}, seen
