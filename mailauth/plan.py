"""Checks written once, run blocking or on asyncio.

A check is a generator (a *plan*) that yields effects and receives their results:
:func:`resolve` asks DNS questions (answered concurrently by the asyncio runner),
:func:`offload` runs blocking or CPU-heavy work (in a worker thread under asyncio, inline
otherwise). :func:`run_plan` drives a plan with a resolver's blocking ``lookup``;
:func:`run_plan_async` with its ``lookup_async``. The protocol logic itself never knows which.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from mailauth.dns import DnsResolver, DnsStatus, Lookup, Query, RRType
from mailauth.domains import MAX_NAME

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Resolve:
    """Effect: answer these questions, in order."""

    queries: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Offload:
    """Effect: call this function (off the event loop when running async)."""

    func: Callable[[], Any]


Effect = Resolve | Offload
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
        else:
            value = effect.func()


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
            queries = effect.queries
            if len(queries) == 1:  # most effects: awaited directly, no task to schedule
                value = (await resolver.lookup_async(queries[0].name, queries[0].rdtype),)
            else:
                value = tuple(
                    await asyncio.gather(
                        *(resolver.lookup_async(q.name, q.rdtype) for q in queries)
                    )
                )
        else:
            context = contextvars.copy_context()
            value = await loop.run_in_executor(
                executor, functools.partial(context.run, effect.func)
            )
