"""The Authenticator: runs every method on one message and builds the verdict.

Data flows one way: connection facts (IP, HELO, MAIL FROM) and the raw message go in; each
method's outcome comes out of its own module; DMARC takes the SPF and DKIM outcomes as its
inputs; the verdict and its Authentication-Results field are built last, never revised.
The checks are plans (:mod:`mailauth.plan`), so ``verify`` and ``verify_async`` share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, cast

from mailauth.arc import verify_arc
from mailauth.arc.chain import MAX_SETS, ArcError, is_arc_field, parse_message_signature
from mailauth.authresults import (
    quote_pvalue,
    render_authentication_results,
    render_received_spf,
)
from mailauth.dkim import BodyHashes, Canonicalization, DkimPolicy, DkimVerification, unix_time
from mailauth.dkim.verify import feed_body
from mailauth.dmarc import DmarcLocalPolicy, evaluate_dmarc
from mailauth.dmarc.memo import DiscoveryMemo
from mailauth.dns import DnsCache, DnsResolver, DnsStatus, Lookup, Resolver
from mailauth.dns.cache import ExpiringLru
from mailauth.message import HeaderField, Message
from mailauth.plan import (
    Budget,
    Parallel,
    Plan,
    Resolve,
    bounded,
    parallel,
    run_plan,
    run_plan_async,
    start_plan_async,
)
from mailauth.policy import trust_arc_sealers
from mailauth.results import ArcOutcome, DkimOutcome, SpfCheck, SpfResult, Verdict
from mailauth.spf import client_ip, evaluate_spf

_log = logging.getLogger("mailauth.reports")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Context:
    """The SMTP facts of one message and the message itself, checked and normalised."""

    message: Message
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    helo: str
    mail_from: str
    now: float
    recipients: tuple[str, ...] = ()


class VerdictRecorder(Protocol):
    """What ``Authenticator(..., recorder=...)`` hands every verdict to, with the envelope
    (``mailauth.reports.BackgroundRecorder``: DMARC aggregate reports). Called on the
    event loop under asyncio: it must return at once (buffer, never write)."""

    def record(
        self,
        verdict: Verdict,
        *,
        ip: str,
        mail_from: str,
        recipients: tuple[str, ...] = (),
        now: float,
    ) -> None: ...


def make_context(
    message: bytes | Message,
    *,
    ip: str,
    helo: str,
    mail_from: str,
    now: float | None,
    recipients: Sequence[str] = (),
) -> Context:
    """Validate the caller's arguments; raises ValueError (MessageParseError) on misuse."""
    address, sender = _client_address(ip), _reverse_path(mail_from)
    parsed = message if isinstance(message, Message) else Message.parse(message)
    return Context(
        message=parsed,
        ip=address,
        helo=helo.strip(),
        mail_from=sender,
        now=unix_time(now),
        recipients=tuple(recipients),
    )


@functools.lru_cache(maxsize=4096)
def _client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """(Memoised: clients come back, and ipaddress parsing costs several microseconds.)"""
    try:
        return client_ip(ip)
    except ValueError:
        raise ValueError(f"not an IP address: {ip!r}") from None


