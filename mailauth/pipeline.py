"""The Authenticator: runs every method on one message and builds the verdict.

Data flows one way: connection facts (IP, HELO, MAIL FROM) and the raw message go in; each
method's outcome comes out of its own module; DMARC takes the SPF and DKIM outcomes as its
inputs; the verdict and its Authentication-Results field are built last, never revised.
The checks are plans (:mod:`mailauth.plan`), so ``verify`` and ``verify_async`` share them.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

from mailauth.arc import verify_arc
from mailauth.arc.chain import is_arc_field
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
from mailauth.plan import Budget, Plan, Resolve, bounded, run_plan, run_plan_async
from mailauth.policy import trust_arc_sealers
from mailauth.results import SpfCheck, SpfResult, Verdict
from mailauth.spf import client_ip, evaluate_spf


@dataclass(frozen=True, slots=True)
class Context:
    """The SMTP facts of one message and the message itself, checked and normalised."""

    message: Message
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    helo: str
    mail_from: str
    now: float


def make_context(
    message: bytes | Message, *, ip: str, helo: str, mail_from: str, now: float | None
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
    """What one message may cost in DNS, per method (docs/architecture.md, "Limits").

    Each method has its own allotment, so that none can starve another: a sender's SPF
    record that used up a shared pool would turn the author domain's DMARC evaluation into
    temperror, a way around ``p=reject``. Questions count whether or not the answer was
    cached (the limit must not depend on the cache). Past an allotment, the method's
    remaining questions are answered as temporary failures: its result is ``temperror``,
    with a reason such as "SPF: more than 100 DNS queries". With the defaults and 10 DKIM
    signatures, a message asks at most 310 questions.

    - SPF, both identities together: 100 questions and 20 seconds (RFC 7208 4.6.4 allows
      a time limit of at least 20 s; its term limits allow about 110 questions per
      identity, which no real record comes near: rspamd stops at 30).
    - DKIM: one key per signature verified (``DkimPolicy.max_signatures``).
    - ARC: 100 (a key for the seal and the message signature of each of 50 sets).
    - DMARC: 100 questions and 10 seconds (5 author domains, each a tree walk of up to 8
      names, plus the walks that decide relaxed alignment).
    """

    spf_queries: int = 100
    spf_seconds: float = 20.0
    arc_queries: int = 100
    dmarc_queries: int = 100
    dmarc_seconds: float = 10.0


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
    ) -> Verdict:
        """Authenticate one message, blocking; see :meth:`verify_async`."""
        context = make_context(message, ip=ip, helo=helo, mail_from=mail_from, now=now)
        return run_plan(self.plan(context), self.resolver)

    async def verify_async(
        self,
        message: bytes | Message,
        *,
        ip: str,
        helo: str = "",
        mail_from: str = "",
        now: float | None = None,
    ) -> Verdict:
        """Authenticate one message on the running event loop.

        ``ip`` is the SMTP client's address, ``helo`` its HELO/EHLO name, ``mail_from`` the
        reverse-path ("" or "<>" when null), ``now`` the Unix time to judge signatures at.
        Raises ValueError for a malformed ``ip`` or an input that is not a message.
        """
        context = make_context(message, ip=ip, helo=helo, mail_from=mail_from, now=now)
        return await run_plan_async(self.plan(context), self.resolver, self.executor)

    async def check_spf_async(self, *, ip: str, helo: str = "", mail_from: str = "") -> SpfCheck:
        """SPF alone, as soon as the envelope is known (before the message arrives)."""
        plan = self._spf(str(_client_address(ip)), helo.strip(), _reverse_path(mail_from))
        return await run_plan_async(plan, self.resolver, self.executor)

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

    def _spf(self, ip: str, helo: str, mail_from: str, now: float | None = None) -> Plan[SpfCheck]:
        """SPF as a plan within its budget (:class:`MessageLimits`), reused while the DNS
        answers it was built on are valid (with the network resolver, whose cache they live
        in). ``now`` is %{t} in explanations."""
        cache = self.resolver.cache if isinstance(self.resolver, Resolver) else None
        key = (ip, helo, mail_from)
        if cache is not None:
            known = self._spf_memo.get(key, cache.now())
            if known is not None:
                return known
        limits = self.limits
        plan = bounded(
            evaluate_spf(ip=ip, helo=helo, mail_from=mail_from, receiver=self.authserv_id, now=now),
            Budget("SPF", limits.spf_queries, limits.spf_seconds),
        )
        if cache is None:
            return (yield from plan)
        spf, ttl = yield from _valid_for(plan, cache)
        self._spf_memo.put(key, spf, cache.now(), ttl)
        return spf

    def prepare(self, headers: Sequence[HeaderField], now: float) -> _Streamed:
        """What the body of a message with these header fields is to feed."""
        body = BodyHashes()
        dkim = DkimVerification(headers, now=now, policy=self.dkim_policy, body=body)
        arc = any(is_arc_field(f) for f in headers)
        if arc:  # (the ARC-Message-Signatures' canonicalizations, whichever they are)
            for method in Canonicalization:
                body.want(method)
        return _Streamed(dkim, body, arc)

    def intake(
        self, *, ip: str, helo: str = "", mail_from: str = "", now: float | None = None
    ) -> MessageIntake:
        """A message that arrives in pieces (the milter's case): see :class:`MessageIntake`."""
        return MessageIntake(self, ip=ip, helo=helo, mail_from=mail_from, now=now)

    def plan(self, context: Context, streamed: _Streamed | None = None) -> Plan[Verdict]:
        """The checks, in order. ``streamed``: the body already fed (the milter's case)."""
        ip = str(context.ip)
        if streamed is not None and streamed.spf is not None:
            spf = streamed.spf  # started at MAIL FROM by the milter
        else:
            spf = yield from self._spf(ip, context.helo, context.mail_from, context.now)
        if streamed is None:  # a whole message: its body fed in slices, one pass for all
            streamed = self.prepare(context.message.headers, context.now)
            yield from feed_body(streamed.body, context.message.body)
        limits = self.limits
        dkim_budget = Budget("DKIM", self.dkim_policy.max_signatures)
        dkim = yield from bounded(streamed.dkim.finish(), dkim_budget)
        arc = yield from bounded(
            verify_arc(context.message, body_hashes=streamed.arc_bodies()),
            Budget("ARC", limits.arc_queries),
        )
        dmarc = yield from bounded(
            evaluate_dmarc(
                context.message.author(),
                spf=spf,
                dkim=dkim,
                arc=arc,
                ip=ip,
                helo=context.helo,
                mail_from=context.mail_from,
                local=self.dmarc_policy,
                memo=self._dmarc_memo,
            ),
            Budget("DMARC", limits.dmarc_queries, limits.dmarc_seconds),
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
    ttl = _SPF_MEMO_TTL
    value = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return stop.value, ttl
        value = yield effect
        if isinstance(effect, Resolve):
            for lookup in value:
                ttl = min(ttl, _cached_for(lookup, cache))


def _cached_for(lookup: Lookup, cache: DnsCache) -> int:
    if lookup.status is DnsStatus.TEMPFAIL:
        return 0
    cap = cache.max_ttl if lookup.status is DnsStatus.ANSWER else cache.max_negative_ttl
    return min(lookup.ttl, cap)


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
        return {method: self.body.digest(method) for method in Canonicalization}


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
        self._context: Context | None = None
        self._streamed: _Streamed | None = None

    def add_headers(self, header_section: bytes) -> None:
        """The header fields as they arrived; raises ValueError (MessageParseError) on junk."""
        message = Message.parse(header_section + b"\r\n")
        self._context = make_context(
            message, ip=self.ip, helo=self.helo, mail_from=self.mail_from, now=self.now
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

    async def verdict(self) -> Verdict:
        if self._context is None or self._streamed is None:
            raise ValueError("no headers given")
        plan = self.authenticator.plan(self._context, self._streamed)
        return await run_plan_async(plan, self.authenticator.resolver, self.authenticator.executor)
