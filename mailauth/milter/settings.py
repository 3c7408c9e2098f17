"""The milter's settings (:class:`MilterSettings`): one frozen value, built by ``mailauth
milter`` from its configuration and replaced whole at a reload."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailauth.arc import Sealer
from mailauth.config import MAX_HEADER_FIELDS, MAX_HEADER_SECTION
from mailauth.config_inbound import InboundOptions
from mailauth.dkim import Signer
from mailauth.milter.signing_table import SigningPolicy
from mailauth.reports.failure_collect import FailureCollector

# libmilter's default (smfi_settimeout): longer than any MTA keeps an idle SMTP session
# (Postfix smtpd_timeout 300 s), short enough that a peer that vanished without closing (a
# half-open TCP connection) or a client that only holds connections open is let go.
DEFAULT_IDLE_TIMEOUT = 7210.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