def _reverse_path(mail_from: str) -> str:
    sender = mail_from.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    return sender


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """What one message may cost, per method (docs/architecture.md, "Limits").

    Each method has its own allotment of DNS questions, so that none can starve another: a
    sender's SPF record that used up a shared pool would turn the author domain's DMARC
    evaluation into temperror, a way around ``p=reject``. Questions count whether or not the
    answer was cached (the limit must not depend on the cache). Past an allotment, or past
    its time, a method's remaining questions fail as temporary failures (the asyncio runner
    also gives up those in flight): its result is ``temperror``, with a reason such as "SPF:
    more than 40 DNS queries" or "DKIM: time limit of 10 s exceeded".

    - SPF: 40 questions for the MAIL FROM identity and 20 for HELO, each its own, both
      checked side by side; 20 seconds. RFC 7208 4.6.4 asks for a time limit of at least
      20 s; its term limits permit about 110 questions per identity (10 terms, each
      ``mx``/``ptr`` with 10 names), which no real record comes near -- rspamd stops at 30
      -- while each question costs the milter about a millisecond of CPU: a record built to
      use them all is an attack (RFC 7208 11.1), answered ``temperror``, never ``fail``.
    - DKIM: one key per signature verified (``DkimPolicy.max_signatures``), 10 seconds.
    - ARC: 100 (a key for the seal and the message signature of each of 50 sets), 10 s.
    - DMARC, for each Author Domain (they are evaluated side by side): 100 questions and
      8 seconds (a tree walk of up to 8 names, plus the walks that decide relaxed
      alignment).

    SPF, DKIM and ARC run side by side, DMARC after them: a message takes at most
    ``spf_seconds`` (the longest of the three) plus ``dmarc_seconds``, 28 s with these
    defaults, within the milter's 30 s deadline (:meth:`within` scales them to another).
    """

    spf_queries: int = 40
    helo_queries: int = 20
    spf_seconds: float = 20.0
    dkim_seconds: float = 10.0
    arc_queries: int = 100
    arc_seconds: float = 10.0
    dmarc_queries: int = 100
    dmarc_seconds: float = 8.0

    @classmethod
    def within(cls, deadline: float) -> MessageLimits:
        """The defaults, scaled down so that a message's checks end before ``deadline``
        seconds (with a second to spare); unchanged for deadlines of 29 s and more."""
        defaults = cls()
        factor = min(1.0, max(deadline - 1, 0.1) / (defaults.spf_seconds + defaults.dmarc_seconds))
        return replace(
            defaults,
            spf_seconds=defaults.spf_seconds * factor,
            dkim_seconds=defaults.dkim_seconds * factor,
            arc_seconds=defaults.arc_seconds * factor,
            dmarc_seconds=defaults.dmarc_seconds * factor,
        )


