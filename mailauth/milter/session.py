"""What the milter's modules share: one MTA connection's state (:class:`Session`), the message
in progress on it (:class:`MessageState`), and the milter as they see it
(:class:`MilterParts`: :class:`~mailauth.milter.server.Milter` is one)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from mailauth.dkim import BodyHasher, Canonicalization, Signer
from mailauth.milter.heavy import HeaderTally
from mailauth.milter.offload import Offloader
from mailauth.milter.settings import MilterSettings
from mailauth.pipeline import Authenticator, MessageIntake
from mailauth.reports.failure_collect import BodyCopy
from mailauth.results import SpfCheck

NO_ADDRESS = "0.0.0.0"  # noqa: S104 - the checks' client with no network client, not a bind


class MilterParts(Protocol):
    """The milter's current parts (a reload replaces them: read them at each use)."""

    authenticator: Authenticator
    settings: MilterSettings
    offloader: Offloader | None

    def count(self, action: str) -> None:
        """Count a message's action (the metrics)."""


@dataclass
class MessageState:
    """One message in progress: its header fields (kept), and what the body feeds (the body
    itself is never kept): an intake for inbound mail, body hashers for outbound signing."""

    mail_from: str = ""
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    header_bytes: int = 0  # as the milter counts what it holds (data + per-field overhead)
    loop_used: float = 0.0  # CPU seconds of the event loop its packets took (turns.py)
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
    # A gathered message sent back to the loop mid-body (verifying._back_to_the_loop): the
    # body not yet given to its intake, from ``backlog_at`` (verifying.catch_up feeds it)
    backlog: bytearray | None = None
    backlog_at: int = 0
    recipients: list[str] = field(default_factory=list)  # (failure reports' Original-Rcpt-To)
    section: bytes = b""  # the header section as received (kept for failure reports)
    body_copy: BodyCopy | None = None  # (failure reports with the body opted in)

    def discard(self) -> None:
        if self.spf is not None:
            self.spf.cancel()
        self.drop_raw()
        self.backlog = None
        if self.body_copy is not None:
            self.body_copy.release()

    def drop_raw(self) -> None:
        if self.offloader is not None:
            self.offloader.release()
            self.offloader.unhold(self.held_raw)
            self.offloader = None
        self.raw, self.held_raw = None, 0


@dataclass
class Session:
    """One MTA connection: what was negotiated, the SMTP client, the message in progress."""

    listener: str = ""  # the socket's listen spec ("" for ``listen``'s own)
    leading_space: bool = False
    no_reply: frozenset[bytes] = frozenset()  # commands the MTA does not wait on (SMFIP_NR_*)
    macros: dict[str, str] = field(default_factory=dict)
    address: str = ""
    helo: str = ""
    trusted: bool = False
    relay: bool = False  # the client is one of our border hosts (inbound.relay)
    message: MessageState = field(default_factory=MessageState)
    turn_began: float = 0.0  # when this connection's turn of the loop began (turns.py)

    def real_client(self) -> tuple[str, str]:
        """The client address and HELO the message in progress is verified, logged and
        reported for: a relayed message's real client, the one its border's Received field
        names (inbound.py), else this connection's (address "" with no network client:
        mail submitted on the host)."""
        client = self.message.client
        return client if client[0] else (self.address, self.helo)

    def checked_ip(self) -> str:
        """:meth:`real_client`'s address as the checks take it ("0.0.0.0" for none)."""
        return self.real_client()[0] or NO_ADDRESS
