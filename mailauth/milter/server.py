"""The milter: one asyncio server, one session per MTA connection, no protocol logic of its
own (the Authenticator decides; this module only talks to the MTA).

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
import itertools
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mailauth.arc import Sealer, results_payload
from mailauth.config import MAX_HEADER_FIELDS, MAX_HEADER_SECTION
from mailauth.config_inbound import InboundOptions
from mailauth.dkim import BodyHasher, Canonicalization, Signer
from mailauth.domains import name_and_parents, normalize_domain
from mailauth.errors import InvalidDomainError, MailauthError
from mailauth.message import HeaderField, Message
from mailauth.milter import inbound as rules
from mailauth.milter import protocol as p
from mailauth.milter.logline import log_line, signed_line, unauthorized_line
from mailauth.milter.metrics import Metrics
from mailauth.milter.modes import Route, mode_of, route
from mailauth.milter.offload import HeaderTally, Offloader, OffloadError, OffloadStats
from mailauth.milter.signing_table import SigningPolicy, choose_signers
from mailauth.pipeline import Authenticator, MessageIntake
from mailauth.reports.failure_collect import MAX_RECIPIENTS, BodyCopy, FailureCollector
from mailauth.results import ArcResult, DmarcResult, Policy, SpfCheck, SpfResult, Verdict

log = logging.getLogger("mailauth.milter")
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_ACK_NOW = 2  # TCP_QUICKACK value: see Milter.handle
_READ_SIZE = 1 << 16  # octets taken at once (a Postfix body chunk; more held more memory)
# libmilter's default (smfi_settimeout): longer than any MTA keeps an idle SMTP session
# (Postfix smtpd_timeout 300 s), short enough that a peer that vanished without closing (a
# half-open TCP connection) or a client that only holds connections open is let go.
DEFAULT_IDLE_TIMEOUT = 7210.0
# Fair turns (Milter._packets): one connection handles packets for at most TURN seconds
# before the others get the loop (a read holds up to 64 KiB: 3,000 small header fields, tens
# of milliseconds of work). A message whose packets have taken more than LANE_AFTER seconds of
# the loop's CPU in all (an ordinary one takes about 1 ms) goes on in the *slow lane*, in
# turns of LANE_TURN: one lane turn per turn of the loop, so however many hostile messages are
# being received at once, an ordinary message waits behind at most one LANE_TURN of theirs
# (and the TURNs of connections not yet in the lane) at each of its steps.
TURN = 0.002
LANE_AFTER = 0.010
LANE_TURN = 0.0005
SKIPPED = 64  # header fields of a refused message skipped between two looks at the clock
_WAITED = 0.0002  # seconds a read took beyond which it waited for data (others ran meanwhile)
# What one message may make the milter hold: its header section, at most MAX_HEADER_SECTION
# octets and MAX_HEADER_FIELDS fields (mailauth.config: 1 MiB, 1,000; the body is never
# kept). Real mail stays far below (a few KiB and a few dozen fields; OpenDKIM's
# MaximumHeaders refuses header blocks over 64 KiB); a message past either is refused
# (552 5.3.4), since it cannot be checked and must not pass unchecked.
# All connections together hold at most this much header data: past it, a message is not
# checked (on_error: the milter is short of memory, the sender did nothing wrong).
MAX_HELD_HEADERS = 256 << 20
MAX_MACROS = 1 << 20  # per connection; past it the connection is a protocol error
# Steps the milter does without, when the MTA offers to skip them: RCPT (unless recipients
# choose what is sealed), unknown SMTP commands, DATA, and the end of the header section (the
# body's first chunk, or the end of message, starts the checks in its place).
STEPS_SKIPPED = p.P_NOUNKNOWN | p.P_NODATA | p.P_NOEOH
# The macros the milter reads, asked for per stage (protocol 6; Postfix and Sendmail send
# only these then): the SMTP-authenticated user at MAIL FROM (such senders are trusted) and
# the queue id at the end of the message (for the log). Postfix sends a stage's macros even
# for a step the milter skips (RCPT, DATA) and with every header field and body chunk, and
# reads an empty list as "main.cf's milter_*_macros": the stages where we want nothing name
# a macro that no MTA defines, so that what comes is an empty macro packet.
_NOTHING = "{mailauth_nothing}"
MACROS = {
    p.M_CONNECT: _NOTHING,
    p.M_HELO: _NOTHING,
    p.M_ENVFROM: "{auth_authen}",
    p.M_ENVRCPT: _NOTHING,
    p.M_DATA: _NOTHING,
    p.M_EOH: _NOTHING,
    p.M_EOM: "i",
}
_SPF = b"received-spf"
_FIELD_OVERHEAD = 100  # octets of Python objects per header field held, beyond its data
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CONTINUE = p.encode(p.CONTINUE)
_ONE_STEP_DOWN = {Policy.REJECT: Policy.QUARANTINE, Policy.QUARANTINE: Policy.NONE}
_NO_ADDRESS = "0.0.0.0"  # noqa: S104 - the checks' client with no network client, not a bind


@dataclass(frozen=True, slots=True)
class MilterSettings:
    """``deadline``: seconds for one message's checks; ``idle_timeout``: seconds a connection
    may wait for the MTA's next packet before it is closed; ``on_error``: ``accept`` (the message
    goes on without our header) or ``tempfail`` when checks fail or time out;
    ``reject_dmarc``/``quarantine_dmarc``: act on a DMARC disposition of reject/quarantine;
    ``trusted_networks``: clients whose mail is outbound: not verified, but DKIM-signed with
    ``signers[<From domain>]``, else ``signers["*.<a parent>"]`` (several signers: dual
    signing, e.g. RSA and Ed25519) when there are any; SMTP-authenticated senders (the
    ``{auth_authen}`` macro) count as trusted.
    """

    deadline: float = 30.0
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    on_error: str = "accept"
    reject_dmarc: bool = False
    quarantine_dmarc: bool = False
    trusted_networks: tuple[Network, ...] = ()
    signers: Mapping[str, tuple[Signer, ...]] = field(default_factory=dict)
    sealer: Sealer | None = None  # ARC-seal verified inbound messages (RFC 8617 5.1.4) ...
    seal_domains: frozenset[str] = frozenset()  # ... to these recipient domains (empty: all)
    log_format: str = "json"  # or "text": key=value pairs (logfmt)
    dmarc_temperror: str = "tempfail"  # or "accept": DMARC temperror with a policy acted on
    max_header_size: int = MAX_HEADER_SECTION
    max_header_fields: int = MAX_HEADER_FIELDS
    record_recipients: bool = False  # the first RCPT TO goes to the recorder (envelope_to)
    # docs/signing.md: the modes (of the ``listen`` socket, of others by their spec, by
    # {daemon_name}), and the signing table (replacing ``signers`` when given)
    mode: str = "both"
    listener_modes: Mapping[str, str] = field(default_factory=dict)
    daemon_modes: Mapping[str, str] = field(default_factory=dict)
    signing: SigningPolicy | None = None
    failure_reports: FailureCollector | None = None  # RFC 9991 reports queued (docs/reports.md)
    inbound: InboundOptions = field(default_factory=InboundOptions)  # (milter/inbound.py)


@dataclass
class _Message:
    """One message in progress: its header fields (kept), and what the body feeds (the body
    itself is never kept): an intake for inbound mail, body hashers for outbound signing."""

    mail_from: str = ""
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    header_bytes: int = 0  # as the milter counts what it holds (data + per-field overhead)
    loop_used: float = 0.0  # CPU seconds of the event loop its packets took (Milter._packets)
    header_fields: int = 0
    tally: HeaderTally = field(default_factory=HeaderTally)  # (Offloader: heavy or not)
    held: int = 0  # octets counted in Milter.held for this message
    results_fields: int = 0  # Authentication-Results fields seen
    forged: list[int] = field(default_factory=list)  # those with our authserv-id (1-based)
    spf_fields: int = 0  # Received-SPF fields seen, and those naming us as receiver
    forged_spf: list[int] = field(default_factory=list)
    client: tuple[str, str] = ("", "")  # a relayed message's real client and HELO
    refusal: str = ""  # the reply refusing it for its header section (inbound.py)
    ignored: str = ""  # why no DMARC disposition is applied to it (ignore lists)
    relayed_spf: bool = False  # its SPF result is a relay's (no Received-SPF of ours)
    oversized: str = ""  # why the header section is refused
    started: bool = False
    intake: MessageIntake | None = None
    signers: tuple[Signer, ...] = ()
    hashers: dict[Canonicalization, BodyHasher] = field(default_factory=dict)
    problem: str = ""  # why the message cannot be checked or signed
    refused: str = ""  # the From domain the authenticated user may not sign for
    spf: asyncio.Future[SpfCheck] | None = None  # started at MAIL FROM
    seal_hasher: BodyHasher | None = None  # the relaxed body hash an ARC seal needs
    recipient_domains: set[str] = field(default_factory=set)  # those among seal_domains
    first_recipient: str = ""  # (record_recipients: the report's envelope_to)
    raw: bytearray | None = None  # a heavy message, gathered whole for a worker process
    offloader: Offloader | None = None  # whose place ``raw`` holds
    held_raw: int = 0  # octets of ``raw`` counted in the offloader's held
    recipients: list[str] = field(default_factory=list)  # (failure reports' Original-Rcpt-To)
    section: bytes = b""  # the header section as received (kept for failure reports)
    body_copy: BodyCopy | None = None  # (failure reports with the body opted in)

    def discard(self) -> None:
        if self.spf is not None:
            self.spf.cancel()
        self.drop_raw()
        if self.body_copy is not None:
            self.body_copy.release()

    def drop_raw(self) -> None:
        if self.offloader is not None:
            self.offloader.release()
            self.offloader.unhold(self.held_raw)
            self.offloader = None
        self.raw, self.held_raw = None, 0


@dataclass
class _Session:
    listener: str = ""  # the socket's listen spec ("" for ``listen``'s own)
    leading_space: bool = False
    no_reply: frozenset[bytes] = frozenset()  # commands the MTA does not wait on (SMFIP_NR_*)
    macros: dict[str, str] = field(default_factory=dict)
    address: str = ""
    helo: str = ""
    trusted: bool = False
    relay: bool = False  # the client is one of our border hosts (inbound.relay)
    message: _Message = field(default_factory=_Message)
    turn_began: float = 0.0  # when this connection's turn of the loop began (Milter._packets)

    def real_client(self) -> tuple[str, str]:
        """The client address and HELO the message in progress is verified, logged and
        reported for: a relayed message's real client, the one its border's Received field
        names (inbound.py), else this connection's (address "" with no network client:
        mail submitted on the host)."""
        client = self.message.client
        return client if client[0] else (self.address, self.helo)

    def checked_ip(self) -> str:
        """:meth:`real_client`'s address as the checks take it ("0.0.0.0" for none)."""
        return self.real_client()[0] or _NO_ADDRESS


