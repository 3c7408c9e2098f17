"""Handing report messages to the configured relay over SMTP (RFC 5321), with ``smtplib``.

One connection serves every message of a run (:class:`SmtpRelay`); each message ends with
one outcome per recipient: ``sent``, ``temporary`` (a 4xx reply, or anything that stopped
the transaction before the relay answered for that recipient: connection, TLS, AUTH, a
dropped line -- try again later) or ``permanent`` (a 5xx reply to RCPT TO, or to MAIL FROM
or the message's data for all its recipients -- the same bytes would be refused again).

STARTTLS (RFC 3207) is used whenever the relay offers it, with the certificate checked
against the system's CAs (or ``cafile``) unless ``check_certificate`` is off; ``tls="required"``
refuses to go on without it, ``tls="none"`` never asks. To a loopback relay (the default,
the local MTA) opportunistic STARTTLS does not check the certificate unless a ``cafile`` is
given: nobody but root stands between, and a stock Debian Postfix offers STARTTLS with a
self-signed certificate for its host name, which no check passes (RFC 7435: opportunistic
security encrypts without authenticating). A failed handshake is never a reason
to go on in clear text. AUTH (RFC 4954) is used when a user name is configured, and only
over TLS unless ``clear_text_auth`` allows otherwise (a relay on the same host).
The password is a value here; the command line reads it from a file or the environment.

``smtplib`` rather than aiosmtplib: report delivery is a batch job (``mailauth reports
send``) that blocks anyway; the standard library's client has STARTTLS, AUTH and the
per-recipient replies this needs, with no dependency to add. Under asyncio (failure reports
sent from the milter), :func:`deliver_async` runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

from mailauth.errors import ConfigError

TLS_MODES = ("opportunistic", "required", "none")


class RecipientStatus(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What became of one recipient: the status, the relay's reply code (None when it gave
    none) and its text, or the local reason."""

    recipient: str
    status: RecipientStatus
    code: int | None = None
    reply: str = ""


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where and how to hand reports over. ``helo``: the name to greet with (default: the
    host's name, as smtplib finds it)."""

    host: str
    port: int = 25
    tls: str = "opportunistic"
    check_certificate: bool = True
    cafile: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    helo: str | None = None
    clear_text_auth: bool = False

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise ConfigError(f"relay TLS mode {self.tls!r}: one of {', '.join(TLS_MODES)}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"relay port {self.port}: not a port number")
        if self.username is not None and self.password is None:
            raise ConfigError("relay AUTH needs a password (from a file or the environment)")

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        if not self.check_certificate or self._unchecked_loopback():
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _unchecked_loopback(self) -> bool:
        return self.tls == "opportunistic" and self.cafile is None and _is_loopback(self.host)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_relay(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (default port 25)."""
    bracketed = text.startswith("[")
    if bracketed:
        host, bracket, rest = text[1:].partition("]")
        port = rest[1:] if bracket and rest.startswith(":") else "25" if not rest else "x"
        ok = bool(bracket)
    else:
        host, _, port = text.partition(":")
        port, ok = port or ("x" if text.endswith(":") else "25"), ":" not in port
    if not (ok and host and port.isdigit() and 0 < int(port) < 65536 and " " not in host):
        raise ConfigError(f"relay {text!r}: not HOST[:PORT]")
    return host, int(port)


class _Stop(Exception):
    def __init__(self, status: RecipientStatus, reply: str, code: int | None = None) -> None:
        super().__init__(reply)
        self.status, self.reply, self.code = status, reply, code


class SmtpRelay:
    """One connection to the relay, opened on first use and kept for the next message;
    ``with SmtpRelay(settings) as relay: relay.send(...)`` closes it at the end."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def send(
        self, raw: bytes, mail_from: str, recipients: Sequence[str]
    ) -> tuple[RecipientOutcome, ...]:
        """Send one message; one outcome per recipient, in order."""
        pending = list(dict.fromkeys(recipients))
        done: dict[str, RecipientOutcome] = {}
        try:
            smtp = self._connect()
            self._transaction(smtp, raw, mail_from, pending, done)
        except _Stop as stop:
            self._drop_if_broken(stop)
            for rcpt in pending:
                done.setdefault(rcpt, RecipientOutcome(rcpt, stop.status, stop.code, stop.reply))
        return tuple(done[r] for r in pending)

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        raw: bytes,
        mail_from: str,
        pending: list[str],
        done: dict[str, RecipientOutcome],
    ) -> None:
        try:
            options = [f"SIZE={len(raw)}"] if smtp.has_extn("size") else []
            if not raw.isascii() and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")  # (RFC 6152: a failure report's original)
            code, reply = smtp.mail(mail_from, options)
            _check(code, reply, "MAIL FROM")
            accepted = []
            for rcpt in pending:
                code, reply = smtp.rcpt(rcpt)
                if code in (250, 251):
                    accepted.append(rcpt)
                else:
                    done[rcpt] = RecipientOutcome(rcpt, _status(code), code, _text(reply))
            if not accepted:
                smtp.rset()
                return
            answer: bytes | str
            try:
                code, answer = smtp.data(raw)
            except smtplib.SMTPDataError as exc:
                code, answer = exc.smtp_code, exc.smtp_error
            _check(code, answer, "DATA")
            for rcpt in accepted:
                done[rcpt] = RecipientOutcome(rcpt, RecipientStatus.SENT, code, _text(answer))
        except smtplib.SMTPServerDisconnected as exc:
            raise _Stop(RecipientStatus.TEMPORARY, f"connection lost: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise _Stop(RecipientStatus.TEMPORARY, f"{type(exc).__name__}: {exc}") from None

    def _connect(self) -> smtplib.SMTP:
        if self._smtp is not None:
            try:
                if self._smtp.noop()[0] == 250:
                    return self._smtp
            except (smtplib.SMTPException, OSError):
                pass
            self._smtp.close()
            self._smtp = None
        s = self.settings
        try:
            smtp = smtplib.SMTP(s.host, s.port, local_hostname=s.helo, timeout=s.timeout)
        except smtplib.SMTPConnectError as exc:
            raise _Stop(RecipientStatus.TEMPORARY, _text(exc.smtp_error), exc.smtp_code) from None
        except (smtplib.SMTPException, OSError) as exc:
            why = f"cannot connect to {s.host}:{s.port}: {exc}"
            raise _Stop(RecipientStatus.TEMPORARY, why) from None
        try:
            self._hello(smtp)
        except _Stop:
            smtp.close()
            raise
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            smtp.close()
            raise _Stop(RecipientStatus.TEMPORARY, f"{type(exc).__name__}: {exc}") from None
        self._smtp = smtp
        return smtp

    def _hello(self, smtp: smtplib.SMTP) -> None:
        s = self.settings
        code, reply = smtp.ehlo()
        if code != 250:
            raise _Stop(RecipientStatus.TEMPORARY, f"EHLO: {_text(reply)}", code)
        secure = False
        if s.tls != "none" and smtp.has_extn("starttls"):
            smtp.starttls(context=s.tls_context())  # (raises on a failed handshake)
            smtp.ehlo()
            secure = True
        elif s.tls == "required":
            raise _Stop(RecipientStatus.TEMPORARY, f"{s.host} does not offer STARTTLS")
        if s.username is None:
            return
        if not (secure or s.clear_text_auth):
            why = "AUTH refused without TLS (the password would cross the network in clear)"
            raise _Stop(RecipientStatus.TEMPORARY, why)
        if not smtp.has_extn("auth"):
            raise _Stop(RecipientStatus.TEMPORARY, f"{s.host} does not offer AUTH")
        try:
            smtp.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            why = f"AUTH failed: {_text(exc.smtp_error)}"
            raise _Stop(RecipientStatus.TEMPORARY, why, exc.smtp_code) from None

    def _drop_if_broken(self, stop: _Stop) -> None:
        """After a refusal the connection serves the next message (once reset); after a
        local or connection failure it is closed."""
        if self._smtp is None:
            return
        if stop.code is not None:
            try:
                self._smtp.rset()
                return
            except (smtplib.SMTPException, OSError):
                pass
        self._smtp.close()
        self._smtp = None


def _check(code: int, reply: bytes | str, what: str) -> None:
    if code >= 400 or code < 200:
        status = _status(code)
        raise _Stop(status, f"{what}: {code} {_text(reply)}", code)


def _status(code: int) -> RecipientStatus:
    return RecipientStatus.PERMANENT if 500 <= code < 600 else RecipientStatus.TEMPORARY


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:500]


def deliver(
    raw: bytes, mail_from: str, recipients: Sequence[str], settings: RelaySettings
) -> tuple[RecipientOutcome, ...]:
    """Send one message over a connection of its own."""
    with SmtpRelay(settings) as relay:
        return relay.send(raw, mail_from, recipients)


async def deliver_async(
    raw: bytes, mail_from: str, recipients: Sequence[str], settings: RelaySettings
) -> tuple[RecipientOutcome, ...]:
    """:func:`deliver` in a worker thread, for code on an event loop."""
    return await asyncio.to_thread(deliver, raw, mail_from, recipients, settings)
