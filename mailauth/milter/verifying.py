"""The milter's inbound verification of one message, for the real client
(:meth:`~mailauth.milter.session.Session.real_client`): SPF started as soon as the envelope
is known (from the memo, a worker process or the loop), the header section inspected
(:mod:`~mailauth.milter.inbound`), the message checked on the loop (an intake fed as the body
comes) or, when heavy, gathered whole for a worker process and its verdict recorded here."""

from __future__ import annotations

import asyncio
import logging
import time

from mailauth import plan
from mailauth.dkim import BodyHasher, Canonicalization
from mailauth.errors import MailauthError
from mailauth.milter import inbound as rules
from mailauth.milter.offload import Offloader, OffloadError
from mailauth.milter.replies import header_section, seals
from mailauth.milter.session import MessageState, MilterParts, Session
from mailauth.pipeline import MessageIntake
from mailauth.results import SpfCheck, Verdict

log = logging.getLogger("mailauth.milter")
# Octets of a backlog (the body of a gathered message checked on the loop after all) given
# to its intake at once: about 1.3 ms of canonicalising and hashing (10 MB: 51 ms).
BACKLOG_STEP = 256 * 1024


def start_spf(milter: MilterParts, session: Session) -> asyncio.Future[SpfCheck]:
    """SPF needs only the envelope: started at MAIL FROM, its DNS overlaps DATA (a
    relayed message's, once its header names the client: :meth:`Session.real_client`).
    A sender seen moments ago has its result at once, with no task to schedule."""
    envelope = {
        "ip": session.checked_ip(),
        "helo": session.real_client()[1],
        "mail_from": session.message.mail_from,
    }
    try:
        known = milter.authenticator.remembered_spf(**envelope)
    except ValueError:  # (the task below reports it at end of message, as before)
        known = None
    if known is not None:
        done: asyncio.Future[SpfCheck] = asyncio.get_running_loop().create_future()
        done.set_result(known)
        return done
    if milter.offloader is not None:
        task = asyncio.ensure_future(_spf_elsewhere(milter, milter.offloader, **envelope))
        task.add_done_callback(_retrieved)
        return task
    task = asyncio.ensure_future(milter.authenticator.check_spf_async(**envelope))
    task.add_done_callback(_retrieved)  # a message dropped early: no stray traceback
    return task


async def _spf_elsewhere(
    milter: MilterParts, offloader: Offloader, *, ip: str, helo: str, mail_from: str
) -> SpfCheck:
    """SPF from a worker process, remembered here; on the loop when the worker failed."""
    try:
        spf, lifetime = await offloader.spf(
            ip=ip, helo=helo, mail_from=mail_from, seconds=milter.settings.deadline
        )
    except OffloadError:
        return await milter.authenticator.check_spf_async(ip=ip, helo=helo, mail_from=mail_from)
    milter.authenticator.remember_spf(
        ip=ip, helo=helo, mail_from=mail_from, spf=spf, lifetime=lifetime
    )
    return spf


def _retrieved(task: asyncio.Future[SpfCheck]) -> None:
    """Mark a task's exception as seen (whoever awaits the task still gets it)."""
    if not task.cancelled():
        task.exception()


def start(milter: MilterParts, session: Session, section: bytes) -> None:
    """End of headers of a message to verify: what the body will feed (an intake on the
    loop, or the message gathered for a worker), the copies failure reports need, the body
    hash of an ARC seal (raises MailauthError or ValueError)."""
    message = session.message
    if milter.settings.failure_reports is not None:  # (a reference, not a copy)
        message.section = section
        message.body_copy = milter.settings.failure_reports.new_body()
    _inbound_facts(milter, session, section)
    # (a relay's own SPF result is used here, on the loop: workers check SPF themselves)
    if message.relayed_spf or not _gathered(milter, message, section):
        _intake(milter, session, section)
    if seals(milter.settings, message):
        message.seal_hasher = BodyHasher(Canonicalization.RELAXED)


def feed(milter: MilterParts, session: Session, chunk: bytes) -> None:
    """A body chunk of a message being verified: to its intake, or to the gathered message
    (which goes back to the loop past ``max_bytes``, or ``max_held`` for all)."""
    message = session.message
    if message.backlog is not None:
        message.backlog += chunk  # (after what waits for catch_up)
    elif message.intake is not None:
        message.intake.add_body(chunk)
    elif message.raw is not None and message.offloader is not None:
        offloader = message.offloader
        if len(message.raw) + len(chunk) > offloader.max_bytes:
            bound = "max_bytes"
        else:
            bound = "" if offloader.hold(len(chunk)) else "max_held"
        if bound:
            offloader.stats.on_loop[bound] += 1
            _back_to_the_loop(milter, session)
            feed(milter, session, chunk)  # (to the backlog, after the body so far)
        else:
            message.raw += chunk
            message.held_raw += len(chunk)


