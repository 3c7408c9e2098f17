"""Report delivery over SMTP: STARTTLS, AUTH, per-recipient 4xx/5xx, against aiosmtpd on
loopback (a real Postfix is in tests/test_reports_postfix.py)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailauth.errors import ConfigError
from mailauth.reports.smtp import (
    RecipientOutcome,
    RecipientStatus,
    RelaySettings,
    SmtpRelay,
    deliver,
    parse_relay,
)
from tests.postfix import free_port

MESSAGE = b"From: r@example.org\r\nTo: a@example.com\r\nSubject: t\r\n\r\n.leading dot\r\nbody\r\n"


@dataclass
class Handler:
    """Replies by recipient: ``temp*`` 450, ``perm*`` 550; data containing ``REJECT`` 554."""

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    tls_seen: list[bool] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("temp"):
            return "450 4.2.1 mailbox busy, try later"
        if address.startswith("perm"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if b"REJECT" in content:
            return "554 5.6.0 content refused"
        if b"LATER" in content:
            return "451 4.3.0 queue full"
        self.tls_seen.append(session.ssl is not None)
        self.mail_options.append(list(envelope.mail_options))
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 2.0.0 queued"


@dataclass
class Server:
    handler: Handler
    port: int
    cafile: Path


def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "relay.crt", tmp / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _authenticate(
    server: SmtpServer, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"reports", b"s3cret")
    return AuthResult(success=ok, handled=False)  # (aiosmtpd then replies 535)


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """``@pytest.mark.parametrize("server", [{"tls": True, "auth": True}], indirect=True)``."""
    options: dict[str, bool] = getattr(request, "param", {})
    handler = Handler()
    port = free_port()
    cert, key = _certificate(tmp_path)
    kwargs: dict[str, Any] = {}
    if options.get("tls"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        kwargs["tls_context"] = context
    if options.get("auth"):
        kwargs["authenticator"] = _authenticate
        kwargs["auth_require_tls"] = bool(options.get("tls"))
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield Server(handler, port, cert)
    finally:
        controller.stop()


def _settings(server: Server, **kw: Any) -> RelaySettings:
    return RelaySettings("127.0.0.1", server.port, timeout=10, **kw)


def _statuses(outcomes: tuple[RecipientOutcome, ...]) -> list[tuple[str, RecipientStatus]]:
    return [(o.recipient, o.status) for o in outcomes]


def test_plain_delivery_with_per_recipient_outcomes(server: Server) -> None:
    recipients = ["a@example.com", "temp@example.com", "perm@example.com", "b@example.com"]
    outcomes = deliver(MESSAGE, "r@example.org", recipients, _settings(server))
    assert _statuses(outcomes) == [
        ("a@example.com", RecipientStatus.SENT),
        ("temp@example.com", RecipientStatus.TEMPORARY),
        ("perm@example.com", RecipientStatus.PERMANENT),
        ("b@example.com", RecipientStatus.SENT),
    ]
    assert (outcomes[1].code, outcomes[2].code) == (450, 550)
    assert "no such user" in outcomes[2].reply
    ((sender, rcpts, content),) = server.handler.received
    assert (sender, rcpts) == ("r@example.org", ["a@example.com", "b@example.com"])
    assert content == MESSAGE  # dot-stuffing undone by the server: the exact bytes arrived


def test_an_8bit_message_is_sent_with_body_8bitmime(server: Server) -> None:
    """RFC 6152: 8-bit content (a failure report's original) is announced; 7-bit is not."""
    eight = MESSAGE.replace(b"body", b"Gr\xc3\xbc\xc3\x9fe")
    for raw in (MESSAGE, eight):
        outcomes = deliver(raw, "r@example.org", ["a@example.com"], _settings(server))
        assert _statuses(outcomes) == [("a@example.com", RecipientStatus.SENT)]
    assert ["BODY=8BITMIME" in o for o in server.handler.mail_options] == [False, True]
    assert server.handler.received[1][2] == eight


def test_data_refusals_apply_to_every_accepted_recipient(server: Server) -> None:
    with SmtpRelay(_settings(server)) as relay:
        refused = relay.send(
            MESSAGE + b"REJECT\r\n", "r@example.org", ["a@x.example", "b@x.example"]
        )
        later = relay.send(
            MESSAGE + b"LATER\r\n", "r@example.org", ["a@x.example", "perm@x.example"]
        )
        fine = relay.send(MESSAGE, "r@example.org", ["a@x.example"])  # same connection, reset
    assert {o.status for o in refused} == {RecipientStatus.PERMANENT}
    assert _statuses(later) == [
        ("a@x.example", RecipientStatus.TEMPORARY),
        ("perm@x.example", RecipientStatus.PERMANENT),
    ]
    assert _statuses(fine) == [("a@x.example", RecipientStatus.SENT)]


def test_nothing_listening_is_temporary() -> None:
    settings = RelaySettings("127.0.0.1", free_port(), timeout=5)
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], settings)
    assert (outcome.status, outcome.code) == (RecipientStatus.TEMPORARY, None)
    assert "cannot connect" in outcome.reply


