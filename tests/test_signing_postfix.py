"""Modes and the signing table behind a real Postfix, with real SMTP AUTH.

One `mailauth milter` process serves two sockets: a throwaway Postfix (tests/postfix.py)
calls the verifying one from its port-25 service and the signing one from a submission
service on another loopback port, where clients authenticate through a throwaway Dovecot
(tests/saslserver.py: Postfix's ``smtpd_sasl_type = dovecot``), so that the
``{auth_authen}`` macro the milter reads is the one Postfix itself sets after AUTH. A
second setup uses one socket and Postfix's ``milter_macro_daemon_name`` on the submission
service instead, with ``unauthorized = "unsigned"``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailauth.dkim import public_key_record
from mailauth.dkim.keys import private_key_pem
from tests import saslserver
from tests.dkim_helpers import dkimpy_verify, verify, zone
from tests.dnsserver import LoopbackDnsServer
from tests.postfix import ThrowawayPostfix, free_port
from tests.saslserver import ThrowawayDovecot
from tests.test_milter_postfix import _authentication_results, _delivered_with

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
AVAILABLE = shutil.which("postfix") is not None and os.geteuid() == 0 and saslserver.available()

if not AVAILABLE:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Postfix, Dovecot and root (.ci/run installs them)")
    pytest.skip(
        "needs Debian's postfix and dovecot-core packages, and root", allow_module_level=True
    )

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
RECORDS = {
    "rsa2026._domainkey.example.com": public_key_record(RSA_KEY),
    "ed2026._domainkey.example.com": public_key_record(ED_KEY),
}
USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@dataclass
class World:
    postfix: ThrowawayPostfix
    submission: int  # the submission service's port
    milter_log: Path


def _config(keys: Path, dns: str, listen: str, extra: str, unauthorized: str) -> str:
    return f"""listen = "{listen}"
authserv_id = "mx.example.org"
deadline = 20
{extra}
[dns]
nameservers = ["{dns}"]
timeout = 3

[outbound]
trusted_networks = []       # only authenticated senders sign

[signing]
expire = 604800
unauthorized = "{unauthorized}"

[signing.keys.rsa]
domain = "example.com"
selector = "rsa2026"
key = "{keys}/rsa.pem"

[signing.keys.ed]
domain = "example.com"
selector = "ed2026"
key = "{keys}/ed.pem"

[signing.keys.org]
domain = "example.org"
selector = "org2026"
key = "{keys}/ed.pem"

[[signing.table]]
from = "*@example.com"
keys = ["rsa", "ed"]

[[signing.table]]
from = "example.org"
keys = ["org"]

[signing.users]
alice = ["*@example.com"]
bob = ["example.org"]
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    for name, key in (("rsa", RSA_KEY), ("ed", ED_KEY)):
        (directory / f"{name}.pem").write_bytes(private_key_pem(key))
        (directory / f"{name}.pem").chmod(0o600)
    return directory


def _world(
    keys: Path, extra: str, milter_port: int, submission_milter: int | None, unauthorized: str
) -> Iterator[World]:
    """Milter (its configuration's ``extra`` lines), DNS, Postfix with a submission service
    (``submission_milter``: its own milter socket; None: the main one, daemon name
    ORIGINATING), Dovecot."""
    with LoopbackDnsServer((DEMO / "example.com.zone").read_text()) as dns:
        config = keys / f"milter-{milter_port}.toml"
        listen = f"inet:{milter_port}@127.0.0.1"
        config.write_text(_config(keys, dns.address, listen, extra, unauthorized))
        log = keys / f"milter-{milter_port}.log"
        command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
        with log.open("wb") as output:
            milter = subprocess.Popen(command, stderr=output)
        try:
            deadline = time.monotonic() + 30
            while b"listening" not in log.read_bytes():
                assert milter.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            submission = free_port()
            milters = f"inet:127.0.0.1:{submission_milter or milter_port}"
            options = [f"smtpd_milters={milters}", *saslserver.POSTFIX_SETTINGS]
            options.append("smtpd_client_restrictions=")
            if submission_milter is None:
                options.append("milter_macro_daemon_name=ORIGINATING")
            service = f"127.0.0.1:{submission} inet n - n - - smtpd\n"
            service += "".join(f"  -o {option}\n" for option in options)
            with contextlib.ExitStack() as stack:
                postfix = stack.enter_context(ThrowawayPostfix(milter_port, master_extra=service))
                stack.enter_context(ThrowawayDovecot(postfix.queue, USERS))  # (its queue dir)
                yield World(postfix, submission, log)
        finally:
            milter.terminate()
            milter.wait(timeout=30)


@pytest.fixture(scope="module")
def two_sockets(keys: Path) -> Iterator[World]:
    """Port "25" on a verifying socket, port "587" on a signing one; refuse."""
    verifying, signing = free_port(), free_port()
    extra = (
        f'mode = "verify"\n\n[[listeners]]\nlisten = "inet:{signing}@127.0.0.1"\nmode = "sign"\n'
    )
    yield from _world(keys, extra, verifying, signing, "refuse")


