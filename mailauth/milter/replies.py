"""What the milter answers at the end of a message: what a verdict amounts to (refused,
deferred, quarantined, sealed or not) and the packets that say it: the header fields we
insert, the forged ones we delete (RFC 8601 5), the reply codes.

Header values go to the MTA folded with bare LF, as MTAs expect milter header values; with
SMFIP_HDR_LEADSPC (``leading_space``) the space after the colon is ours to give.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailauth.milter import inbound as rules
from mailauth.milter import protocol as p
from mailauth.milter.session import MessageState, MilterParts, Session
from mailauth.milter.settings import MilterSettings
from mailauth.results import ArcResult, DmarcResult, Policy, SpfResult, Verdict

_ONE_STEP_DOWN = {Policy.REJECT: Policy.QUARANTINE, Policy.QUARANTINE: Policy.NONE}


def ignores(message: MessageState, verdict: Verdict) -> bool:
    """Whether the message is on an ignore list (no DMARC disposition). A MAIL FROM domain
    counts only once SPF has authenticated it: MAIL FROM is the sender's to write, and a
    spoof of any From domain would otherwise be waved through by naming a listed domain
    (OpenDMARC's IgnoreMailFrom takes it unverified)."""
    if message.ignored != "mail-from-domain":
        return bool(message.ignored)
    spf = verdict.spf
    return spf is not None and spf.mailfrom.result is SpfResult.PASS


def refuses(settings: MilterSettings, verdict: Verdict, message: MessageState) -> bool:
    """Whether the message is refused (DMARC reject, when we act on it and the message
    is on no ignore list)."""
    dmarc = verdict.dmarc
    return (
        dmarc is not None
        and dmarc.disposition is Policy.REJECT
        and settings.reject_dmarc
        and not ignores(message, verdict)
    )


def seals(settings: MilterSettings, message: MessageState) -> bool:
    """Whether this inbound message gets an ARC set: sealing on, and a recipient in one
    of the forwarding domains when they are configured."""
    domains = settings.seal_domains
    return settings.sealer is not None and (
        not domains or not domains.isdisjoint(message.recipient_domains)
    )


def unsettled(settings: MilterSettings, message: MessageState, verdict: Verdict) -> str:
    """Why the verdict cannot be acted on for a temporary failure, or "": DMARC could not
    be concluded (RFC 9989: no policy applies), or the chain of a message to be sealed
    could not be validated (sealing it cv=fail would end it for every later hop)."""
    dmarc, arc = verdict.dmarc, verdict.arc
    if (
        dmarc is not None
        and dmarc.result is DmarcResult.TEMPERROR
        and not ignores(message, verdict)
    ):
        return f"dmarc=temperror ({dmarc.reason})"
    if arc is not None and arc.result is ArcResult.TEMPERROR and seals(settings, message):
        return f"arc=temperror, not sealed ({arc.reason})"
    return ""


def defers(settings: MilterSettings, verdict: Verdict) -> bool:
    """Whether an unsettled verdict (:func:`unsettled`) is answered 4xx: DMARC temperror
    when the policy at stake is one the milter acts on follows ``dmarc_temperror`` (a spoof
    that can cause a temporary error must not be let through where it would be refused: a
    sender retries, an attacker gets nothing); anything else follows ``on_error``."""
    dmarc = verdict.dmarc
    if dmarc is not None and dmarc.result is DmarcResult.TEMPERROR and dmarc.policy:
        at_stake = _ONE_STEP_DOWN.get(dmarc.policy, dmarc.policy) if dmarc.testing else dmarc.policy
        acted_on = (at_stake is Policy.REJECT and settings.reject_dmarc) or (
            at_stake is not Policy.NONE and settings.quarantine_dmarc
        )
        if acted_on:
            return settings.dmarc_temperror == "tempfail"
    return settings.on_error == "tempfail"


def deferral(verdict: Verdict) -> bytes:
    """4xx for an unsettled verdict: saying why for DMARC (RFC 3463 4.4.3: a directory
    server, here DNS, failed), the MTA's own 4xx otherwise."""
    dmarc = verdict.dmarc
    if dmarc is not None and dmarc.result is DmarcResult.TEMPERROR and dmarc.domain:
        why = f"DMARC for {dmarc.domain} could not be evaluated; try again later"
        return p.replycode(f"451 4.4.3 {why}")
    return p.encode(p.TEMPFAIL)


def error_reply(milter: MilterParts, strip: bytes) -> bytes:
    """What ``on_error`` says when a message could not be checked or signed (counted)."""
    if milter.settings.on_error == "tempfail":
        milter.count("tempfail")
        return p.encode(p.TEMPFAIL)
    milter.count("unchecked")
    return strip + p.encode(p.CONTINUE)


def strip_forged(message: MessageState) -> bytes:
    """Replies deleting the Authentication-Results fields that carry our authserv-id
    (or an untrusted sender's copy of a trusted one), and such Received-SPF fields."""
    return b"".join(
        [
            p.header_reply(p.CHGHEADER, i, "Authentication-Results", "")
            for i in reversed(message.forged)
        ]
        + [p.header_reply(p.CHGHEADER, i, "Received-SPF", "") for i in reversed(message.forged_spf)]
    )


def modifications(
    settings: MilterSettings, session: Session, verdict: Verdict, seal: list[bytes], strip: bytes
) -> tuple[bytes, str]:
    """The end-of-message replies for a verified message and the action they amount to."""
    dmarc, message = verdict.dmarc, session.message
    if dmarc is not None and refuses(settings, verdict, message):
        reply = p.replycode(f"550 5.7.1 DMARC policy of {dmarc.domain} says reject")
        return reply, "reject"
    replies = [strip]
    options = settings.inbound
    # (inserted first, so that it ends up below our Authentication-Results field)
    if options.received_spf and verdict.received_spf and not message.relayed_spf:
        replies.append(field_reply(verdict.received_spf, session.leading_space))
    results = verdict.authentication_results
    if options.authserv_id_with_queue_id:
        queue_id = session.macros.get("i", "")
        results = rules.with_queue_id(results, verdict.authserv_id, queue_id)
    replies.append(field_reply(results, session.leading_space))
    action = "continue"
    if (
        dmarc is not None
        and dmarc.disposition is Policy.QUARANTINE
        and settings.quarantine_dmarc
        and not ignores(message, verdict)
    ):
        replies.append(p.encode(p.QUARANTINE, f"DMARC quarantine for {dmarc.domain}\0".encode()))
        action = "quarantine"
    replies.extend(seal)  # inserted last, so the ARC set ends up on top
    replies.append(p.encode(p.CONTINUE))
    return b"".join(replies), action


def field_reply(header_field: str, leading_space: bool) -> bytes:
    """Insert a field we rendered (``Name: value``, folded with CRLF) at the top: folded
    with bare LF, as MTAs expect milter header values; with SMFIP_HDR_LEADSPC the space
    after the colon is ours to give."""
    name, _, value = header_field.partition(": ")
    value = (" " if leading_space else "") + value.replace("\r\n", "\n")
    return p.header_reply(p.INSHEADER, 0, name, value)


def insert_reply(index: int, name: str, raw: bytes, leading_space: bool) -> bytes:
    """An insert-header reply for a whole field we made (``name: value`` + line end)."""
    value = raw[raw.index(b":") + 1 :].decode().rstrip("\r\n")
    if not leading_space:
        value = value.lstrip(" ")
    return p.header_reply(p.INSHEADER, index, name, value.replace("\r\n", "\n"))


def header_section(headers: Sequence[tuple[str, bytes]], leading_space: bool) -> bytes:
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
