"""What the milter asks of the MTA at option negotiation (milter protocol 6): the actions it
takes, the steps it skips or does not answer, and the macros it wants at each stage."""

from __future__ import annotations

from mailauth.milter import protocol as p
from mailauth.milter.session import Session
from mailauth.milter.settings import MilterSettings

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


def negotiate(settings: MilterSettings, session: Session, data: bytes) -> bytes:
    """Option negotiation: the actions we take, the steps we skip or do not answer, the
    macros we want; of each, only what the MTA offers."""
    version, actions, protocol = p.parse_optneg(data)
    if version < 2:
        raise p.ProtocolError(f"milter protocol version {version} is too old")
    session.leading_space = bool(protocol & p.P_HDR_LEADSPC)
    # No reply to any step but the end of message, when the MTA allows it (the
    # decisions are all made there): the MTA sends the rest without waiting for us.
    wanted = STEPS_SKIPPED | p.P_HDR_LEADSPC | sum(p.NO_REPLY.values())
    sealing = settings.sealer and settings.seal_domains
    if not (sealing or settings.record_recipients or failure_recipients(settings)):
        wanted |= p.P_NORCPT  # recipients matter to seal for some domains, and to reports
    chosen = protocol & wanted
    session.no_reply = frozenset(c for c, bit in p.NO_REPLY.items() if chosen & bit)
    ours = p.ACT_ADDHDRS | p.ACT_CHGHDRS | p.ACT_QUARANTINE
    lists = version >= 6 and actions & p.ACT_SETSYMLIST  # (protocol 6: macro lists)
    if lists:
        ours |= p.ACT_SETSYMLIST
    version = min(version, p.VERSION)
    macros = MACROS
    if settings.daemon_modes:  # (modes by {daemon_name}: asked for at connect)
        macros = {**MACROS, p.M_CONNECT: "{daemon_name}"}
    return p.optneg_reply(version, actions & ours, chosen, macros if lists else None)


def failure_recipients(settings: MilterSettings) -> bool:
    """Whether the recipients go into failure reports (so are asked for)."""
    collector = settings.failure_reports
    return collector is not None and collector.config.include_recipients