class Authenticator:
    """Verifies messages for one ADMD, identified by ``authserv_id`` (RFC 8601 2.5)."""

    def __init__(
        self,
        authserv_id: str,
        resolver: DnsResolver,
        *,
        executor: Executor | None = None,
        dkim_policy: DkimPolicy | None = None,
        dmarc_policy: DmarcLocalPolicy | None = None,
        trusted_arc_sealers: Iterable[str] = (),
        limits: MessageLimits | None = None,
        recorder: VerdictRecorder | None = None,
    ) -> None:
        if not authserv_id or quote_pvalue(authserv_id) != authserv_id:
            raise ValueError(
                f"authserv-id must be a plain token such as a host name: {authserv_id!r}"
            )
        self.authserv_id = authserv_id.lower()
        self.resolver = resolver
        self.executor = executor
        self.dkim_policy = dkim_policy or DkimPolicy()
        self.dmarc_policy = dmarc_policy or DmarcLocalPolicy()
        self.limits = limits or MessageLimits()
        self.recorder = recorder  # every verdict is handed to it (DMARC reports)
        self.record_errors = 0  # verdicts the recorder raised on (logged, never the message's)
        self._record_logged = -1e9
        self._spf_memo = _SpfMemo()
        self._dmarc_memo: DiscoveryMemo | None = None
        if isinstance(resolver, Resolver):  # (on the cache's clock, within its TTL caps)
            cache = resolver.cache
            age = min(_DMARC_MEMO_AGE, cache.max_ttl, cache.max_negative_ttl)
            self._dmarc_memo = DiscoveryMemo(cache.now, max_age=age)
        sealers = tuple(trusted_arc_sealers)
        if sealers:  # RFC 8617 7.2.1: a trusted sealer's passing chain may override DMARC
            hooks = (*self.dmarc_policy.overrides, trust_arc_sealers(sealers))
            self.dmarc_policy = replace(self.dmarc_policy, overrides=hooks)

    def verify(
        self,
        message: bytes | Message,
        *,
        ip: str,
        helo: str = "",
        mail_from: str = "",
        now: float | None = None,
        recipients: Sequence[str] = (),
    ) -> Verdict:
        """Authenticate one message, blocking; see :meth:`verify_async`."""
        context = make_context(
            message, ip=ip, helo=helo, mail_from=mail_from, now=now, recipients=recipients
        )
        return self._recorded(run_plan(self.plan(context), self.resolver), context)

    async def verify_async(
        self,
        message: bytes | Message,
        *,
        ip: str,
        helo: str = "",
        mail_from: str = "",
        now: float | None = None,
        recipients: Sequence[str] = (),
    ) -> Verdict:
        """Authenticate one message on the running event loop.

        ``ip`` is the SMTP client's address, ``helo`` its HELO/EHLO name, ``mail_from`` the
        reverse-path ("" or "<>" when null), ``now`` the Unix time to judge signatures at,
        ``recipients`` the RCPT TO addresses (for the recorder only). Raises ValueError for
        a malformed ``ip`` or an input that is not a message.
        """
        context = make_context(
            message, ip=ip, helo=helo, mail_from=mail_from, now=now, recipients=recipients
        )
        verdict = await run_plan_async(self.plan(context), self.resolver, self.executor)
        return self._recorded(verdict, context)

    def _recorded(self, verdict: Verdict, context: Context) -> Verdict:
        """``verdict``, handed to the recorder first when there is one."""
        self.record(
            verdict,
            ip=str(context.ip),
            mail_from=context.mail_from,
            recipients=context.recipients,
            now=context.now,
        )
        return verdict

    def record(
        self,
        verdict: Verdict,
        *,
        ip: str,
        mail_from: str,
        recipients: tuple[str, ...],
        now: float,
    ) -> None:
        """Hand a verdict to the recorder (also one reached elsewhere: the milter's worker
        processes); ``ip`` and ``mail_from`` as :meth:`verify` takes them. Whatever the
        recorder raises is counted (``record_errors``) and logged at most once a minute:
        recording must never fail the message."""
        if self.recorder is None:
            return
        try:
            self.recorder.record(
                verdict,
                ip=str(_client_address(ip)),
                mail_from=_reverse_path(mail_from),
                recipients=recipients,
                now=now,
            )
        except Exception as exc:
            self.record_errors += 1
            if time.monotonic() - self._record_logged >= 60:
                self._record_logged = time.monotonic()
                _log.error("verdict not recorded (%d in all): %s: %s", self.record_errors,
                           type(exc).__name__, exc)  # fmt: skip

    async def check_spf_async(self, *, ip: str, helo: str = "", mail_from: str = "") -> SpfCheck:
        """SPF alone, as soon as the envelope is known (before the message arrives)."""
        plan = self._spf(str(_client_address(ip)), helo.strip(), _reverse_path(mail_from))
        return await run_plan_async(plan, self.resolver, self.executor)

    async def spf_with_lifetime(
        self, *, ip: str, helo: str = "", mail_from: str = ""
    ) -> tuple[SpfCheck, int]:
        """SPF alone, and for how many seconds the result may be reused (0: not to be kept):
        for a caller that keeps it in another Authenticator's memo (:meth:`remember_spf`;
        the milter's worker processes evaluate, the milter remembers)."""
        key = (str(_client_address(ip)), helo.strip(), _reverse_path(mail_from))
        lifetime = [0]
        plan = self._spf(*key, lifetime=lifetime)
        spf = await run_plan_async(plan, self.resolver, self.executor)
        return spf, lifetime[0]

    def remember_spf(
        self, *, ip: str, helo: str = "", mail_from: str = "", spf: SpfCheck, lifetime: int
    ) -> None:
        """Keep an SPF result evaluated elsewhere (:meth:`spf_with_lifetime`) in the memo
        for ``lifetime`` seconds, as if it had been evaluated here."""
        if not isinstance(self.resolver, Resolver):
            return
        key = (str(_client_address(ip)), helo.strip(), _reverse_path(mail_from))
        self._spf_memo.put(key, spf, self.resolver.cache.now(), lifetime)

    def remembered_spf(self, *, ip: str, helo: str = "", mail_from: str = "") -> SpfCheck | None:
        """The SPF result for this envelope while its DNS answers are still valid, or None.

        Only a lookup: for a caller that would otherwise schedule :meth:`check_spf_async` for
        a sender it has just seen (the milter, at MAIL FROM). Raises ValueError for a
        malformed ``ip``.
        """
        if not isinstance(self.resolver, Resolver):
            return None
        key = (str(_client_address(ip)), helo.strip(), _reverse_path(mail_from))
        return self._spf_memo.get(key, self.resolver.cache.now())

    def _spf(
        self,
        ip: str,
        helo: str,
        mail_from: str,
        now: float | None = None,
        lifetime: list[int] | None = None,
    ) -> Plan[SpfCheck]:
        """SPF as a plan within its budget (:class:`MessageLimits`), reused while the DNS
        answers it was built on are valid (with the network resolver, whose cache they live
        in). ``now`` is %{t} in explanations; ``lifetime[0]`` is set to how long the result
        may be reused (0: not to be kept)."""
        cache = self.resolver.cache if isinstance(self.resolver, Resolver) else None
        key = (ip, helo, mail_from)
        if cache is not None:
            known = self._spf_memo.get(key, cache.now())
            if known is not None:  # (not handed out again with a lifetime: it is known)
                return known
        limits = self.limits
        budgets = (
            Budget("SPF", limits.spf_queries, limits.spf_seconds),
            Budget("SPF HELO", limits.helo_queries, limits.spf_seconds),
        )
        plan = evaluate_spf(
            ip=ip, helo=helo, mail_from=mail_from, receiver=self.authserv_id, now=now,
            budgets=budgets,
        )  # fmt: skip
        if cache is None:
            return (yield from plan)
        spf, ttl = yield from _valid_for(plan, cache)
        if not any(budget.refused for budget in budgets):  # (a limit's answer: not kept)
            self._spf_memo.put(key, spf, cache.now(), ttl)
            if lifetime is not None:
                lifetime[0] = ttl
        return spf

    def prepare(self, headers: Sequence[HeaderField], now: float) -> _Streamed:
        """What the body of a message with these header fields is to feed."""
        body = BodyHashes()
        dkim = DkimVerification(headers, now=now, policy=self.dkim_policy, body=body)
        arc = any(is_arc_field(f) for f in headers)
        for method in _arc_body_methods(headers) if arc else ():
            body.want(method)
        return _Streamed(dkim, body, arc)

    def intake(
        self,
        *,
        ip: str,
        helo: str = "",
        mail_from: str = "",
        now: float | None = None,
        recipients: Sequence[str] = (),
    ) -> MessageIntake:
        """A message that arrives in pieces (the milter's case): see :class:`MessageIntake`."""
        intake = MessageIntake(self, ip=ip, helo=helo, mail_from=mail_from, now=now)
        intake.recipients = tuple(recipients)
        return intake

    def plan(self, context: Context, streamed: _Streamed | None = None) -> Plan[Verdict]:
        """The checks: SPF beside DKIM and ARC (none waits on another's DNS), then DMARC.
        ``streamed``: the body already fed (the milter's case)."""
        ip = str(context.ip)
        if streamed is None:  # a whole message: its body fed in slices, one pass for all
            streamed = self.prepare(context.message.headers, context.now)
            yield from feed_body(streamed.body, context.message.body)
        if streamed.spf is not None:
            spf = streamed.spf  # evaluated from MAIL FROM on by the milter
            dkim, arc = yield from self.signature_checks(context, streamed)
        else:
            spf, (dkim, arc) = yield from parallel(
                self._spf(ip, context.helo, context.mail_from, context.now),
                self.signature_checks(context, streamed),
            )
        return (yield from self.conclusion(context, spf, dkim, arc))

    def signature_checks(
        self, context: Context, streamed: _Streamed
    ) -> Plan[tuple[tuple[DkimOutcome, ...], ArcOutcome]]:
        """DKIM and ARC, side by side, each within its budget."""
        limits = self.limits
        dkim_budget = Budget("DKIM", self.dkim_policy.max_signatures, limits.dkim_seconds)
        arc_budget = Budget("ARC", limits.arc_queries, limits.arc_seconds)
        dkim, arc = yield from parallel(
            bounded(streamed.dkim.finish(), dkim_budget),
            bounded(verify_arc(context.message, body_hashes=streamed.arc_bodies()), arc_budget),
        )
        return dkim, arc

    def conclusion(
        self,
        context: Context,
        spf: SpfCheck,
        dkim: tuple[DkimOutcome, ...],
        arc: ArcOutcome,
    ) -> Plan[Verdict]:
        """DMARC on the other methods' outcomes, then the verdict and its header fields."""
        ip = str(context.ip)
        limits = self.limits
        dmarc = yield from evaluate_dmarc(
            context.message.author(),
            spf=spf,
            dkim=dkim,
            arc=arc,
            ip=ip,
            helo=context.helo,
            mail_from=context.mail_from,
            local=self.dmarc_policy,
            memo=self._dmarc_memo,
            budget=(limits.dmarc_queries, limits.dmarc_seconds),
        )
        header = render_authentication_results(
            self.authserv_id, spf=spf, dkim=dkim, arc=arc, dmarc=dmarc, remote_ip=ip
        )
        received_spf = render_received_spf(
            spf.mailfrom, ip=ip, helo=context.helo, receiver=self.authserv_id
        )
        return Verdict(
            authserv_id=self.authserv_id,
            authentication_results=header,
            spf=spf,
            dkim=dkim,
            dmarc=dmarc,
            arc=arc,
            received_spf=received_spf,
        )


