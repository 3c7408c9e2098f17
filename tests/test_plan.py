"""Plans and their runners: checkpoints, and the budget that bounds a plan's DNS and time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mailauth import plan as plan_module
from mailauth.dns import DnsResolver, DnsStatus, Lookup, Query, RRType, ZoneResolver
from mailauth.plan import (
    SLICE,
    Budget,
    Plan,
    bounded,
    checkpoint,
    parallel,
    resolve,
    run_plan,
    run_plan_async,
    start_plan_async,
)

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
    """A slice of work longer than SLICE: each checkpoint hands the loop on."""
    order: list[str] = []

    def slices() -> Plan[None]:
        for i in range(3):
            order.append(f"slice {i}")
            ends = time.perf_counter() + SLICE * 1.5
            while time.perf_counter() < ends:  # (CPU work)
                pass
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


def test_checkpoints_within_the_slice_and_cached_answers_take_no_turn_of_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Short slices, answers at hand and Parallel plans that need not wait finish in the
    step that started them: no other task runs in between (each turn of the loop would be
    a chance to wait behind every other connection's)."""
    monkeypatch.setattr(plan_module, "SLICE", 60.0)  # (a preempted process must not yield)
    order: list[str] = []

    def quick(name: str) -> Plan[str]:
        for i in range(3):
            order.append(f"{name} {i}")
            yield from checkpoint()
        (lookup,) = yield from resolve(Query.of("n1.example", RRType.TXT))
        return lookup.texts[0].decode()

    def both() -> Plan[tuple[Any, ...]]:
        return (yield from parallel(quick("a"), quick("b")))

    async def other() -> None:
        order.append("other")

    async def main() -> tuple[Any, ...]:
        task = asyncio.ensure_future(other())
        started = start_plan_async(both(), ZONE)
        assert started.done()  # (no task: nothing to wait for)
        value = await run_plan_async(both(), ZONE)
        await task
        return (started.result(), value)

    assert asyncio.run(main()) == ((("1", "1"), ("1", "1")))
    assert order.index("other") == 12  # (after both runs, 2 x 2 plans x 3 slices)


def test_a_parallel_plan_that_waits_becomes_a_task_and_the_others_go_on() -> None:
    """One plan waits for a slow answer, the other does not wait for it; the values in
    order; one that fails cancels the one still waiting."""
    answered: list[str] = []

    def ask(name: str) -> Plan[str]:
        (lookup,) = yield from resolve(Query.of(name, RRType.TXT))
        answered.append(name)
        return lookup.name

    def both() -> Plan[tuple[Any, ...]]:
        return (yield from parallel(ask("slow1.example"), ask("n1.example")))

    assert asyncio.run(run_plan_async(both(), _Slow(0.05))) == ("slow1.example", "n1.example")
    assert answered == ["n1.example", "slow1.example"]

    def failing() -> Plan[str]:
        (_,) = yield from resolve(Query.of("slow2.example", RRType.TXT))
        raise ValueError("junk")

    def slow_and_failing() -> Plan[tuple[Any, ...]]:
        return (yield from parallel(ask("slow1.example"), failing()))

    class _Slower(_Slow):
        async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
            await asyncio.sleep(0.01 if name.startswith("slow2") else 5)
            return self.zone.lookup(name, rdtype)

    async def cancels() -> int:
        before = len(asyncio.all_tasks())
        with pytest.raises(ValueError, match="junk"):
            await run_plan_async(slow_and_failing(), _Slower(0))
        await asyncio.sleep(0)
        return len(asyncio.all_tasks()) - before

    assert asyncio.run(asyncio.wait_for(cancels(), 2)) == 0  # (not left waiting 5 s)


def test_one_plan_left_waiting_is_finished_without_a_task() -> None:
    """Of a Parallel's plans, only one has to wait (a checkpoint past the slice): it goes on
    in its caller's task, with no task of its own to start and hear back from."""
    tasks: list[int] = []

    def slow() -> Plan[int]:
        ends = time.perf_counter() + SLICE * 1.5
        while time.perf_counter() < ends:  # (CPU work)
            pass
        yield from checkpoint()
        tasks.append(len(asyncio.all_tasks()))
        return 1

    def both() -> Plan[tuple[Any, ...]]:
        return (yield from parallel(asks([["n1"]]), slow()))

    result = asyncio.run(run_plan_async(both(), ZONE))
    assert result[0][0].texts == (b"1",) and result[1] == 1
    assert tasks == [1]  # (asyncio.run's own task alone)


