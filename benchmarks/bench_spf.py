"""SPF evaluations per second: mailauth's plan beside pyspf driven directly, in one run.

Two records, served by a DNS server started on loopback (never the system resolver) and
held in memory from the same zone text:

- ``includes``: two includes of ip4/ip6 ranges (3 TXT lookups per evaluation);
- ``mixed``: an include, ``a``, ``exists`` with a macro (a void lookup) and ``mx`` with three
  exchanges, matched by the last one (8 lookups per evaluation).

Each is evaluated by:

- mailauth, ``ZoneResolver`` (in memory): ``check_spf_identity``, the plan run blocking;
- mailauth, ``Resolver`` with a warm cache against the loopback server, blocking and on
  asyncio (``run_plan_async``, as the pipeline runs it);
- pyspf over the same ``ZoneResolver`` (its DNS function answered by it: how mailauth ran
  pyspf before SPF became a plan);
- pyspf, in-memory dict DNS: pyspf's lookup answered from a dict of the same data, the
  cheapest DNS it can have (the cost of its evaluation alone);
- pyspf, loopback DNS: pyspf's own dnspython lookup against the same server (pyspf keeps no
  cache between queries, so every check asks DNS).

The contenders run in alternating short rounds, so that a change in the machine's load
touches them all alike.

Run: python benchmarks/bench_spf.py [--seconds 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.resolver
import spf as pyspf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.dns import DnsResolver, Resolver, RRType, ZoneResolver
from mailauth.plan import run_plan_async
from mailauth.spf import check_spf_identity, evaluate_spf_identity
from tests.dnsserver import LoopbackDnsServer

ZONE = """
$ORIGIN bench.test.
$TTL 3600
@        IN SOA ns hostmaster 1 3600 600 86400 300
@        IN TXT "v=spf1 include:_a.bench.test include:_b.bench.test -all"
_a       IN TXT "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:1::/48 ~all"
_b       IN TXT "v=spf1 ip4:203.0.113.0/24 ip4:192.0.2.0/24 ~all"
mixed    IN TXT "v=spf1 include:_a.bench.test a exists:%{l}.x.bench.test mx -all"
mixed    IN A 198.51.100.200
mixed    IN MX 10 mx1.bench.test.
mixed    IN MX 20 mx2.bench.test.
mixed    IN MX 30 mx3.bench.test.
mx1      IN A 203.0.113.1
mx2      IN A 203.0.113.2
mx3      IN A 192.0.2.10
"""
CASES = {"includes": "user@bench.test", "mixed": "user@mixed.bench.test"}
IP, HELO = "192.0.2.10", "mail.bench.test"
Check = Callable[[int], str]  # n evaluations, the last result


def rates(contenders: dict[str, Check], seconds: float, rounds: int) -> dict[str, float]:
    """Evaluations per second of each, measured in ``rounds`` alternating rounds."""
    counts = dict.fromkeys(contenders, 0)
    times = dict.fromkeys(contenders, 0.0)
    for func in contenders.values():
        assert func(1) == "pass"  # warm-up (fills caches), and the same result
    for _ in range(rounds):
        for label, func in contenders.items():
            count, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds / rounds:
                func(20)
                count += 20
            counts[label] += count
            times[label] += elapsed
    return {label: counts[label] / times[label] for label in contenders}


def ours(resolver: DnsResolver, sender: str) -> Check:
    def check(times: int) -> str:
        for _ in range(times):
            outcome = check_spf_identity(resolver, ip=IP, sender=sender, helo=HELO)
        return str(outcome.result)

    return check


def ours_async(resolver: DnsResolver, sender: str) -> Check:
    """Evaluations one after the other on an event loop, as the pipeline runs them."""
    loop = asyncio.new_event_loop()

    async def evaluate(times: int) -> str:
        for _ in range(times):
            plan = evaluate_spf_identity(ip=IP, sender=sender, helo=HELO)
            outcome = await run_plan_async(plan, resolver)
        return str(outcome.result)

    return lambda times: loop.run_until_complete(evaluate(times))


def pyspf_check(sender: str, lookup: Callable[..., list[Any]] | None) -> Check:
    """pyspf, its DNS function replaced by ``lookup`` meanwhile (None: its own)."""

    def check(times: int) -> str:
        saved = pyspf.DNSLookup
        pyspf.DNSLookup = lookup or saved
        try:
            for _ in range(times):
                word = pyspf.query(i=IP, s=sender, h=HELO).check()[0]
        finally:
            pyspf.DNSLookup = saved
        return str(word)

    return check


def zone_lookup(zone: ZoneResolver) -> Callable[..., list[Any]]:
    """pyspf's DNSLookup contract answered by a ZoneResolver."""

    def lookup(name: str, qtype: str, *args: Any) -> list[Any]:
        found = zone.lookup(name, RRType(qtype))
        key = (name, qtype)
        if qtype == "TXT":
            return [(key, (text,)) for text in found.texts]
        if qtype == "MX":
            return [(key, (mx.preference, mx.exchange)) for mx in found.exchanges]
        return [(key, host) for host in found.hosts]

    return lookup


