"""SPF evaluations per second, mailauth beside pyspf driven directly, in one run.

The record under test has two includes (three TXT lookups per evaluation). DNS comes from a
DNS server started on loopback (never the system resolver):

- mailauth: ``check_spf_identity`` through ``mailauth.dns.Resolver`` with a warm cache;
- pyspf direct: ``spf.query(...).check()`` with pyspf's own dnspython lookup pointed at the
  same loopback server (pyspf keeps no cache between queries, so every check asks DNS);
- pyspf direct, in-memory DNS: pyspf with a dict for DNS, the cost of evaluation alone.

Run: python benchmarks/bench_spf.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.resolver
import spf as pyspf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.dns import Resolver
from mailauth.spf import check_spf_identity
from tests.dnsserver import LoopbackDnsServer

ZONE = """
$ORIGIN bench.test.
$TTL 3600
@       IN SOA ns hostmaster 1 3600 600 86400 300
@       IN TXT "v=spf1 include:_a.bench.test include:_b.bench.test -all"
_a      IN TXT "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:1::/48 ~all"
_b      IN TXT "v=spf1 ip4:203.0.113.0/24 ip4:192.0.2.0/24 ~all"
"""
IP, SENDER, HELO = "192.0.2.10", "user@bench.test", "mail.bench.test"


def rate(func: Callable[[], str], seconds: float) -> tuple[float, str]:
    result = func()  # warm-up (fills caches)
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(50):
            result = func()
        count += 50
    return count / elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with LoopbackDnsServer(ZONE) as server:
        resolver = Resolver([server.address], timeout=1, lifetime=2)

        def ours() -> str:
            return str(check_spf_identity(resolver, ip=IP, sender=SENDER, helo=HELO).result)

        dns.resolver.default_resolver = dns.resolver.Resolver(configure=False)
        dns.resolver.default_resolver.nameservers = [server.address.split(":")[0]]
        dns.resolver.default_resolver.port = server.port

        def direct() -> str:
            return str(pyspf.query(i=IP, s=SENDER, h=HELO).check()[0])

        memory: dict[tuple[str, str], list[Any]] = {}
        for name in ("bench.test", "_a.bench.test", "_b.bench.test"):
            answer = dns.resolver.default_resolver.resolve(name, "TXT")
            memory[(name, "TXT")] = [((name, "TXT"), r.strings) for r in answer]

        def in_memory() -> str:
            return str(pyspf.query(i=IP, s=SENDER, h=HELO).check()[0])

        ours_rate, ours_result = rate(ours, args.seconds)
        direct_rate, direct_result = rate(direct, args.seconds)
        saved = pyspf.DNSLookup
        pyspf.DNSLookup = lambda name, qtype, *a: memory.get((name.lower(), qtype), [])
        try:
            memory_rate, memory_result = rate(in_memory, args.seconds)
        finally:
            pyspf.DNSLookup = saved
    assert ours_result == direct_result == memory_result == "pass"
    print("SPF evaluations/s, record with two includes (3 TXT lookups), one core")
    print(f"  mailauth (Resolver, warm cache):        {ours_rate:9.0f}/s")
    print(f"  pyspf direct (loopback DNS, no cache):  {direct_rate:9.0f}/s")
    print(f"  pyspf direct (in-memory dict DNS):      {memory_rate:9.0f}/s")
    print(f"  ratio mailauth / pyspf direct:          {ours_rate / direct_rate:9.2f}x")
    print(f"  ratio mailauth / pyspf in-memory:       {ours_rate / memory_rate:9.2f}x")


if __name__ == "__main__":
    main()