_SPF_MEMO_TTL = 300  # seconds an SPF result is reused at most (and less when DNS says so)
_DMARC_MEMO_AGE = 300  # likewise a DMARC policy discovery (mailauth.dmarc.memo)
_SPF_MEMO_SIZE = 4096


class _SpfMemo:
    """SPF results by (client address, HELO, sender).

    An SPF result is a function of those three and of the DNS answers the evaluation used
    (RFC 7208 4, 7: the macros draw on nothing else, but for %{t} in exp= texts, so results
    with an explanation are not kept). It is reused until the first of those answers would
    expire from the cache, so that it is exactly what evaluating again would give; bounded
    in size (least recently used out first) and in age.
    """

    def __init__(self) -> None:
        self._entries: ExpiringLru[tuple[str, str, str], SpfCheck] = ExpiringLru(_SPF_MEMO_SIZE)

    def get(self, key: tuple[str, str, str], now: float) -> SpfCheck | None:
        entry = self._entries.get(key, now)
        return None if entry is None else entry[1]

    def put(self, key: tuple[str, str, str], spf: SpfCheck, now: float, ttl: int) -> None:
        outcomes = [o for o in (spf.mailfrom, spf.helo) if o is not None]
        if ttl <= 0 or any(o.explanation or o.result is SpfResult.TEMPERROR for o in outcomes):
            return
        self._entries.put(key, spf, now + ttl)


