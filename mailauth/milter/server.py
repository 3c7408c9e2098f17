"""The milter: one asyncio server, one session per MTA connection, no protocol logic of its
own (the Authenticator decides; this module only talks to the MTA). The connections, read
and handled in fair turns, are :mod:`~mailauth.milter.turns`'; the steps of a message here.

Inbound mode: the message is gathered as the MTA sends it (headers with their exact leading
whitespace, SMFIP_HDR_LEADSPC; body chunks as they come), verified at end-of-message within a
deadline, incoming Authentication-Results fields that carry our authserv-id are deleted
(RFC 8601 5), and one Authentication-Results field is inserted at the top. Every reply of the
end-of-message step goes out in one write (no small-packet delay on TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Sequence

from mailauth.dkim import BodyHasher
from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError, MailauthError
from mailauth.message import Message
from mailauth.milter import inbound as rules
from mailauth.milter import outbound, replies, verifying
from mailauth.milter import protocol as p
from mailauth.milter.logline import log_line
from mailauth.milter.metrics import Metrics
from mailauth.milter.modes import Route, mode_of, route
from mailauth.milter.negotiation import failure_recipients, negotiate
from mailauth.milter.offload import Offloader, OffloadError, OffloadStats
from mailauth.milter.session import MessageState, Session
from mailauth.milter.settings import MilterSettings, Network
from mailauth.milter.turns import CONTINUE as _CONTINUE
from mailauth.milter.turns import PacketServer
from mailauth.pipeline import Authenticator
from mailauth.reports.failure_collect import MAX_RECIPIENTS
from mailauth.results import Verdict

log = logging.getLogger("mailauth.milter")
# What one message may make the milter hold: its header section, at most MAX_HEADER_SECTION
# octets and MAX_HEADER_FIELDS fields (mailauth.config: 1 MiB, 1,000; the body is never
# kept). Real mail stays far below (a few KiB and a few dozen fields; OpenDKIM's
# MaximumHeaders refuses header blocks over 64 KiB); a message past either is refused
# (552 5.3.4), since it cannot be checked and must not pass unchecked.
# All connections together hold at most this much header data: past it, a message is not
# checked (on_error: the milter is short of memory, the sender did nothing wrong).
MAX_HELD_HEADERS = 256 << 20
MAX_MACROS = 1 << 20  # per connection; past it the connection is a protocol error
_SPF = b"received-spf"
_FIELD_OVERHEAD = 100  # octets of Python objects per header field held, beyond its data


class Milter(PacketServer):
    """Serves the milter protocol for one :class:`Authenticator`."""

    def __init__(
        self,
        authenticator: Authenticator,
        settings: MilterSettings | None = None,
        metrics: Metrics | None = None,
        offloader: Offloader | None = None,
    ):
        super().__init__()
        self.authenticator = authenticator
        self.settings = settings or MilterSettings()
        self.metrics = metrics
        self.offloader = offloader  # heavy messages are checked in its worker processes
        # (what the workers did: kept across the offloaders reloads make, for the metrics)
        self.offload_stats = offloader.stats if offloader is not None else OffloadStats()
        self.collect_errors = 0  # messages the failure-report collector raised on (logged)
        self._collect_logged = -1e9
        self.held = 0  # header octets (and per-field overhead) held for all connections

    async def _dispatch(self, session: Session, command: bytes, data: bytes) -> bytes | None:
        """The reply to one packet: bytes to send, b"" for none, None to close."""
        if command == p.OPTNEG:
            return negotiate(self.settings, session, data)
        if command == p.MACRO:
            if len(data) == 1:
                return b""  # a stage's letter alone: no macros (as we ask for most stages)
            _, macros = p.parse_macros(data)
            session.macros.update(macros)
            if sum(len(k) + len(v) for k, v in session.macros.items()) > MAX_MACROS:
                raise p.ProtocolError(f"macros larger than {MAX_MACROS} octets")
            return b""
        if command == p.CONNECT:
            self._connect(session, data)
            # (Never ACCEPT here, not even for trusted clients with nothing to sign: their
            # messages too must lose Authentication-Results fields forged with our id.)
            return _CONTINUE
        if command == p.HELO:
            session.helo = p.strings(data)[0].decode("utf-8", "replace") if data else ""
            return _CONTINUE
        if command == p.MAIL:
            args = p.strings(data)
            self._reset(session, args[0].decode("utf-8", "replace") if args else "")
            chosen = self._route(session)
            verifies = chosen is Route.VERIFY or (
                chosen is Route.SIGN and self._verifies_trusted(session)
            )
            if verifies and not session.relay:  # (a relay's: once its client is known)
                session.message.spf = verifying.start_spf(self, session)
            return _CONTINUE
        if command == p.HEADER:
            self._add_header(session, data)
            return _CONTINUE
        if command == p.EOH:
            self._start(session)
            return _CONTINUE
        if command == p.BODY:
            await self._body(session, data)
            return _CONTINUE
        if command == p.EOM:
            self._feed(session, data)
            reply = await self._end_of_message(session)
            self._reset(session)
            return reply
        if command == p.ABORT:
            self._reset(session)
            return b""
        if command == p.QUIT:
            return None
        if command == p.QUIT_NC:
            # The SMTP connection ends, another one's packets follow on this socket: keep
            # only what was negotiated.
            self._reset(session)
            session.macros, session.address, session.helo = {}, "", ""
            session.trusted = session.relay = False
            return b""
        if command == p.RCPT:
            recipient = p.strings(data)[0].decode("utf-8", "replace") if data else ""
            if self.settings.record_recipients and not session.message.first_recipient:
                session.message.first_recipient = recipient[:512]
            if (
                failure_recipients(self.settings)
                and len(session.message.recipients) < MAX_RECIPIENTS
            ):
                session.message.recipients.append(recipient.strip("<> ")[:512])
            domain = recipient.strip("<> ").rpartition("@")[2]
            with contextlib.suppress(InvalidDomainError):  # (A-labels, as seal_domains holds)
                domain = normalize_domain(domain)
            if domain in self.settings.seal_domains:  # (all that _seals asks about)
                session.message.recipient_domains.add(domain)
            return _CONTINUE
        if command in (p.DATA, p.UNKNOWN):
            return _CONTINUE
        raise p.ProtocolError(f"unknown milter command {command!r}")

    def _connect(self, session: Session, data: bytes) -> None:
        connect = p.parse_connect(data)
        # No network client (a local socket, or "unknown": mail submitted on the host,
        # e.g. Postfix's non_smtpd_milters): local mail, treated as trusted.
        network = connect.family in ("inet", "inet6")
        session.address = connect.address if network else ""
        session.trusted = not network or _is_trusted(
            connect.address, self.settings.trusted_networks
        )
        # A relay (one of our border hosts, inbound.relay): its mail is inbound.
        session.relay = network and rules.is_in(
            connect.address, self.settings.inbound.relay_networks
        )
        session.trusted &= not session.relay

    def _reset(self, session: Session, mail_from: str = "") -> None:
        """The message in progress is over (or dropped): a new one begins."""
        session.message.discard()
        self._release(session.message)
        session.message = MessageState(mail_from)

    def _release(self, message: MessageState) -> None:
        self.held -= message.held
        message.held = 0

    def _add_header(self, session: Session, data: bytes) -> None:
        """Keep one header field, within the caps of one message and of all connections;
        note where the Authentication-Results and Received-SPF fields to remove are: our
        authserv-id's, and a trusted one's unless a relay sent the message (inbound.py)."""
        message = session.message
        name, value = p.strings(data, 2)
        options = self.settings.inbound
        lname = name.lower() if len(name) in (12, 22) else b""
        # (Received-SPF fields too, whether or not we write our own: RFC 7208 9.1 has ours
        # above all others, and what reads the topmost one must not find a sender's copy
        # claiming this host; docs/milter.md)
        if lname in (b"authentication-results", _SPF):
            spf = lname == _SPF
            trusted = options.trusted_authserv_ids
            whose = rules.claimed_by(value, self.authenticator.authserv_id, trusted, spf)
            gone = whose == rules.OURS or (whose == rules.TRUSTED and not session.relay)
            if spf:
                message.spf_fields += 1
                if gone:
                    message.forged_spf.append(message.spf_fields)
            else:
                message.results_fields += 1
                if gone:
                    message.forged.append(message.results_fields)
        if message.oversized or message.problem:
            return  # (the fields are dropped: nothing is checked or signed)
        message.header_bytes += len(data)
        message.header_fields += 1
        cost = len(data) + _FIELD_OVERHEAD
        settings = self.settings
        if message.header_fields > settings.max_header_fields:
            message.oversized = f"more than {settings.max_header_fields} header fields"
        elif message.header_bytes > settings.max_header_size:
            message.oversized = f"header section larger than {settings.max_header_size} octets"
        elif self.held + cost > MAX_HELD_HEADERS:
            message.problem = f"the milter holds {MAX_HELD_HEADERS} octets of header fields"
        else:
            text = name.decode("ascii", "replace")
            message.headers.append((text, value))
            message.tally.add(text, value)
            message.held += cost
            self.held += cost
            return
        message.headers.clear()
        self._release(message)

    def _start(self, session: Session) -> None:
        """End of headers: set up what the body will feed (inbound or outbound)."""
        message = session.message
        if message.started:
            return
        message.started = True
        if message.problem or message.oversized:  # (headers over a cap: neither checked
            return  # nor signed)
        section = replies.header_section(message.headers, session.leading_space)
        try:
            chosen = self._route(session)
            if chosen is Route.SIGN:
                signers = outbound.signers_of(
                    self.settings, session, Message.parse(section + b"\r\n")
                )
                message.signers = tuple(signers)
                message.hashers = {s.body_canon: BodyHasher(s.body_canon) for s in signers}
                if signers or message.refused or not self._verifies_trusted(session):
                    return
            if chosen is Route.PASS:
                return
            verifying.start(self, session, section)
        except (MailauthError, ValueError) as exc:
            message.intake, message.problem = None, str(exc)

    def _route(self, session: Session) -> Route:
        """Sign, verify or pass: the connection's mode (docs/signing.md) and its client."""
        settings = self.settings
        mode = mode_of(
            session.listener,
            session.macros,
            settings.mode,
            settings.listener_modes,
            settings.daemon_modes,
        )
        return route(mode, session.trusted or bool(session.macros.get("auth_authen")))

    def _verifies_trusted(self, session: Session) -> bool:
        """Whether a trusted network client's mail is verified when it is not signed
        (``inbound.verify_trusted_networks``): not SMTP-authenticated senders' (submission),
        nor mail with no network client (submitted on the host)."""
        return bool(
            self.settings.inbound.verify_trusted_networks
            and session.address
            and not session.macros.get("auth_authen")
        )

    async def _body(self, session: Session, chunk: bytes) -> None:
        self._feed(session, chunk)
        if session.message.backlog is not None:  # (a gathered message sent back to the loop)
            await verifying.catch_up(session.message)

    def _feed(self, session: Session, chunk: bytes) -> None:
        message = session.message
        if not message.started:
            self._start(session)  # an MTA that skipped EOH
        verifying.feed(self, session, chunk)
        for hasher in message.hashers.values():
            hasher.update(chunk)
        if message.seal_hasher is not None:
            message.seal_hasher.update(chunk)
        if message.body_copy is not None:
            message.body_copy.add(chunk)

    async def _end_of_message(self, session: Session) -> bytes:
        message = session.message
        queue_id = session.macros.get("i", "-")
        strip = replies.strip_forged(message)  # RFC 8601 5: on every path the message goes on
        if message.oversized:
            log.warning("message %s refused: %s", queue_id, message.oversized)
            self.count("reject")
            return p.replycode(f"552 5.3.4 Message header too large ({message.oversized})")
        if message.refused:
            return outbound.unauthorized(self, session, strip)
        if message.signers:
            return await outbound.signatures(self, session, strip)
        if message.refusal:  # (inbound.required_headers, inbound.multiple_authors)
            log.warning("message %s refused: %s", queue_id, message.refusal[10:])
            self.count("reject")
            return p.replycode(message.refusal)
        if message.intake is None and message.raw is None:
            if message.problem:
                log.warning("message %s not verified: %s", queue_id, message.problem)
                return replies.error_reply(self, strip)
            return strip + p.encode(p.CONTINUE)  # outbound mail with no key for its domain
        started = time.monotonic()
        intake, spf = message.intake, message.spf

        try:
            async with asyncio.timeout(self.settings.deadline):  # (no extra task, as wait_for)
                if intake is not None:
                    await verifying.catch_up(message)  # (a gathered body not fed yet)
                    verdict = await intake.verdict(spf)  # (SPF beside DKIM and ARC)
                else:
                    verdict = await verifying.offloaded(self, session, self.settings.deadline)
        except (TimeoutError, ValueError, OffloadError) as exc:
            log.warning("message %s not verified: %s", queue_id, str(exc) or "deadline")
            return replies.error_reply(self, strip)
        unsettled = (
            ""
            if replies.refuses(self.settings, verdict, message)
            else replies.unsettled(self.settings, message, verdict)
        )
        if unsettled and replies.defers(self.settings, verdict):
            reply, action = replies.deferral(verdict), "tempfail"
        else:
            seal = [] if unsettled else await outbound.seal(self, session, verdict)
            reply, action = replies.modifications(self.settings, session, verdict, seal, strip)
        seconds = time.monotonic() - started
        client, helo = session.real_client()
        facts = {
            "queue_id": session.macros.get("i", ""),
            "client": client,
            "helo": helo,
            "mail_from": session.message.mail_from,
        }
        if session.relay:
            facts["relay"] = session.address
        if replies.ignores(message, verdict):
            facts["ignored"] = message.ignored
        log.info("%s", log_line(facts, verdict, action, seconds, self.settings.log_format))
        if self.metrics is not None:
            self.metrics.observe(verdict, action, seconds)
        if self.settings.failure_reports is not None:
            self._collect_failure(session, verdict, action)
        return reply

    def _collect_failure(self, session: Session, verdict: Verdict, action: str) -> None:
        """Hand a verdict that may call for RFC 9991 failure reports to the collector: the
        header section held since the end of the headers, the body copy (references; the
        collector's thread does the rest)."""
        collector, message = self.settings.failure_reports, session.message
        if collector is None or not message.section:
            return
        try:
            collector.offer(
                verdict,
                header=message.section,
                body=message.body_copy,
                ip=session.real_client()[0],  # (a relayed message's real client)
                mail_from=message.mail_from.strip("<> "),
                recipients=tuple(message.recipients),
                action=action,
                now=time.time(),
            )
        except Exception as exc:
            self.collect_errors += 1
            if time.monotonic() - self._collect_logged >= 60:
                self._collect_logged = time.monotonic()
                log.error("failure report not collected (%d in all): %s: %s",
                          self.collect_errors, type(exc).__name__, exc)  # fmt: skip

    def count(self, action: str) -> None:
        if self.metrics is not None:
            self.metrics.actions.labels(action).inc()


def _is_trusted(address: str, networks: Sequence[Network]) -> bool:
    """(``address`` as protocol.parse_connect leaves it: a plain IP address.)"""
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in networks)
