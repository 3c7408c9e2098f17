"""Plans and their runners: checkpoints, and the budget that bounds a plan's DNS and time."""

from __future__ import annotations

import asyncio

from mailauth.dns import DnsStatus, Lookup, Query, RRType, ZoneResolver
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