def _valid_for(plan: Plan[SpfCheck], cache: DnsCache) -> Plan[tuple[SpfCheck, int]]:
    """Run ``plan``, and say how long every DNS answer it used stays valid in ``cache``
    (the shortest remaining TTL, capped as the cache caps it; 0 after a temporary failure,
    which is never cached)."""
    ttl = [_SPF_MEMO_TTL]
    result = yield from _seen(plan, cache, ttl)
    return result, ttl[0]


def _seen(plan: Plan[T], cache: DnsCache, ttl: list[int]) -> Plan[T]:
    """``plan``, lowering ``ttl[0]`` to how long each answer it sees stays valid."""
    value: Any = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return cast(T, stop.value)
        if isinstance(effect, Parallel):
            value = yield Parallel(tuple(_seen(p, cache, ttl) for p in effect.plans))
            continue
        value = yield effect
        if isinstance(effect, Resolve):
            for lookup in value:
                ttl[0] = min(ttl[0], _cached_for(lookup, cache))


def _cached_for(lookup: Lookup, cache: DnsCache) -> int:
    if lookup.status is DnsStatus.TEMPFAIL:
        return 0
    cap = cache.max_ttl if lookup.status is DnsStatus.ANSWER else cache.max_negative_ttl
    return min(lookup.ttl, cap)