@pytest.mark.parametrize("server", [{"tls": True}], indirect=True)
def test_starttls_when_offered_with_the_certificate_checked(server: Server) -> None:
    settings = _settings(server, cafile=str(server.cafile))
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], settings)
    assert outcome.status is RecipientStatus.SENT
    assert server.handler.tls_seen == [True]


@pytest.mark.parametrize("server", [{"tls": True}], indirect=True)
def test_opportunistic_tls_to_a_loopback_relay_does_not_check_the_certificate(
    server: Server,
) -> None:
    """The default relay is the local MTA on 127.0.0.1, and a stock Debian Postfix offers
    STARTTLS with its self-signed "snakeoil" certificate, for its host name: checked, no
    report ever left. On loopback (nobody but root in between) opportunistic STARTTLS
    encrypts without checking the certificate, as RFC 7435 opportunistic security does;
    ``required`` or a CA file checks it still (the test below)."""
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], _settings(server))
    assert outcome.status is RecipientStatus.SENT
    assert server.handler.tls_seen == [True]
    assert not RelaySettings("localhost").tls_context().check_hostname
    assert RelaySettings("192.0.2.25").tls_context().check_hostname
    assert RelaySettings("relay.example.net").tls_context().check_hostname
    assert RelaySettings("::1", tls="required").tls_context().check_hostname


@pytest.mark.parametrize("server", [{"tls": True}], indirect=True)
def test_an_unverifiable_certificate_stops_delivery_not_tls(server: Server) -> None:
    settings = _settings(server, tls="required")
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], settings)
    assert outcome.status is RecipientStatus.TEMPORARY
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.reply
    assert server.handler.received == []  # never fell back to clear text
    unchecked = _settings(server, tls="required", check_certificate=False)
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], unchecked)
    assert outcome.status is RecipientStatus.SENT


def test_tls_required_but_not_offered(server: Server) -> None:
    (outcome,) = deliver(MESSAGE, "r@x", ["a@example.com"], _settings(server, tls="required"))
    assert outcome.status is RecipientStatus.TEMPORARY
    assert "does not offer STARTTLS" in outcome.reply
    assert server.handler.received == []


@pytest.mark.parametrize("server", [{"tls": True, "auth": True}], indirect=True)
def test_auth_over_starttls(server: Server) -> None:
    good = _settings(server, cafile=str(server.cafile), username="reports", password="s3cret")
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], good)
    assert outcome.status is RecipientStatus.SENT
    bad = _settings(server, cafile=str(server.cafile), username="reports", password="wrong")
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], bad)
    assert (outcome.status, outcome.code) == (RecipientStatus.TEMPORARY, 535), outcome
    assert outcome.reply.startswith("AUTH failed")
    assert len(server.handler.received) == 1


@pytest.mark.parametrize("server", [{"auth": True}], indirect=True)
def test_auth_is_never_sent_in_clear_unless_allowed(server: Server) -> None:
    settings = _settings(server, tls="none", username="reports", password="s3cret")
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], settings)
    assert outcome.status is RecipientStatus.TEMPORARY
    assert "AUTH refused without TLS" in outcome.reply
    assert server.handler.received == []
    allowed = _settings(server, username="reports", password="s3cret", clear_text_auth=True)
    (outcome,) = deliver(MESSAGE, "r@example.org", ["a@example.com"], allowed)
    assert outcome.status is RecipientStatus.SENT


def test_relay_settings_and_addresses() -> None:
    assert parse_relay("relay.example.org") == ("relay.example.org", 25)
    assert parse_relay("127.0.0.1:2525") == ("127.0.0.1", 2525)
    assert parse_relay("[::1]:587") == ("::1", 587)
    assert parse_relay("[::1]") == ("::1", 25)
    for bad in ("", "host:", "host:99999", "[::1", "::1:25", "a b:25"):
        with pytest.raises(ConfigError):
            parse_relay(bad)
    with pytest.raises(ConfigError, match="one of"):
        RelaySettings("h", tls="maybe")
    with pytest.raises(ConfigError, match="password"):
        RelaySettings("h", username="u")
    assert "s3cret" not in repr(RelaySettings("h", username="u", password="s3cret"))