def test_a_parallel_plan_not_started_within_the_slice_starts_at_the_next_turn() -> None:
    """A step takes the slice and what one plan does up to its next checkpoint, not that of
    every plan of a Parallel: once the first has spent the slice, the second starts at the
    next turn of the loop (another task's turn comes in between)."""
    order: list[str] = []

    def spend(name: str) -> Plan[str]:
        order.append(name)
        ends = time.perf_counter() + SLICE * 1.5
        while time.perf_counter() < ends:  # (CPU work up to its first checkpoint)
            pass
        yield from checkpoint()
        return name

    def both() -> Plan[tuple[Any, ...]]:
        return (yield from parallel(spend("first"), spend("second")))

    async def other() -> None:
        order.append("other")

    async def main() -> tuple[Any, ...]:
        running = asyncio.ensure_future(run_plan_async(both(), ZONE))
        waiting = asyncio.ensure_future(other())  # (ready when the plan's first step ends)
        value = await running
        await waiting
        return value

    assert asyncio.run(main()) == ("first", "second")
    assert order == ["first", "other", "second"]


def test_a_cancelled_plan_cancels_the_lookups_it_waits_for() -> None:
    """The milter's deadline cancels a message's checks: the DNS lookups they wait for
    (questions with a deadline, as every bounded method asks) are cancelled with them, not
    left running until the resolver's own lifetime."""

    def waits() -> Plan[Any]:
        budget = Budget("x", queries=5, seconds=30)
        return (yield from bounded(asks([["slow1", "slow2"]]), budget))

    async def main() -> int:
        running = asyncio.ensure_future(run_plan_async(waits(), _Slow(5)))
        await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await asyncio.sleep(0)
        return len(asyncio.all_tasks()) - 1

    assert asyncio.run(main()) == 0


class _Slow:
    """A resolver whose answers take ``delay`` seconds (names starting with "slow") or none."""

    def __init__(self, delay: float) -> None:
        self.delay, self.zone = delay, ZoneResolver.from_text(TEXT)

    def lookup(self, name: str, rdtype: RRType) -> Lookup:
        return self.zone.lookup(name, rdtype)

    async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
        if name.startswith("slow"):
            await asyncio.sleep(self.delay)
        return self.zone.lookup(name, rdtype)


def test_parallel_plans_do_not_wait_on_each_other() -> None:
    async def main() -> tuple[tuple[Any, ...], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        both = parallel(asks([["slow1"], ["slow2"]]), asks([["slow3"], ["slow4"]]))
        result = await run_plan_async(both, _Slow(0.2))
        return result, loop.time() - started

    (first, second), took = asyncio.run(main())
    assert [lookup.name for lookup in first] == ["slow1.example", "slow2.example"]
    assert [lookup.name for lookup in second] == ["slow3.example", "slow4.example"]
    assert took < 0.6  # two steps of 0.2 s each side, side by side (not 0.8 s)
    blocking = run_plan(parallel(asks([["n1"]]), asks([["n2"]])), ZONE)
    assert [[lookup.name for lookup in part] for part in blocking] == [
        ["n1.example"],
        ["n2.example"],
    ]


def test_asyncio_runner_gives_up_at_the_budget_time_limit() -> None:
    """The time limit also ends a step in flight (a query a slow server holds)."""

    async def main() -> tuple[list[Lookup], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = Budget("DKIM", queries=10, seconds=0.3)
        lookups = await run_plan_async(bounded(asks([["n1", "slow1"], ["n2"]]), budget), _Slow(5))
        return lookups, loop.time() - started

    lookups, took = asyncio.run(main())
    assert took < 1
    assert [lookup.status for lookup in lookups] == [
        DnsStatus.ANSWER,  # (answered at once: kept)
        DnsStatus.TEMPFAIL,
        DnsStatus.TEMPFAIL,
    ]
    assert lookups[1].reason == lookups[2].reason == "DKIM: time limit of 0.3 s exceeded"


def test_plans_run_in_parallel_share_their_budget() -> None:
    budget = Budget("SPF", queries=3)
    parts = run_plan(bounded(parallel(asks([["n1", "n2"]]), asks([["n3", "n4"]])), budget), ZONE)
    statuses = [lookup.status for part in parts for lookup in part]
    assert statuses == [DnsStatus.ANSWER] * 3 + [DnsStatus.TEMPFAIL]


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
        timed = bounded(asks(groups), Budget("X", queries=100, seconds=5.0))
        assert _run_counting_tasks(timed, resolver) == (cold, 0)  # under a deadline too
        asked = len(server.questions)
        clock[0] += 301  # all expired: asked again, together
        again, tasks = _run_counting_tasks(asks(groups), resolver)
        assert tasks >= 3 + 2 and len(server.questions) == asked + 5
        assert [a.texts for a in again] == [a.texts for a in cold]