def _arc_body_methods(headers: Sequence[HeaderField]) -> set[Canonicalization]:
    """The body canonicalizations the ARC-Message-Signatures use (those that parse; a chain
    with more of them than sets allowed fails without a body hash)."""
    fields = [f for f in headers if f.lname == "arc-message-signature"]
    methods = set()
    for field in fields if len(fields) <= MAX_SETS else ():
        with contextlib.suppress(ArcError):
            methods.add(parse_message_signature(field).body_canon)
    return methods


@dataclass
class _Streamed:
    """What a message's body leaves behind: the DKIM verification, and the body hashes,
    shared by DKIM and ARC (one pass of each canonicalization for all their signatures)."""

    dkim: DkimVerification
    body: BodyHashes
    arc: bool
    spf: SpfCheck | None = None

    def arc_bodies(self) -> dict[Canonicalization, bytes] | None:
        if not self.arc:
            return None
        return {m: self.body.digest(m) for m in Canonicalization if self.body.has(m)}


class MessageIntake:
    """One message fed in pieces, in constant memory: :meth:`add_headers` once (the header
    section, without the blank line), :meth:`add_body` per chunk, then :meth:`verdict`.

    The body is never kept: DKIM and ARC hash it as it comes.
    """

    def __init__(
        self, authenticator: Authenticator, *, ip: str, helo: str, mail_from: str, now: float | None
    ) -> None:
        self.authenticator = authenticator
        self.ip, self.helo, self.mail_from, self.now = ip, helo, mail_from, now
        self.recipients: tuple[str, ...] = ()
        self._context: Context | None = None
        self._streamed: _Streamed | None = None

    def add_headers(self, header_section: bytes) -> None:
        """The header fields as they arrived; raises ValueError (MessageParseError) on junk."""
        message = Message.parse(header_section + b"\r\n")
        self._context = make_context(
            message,
            ip=self.ip,
            helo=self.helo,
            mail_from=self.mail_from,
            now=self.now,
            recipients=self.recipients,
        )
        self._streamed = self.authenticator.prepare(message.headers, self._context.now)

    def use_spf(self, spf: SpfCheck) -> None:
        """SPF already evaluated for this envelope (:meth:`Authenticator.check_spf_async`)."""
        if self._streamed is None:
            raise ValueError("use_spf before headers")
        self._streamed.spf = spf

    def add_body(self, chunk: bytes | memoryview) -> None:
        if self._streamed is None:
            raise ValueError("body before headers")
        self._streamed.body.update(chunk)

    async def verdict(self, spf: Awaitable[SpfCheck] | None = None) -> Verdict:
        """The verdict; ``spf``: the SPF check already under way for this envelope
        (:meth:`Authenticator.check_spf_async`, started at MAIL FROM), awaited beside the
        DKIM and ARC checks rather than before them; the caller's (should the checks fail
        in their first step, it is left as it is: the milter cancels it with the message)."""
        if self._context is None or self._streamed is None:
            raise ValueError("no headers given")
        auth, context, streamed = self.authenticator, self._context, self._streamed
        resolver, executor = auth.resolver, auth.executor
        if isinstance(spf, asyncio.Future) and spf.done():
            # (SPF done already, as it mostly is by now: the checks and DMARC as one plan,
            # no task beside it, one slice of the loop for all)
            streamed.spf, spf = spf.result(), None
        if spf is None:
            verdict = await run_plan_async(auth.plan(context, streamed), resolver, executor)
            return auth._recorded(verdict, context)
        checks = start_plan_async(auth.signature_checks(context, streamed), resolver, executor)
        try:
            spf_check = await spf
            dkim, arc = await checks
        finally:
            checks.cancel()  # (a no-op when done; stops them when SPF failed or timed out)
        plan = auth.conclusion(context, spf_check, dkim, arc)
        return auth._recorded(await run_plan_async(plan, resolver, executor), context)
