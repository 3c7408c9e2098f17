"""mailauth check over many domains, concurrently, against a slow DNS server on loopback.

500 synthetic domains (SPF with an include, DMARC, MX, TLS-RPT; every other one with an
Ed25519 DKIM key at a common selector, the rest without DKIM) are served by a DNS server on
127.0.0.1, in another process, that waits 50 ms before every answer. A domain with DKIM
costs about 30 queries (SPF tree, DMARC tree walk, _domainkey and 16 common selectors, MX
hosts, MTA-STS, TLS-RPT, BIMI), one without about 14 (no names under _domainkey, RFC 8020),
most of them asked together: a serial run would need at least 500 x 50 ms = 25 s even at one
query per domain. ``--all-dkim`` gives every domain a key (the most queries). The run
prints the queries sent, the elapsed time, domains per second and the ratio to that bound,
with tqdm's progress bar on stderr; then the time of the command itself, ``mailauth check
--jobs 2`` (two worker processes; the client is CPU-bound in dnspython), on the same list.

Run: python benchmarks/bench_check.py [--domains 500] [--delay 0.05] [--concurrency 50]
     [--all-dkim] [--jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.check import check_domains
from mailauth.dns import Resolver
from tests.dnsserver import slow_dns_process

ED25519_KEY = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def make_zone(count: int, every_dkim: int = 2) -> str:
    lines = ["$ORIGIN example.", "$TTL 3600", "@ IN SOA ns hostmaster 1 3600 600 86400 300"]
    for n in range(count):
        d = f"d{n}"
        lines += [
            f'{d} IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.{d}.example -all"',
            f'_spf.{d} IN TXT "v=spf1 ip6:2001:db8::/32 ~all"',
            f'_dmarc.{d} IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{d}.example"',
            f"{d} IN MX 10 mx.{d}",
            f"mx.{d} IN A 192.0.2.25",
            f'_smtp._tls.{d} IN TXT "v=TLSRPTv1; rua=mailto:tls@{d}.example"',
        ]
        if n % every_dkim == 0:
            lines.append(f'selector1._domainkey.{d} IN TXT "{ED25519_KEY}"')
    return "\n".join(lines) + "\n"


async def run(domains: list[str], resolver: Resolver, concurrency: int) -> int:
    done = 0
    with tqdm(total=len(domains), file=sys.stderr, unit="domain") as bar:
        async for _ in check_domains(domains, resolver, concurrency=concurrency):
            done += 1
            bar.update(1)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--domains", type=int, default=500)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--all-dkim", action="store_true", help="a DKIM key at every domain")
    parser.add_argument(
        "--jobs", type=int, default=2, help="also time `mailauth check --jobs N` (2; 0: skip)"
    )
    args = parser.parse_args()
    domains = [f"d{n}.example" for n in range(args.domains)]
    zone = make_zone(args.domains, 1 if args.all_dkim else 2)
    bound = args.domains * args.delay
    with slow_dns_process(zone, args.delay) as address:
        resolver = Resolver([address], timeout=2, lifetime=10)
        started = time.perf_counter()
        done = asyncio.run(run(domains, resolver, args.concurrency))
        elapsed = time.perf_counter() - started
        print(
            f"{done} domains, {args.delay * 1000:.0f} ms per DNS answer, concurrency "
            f"{args.concurrency}, {resolver.cache.misses} queries: {elapsed:.1f} s "
            f"({done / elapsed:.0f} domains/s); "
            f"500 x 50 ms style bound {bound:.0f} s: {bound / elapsed:.1f}x faster"
        )
        if args.jobs > 0:
            elapsed = time_cli(domains, address, args.concurrency, args.jobs)
            print(
                f"mailauth check --jobs {args.jobs} (the command, start-up included): "
                f"{elapsed:.1f} s; bound {bound:.0f} s: {bound / elapsed:.1f}x faster"
            )


def time_cli(domains: list[str], address: str, concurrency: int, jobs: int) -> float:
    """Seconds for the real command over the same domains, in ``jobs`` processes."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("\n".join(domains) + "\n")
        listing.flush()
        command = [sys.executable, "-m", "mailauth", "check", "--from-file", listing.name]
        command += ["--nameserver", address, "--no-fetch", "--json", "--jobs", str(jobs)]
        command += ["--concurrency", str(concurrency)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
    reports = result.stdout.decode().splitlines()
    if result.returncode not in (0, 1) or len(reports) != len(domains):
        raise SystemExit(f"mailauth check failed: {result.stderr.decode()[-500:]}")
    return elapsed


if __name__ == "__main__":
    main()