def _inbound_facts(milter: MilterParts, session: Session, section: bytes) -> None:
    """What inbound.py finds in the header section: a relayed message's real client (its
    border's Received field names it), a refusal, ignore lists, a relay's SPF result."""
    message = session.message
    found = rules.inspect(
        milter.settings.inbound, section, session.address, session.relay, message.mail_from
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
        message.spf = start_spf(milter, session)  # (now that the client is known)


def _gathered(milter: MilterParts, message: MessageState, section: bytes) -> bool:
    """Whether a heavy message is gathered whole for a worker process (a place among
    ``max_waiting`` and room for its header section within ``max_held``); else the
    loop checks it, the bound it met counted."""
    offloader = milter.offloader
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


def _intake(milter: MilterParts, session: Session, section: bytes) -> MessageIntake:
    """Verification on the loop (of the real client), the header section given (raises
    ValueError)."""
    message = session.message
    made = message.intake = milter.authenticator.intake(
        ip=session.checked_ip(),
        helo=session.real_client()[1],
        mail_from=message.mail_from,
        recipients=(message.first_recipient,) if message.first_recipient else (),
    )
    made.add_headers(section)
    return made


def _back_to_the_loop(milter: MilterParts, session: Session) -> None:
    """A heavy message too large to gather (``max_bytes``, or ``max_held`` for all):
    checked on the loop from here, as one past ``max_waiting`` is (not on_error: six
    junk DKIM-Signature fields must not make a spoof too large to check). The body so far
    (up to 32 MiB: 170 ms of canonicalising and hashing in one piece) becomes the
    intake's backlog, which the caller has :func:`catch_up` feed in turns before the next
    packet (no longer counted in ``max_held``, it lives that long)."""
    message = session.message
    assert message.raw is not None
    raw = message.raw
    message.raw = None
    message.drop_raw()
    try:
        _, head = _gathered_intake(milter, session, raw)
    except (MailauthError, ValueError) as exc:
        message.intake, message.problem = None, str(exc)
        return
    message.backlog, message.backlog_at = raw, head
    message.spf = start_spf(milter, session)  # (the worker was to check it)


def _gathered_intake(
    milter: MilterParts, session: Session, raw: bytearray | memoryview
) -> tuple[MessageIntake, int]:
    """Verification on the loop of a gathered message (``raw``: its header section as
    gathered, CRLF, the body so far), given its header section; and where its body starts
    (raises MailauthError or ValueError)."""
    head = len(header_section(session.message.headers, session.leading_space)) + 2
    return _intake(milter, session, bytes(raw[: head - 2])), head


async def catch_up(message: MessageState) -> None:
    """A backlog to the intake, in turns (nothing is added to it meanwhile: a connection's
    next packet waits for this one's step)."""
    if message.backlog is None or message.intake is None:
        return
    rest = memoryview(message.backlog)[message.backlog_at :]
    message.backlog = None
    await _fed(message.intake, rest)


async def _fed(intake: MessageIntake, body: memoryview) -> None:
    """``body`` to ``intake``, BACKLOG_STEP octets at a time, the others' turn whenever
    ``plan.SLICE`` of the loop is spent."""
    turn = time.perf_counter()
    for start in range(0, len(body), BACKLOG_STEP):
        if start and time.perf_counter() - turn >= plan.SLICE:
            await asyncio.sleep(0)
            turn = time.perf_counter()
        intake.add_body(body[start : start + BACKLOG_STEP])


async def offloaded(milter: MilterParts, session: Session, seconds: float) -> Verdict:
    """The verdict of a worker process on a heavy message, recorded here (the workers
    have no recorder)."""
    message = session.message
    assert message.raw is not None and message.offloader is not None
    raw, offloader = memoryview(message.raw), message.offloader  # (no copy)
    if offloader.closed and milter.offloader is not None:  # (a reload's new workers)
        offloader = milter.offloader
    message.raw = None  # (the place stays taken until the message is over)
    if not offloader.has_ready_worker():  # (a reload's starting, or one that ended)
        offloader.stats.on_loop["no_worker"] += 1
        return await _loop_verdict(milter, session, raw)
    ip, helo = session.checked_ip(), session.real_client()[1]
    verdict = await offloader.verdict(
        raw, ip=ip, helo=helo, mail_from=message.mail_from, seconds=seconds
    )
    recipients = (message.first_recipient,) if message.first_recipient else ()
    milter.authenticator.record(
        verdict, ip=ip, mail_from=message.mail_from, recipients=recipients, now=time.time()
    )
    return verdict


async def _loop_verdict(milter: MilterParts, session: Session, raw: memoryview) -> Verdict:
    """A gathered message checked on the loop after all: no worker ready when it ended
    (the new workers of a reload still starting, or the one that took it ended). Not
    on_error: the whole message is here, and a spoof must not pass unchecked."""
    try:
        made, head = _gathered_intake(milter, session, raw)
    except MailauthError as exc:
        raise ValueError(str(exc)) from None
    await _fed(made, raw[head:])
    return await made.verdict(start_spf(milter, session))
