"""Checks written once, run blocking or on asyncio.

A check is a generator (a *plan*) that yields effects and receives their results:
:func:`resolve` asks DNS questions (answered concurrently by the asyncio runner),
:func:`offload` runs blocking work (in a worker thread under asyncio, inline otherwise),
:func:`checkpoint` marks the end of a slice of CPU work (under asyncio the loop serves other
tasks there; nothing otherwise). :func:`run_plan` drives a plan with a resolver's blocking
``lookup``; :func:`run_plan_async` with its ``lookup_async``. The protocol logic itself never
knows which.

:func:`bounded` wraps a plan in a :class:`Budget`: at most so many DNS questions and so many
seconds; past either, its questions are answered as temporary failures, without being asked,
so that the plan ends in its protocol's ``temperror`` for a reason it names.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from mailauth.dns import DnsResolver, DnsStatus, Lookup, Query, Resolver, RRType, ZoneResolver
from mailauth.domains import MAX_NAME

T = TypeVar("T")
MAX_TTL = 0x7FFFFFFF  # RFC 2181 8: TTLs fit in 31 bits


@dataclass(frozen=True, slots=True)
class Resolve:
    """Effect: answer these questions, in order. ``deadline`` (``time.monotonic()``): the
    asyncio runner gives up the questions still unanswered then, as temporary failures
    with the reason ``late``; the blocking runner cannot interrupt a query and ignores it."""

    queries: tuple[Query, ...]
    deadline: float | None = None
    late: str = ""


@dataclass(frozen=True, slots=True)
class Offload:
    """Effect: call this function (off the event loop when running async)."""

    func: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Effect: a slice of CPU work is done; let others run before the next one."""


@dataclass(frozen=True, slots=True)
class Parallel:
    """Effect: run these plans at once (under asyncio; one after the other when blocking);
    their results, in order."""

    plans: tuple[Generator[Any, Any, Any], ...]


_CHECKPOINT = Checkpoint()
Effect = Resolve | Offload | Checkpoint | Parallel
Plan = Generator[Effect, Any, T]


def resolve(*queries: Query) -> Plan[tuple[Lookup, ...]]:
    """``lookups = yield from resolve(q1, q2)``."""
    result = yield Resolve(queries)
    return cast(tuple[Lookup, ...], result)


def resolve_names(rdtype: RRType, *names: str) -> Plan[tuple[Lookup, ...]]:
    """:func:`resolve` for names built by prefixing a domain (``_dmarc.<domain>``...): one
    longer than DNS allows cannot hold a record, so it is answered NXDOMAIN unasked."""
    asked = [n for n in names if len(n.rstrip(".")) <= MAX_NAME]
    lookups = yield from resolve(*(Query.of(n, rdtype) for n in asked))
    answers = dict(zip(asked, lookups, strict=True))
    return tuple(
        answers.get(n) or Lookup(n, rdtype, DnsStatus.NXDOMAIN, reason="name too long for DNS")
        for n in names
    )


def offload(func: Callable[[], T]) -> Plan[T]:
    """``value = yield from offload(lambda: work())``."""
    result = yield Offload(func)
    return cast(T, result)


def parallel(*plans: Plan[Any]) -> Plan[tuple[Any, ...]]:
    """``a, b = yield from parallel(plan_a, plan_b)``: neither waits on the other's DNS."""
    result = yield Parallel(plans)
    return cast(tuple[Any, ...], result)


def checkpoint() -> Plan[None]:
    """``yield from checkpoint()`` between slices of CPU work (signature checks, a MiB of
    body): under asyncio no plan holds the event loop for longer than one slice."""
    yield _CHECKPOINT


@dataclass
class Budget:
    """What one plan may spend: ``queries`` DNS questions (cached answers count too, so that
    the limit does not depend on what happens to be cached) and ``seconds`` from its first
    question (None: no time limit). ``what`` names the plan in the reason of the answers
    refused. ``asked`` counts the questions answered for real."""

    what: str
    queries: int
    seconds: float | None = None
    clock: Callable[[], float] = time.monotonic
    asked: int = 0
    refused: int = 0  # questions answered as temporary failures for this budget's limits
    _deadline: float | None = field(default=None, repr=False)

    def allow(self, count: int) -> tuple[int, str]:
        """How many of ``count`` questions may be asked now, and why not the others."""
        now = self.clock()
        if self._deadline is None and self.seconds is not None:
            self._deadline = now + self.seconds
        if self._deadline is not None and now >= self._deadline:
            return 0, self.late
        allowed = max(0, min(count, self.queries - self.asked))
        self.asked += allowed
        why = "" if allowed == count else f"{self.what}: more than {self.queries} DNS queries"
        return allowed, why

    @property
    def deadline(self) -> float | None:
        """When the time limit ends (in ``clock``'s time), once the first question was asked."""
        return self._deadline

    @property
    def late(self) -> str:
        return f"{self.what}: time limit of {self.seconds:g} s exceeded"