class Milter:
    """Serves the milter protocol for one :class:`Authenticator`."""

    def __init__(
        self,
        authenticator: Authenticator,
        settings: MilterSettings | None = None,
        metrics: Metrics | None = None,
        offloader: Offloader | None = None,
    ):
        self.authenticator = authenticator
        self.settings = settings or MilterSettings()
        self.metrics = metrics
        self.offloader = offloader  # heavy messages are checked in its worker processes
        # (what the workers did: kept across the offloaders reloads make, for the metrics)
        self.offload_stats = offloader.stats if offloader is not None else OffloadStats()
        self.connections = 0
        self.collect_errors = 0  # messages the failure-report collector raised on (logged)
        self._collect_logged = -1e9
        self.held = 0  # header octets (and per-field overhead) held for all connections
        self._lane = asyncio.Lock()  # the slow lane (see LANE_AFTER)

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: str = ""
    ) -> None:
        """One MTA connection, until QUIT, EOF or a protocol error; ``listener``: the listen
        spec of its socket (for its mode)."""
        self.connections += 1
        session = _Session(listener)
        sock = writer.get_extra_info("socket")
        quickack = sock is not None and sock.family != socket.AF_UNIX and _QUICKACK is not None
        loop = asyncio.get_running_loop()
        idle = self.settings.idle_timeout
        waiting = [loop.time()]  # since when we wait for the MTA; [] while a packet is handled
        timers: list[asyncio.TimerHandle] = []

        def watch() -> None:
            # One timer per idle period, not one per packet: a packet only stores a time.
            since = waiting[0] if waiting else loop.time()
            if loop.time() - since < idle:
                timers[:] = [loop.call_at(since + idle, watch)]
                return
            log.warning("milter connection idle for %g s: closed", idle)
            writer.transport.abort()  # the pending read ends: the connection is over

        timers.append(loop.call_at(waiting[0] + idle, watch))
        received = bytearray()  # what the MTA sent that is not a whole packet yet
        try:
            while True:
                try:
                    # Whatever has arrived (one read for all the packets of an MTA's write:
                    # Postfix sends the steps we do not answer in one go).
                    asked = time.perf_counter()
                    chunk = await reader.read(_READ_SIZE)
                    if time.perf_counter() - asked > _WAITED:  # (the others ran meanwhile)
                        session.turn_began = time.perf_counter()
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    return  # the MTA went away, possibly mid-message: nothing to clean up
                waiting.clear()
                received += chunk
                replies = await self._packets(session, received)
                if replies is None:
                    return
                if replies:
                    if not await _send(writer, b"".join(replies)):  # (our ACK goes with it)
                        return
                elif quickack:
                    # The MTA goes on without waiting for us: its next small write (Postfix:
                    # cleanup's, after smtpd's) would wait for our delayed ACK, Nagle on its
                    # side, up to 40 ms. Acknowledge now -- once per read, not per packet;
                    # 2, not 1: send the pending ACK but stay in delayed-ACK mode, so that
                    # the ACK of the rest of the message goes with our reply (Linux).
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, _ACK_NOW)
                waiting.append(loop.time())
        except p.ProtocolError as exc:
            log.warning("milter protocol error from the MTA: %s", exc)
        finally:
            timers[0].cancel()
            self._reset(session)  # a connection dropped mid-message: no SPF left running
            self.connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _packets(self, session: _Session, received: bytearray) -> list[bytes] | None:
        """Handle the whole packets in ``received`` (taken from it), in fair turns (TURN,
        the slow lane: LANE_AFTER); the replies to send, or None to close. A turn goes on
        across reads that did not wait (``session.turn_began``): data already buffered is
        read without letting the others run."""
        replies = []
        in_lane = False  # whether this connection holds the slow lane
        cpu = time.thread_time()
        skipped = 0
        try:
            for command, data in p.take_packets(received):
                message = session.message
                if command == p.HEADER and message.oversized:
                    # Refused at its end whatever follows: its further header fields are
                    # not looked at (a flood of 5,000 took the loop 40 ms), and the clock
                    # is read for every SKIPPED of them only.
                    skipped += 1
                    if skipped % SKIPPED:
                        continue
                else:
                    if command == p.EOM:  # (it waits for the checks: never in the lane)
                        if in_lane:
                            self._lane.release()
                            in_lane = False
                    elif not in_lane and message.loop_used > LANE_AFTER:
                        await self._lane.acquire()
                        in_lane = True
                        session.turn_began = time.perf_counter()  # (waited: a new turn)
                        cpu = time.thread_time()
                    reply = await self._dispatch(session, command, data)
                    if reply is None:
                        return None
                    if reply and command not in session.no_reply:
                        replies.append(reply)
                now, cpu_now = time.perf_counter(), time.thread_time()
                if command == p.EOM:  # (it waited for the checks: a new turn)
                    session.turn_began = now
                else:  # (CPU time: a machine busy with other processes does not count)
                    message.loop_used += cpu_now - cpu
                cpu = cpu_now
                if now - session.turn_began >= (LANE_TURN if in_lane else TURN):
                    # The others' turn. In the lane, the lane is held through it (the other
                    # lane connections queue for it meanwhile), then handed on: one lane
                    # turn per turn of the loop, however many connections are in the lane.
                    await asyncio.sleep(0)
                    if in_lane:
                        self._lane.release()
                        in_lane = False
                    session.turn_began = time.perf_counter()
                    cpu = time.thread_time()
            return replies
        finally:
            if in_lane:
                self._lane.release()

    async def _dispatch(self, session: _Session, command: bytes, data: bytes) -> bytes | None:
        """The reply to one packet: bytes to send, b"" for none, None to close."""
        if command == p.OPTNEG:
            return self._negotiate(session, data)
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
                session.message.spf = self._start_spf(session)
            return _CONTINUE
        if command == p.HEADER:
            self._add_header(session, data)
            return _CONTINUE
        if command == p.EOH:
            self._start(session)
            return _CONTINUE
        if command == p.BODY:
            self._feed(session, data)
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
            if self._failure_recipients() and len(session.message.recipients) < MAX_RECIPIENTS:
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

    def _connect(self, session: _Session, data: bytes) -> None:
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

    def _reset(self, session: _Session, mail_from: str = "") -> None:
        """The message in progress is over (or dropped): a new one begins."""
        session.message.discard()
        self._release(session.message)
        session.message = _Message(mail_from)

    def _release(self, message: _Message) -> None:
        self.held -= message.held
        message.held = 0

    def _add_header(self, session: _Session, data: bytes) -> None:
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

    def _start_spf(self, session: _Session) -> asyncio.Future[SpfCheck]:
        """SPF needs only the envelope: started at MAIL FROM, its DNS overlaps DATA (a
        relayed message's, once its header names the client: :meth:`_Session.real_client`).
        A sender seen moments ago has its result at once, with no task to schedule."""
        envelope = {
            "ip": session.checked_ip(),
            "helo": session.real_client()[1],
            "mail_from": session.message.mail_from,
        }
        try:
            known = self.authenticator.remembered_spf(**envelope)
        except ValueError:  # (the task below reports it at end of message, as before)
            known = None
        if known is not None:
            done: asyncio.Future[SpfCheck] = asyncio.get_running_loop().create_future()
            done.set_result(known)
            return done
        if self.offloader is not None:
            task = asyncio.ensure_future(self._spf_elsewhere(self.offloader, **envelope))
            task.add_done_callback(_retrieved)
            return task
        task = asyncio.ensure_future(self.authenticator.check_spf_async(**envelope))
        task.add_done_callback(_retrieved)  # a message dropped early: no stray traceback
        return task

    async def _spf_elsewhere(
        self, offloader: Offloader, *, ip: str, helo: str, mail_from: str
    ) -> SpfCheck:
        """SPF from a worker process, remembered here; on the loop when the worker
        failed."""
        try:
            spf, lifetime = await offloader.spf(
                ip=ip, helo=helo, mail_from=mail_from, seconds=self.settings.deadline
            )
        except OffloadError:
            return await self.authenticator.check_spf_async(ip=ip, helo=helo, mail_from=mail_from)
        self.authenticator.remember_spf(
            ip=ip, helo=helo, mail_from=mail_from, spf=spf, lifetime=lifetime
        )
        return spf

    def _start(self, session: _Session) -> None:
        """End of headers: set up what the body will feed (inbound or outbound)."""
        message = session.message
        if message.started:
            return
        message.started = True
        if message.problem or message.oversized:  # (headers over a cap: neither checked
            return  # nor signed)
        section = _header_section(message.headers, session.leading_space)
        try:
            chosen = self._route(session)
            if chosen is Route.SIGN:
                signers = self._signers(session, Message.parse(section + b"\r\n"))
                message.signers = tuple(signers)
                message.hashers = {s.body_canon: BodyHasher(s.body_canon) for s in signers}
                if signers or message.refused or not self._verifies_trusted(session):
                    return
            if chosen is Route.PASS:
                return
            if self.settings.failure_reports is not None:  # (a reference, not a copy)
                message.section = section
                message.body_copy = self.settings.failure_reports.new_body()
            self._inbound_facts(session, section)
            # (a relay's own SPF result is used here, on the loop: workers check SPF themselves)
            if message.relayed_spf or not self._gathered(message, section):
                self._intake(session, section)
            if self._seals(message):
                message.seal_hasher = BodyHasher(Canonicalization.RELAXED)
        except (MailauthError, ValueError) as exc:
            message.intake, message.problem = None, str(exc)

    def _gathered(self, message: _Message, section: bytes) -> bool:
        """Whether a heavy message is gathered whole for a worker process (a place among
        ``max_waiting`` and room for its header section within ``max_held``); else the
        loop checks it, the bound it met counted."""
        offloader = self.offloader
        if offloader is None or not message.tally.heavy():
            return False
        if not offloader.reserve():
            return False
        head = len(section) + 2
        if not offloader.hold(head):  # (the header section counts as the body does)
            offloader.release()
            offloader.stats.on_loop["max_held"] += 1
            return False
        message.raw, message.offloader = bytearray(section + b"\r\n"), offloader
        message.held_raw = head
        if message.spf is not None:  # (the worker checks SPF too)
            message.spf.cancel()
            message.spf = None
        return True

    def _intake(self, session: _Session, section: bytes) -> MessageIntake:
        """Verification on the loop (of the real client: :meth:`_Session.real_client`), the
        header section given (raises ValueError)."""
        message = session.message
        intake = message.intake = self.authenticator.intake(
            ip=session.checked_ip(),
            helo=session.real_client()[1],
            mail_from=message.mail_from,
            recipients=(message.first_recipient,) if message.first_recipient else (),
        )
        intake.add_headers(section)
        return intake

    def _back_to_the_loop(self, session: _Session) -> None:
        """A heavy message too large to gather (``max_bytes``, or ``max_held`` for all):
        checked on the loop from here, as one past ``max_waiting`` is (not on_error: six
        junk DKIM-Signature fields must not make a spoof too large to check)."""
        message = session.message
        assert message.raw is not None
        raw = message.raw
        message.raw = None
        message.drop_raw()
        try:
            self._gathered_intake(session, memoryview(raw))
        except (MailauthError, ValueError) as exc:
            message.intake, message.problem = None, str(exc)
            return
        message.spf = self._start_spf(session)  # (the worker was to check it)

    def _gathered_intake(self, session: _Session, raw: memoryview) -> MessageIntake:
        """Verification on the loop of a gathered message (``raw``: its header section as
        gathered, CRLF, the body so far); raises MailauthError or ValueError."""
        head = len(_header_section(session.message.headers, session.leading_space)) + 2
        intake = self._intake(session, bytes(raw[: head - 2]))
        intake.add_body(raw[head:])
        return intake

    def _route(self, session: _Session) -> Route:
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

    def _signers(self, session: _Session, parsed: Message) -> tuple[Signer, ...]:
        """The signing table's choice (or ``signers`` by From domain, without a table); a
        user bound to other addresses gets none, and ``refused`` says for which domain."""
        message, policy = session.message, self.settings.signing
        if policy is None:
            author = parsed.author()
            domains = author.domains if author.field_count == 1 else ()  # (one From field)
            return _signers_for(self.settings.signers, domains[0]) if len(domains) == 1 else ()
        user = session.macros.get("auth_authen", "")
        choice = choose_signers(policy, parsed, message.mail_from, user)
        message.refused = choice.refused
        return choice.signers

    def _verifies_trusted(self, session: _Session) -> bool:
        """Whether a trusted network client's mail is verified when it is not signed
        (``inbound.verify_trusted_networks``): not SMTP-authenticated senders' (submission),
        nor mail with no network client (submitted on the host)."""
        return bool(
            self.settings.inbound.verify_trusted_networks
            and session.address
            and not session.macros.get("auth_authen")
        )

    def _inbound_facts(self, session: _Session, section: bytes) -> None:
        """What inbound.py finds in the header section: a relayed message's real client (its
        border's Received field names it), a refusal, ignore lists, a relay's SPF result."""
        message = session.message
        found = rules.inspect(
            self.settings.inbound, section, session.address, session.relay, message.mail_from
        )
        message.refusal, message.ignored = found.refusal, found.ignored
        if found.client[0]:
            message.client = found.client
        if found.warning:
            log.warning("message from %s: %s", session.address, found.warning)
        if found.spf is not None:
            done: asyncio.Future[SpfCheck] = asyncio.get_running_loop().create_future()
            done.set_result(found.spf)
            message.spf, message.relayed_spf = done, True
        if session.relay and message.spf is None:
            message.spf = self._start_spf(session)  # (now that the client is known)

    def _negotiate(self, session: _Session, data: bytes) -> bytes:
        """Option negotiation: the actions we take, the steps we skip or do not answer, the
        macros we want; of each, only what the MTA offers."""
        version, actions, protocol = p.parse_optneg(data)
        if version < 2:
            raise p.ProtocolError(f"milter protocol version {version} is too old")
        session.leading_space = bool(protocol & p.P_HDR_LEADSPC)
        # No reply to any step but the end of message, when the MTA allows it (the
        # decisions are all made there): the MTA sends the rest without waiting for us.
        wanted = STEPS_SKIPPED | p.P_HDR_LEADSPC | sum(p.NO_REPLY.values())
        sealing = self.settings.sealer and self.settings.seal_domains
        if not (sealing or self.settings.record_recipients or self._failure_recipients()):
            wanted |= p.P_NORCPT  # recipients matter to seal for some domains, and to reports
        chosen = protocol & wanted
        session.no_reply = frozenset(c for c, bit in p.NO_REPLY.items() if chosen & bit)
        ours = p.ACT_ADDHDRS | p.ACT_CHGHDRS | p.ACT_QUARANTINE
        lists = version >= 6 and actions & p.ACT_SETSYMLIST  # (protocol 6: macro lists)
        if lists:
            ours |= p.ACT_SETSYMLIST
        version = min(version, p.VERSION)
        macros = MACROS
        if self.settings.daemon_modes:  # (modes by {daemon_name}: asked for at connect)
            macros = {**MACROS, p.M_CONNECT: "{daemon_name}"}
        return p.optneg_reply(version, actions & ours, chosen, macros if lists else None)

    def _seals(self, message: _Message) -> bool:
        """Whether this inbound message gets an ARC set: sealing on, and a recipient in one
        of the forwarding domains when they are configured."""
        domains = self.settings.seal_domains
        return self.settings.sealer is not None and (
            not domains or not domains.isdisjoint(message.recipient_domains)
        )

    def _feed(self, session: _Session, chunk: bytes) -> None:
        message = session.message
        if not message.started:
            self._start(session)  # an MTA that skipped EOH
        if message.intake is not None:
            message.intake.add_body(chunk)
        elif message.raw is not None and message.offloader is not None:
            offloader = message.offloader
            if len(message.raw) + len(chunk) > offloader.max_bytes:
                bound = "max_bytes"
            else:
                bound = "" if offloader.hold(len(chunk)) else "max_held"
            if bound:
                offloader.stats.on_loop[bound] += 1
                self._back_to_the_loop(session)
                if message.intake is not None:
                    message.intake.add_body(chunk)
            else:
                message.raw += chunk
                message.held_raw += len(chunk)
        for hasher in message.hashers.values():
            hasher.update(chunk)
        if message.seal_hasher is not None:
            message.seal_hasher.update(chunk)
        if message.body_copy is not None:
            message.body_copy.add(chunk)

    async def _end_of_message(self, session: _Session) -> bytes:
        message = session.message
        queue_id = session.macros.get("i", "-")
        strip = self._strip_forged(message)  # RFC 8601 5: on every path the message goes on
        if message.oversized:
            log.warning("message %s refused: %s", queue_id, message.oversized)
            self._count("reject")
            return p.replycode(f"552 5.3.4 Message header too large ({message.oversized})")
        if message.refused:
            return self._unauthorized(session, strip)
        if message.signers:
            return await self._signatures(session, strip)
        if message.refusal:  # (inbound.required_headers, inbound.multiple_authors)
            log.warning("message %s refused: %s", queue_id, message.refusal[10:])
            self._count("reject")
            return p.replycode(message.refusal)
        if message.intake is None and message.raw is None:
            if message.problem:
                log.warning("message %s not verified: %s", queue_id, message.problem)
                return self._error_reply(strip)
            return strip + p.encode(p.CONTINUE)  # outbound mail with no key for its domain
        started = time.monotonic()
        intake, spf = message.intake, message.spf

        try:
            async with asyncio.timeout(self.settings.deadline):  # (no extra task, as wait_for)
                if intake is not None:
                    verdict = await intake.verdict(spf)  # (SPF beside DKIM and ARC)
                else:
                    verdict = await self._offloaded(session, self.settings.deadline)
        except (TimeoutError, ValueError, OffloadError) as exc:
            log.warning("message %s not verified: %s", queue_id, str(exc) or "deadline")
            return self._error_reply(strip)
        unsettled = "" if self._refuses(verdict, message) else self._unsettled(message, verdict)
        if unsettled and self._defers(verdict):
            reply, action = self._deferral(verdict), "tempfail"
        else:
            seal = [] if unsettled else await self._seal(session, verdict)
            reply, action = self._modifications(session, verdict, seal, strip)
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
        if _ignores(message, verdict):
            facts["ignored"] = message.ignored
        log.info("%s", log_line(facts, verdict, action, seconds, self.settings.log_format))
        if self.metrics is not None:
            self.metrics.observe(verdict, action, seconds)
        if self.settings.failure_reports is not None:
            self._collect_failure(session, verdict, action)
        return reply

    def _unauthorized(self, session: _Session, strip: bytes) -> bytes:
        """An authenticated user's mail for a domain it may not sign for: refused (550
        5.7.1) or passed unsigned, as ``[signing] unauthorized`` says; one log line."""
        refuse = self.settings.signing is None or self.settings.signing.unauthorized == "refuse"
        facts = {
            "queue_id": session.macros.get("i", ""),
            "client": session.real_client()[0],
            "user": session.macros.get("auth_authen", ""),
            "mail_from": session.message.mail_from,
        }
        action = "reject" if refuse else "unsigned"
        log.warning(
            "%s",
            unauthorized_line(facts, session.message.refused, action, self.settings.log_format),
        )
        self._count(action)
        if refuse:
            domain = session.message.refused
            return p.replycode(f"550 5.7.1 Not authorized to send mail from {domain} as this user")
        return strip + p.encode(p.CONTINUE)

    async def _offloaded(self, session: _Session, seconds: float) -> Verdict:
        """The verdict of a worker process on a heavy message, recorded here (the workers
        have no recorder)."""
        message = session.message
        assert message.raw is not None and message.offloader is not None
        raw, offloader = memoryview(message.raw), message.offloader  # (no copy)
        if offloader.closed and self.offloader is not None:  # (a reload's new workers)
            offloader = self.offloader
        message.raw = None  # (the place stays taken until the message is over)
        if not offloader.has_ready_worker():  # (a reload's starting, or one that ended)
            offloader.stats.on_loop["no_worker"] += 1
            return await self._loop_verdict(session, raw)
        ip, helo = session.checked_ip(), session.real_client()[1]
        verdict = await offloader.verdict(
            raw, ip=ip, helo=helo, mail_from=message.mail_from, seconds=seconds
        )
        recipients = (message.first_recipient,) if message.first_recipient else ()
        self.authenticator.record(
            verdict, ip=ip, mail_from=message.mail_from, recipients=recipients, now=time.time()
        )
        return verdict

    async def _loop_verdict(self, session: _Session, raw: memoryview) -> Verdict:
        """A gathered message checked on the loop after all: no worker ready when it ended
        (the new workers of a reload still starting, or the one that took it ended). Not
        on_error: the whole message is here, and a spoof must not pass unchecked."""
        try:
            intake = self._gathered_intake(session, raw)
        except MailauthError as exc:
            raise ValueError(str(exc)) from None
        return await intake.verdict(self._start_spf(session))

    def _failure_recipients(self) -> bool:
        collector = self.settings.failure_reports
        return collector is not None and collector.config.include_recipients

    def _collect_failure(self, session: _Session, verdict: Verdict, action: str) -> None:
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

    def _unsettled(self, message: _Message, verdict: Verdict) -> str:
        """Why the verdict cannot be acted on for a temporary failure, or "": DMARC could not
        be concluded (RFC 9989: no policy applies), or the chain of a message to be sealed
        could not be validated (sealing it cv=fail would end it for every later hop)."""
        dmarc, arc = verdict.dmarc, verdict.arc
        if (
            dmarc is not None
            and dmarc.result is DmarcResult.TEMPERROR
            and not _ignores(message, verdict)
        ):
            return f"dmarc=temperror ({dmarc.reason})"
        if arc is not None and arc.result is ArcResult.TEMPERROR and self._seals(message):
            return f"arc=temperror, not sealed ({arc.reason})"
        return ""

    def _defers(self, verdict: Verdict) -> bool:
        """Whether an unsettled verdict (:meth:`_unsettled`) is answered 4xx: DMARC
        temperror when the policy at stake is one the milter acts on follows
        ``dmarc_temperror`` (a spoof that can cause a temporary error must not be let
        through where it would be refused: a sender retries, an attacker gets nothing);
        anything else follows ``on_error``."""
        settings, dmarc = self.settings, verdict.dmarc
        if dmarc is not None and dmarc.result is DmarcResult.TEMPERROR and dmarc.policy:
            at_stake = (
                _ONE_STEP_DOWN.get(dmarc.policy, dmarc.policy) if dmarc.testing else dmarc.policy
            )
            acted_on = (at_stake is Policy.REJECT and settings.reject_dmarc) or (
                at_stake is not Policy.NONE and settings.quarantine_dmarc
            )
            if acted_on:
                return settings.dmarc_temperror == "tempfail"
        return settings.on_error == "tempfail"

    @staticmethod
    def _deferral(verdict: Verdict) -> bytes:
        """4xx for an unsettled verdict: saying why for DMARC (RFC 3463 4.4.3: a directory
        server, here DNS, failed), the MTA's own 4xx otherwise."""
        dmarc = verdict.dmarc
        if dmarc is not None and dmarc.result is DmarcResult.TEMPERROR and dmarc.domain:
            why = f"DMARC for {dmarc.domain} could not be evaluated; try again later"
            return p.replycode(f"451 4.4.3 {why}")
        return p.encode(p.TEMPFAIL)

    def _error_reply(self, strip: bytes) -> bytes:
        """What ``on_error`` says when a message could not be checked or signed."""
        if self.settings.on_error == "tempfail":
            self._count("tempfail")
            return p.encode(p.TEMPFAIL)
        self._count("unchecked")
        return strip + p.encode(p.CONTINUE)

    def _count(self, action: str) -> None:
        if self.metrics is not None:
            self.metrics.actions.labels(action).inc()

    def _strip_forged(self, message: _Message) -> bytes:
        """Replies deleting the Authentication-Results fields that carry our authserv-id
        (or an untrusted sender's copy of a trusted one), and such Received-SPF fields."""
        return b"".join(
            [
                p.header_reply(p.CHGHEADER, i, "Authentication-Results", "")
                for i in reversed(message.forged)
            ]
            + [
                p.header_reply(p.CHGHEADER, i, "Received-SPF", "")
                for i in reversed(message.forged_spf)
            ]
        )

    async def _signatures(self, session: _Session, strip: bytes) -> bytes:
        """Outbound: one DKIM-Signature per signer of the From domain, inserted on top; the
        private-key work runs in a worker thread, off the event loop."""
        message = session.message
        started = time.monotonic()
        section = _header_section(message.headers, session.leading_space)
        hashes = {canon: hasher.digest() for canon, hasher in message.hashers.items()}

        def sign() -> list[bytes]:
            parsed = Message.parse(section + b"\r\n")
            now = time.time()
            return [s.signature_field(parsed, hashes[s.body_canon], now) for s in message.signers]

        try:
            work = asyncio.get_running_loop().run_in_executor(None, sign)
            fields = await asyncio.wait_for(work, self.settings.deadline)
        except (MailauthError, ValueError, TimeoutError) as exc:
            reason = str(exc) or "deadline"
            log.warning("message %s not signed: %s", session.macros.get("i", "-"), reason)
            return self._error_reply(strip)
        replies = [strip]
        replies.extend(
            _insert(index, "DKIM-Signature", raw, session.leading_space)
            for index, raw in enumerate(fields)
        )
        replies.append(p.encode(p.CONTINUE))
        self._count("continue")
        client, helo = session.real_client()  # (outbound: the connection's own)
        facts = {
            "queue_id": session.macros.get("i", ""),
            "client": client,
            "helo": helo,
            "mail_from": message.mail_from,
        }
        keys = [f"{s.domain}:{s.selector}:{s.algorithm}" for s in message.signers]
        seconds = time.monotonic() - started
        log.info("%s", signed_line(facts, keys, seconds, self.settings.log_format))
        return b"".join(replies)

    async def _seal(self, session: _Session, verdict: Verdict) -> list[bytes]:
        """The ARC set for a verified message, as insert-header replies (off the loop)."""
        sealer, hasher = self.settings.sealer, session.message.seal_hasher
        if sealer is None or hasher is None or verdict.arc is None:
            return []
        if self._refuses(verdict, session.message):
            return []
        section = _header_section(session.message.headers, session.leading_space)
        body_hash, chain = hasher.digest(), verdict.arc
        payload = results_payload(verdict.authentication_results)

        def fields() -> list[HeaderField]:
            parsed = Message.parse(section + b"\r\n")
            return sealer.seal_fields(
                parsed, body_hash, authentication_results=payload, chain=chain
            )

        try:
            work = asyncio.get_running_loop().run_in_executor(None, fields)
            sealed = await asyncio.wait_for(work, self.settings.deadline)
        except (MailauthError, ValueError, TimeoutError) as exc:
            reason = str(exc) or "deadline"
            log.warning("message %s not sealed: %s", session.macros.get("i", "-"), reason)
            return []
        return [
            _insert(index, f.name, f.raw, session.leading_space) for index, f in enumerate(sealed)
        ]

    def _refuses(self, verdict: Verdict, message: _Message) -> bool:
        """Whether the message is refused (DMARC reject, when we act on it and the message
        is on no ignore list)."""
        dmarc = verdict.dmarc
        return (
            dmarc is not None
            and dmarc.disposition is Policy.REJECT
            and self.settings.reject_dmarc
            and not _ignores(message, verdict)
        )

    def _modifications(
        self, session: _Session, verdict: Verdict, seal: list[bytes], strip: bytes
    ) -> tuple[bytes, str]:
        """The end-of-message replies and the action they amount to."""
        dmarc, message = verdict.dmarc, session.message
        if dmarc is not None and self._refuses(verdict, message):
            reply = p.replycode(f"550 5.7.1 DMARC policy of {dmarc.domain} says reject")
            return reply, "reject"
        replies = [strip]
        options = self.settings.inbound
        # (inserted first, so that it ends up below our Authentication-Results field)
        if options.received_spf and verdict.received_spf and not message.relayed_spf:
            replies.append(_field_reply(verdict.received_spf, session.leading_space))
        results = verdict.authentication_results
        if options.authserv_id_with_queue_id:
            queue_id = session.macros.get("i", "")
            results = rules.with_queue_id(results, verdict.authserv_id, queue_id)
        replies.append(_field_reply(results, session.leading_space))
        action = "continue"
        if (
            dmarc is not None
            and dmarc.disposition is Policy.QUARANTINE
            and self.settings.quarantine_dmarc
            and not _ignores(message, verdict)
        ):
            replies.append(
                p.encode(p.QUARANTINE, f"DMARC quarantine for {dmarc.domain}\0".encode())
            )
            action = "quarantine"
        replies.extend(seal)  # inserted last, so the ARC set ends up on top
        replies.append(p.encode(p.CONTINUE))
        return b"".join(replies), action


