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
# Seconds of the event loop a plan may take in one step (run_plan_async): past it, its next
# checkpoint hands the loop on (the milter's TURN). A checkpoint sooner would cost a turn of
# the loop for nothing, and each turn is a chance to wait behind every other connection's.
SLICE = 0.0005
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
    body): under asyncio no plan holds the event loop for longer than ``SLICE`` and one
    slice of work (a checkpoint within ``SLICE`` of the step's start goes straight on)."""
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
    """Drive a plan on the running loop: DNS questions of one effect run concurrently, and
    so do the plans of a Parallel. What can be answered at once (DNS in the cache or the
    zone, a checkpoint within the slice) is, in the same step of the loop (:func:`_step`)."""
    state = _step(plan, None, resolver, time.perf_counter() + SLICE)
    if isinstance(state, _Waiting):
        return cast(T, await _finish(state, resolver, executor))
    return cast(T, state)


def start_plan_async(
    plan: Plan[T], resolver: DnsResolver, executor: Executor | None = None
) -> asyncio.Future[T]:
    """:func:`run_plan_async` started now, beside the caller: the plan is run at once as far
    as it goes without waiting, and becomes a task only if it has to wait (a task costs a
    turn of the loop to start and another to report back)."""
    state = _step(plan, None, resolver, time.perf_counter() + SLICE)
    if isinstance(state, _Waiting):
        return asyncio.ensure_future(_finish(state, resolver, executor))
    done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    done.set_result(cast(T, state))
    return done


class _Waiting:
    """A plan run as far as it went without waiting, and the effect it waits on."""

    __slots__ = ("effect", "plan")

    def __init__(self, plan: Plan[Any], effect: Effect | _Together) -> None:
        self.plan, self.effect = plan, effect


@dataclass(frozen=True, slots=True)
class _Together:
    """A Parallel effect whose plans were run as far as each went: a plan's value, or a
    _Waiting for one that has to wait."""

    states: tuple[Any, ...]


def _step(plan: Plan[Any], value: Any, resolver: DnsResolver, until: float) -> Any:
    """Send ``value`` to ``plan`` and go on while its effects can be answered at once: DNS
    questions the cache (or the zone) answers, checkpoints before ``until``
    (time.perf_counter: the slice of the loop this step may take), Parallel effects whose
    plans can (each as far as it goes; those not started before ``until``, at the next
    turn). The plan's value, or a :class:`_Waiting`. A step thus takes at most the slice
    and what one plan does up to its next checkpoint or question."""
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return stop.value
        if isinstance(effect, Resolve):
            value = _known(effect, resolver)
            if value is None:
                return _Waiting(plan, effect)
        elif isinstance(effect, Parallel):
            # (one not started before the slice ran out starts at the next turn of the loop)
            states = tuple(
                _step(p, None, resolver, until)
                if index == 0 or time.perf_counter() < until
                else _Waiting(p, _CHECKPOINT)
                for index, p in enumerate(effect.plans)
            )
            if any(isinstance(state, _Waiting) for state in states):
                return _Waiting(plan, _Together(states))
            value = states
        elif isinstance(effect, Checkpoint) and time.perf_counter() < until:
            value = None  # (still within the slice: the loop is not handed on for nothing)
        else:  # work off the loop, or a checkpoint past the slice
            return _Waiting(plan, effect)


def _known(effect: Resolve, resolver: DnsResolver) -> tuple[Lookup, ...] | None:
    """The answers to a Resolve effect when none needs waiting for, else None."""
    if effect.deadline is not None and effect.deadline <= time.monotonic():
        return _too_late(effect)
    return _answered_at_once(resolver, effect.queries)


def _too_late(effect: Resolve) -> tuple[Lookup, ...]:
    return tuple(_late(query, effect) for query in effect.queries)


def _late(query: Query, effect: Resolve) -> Lookup:
    """A question given up at the effect's deadline: a temporary failure."""
    return Lookup(query.name, query.rdtype, DnsStatus.TEMPFAIL, reason=effect.late, refused=True)


async def _finish(
    state: _Waiting, resolver: DnsResolver, executor: Executor | None, *, task: bool = False
) -> Any:
    """Wait for what the plan waits on, run it on as far as it goes, and so on: its value.
    ``task``: run as a task of its own, whose first step is a turn of the loop already (a
    checkpoint there is not waited at again)."""
    loop = asyncio.get_running_loop()
    turned = task
    while True:
        plan, effect = state.plan, state.effect
        value: Any = None
        if isinstance(effect, Resolve):
            value = await _answers(effect, resolver)
        elif isinstance(effect, _Together):
            value = await _together(effect.states, resolver, executor)
        elif isinstance(effect, Offload):
            context = contextvars.copy_context()
            value = await loop.run_in_executor(
                executor, functools.partial(context.run, effect.func)
            )
        elif not turned:  # a checkpoint past the slice: the loop serves the others
            await asyncio.sleep(0)
        turned = False
        next_state = _step(plan, value, resolver, time.perf_counter() + SLICE)
        if not isinstance(next_state, _Waiting):
            return next_state
        state = next_state


async def _together(
    states: tuple[Any, ...], resolver: DnsResolver, executor: Executor | None
) -> tuple[Any, ...]:
    """The values of a Parallel's plans: those that had to wait finished as tasks, at once
    (one failing, or the caller cancelled: the others are cancelled); one alone that had
    to wait, finished here."""
    values = list(states)
    late = [index for index, state in enumerate(states) if isinstance(state, _Waiting)]
    if len(late) == 1:  # (the others are done: no task to start, nor to hear back from)
        values[late[0]] = await _finish(states[late[0]], resolver, executor)
        return tuple(values)
    waiting = {index: asyncio.ensure_future(_finish(states[index], resolver, executor, task=True))
               for index in late}  # fmt: skip
    try:
        finished = await asyncio.gather(*waiting.values())
    except BaseException:
        for task in waiting.values():
            task.cancel()
        raise
    for index, value in zip(waiting, finished, strict=True):
        values[index] = value
    return tuple(values)


async def _answers(effect: Resolve, resolver: DnsResolver) -> tuple[Lookup, ...]:
    """The answers to a Resolve effect (its questions asked at once)."""
    if effect.deadline is not None:
        return await _answer_by(effect, resolver)
    queries = effect.queries
    if len(queries) == 1:  # most effects: awaited directly, no task to schedule
        return (await resolver.lookup_async(queries[0].name, queries[0].rdtype),)
    return tuple(await asyncio.gather(*(resolver.lookup_async(q.name, q.rdtype) for q in queries)))


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
        try:
            _, pending = await asyncio.wait(tasks, timeout=remaining)
        except BaseException:  # (cancelled: the milter's deadline, a failing sibling)
            for task in tasks:
                task.cancel()
            raise
        for task in pending:
            task.cancel()
    return tuple(
        tasks[i].result()
        if tasks and tasks[i].done() and not tasks[i].cancelled()
        else _late(q, effect)
        for i, q in enumerate(effect.queries)
    )