def memory_lookup(zone: ZoneResolver) -> Callable[..., list[Any]]:
    """pyspf's DNSLookup contract answered from the zone, converted once into a dict."""
    table: dict[tuple[str, str], list[Any]] = {}
    for name in ("bench.test", "_a.bench.test", "_b.bench.test", "mixed.bench.test"):
        for rdtype in (RRType.TXT, RRType.A, RRType.MX):
            found = zone.lookup(name, rdtype)
            key = (name, str(rdtype))
            if rdtype is RRType.TXT:
                table[key] = [(key, (text,)) for text in found.texts]
            elif rdtype is RRType.MX:
                table[key] = [(key, (mx.preference, mx.exchange)) for mx in found.exchanges]
            else:
                table[key] = [(key, host) for host in found.hosts]
    for host in ("mx1", "mx2", "mx3"):
        key = (f"{host}.bench.test", "A")
        table[key] = [(key, h) for h in zone.lookup(key[0], RRType.A).hosts]
    return lambda name, qtype, *args: table.get((name.lower().rstrip("."), qtype), [])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per contender and record")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    zone = ZoneResolver.from_text(ZONE)
    print("SPF evaluations/s, one core (the plan run blocking unless it says asyncio)")
    with LoopbackDnsServer(ZONE) as server:
        resolver = Resolver([server.address], timeout=1, lifetime=2)
        dns.resolver.default_resolver = dns.resolver.Resolver(configure=False)
        dns.resolver.default_resolver.nameservers = [server.address.split(":")[0]]
        dns.resolver.default_resolver.port = server.port
        for case, sender in CASES.items():
            contenders = {
                "mailauth, ZoneResolver (in memory)": ours(zone, sender),
                "mailauth, Resolver (warm cache)": ours(resolver, sender),
                "mailauth, Resolver (warm cache), asyncio": ours_async(resolver, sender),
                "pyspf, over the ZoneResolver": pyspf_check(sender, zone_lookup(zone)),
                "pyspf, in-memory dict DNS": pyspf_check(sender, memory_lookup(zone)),
                "pyspf, loopback DNS (no cache)": pyspf_check(sender, None),
            }
            _report(case, rates(contenders, args.seconds, args.rounds))


def _report(case: str, rates: dict[str, float]) -> None:
    print(f"\n{case}:")
    for label, value in rates.items():
        print(f"  {label:44} {value:9.0f}/s")
    zone, warm = (
        rates["mailauth, ZoneResolver (in memory)"],
        rates["mailauth, Resolver (warm cache)"],
    )
    for label, theirs in (
        ("ZoneResolver / pyspf over the ZoneResolver", rates["pyspf, over the ZoneResolver"]),
        ("ZoneResolver / pyspf in-memory dict", rates["pyspf, in-memory dict DNS"]),
        ("Resolver warm / pyspf loopback", rates["pyspf, loopback DNS (no cache)"]),
    ):
        print(f"  ratio {label:38} {(warm if 'Resolver warm' in label else zone) / theirs:9.2f}x")


if __name__ == "__main__":
    main()