@pytest.fixture(scope="module")
def daemon_names(keys: Path) -> Iterator[World]:
    """One socket, verifying; the submission service's {daemon_name} signs; unsigned."""
    extra = 'mode = "verify"\n\n[daemon_modes]\nORIGINATING = "sign"\n'
    yield from _world(keys, extra, free_port(), None, "unsigned")


def _inbound(world: World) -> bytes:
    """The demo message (signed by example.com) from a client SPF authorises, on port 25."""
    raw = (DEMO / "message.eml").read_bytes()
    with smtplib.SMTP("127.0.0.1", world.postfix.port, timeout=60) as smtp:
        smtp.ehlo("client.example")
        code, reply = smtp.docmd(
            "XCLIENT", "ADDR=192.0.2.10 NAME=[UNAVAILABLE] HELO=mail.example.com"
        )
        assert code == 220, reply
        smtp.ehlo("mail.example.com")
        smtp.sendmail("alice@example.com", ["bob@example.net"], raw)
    return _delivered_with(world.postfix, b"<demo-1@example.com>")


def _submit(world: World, user: str | None, author: str, marker: str) -> bytes:
    """Submit on the submission port (AUTH as ``user``); the delivered copy, CRLF."""
    raw = (
        f"From: Someone <{author}>\r\nTo: bob@example.net\r\nSubject: hello\r\n"
        f"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\nMessage-ID: {marker}\r\n\r\nHello Bob.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", world.submission, timeout=60) as smtp:
        smtp.ehlo("laptop.example.com")
        if user is not None:
            smtp.login(user, USERS[user])
        smtp.sendmail(author, ["bob@example.net"], raw)
    delivered = _delivered_with(world.postfix, marker.encode())
    return delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _selectors(message: bytes) -> list[str]:
    return [o.selector for o in verify(message, zone(RECORDS), now=time.time())]


def test_port_25_verifies_and_587_signs_in_one_milter(two_sockets: World) -> None:
    inbound = _inbound(two_sockets)
    (header,) = _authentication_results(inbound)
    assert "dkim=pass" in header and "dmarc=pass" in header, header
    assert inbound.count(b"DKIM-Signature:") == 1  # the sender's own: not signed by us

    signed = _submit(two_sockets, "alice", "alice@example.com", "<two-out-1@example.com>")
    assert not _authentication_results(signed)  # signed, not verified
    outcomes = verify(signed, zone(RECORDS), now=time.time())
    assert [(o.result, o.selector) for o in outcomes] == [("pass", "rsa2026"), ("pass", "ed2026")]
    assert dkimpy_verify(signed, RECORDS)  # (the oracle, on the first: RSA)
    assert b"x=" in signed.split(b"\r\n\r\n")[0]  # [signing] expire

    # Mode "sign": a client neither trusted nor authenticated passes untouched.
    untouched = _submit(two_sockets, None, "alice@example.com", "<two-out-2@example.com>")
    assert b"DKIM-Signature:" not in untouched and not _authentication_results(untouched)


def test_an_authenticated_user_is_refused_for_a_domain_it_may_not_sign(two_sockets: World) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _submit(two_sockets, "alice", "ceo@example.org", "<two-out-3@example.org>")
    assert refused.value.smtp_code == 550
    assert (
        refused.value.smtp_error
        == b"5.7.1 Not authorized to send mail from example.org as this user"
    )
    deadline = time.monotonic() + 10
    while b"not_authorized_for" not in two_sockets.milter_log.read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    line = next(
        x for x in two_sockets.milter_log.read_text().splitlines() if "not_authorized_for" in x
    )
    assert '"user":"alice"' in line and '"action":"reject"' in line, line
    # bob may sign for example.org: signed there with its key alone.
    signed = _submit(two_sockets, "bob", "ceo@example.org", "<two-out-4@example.org>")
    assert signed.count(b"DKIM-Signature:") == 1 and b"s=org2026" in signed


def test_by_daemon_name_and_sent_unsigned(daemon_names: World) -> None:
    inbound = _inbound(daemon_names)
    (header,) = _authentication_results(inbound)
    assert "dmarc=pass" in header, header

    signed = _submit(daemon_names, "alice", "alice@example.com", "<dn-out-1@example.com>")
    assert _selectors(signed) == ["rsa2026", "ed2026"] and not _authentication_results(signed)
    assert dkimpy_verify(signed, RECORDS)

    unsigned = _submit(daemon_names, "alice", "ceo@example.org", "<dn-out-2@example.org>")
    assert b"DKIM-Signature:" not in unsigned and not _authentication_results(unsigned)
    assert '"action":"unsigned"' in daemon_names.milter_log.read_text()
