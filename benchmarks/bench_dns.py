"""Cold DNS lookups on asyncio: mailauth's transport beside dnspython's asyncresolver.

DNS servers on loopback in other processes (tests/dnsserver.py) serve a zone of 20,000 TXT
records (an SPF record each). Each round asks questions nobody asked before (no cache hit):

- in bursts of --burst at once (a hostile message asks about fifty at a time) of a server
  whose answers come 50 ms late, as bench_hostile.py's hostile.test: every question of a
  burst is out before its answers come back together;
- one at a time, of a server that answers at once.

Printed per transport: the CPU microseconds this process spends per question (user + system:
the sockets, the query's wire, parsing, the outcome); for bursts, the longest turn of the
event loop meanwhile (what every other task on the loop waits for: a ticker task measures
each turn, in CPU time), for one at a time, lookups per second. The best of --repeat runs for each,
alternating the two transports so that a neighbour's load on the machine weighs on both
alike. Answers are compared: both must give the same Lookup for every question.

"dnspython" is ``Resolver.lookup_async`` as it was before mailauth had its own transport:
``dns.asyncresolver.Resolver.resolve`` (a socket and an asyncio transport per question)
and ``lookup_from_answer`` / ``lookup_from_error``.

Run: python benchmarks/bench_dns.py [--questions 3000] [--burst 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.dns import DnsCache, Lookup, Query, Resolver, RRType
from mailauth.dns.outcomes import lookup_from_answer, lookup_from_error
from tests.dnsserver import slow_dns_process

NAMES = 20_000
ZONE = "$ORIGIN example.test.\n$TTL 600\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n" + "".join(
    f'n{i} IN TXT "v=spf1 ip4:192.0.2.{i % 256} -all"\n' for i in range(NAMES)
)

Lookuper = Callable[[str], Awaitable[Lookup]]


def mailauth_lookuper(resolver: Resolver) -> Lookuper:
    async def lookup(name: str) -> Lookup:
        return await resolver.lookup_async(name, RRType.TXT)

    return lookup


def dnspython_lookuper(resolver: Resolver) -> Lookuper:
    backend = resolver._async  # (the dnspython resolver the old lookup_async called)

    async def lookup(name: str) -> Lookup:
        query = Query.of(name, RRType.TXT)
        try:
            answer = await backend.resolve(query.name, "TXT", search=False)
        except Exception as exc:
            return lookup_from_error(query, exc)
        return lookup_from_answer(query, answer)

    return lookup


async def run(
    lookup: Lookuper, names: list[str], burst: int, probe: bool
) -> tuple[list[Lookup], float]:
    """The lookups, and with ``probe`` the longest turn of the event loop meanwhile (CPU
    seconds: what this thread spent between two ticks of a timer due every millisecond, at
    worst; in CPU time, so that the machine's other processes do not count)."""
    loop = asyncio.get_running_loop()
    out: list[Lookup] = []
    worst = 0.0
    last = time.thread_time()

    def tick() -> None:
        nonlocal worst, last
        now = time.thread_time()
        worst, last = max(worst, now - last), now
        ticking[0] = loop.call_later(0.001, tick)

    ticking = [loop.call_later(0.001, tick)] if probe else []
    for start in range(0, len(names), burst):
        chunk = names[start : start + burst]
        if burst == 1:
            out.append(await lookup(chunk[0]))
        else:
            out.extend(await asyncio.gather(*(lookup(name) for name in chunk)))
    for handle in ticking:
        handle.cancel()
    return out, worst


def measure(
    lookup: Lookuper, names: list[str], burst: int, forget: Callable[[], None]
) -> tuple[float, float, float, list[Lookup]]:
    """(lookups per second, CPU µs per question, longest loop turn in ms, the lookups): CPU
    and rate from a run without the probe, the turn from a run with it (``forget`` empties
    the cache before each)."""
    forget()
    cpu, wall = time.process_time(), time.perf_counter()
    lookups, _ = asyncio.run(run(lookup, names, burst, probe=False))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    turn = 0.0
    if burst > 1:
        forget()
        _, turn = asyncio.run(run(lookup, names, burst, probe=True))
    return len(names) / wall, cpu / len(names) * 1e6, turn * 1e3, lookups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    needed = args.questions * args.repeat * 2 * 2
    if needed > NAMES:
        parser.error(f"--questions × --repeat × 4 must stay within {NAMES} names")
    fresh = iter(range(NAMES))
    with slow_dns_process(ZONE, 0.05) as late, slow_dns_process(ZONE, 0.0) as prompt:
        print(f"cold TXT lookups against loopback servers, {args.questions} questions a run")
        for burst, address in ((args.burst, late), (1, prompt)):
            resolver = Resolver([address], timeout=2.0, lifetime=5.0, cache=DnsCache())
            transports = {
                "mailauth": mailauth_lookuper(resolver),
                "dnspython": dnspython_lookuper(resolver),
            }
            best: dict[str, tuple[float, float, float]] = {}

            def forget(resolver: Resolver = resolver) -> None:
                resolver.cache = DnsCache()

            for _ in range(args.repeat):
                names = [f"n{next(fresh)}.example.test" for _ in range(args.questions)]
                results = {}
                for label, lookup in transports.items():
                    rate, cpu, turn, results[label] = measure(lookup, names, burst, forget)
                    old = best.get(label, (0.0, float("inf"), float("inf")))
                    best[label] = (max(old[0], rate), min(old[1], cpu), min(old[2], turn))
                assert results["mailauth"] == results["dnspython"], "the transports disagree"
            for label, (rate, cpu, turn) in best.items():
                if burst > 1:
                    what = f"bursts of {burst}, answers 50 ms late"
                    print(f"  {what}: {label:9} {cpu:5.0f} µs CPU/question, turns ≤ {turn:4.1f} ms")
                else:
                    what = "one at a time, answers at once"
                    print(f"  {what}: {label:9} {cpu:5.0f} µs CPU/question, {rate:5.0f} lookups/s")
            ratio = best["dnspython"][1] / best["mailauth"][1]
            print(f"  (CPU per question: dnspython / mailauth = {ratio:.1f})")
            resolver.close()


if __name__ == "__main__":
    main()