async def _send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write replies; False when the MTA closed the connection without reading them (one
    log line: a reset connection is the MTA's business, not a traceback)."""
    writer.write(data)
    try:
        await writer.drain()
    except ConnectionError as exc:
        log.info("milter connection closed by the MTA before our reply: %s", exc.strerror or exc)
        return False
    return True


def _ignores(message: _Message, verdict: Verdict) -> bool:
    """Whether the message is on an ignore list (no DMARC disposition). A MAIL FROM domain
    counts only once SPF has authenticated it: MAIL FROM is the sender's to write, and a
    spoof of any From domain would otherwise be waved through by naming a listed domain
    (OpenDMARC's IgnoreMailFrom takes it unverified)."""
    if message.ignored != "mail-from-domain":
        return bool(message.ignored)
    spf = verdict.spf
    return spf is not None and spf.mailfrom.result is SpfResult.PASS


def _retrieved(task: asyncio.Future[SpfCheck]) -> None:
    """Mark a task's exception as seen (whoever awaits the task still gets it)."""
    if not task.cancelled():
        task.exception()


def _signers_for(signers: Mapping[str, tuple[Signer, ...]], domain: str) -> tuple[Signer, ...]:
    """The signers for a From domain: its own entry, else the nearest ``*.parent`` one."""
    if domain in signers:
        return signers[domain]
    parents = itertools.islice(name_and_parents(domain), 1, None)
    return next((signers[f"*.{p}"] for p in parents if f"*.{p}" in signers), ())


def _field_reply(header_field: str, leading_space: bool) -> bytes:
    """Insert a field we rendered (``Name: value``, folded with CRLF) at the top: folded
    with bare LF, as MTAs expect milter header values; with SMFIP_HDR_LEADSPC the space
    after the colon is ours to give."""
    name, _, value = header_field.partition(": ")
    value = (" " if leading_space else "") + value.replace("\r\n", "\n")
    return p.header_reply(p.INSHEADER, 0, name, value)


def _insert(index: int, name: str, raw: bytes, leading_space: bool) -> bytes:
    """An insert-header reply for a whole field we made (``name: value`` + line end)."""
    value = raw[raw.index(b":") + 1 :].decode().rstrip("\r\n")
    if not leading_space:
        value = value.lstrip(" ")
    return p.header_reply(p.INSHEADER, index, name, value.replace("\r\n", "\n"))


def _header_section(headers: Sequence[tuple[str, bytes]], leading_space: bool) -> bytes:
    """The header fields as they arrived: ``name:value`` with CRLF (the MTA folds with LF)."""
    if not headers:
        return b"X-Mailauth-Empty: 1\r\n"  # keep a parseable message
    separator = b":" if leading_space else b": "
    parts: list[bytes] = []
    for name, value in headers:
        text = value
        if b"\n" in text:  # (folded: the MTA's LF, or a CRLF of its own, as CRLF)
            text = text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        parts += (name.encode(), separator, text, b"\r\n")
    return b"".join(parts)


def _is_trusted(address: str, networks: Sequence[Network]) -> bool:
    """(``address`` as protocol.parse_connect leaves it: a plain IP address.)"""
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in networks)