def bounded(plan: Plan[T], budget: Budget) -> Plan[T]:
    """``plan`` within ``budget``: questions beyond it are answered TEMPFAIL, unasked."""
    value: Any = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return cast(T, stop.value)
        if isinstance(effect, Parallel):  # (the plans run at once share the budget)
            value = yield Parallel(tuple(bounded(p, budget) for p in effect.plans))
            continue
        if not isinstance(effect, Resolve):
            value = yield effect
            continue
        allowed, why = budget.allow(len(effect.queries))
        asked = effect.queries[:allowed]
        deadline, late = effect.deadline, effect.late
        mine = budget.deadline if budget.clock is time.monotonic else None  # (a test clock)
        if mine is not None and (deadline is None or mine < deadline):
            deadline, late = mine, budget.late
        answers: tuple[Lookup, ...] = (yield Resolve(asked, deadline, late)) if asked else ()
        refused = tuple(
            Lookup(q.name, q.rdtype, DnsStatus.TEMPFAIL, reason=why, refused=True)
            for q in effect.queries[allowed:]
        )
        budget.refused += len(refused) + sum(1 for a in answers if a.refused)
        value = (*answers, *refused)


def shortest_ttl(plan: Plan[T]) -> Plan[tuple[T, int]]:
    """``plan``'s value and how long every DNS answer it received stays valid: the shortest
    TTL among them (0 after a temporary failure, which is never cached; MAX_TTL when it
    asked nothing). For memos of results that depend on nothing but those answers."""
    ttl = MAX_TTL
    value: Any = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return cast(T, stop.value), ttl
        value = yield effect
        if isinstance(effect, Resolve):
            for lookup in value:
                ttl = min(ttl, 0 if lookup.status is DnsStatus.TEMPFAIL else lookup.ttl)


def run_plan(plan: Plan[T], resolver: DnsResolver) -> T:
    """Drive a plan to completion in the calling thread."""
    value: Any = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return cast(T, stop.value)
        if isinstance(effect, Resolve):
            value = tuple(resolver.lookup(q.name, q.rdtype) for q in effect.queries)
        elif isinstance(effect, Offload):
            value = effect.func()
        elif isinstance(effect, Parallel):
            value = tuple(run_plan(p, resolver) for p in effect.plans)
        else:
            value = None


def _answered_at_once(
    resolver: DnsResolver, queries: tuple[Query, ...]
) -> tuple[Lookup, ...] | None:
    """The answers to several questions when none needs the network (every one in the
    network resolver's cache, or a zone resolver's data), without a task each: asyncio.gather
    costs about 100 µs even then. None otherwise (they go out together)."""
    if type(resolver) is ZoneResolver:  # (not a subclass: its lookup_async may differ)
        return tuple(resolver.lookup(q.name, q.rdtype) for q in queries)
    if type(resolver) is not Resolver:
        return None
    cache = resolver.cache
    if not all(cache.holds(q) for q in queries):
        return None
    answers = tuple(cache.get(q) for q in queries)  # (counted as the lookups would count)
    if any(a is None for a in answers):  # one expired meanwhile: asked together after all
        return None
    return cast(tuple[Lookup, ...], answers)


async def run_plan_async(
    plan: Plan[T], resolver: DnsResolver, executor: Executor | None = None
) -> T:
    """Drive a plan on the running loop: DNS questions of one effect run concurrently."""
    loop = asyncio.get_running_loop()
    value: Any = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return cast(T, stop.value)
        if isinstance(effect, Resolve):
            if effect.deadline is not None:
                value = await _answer_by(effect, resolver)
                continue
            queries = effect.queries
            if len(queries) == 1:  # most effects: awaited directly, no task to schedule
                value = (await resolver.lookup_async(queries[0].name, queries[0].rdtype),)
            else:
                value = _answered_at_once(resolver, queries)
                if value is None:
                    value = tuple(
                        await asyncio.gather(
                            *(resolver.lookup_async(q.name, q.rdtype) for q in queries)
                        )
                    )
        elif isinstance(effect, Parallel):
            runs = (run_plan_async(p, resolver, executor) for p in effect.plans)
            value = tuple(await asyncio.gather(*runs))
        elif isinstance(effect, Offload):
            context = contextvars.copy_context()
            value = await loop.run_in_executor(
                executor, functools.partial(context.run, effect.func)
            )
        else:
            await asyncio.sleep(0)  # a checkpoint: the loop serves the others
            value = None


async def _answer_by(effect: Resolve, resolver: DnsResolver) -> tuple[Lookup, ...]:
    """The answers that arrive before ``effect.deadline``; the others, given up (their
    queries cancelled), are temporary failures."""
    assert effect.deadline is not None
    remaining = effect.deadline - time.monotonic()
    if remaining > 0 and (known := _answered_at_once(resolver, effect.queries)) is not None:
        return known  # (nothing to wait for: no task, no timer)
    tasks = (
        [asyncio.ensure_future(resolver.lookup_async(q.name, q.rdtype)) for q in effect.queries]
        if remaining > 0
        else []
    )
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=remaining)
        for task in pending:
            task.cancel()
    return tuple(
        tasks[i].result()
        if tasks and tasks[i].done() and not tasks[i].cancelled()
        else Lookup(q.name, q.rdtype, DnsStatus.TEMPFAIL, reason=effect.late, refused=True)
        for i, q in enumerate(effect.queries)
    )
