"""The milter's outbound side: the keys a message is signed with, its DKIM-Signature fields,
the refusal of an authenticated user's mail for a domain it may not sign for, and the ARC
set a verified inbound message is sealed with (RFC 8617 5.1.4). The private-key work runs in
the event loop's worker threads, one operation per message, within the deadline."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from mailauth.arc import results_payload
from mailauth.dkim import Signer
from mailauth.domains import name_and_parents
from mailauth.errors import MailauthError
from mailauth.message import HeaderField, Message
from mailauth.milter import protocol as p
from mailauth.milter.logline import signed_line, unauthorized_line
from mailauth.milter.replies import error_reply, header_section, insert_reply, refuses
from mailauth.milter.session import MilterParts, Session
from mailauth.milter.settings import MilterSettings
from mailauth.milter.signing_table import choose_signers
from mailauth.results import Verdict

log = logging.getLogger("mailauth.milter")
T = TypeVar("T")


def signers_of(settings: MilterSettings, session: Session, parsed: Message) -> tuple[Signer, ...]:
    """The signing table's choice (or ``signers`` by From domain, without a table); a
    user bound to other addresses gets none, and ``refused`` says for which domain."""
    message, policy = session.message, settings.signing
    if policy is None:
        author = parsed.author()
        domains = author.domains if author.field_count == 1 else ()  # (one From field)
        return signers_for(settings.signers, domains[0]) if len(domains) == 1 else ()
    user = session.macros.get("auth_authen", "")
    choice = choose_signers(policy, parsed, message.mail_from, user)
    message.refused = choice.refused
    return choice.signers


def signers_for(signers: Mapping[str, tuple[Signer, ...]], domain: str) -> tuple[Signer, ...]:
    """The signers for a From domain: its own entry, else the nearest ``*.parent`` one."""
    if domain in signers:
        return signers[domain]
    parents = itertools.islice(name_and_parents(domain), 1, None)
    return next((signers[f"*.{p}"] for p in parents if f"*.{p}" in signers), ())


async def signatures(milter: MilterParts, session: Session, strip: bytes) -> bytes:
    """Outbound: one DKIM-Signature per signer of the From domain, inserted on top; the
    private-key work runs in a worker thread, off the event loop."""
    message = session.message
    started = time.monotonic()
    section = header_section(message.headers, session.leading_space)
    hashes = {canon: hasher.digest() for canon, hasher in message.hashers.items()}

    def sign() -> list[bytes]:
        parsed = Message.parse(section + b"\r\n")
        now = time.time()
        return [s.signature_field(parsed, hashes[s.body_canon], now) for s in message.signers]

    fields = await _off_the_loop(milter, session, sign, "signed")
    if fields is None:
        return error_reply(milter, strip)
    replies = [strip]
    replies.extend(
        insert_reply(index, "DKIM-Signature", raw, session.leading_space)
        for index, raw in enumerate(fields)
    )
    replies.append(p.encode(p.CONTINUE))
    milter.count("continue")
    client, helo = session.real_client()  # (outbound: the connection's own)
    facts = {
        "queue_id": session.macros.get("i", ""),
        "client": client,
        "helo": helo,
        "mail_from": message.mail_from,
    }
    keys = [f"{s.domain}:{s.selector}:{s.algorithm}" for s in message.signers]
    seconds = time.monotonic() - started
    log.info("%s", signed_line(facts, keys, seconds, milter.settings.log_format))
    return b"".join(replies)


def unauthorized(milter: MilterParts, session: Session, strip: bytes) -> bytes:
    """An authenticated user's mail for a domain it may not sign for: refused (550
    5.7.1) or passed unsigned, as ``[signing] unauthorized`` says; one log line."""
    settings = milter.settings
    refuse = settings.signing is None or settings.signing.unauthorized == "refuse"
    facts = {
        "queue_id": session.macros.get("i", ""),
        "client": session.real_client()[0],
        "user": session.macros.get("auth_authen", ""),
        "mail_from": session.message.mail_from,
    }
    action = "reject" if refuse else "unsigned"
    log.warning(
        "%s",
        unauthorized_line(facts, session.message.refused, action, settings.log_format),
    )
    milter.count(action)
    if refuse:
        domain = session.message.refused
        return p.replycode(f"550 5.7.1 Not authorized to send mail from {domain} as this user")
    return strip + p.encode(p.CONTINUE)


async def seal(milter: MilterParts, session: Session, verdict: Verdict) -> list[bytes]:
    """The ARC set for a verified message, as insert-header replies (off the loop)."""
    sealer, hasher = milter.settings.sealer, session.message.seal_hasher
    if sealer is None or hasher is None or verdict.arc is None:
        return []
    if refuses(milter.settings, verdict, session.message):
        return []
    section = header_section(session.message.headers, session.leading_space)
    body_hash, chain = hasher.digest(), verdict.arc
    payload = results_payload(verdict.authentication_results)

    def fields() -> list[HeaderField]:
        parsed = Message.parse(section + b"\r\n")
        return sealer.seal_fields(parsed, body_hash, authentication_results=payload, chain=chain)

    sealed = await _off_the_loop(milter, session, fields, "sealed")
    if sealed is None:
        return []
    return [
        insert_reply(index, f.name, f.raw, session.leading_space) for index, f in enumerate(sealed)
    ]


async def _off_the_loop(
    milter: MilterParts, session: Session, work: Callable[[], list[T]], done: str
) -> list[T] | None:
    """``work`` (private-key work: signing, sealing) in a worker thread within the
    deadline; None when it failed or ran out of time ("message ... not {done}" logged)."""
    try:
        running = asyncio.get_running_loop().run_in_executor(None, work)
        return await asyncio.wait_for(running, milter.settings.deadline)
    except (MailauthError, ValueError, TimeoutError) as exc:
        reason = str(exc) or "deadline"
        log.warning("message %s not %s: %s", session.macros.get("i", "-"), done, reason)
        return None
