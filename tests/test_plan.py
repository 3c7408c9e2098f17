"""Plans and their runners: checkpoints, and the budget that bounds a plan's DNS and time."""

from __future__ import annotations

import asyncio
from typing import Any

from mailauth.dns import DnsResolver, DnsStatus, Lookup, Query, RRType, ZoneResolver
from mailauth.plan import Budget, Plan, bounded, checkpoint, resolve, run_plan, run_plan_async

TEXT = "$ORIGIN example.\n" + "".join(f'n{i} 300 IN TXT "{i}"\n' for i in range(10))
ZONE = ZoneResolver.from_text(TEXT)


def asks(names: list[list[str]]) -> Plan[list[Lookup]]:
    """One resolve effect per inner list; every answer, in order."""
    seen: list[Lookup] = []
    for group in names:
        seen.extend((yield from resolve(*(Query.of(f"{n}.example", RRType.TXT) for n in group))))
    return seen


def test_budget_answers_questions_beyond_it_as_temporary_failures_unasked() -> None:
    budget = Budget("SPF", queries=3)
    zone = ZoneResolver.from_text('$ORIGIN example.\nn0 IN TXT "0"\n')
    lookups = run_plan(bounded(asks([["n0", "n1"], ["n2", "n3"], ["n4"]]), budget), zone)
    statuses = [lookup.status for lookup in lookups]
    assert statuses[:3] == [DnsStatus.ANSWER, DnsStatus.NXDOMAIN, DnsStatus.NXDOMAIN]
    assert statuses[3:] == [DnsStatus.TEMPFAIL, DnsStatus.TEMPFAIL]
    assert lookups[4].reason == "SPF: more than 3 DNS queries"
    assert [q.name for q in zone.queries] == ["n0.example", "n1.example", "n2.example"]
    assert budget.asked == 3


def test_budget_time_limit_counts_from_the_first_question() -> None:
    ticks = iter([100.0, 104.0, 121.0])
    budget = Budget("SPF", queries=100, seconds=20, clock=lambda: next(ticks))
    zone = ZoneResolver.from_text(TEXT)
    lookups = run_plan(bounded(asks([["n1"], ["n2"], ["n3"]]), budget), zone)
    assert [lookup.status for lookup in lookups] == [
        DnsStatus.ANSWER,
        DnsStatus.ANSWER,
        DnsStatus.TEMPFAIL,
    ]
    assert lookups[2].reason == "SPF: time limit of 20 s exceeded"
    assert [q.name for q in zone.queries] == ["n1.example", "n2.example"]


def test_bounded_plan_returns_its_value_and_passes_other_effects() -> None:
    def plan() -> Plan[str]:
        yield from checkpoint()
        (lookup,) = yield from resolve(Query.of("n5.example", RRType.TXT))
        return lookup.texts[0].decode()

    assert run_plan(bounded(plan(), Budget("x", queries=1)), ZONE) == "5"
    assert asyncio.run(run_plan_async(bounded(plan(), Budget("x", queries=1)), ZONE)) == "5"


def test_checkpoint_lets_other_tasks_run_between_slices() -> None:
    order: list[str] = []

    def slices() -> Plan[None]:
        for i in range(3):
            order.append(f"slice {i}")
            yield from checkpoint()

    async def other() -> None:
        for i in range(3):
            order.append(f"other {i}")
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(run_plan_async(slices(), ZONE), other())

    asyncio.run(main())
    assert order == ["slice 0", "other 0", "slice 1", "other 1", "slice 2", "other 2"]
    run_plan(slices(), ZONE)  # the blocking runner just goes on


def _run_counting_tasks(
    plan: Plan[list[Lookup]], resolver: DnsResolver
) -> tuple[list[Lookup], int]:
    """The plan run on a new event loop; its value and how many tasks the runner made."""
    made = [0]

    async def main() -> list[Lookup]:
        loop = asyncio.get_running_loop()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            made[0] += 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        value = await run_plan_async(plan, resolver)
        loop.set_task_factory(None)  # (asyncio.run's own tasks at shutdown are not counted)
        return value

    return asyncio.run(main()), made[0]


def test_questions_answered_without_the_network_need_no_task() -> None:
    """Several questions of one effect all in the cache (or in a zone): answered at once,
    as asked; asyncio.gather (a task per question) only when one must go out."""
    from mailauth.dns import DnsCache, Resolver
    from tests.dnsserver import LoopbackDnsServer

    groups = [["n1", "n2", "n3"], ["n4"], ["n1", "n5"]]
    expected = run_plan(asks(groups), ZONE)
    assert _run_counting_tasks(asks(groups), ZONE) == (expected, 0)
    clock = [1000.0]
    cache = DnsCache(clock=lambda: clock[0])
    with LoopbackDnsServer(TEXT) as server:
        resolver = Resolver([server.address], timeout=1, lifetime=3, cache=cache)
        cold, tasks = _run_counting_tasks(asks(groups), resolver)
        assert tasks >= 3 + 2  # n1-n3 together, then n1 (cached) with n5 (not): a task each
        assert [(a.name, a.texts) for a in cold] == [(a.name, a.texts) for a in expected]
        hits, misses = cache.hits, cache.misses
        warm, tasks = _run_counting_tasks(asks(groups), resolver)
        assert (warm, tasks) == (cold, 0)
        assert (cache.hits, cache.misses) == (hits + 6, misses)  # one hit per answer
        asked = len(server.questions)
        clock[0] += 301  # all expired: asked again, together
        again, tasks = _run_counting_tasks(asks(groups), resolver)
        assert tasks >= 3 + 2 and len(server.questions) == asked + 5
        assert [a.texts for a in again] == [a.texts for a in cold]
