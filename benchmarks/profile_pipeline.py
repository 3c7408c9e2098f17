"""Where one message's time goes in ``Authenticator.verify``: the cost of each phase.

The message and DNS data of ``bench_pipeline.py`` (a 3 KB message signed with RSA-2048,
``signed`` or ``arc``), DNS from a ``ZoneResolver`` (in memory) or a warm ``Resolver`` cache.
Each phase is run alone, ``--count`` times, on inputs prepared beforehand, the way the
pipeline runs it:

- ``parse``: ``make_context`` (the message split into fields, the SMTP facts checked);
- ``spf``: SPF for MAIL FROM and HELO (with the pipeline's SPF memo under ``warm``);
- ``dkim``: the body hashed and the signatures verified (key lookups included);
- ``arc``: ARC chain validation;
- ``dmarc``: the author (``Message.author``) and the DMARC evaluation (with the policy
  discovery memo under ``warm``, as the pipeline runs it);
- ``render``: the Authentication-Results and Received-SPF fields;
- ``verify``: the whole ``Authenticator.verify``; ``none``: the set-up alone;
- ``stack``: ``authheaders.authenticate_message`` on the same message (as in
  ``bench_pipeline.py``: DNS from memory, ``get_org_domain`` memoised), for comparison.

Run it under callgrind for instruction counts, one phase per run (the set-up is the
``none`` run, to subtract)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/profile_pipeline.py spf --count 200

or without, for microseconds per phase, wall and CPU (``--time``), or with ``--cprofile``
for the top functions of a phase.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline as bench

from mailauth import Authenticator
from mailauth.arc import verify_arc
from mailauth.authresults import render_authentication_results, render_received_spf
from mailauth.dkim.verify import feed_body
from mailauth.dmarc import evaluate_dmarc
from mailauth.dns import DnsResolver, Resolver, ZoneResolver
from mailauth.pipeline import make_context
from mailauth.plan import run_plan
from tests.dnsserver import LoopbackDnsServer

PHASES = ("none", "parse", "spf", "dkim", "arc", "dmarc", "render", "verify", "stack")


def phases(auth: Authenticator, message: bytes, kind: str) -> dict[str, Callable[[], object]]:
    """One callable per phase, on inputs computed once."""
    ip, helo, mail_from = bench.ENVELOPES[kind]
    context = make_context(message, ip=ip, helo=helo, mail_from=mail_from, now=None)
    resolver = auth.resolver
    verdict = auth.verify(message, ip=ip, helo=helo, mail_from=mail_from)
    assert verdict.spf is not None and verdict.dkim is not None
    spf_check, dkim_outcomes = verdict.spf, verdict.dkim

    def parse() -> object:
        return make_context(message, ip=ip, helo=helo, mail_from=mail_from, now=None)

    def spf() -> object:
        return run_plan(auth._spf(ip, helo, mail_from, context.now), resolver)

    def dkim() -> object:
        streamed = auth.prepare(context.message.headers, context.now)
        run_plan(feed_body(streamed.body, context.message.body), resolver)
        return run_plan(streamed.dkim.finish(), resolver)

    def arc() -> object:
        return run_plan(verify_arc(context.message), resolver)

    def dmarc() -> object:
        plan = evaluate_dmarc(
            context.message.author(),
            spf=spf_check,
            dkim=dkim_outcomes,
            arc=verdict.arc,
            ip=ip,
            helo=helo,
            mail_from=mail_from,
            local=auth.dmarc_policy,
            memo=auth._dmarc_memo,  # (as the pipeline runs it: with the network resolver)
        )
        return run_plan(plan, resolver)

    def render() -> object:
        header = render_authentication_results(
            auth.authserv_id,
            spf=verdict.spf,
            dkim=verdict.dkim,
            arc=verdict.arc,
            dmarc=verdict.dmarc,
            remote_ip=ip,
        )
        spf_field = render_received_spf(
            spf_check.mailfrom, ip=ip, helo=helo, receiver=auth.authserv_id
        )
        return header, spf_field

    def whole() -> object:
        return auth.verify(message, ip=ip, helo=helo, mail_from=mail_from)

    return {
        "none": lambda: None,
        "parse": parse,
        "spf": spf,
        "dkim": dkim,
        "arc": arc,
        "dmarc": dmarc,
        "render": render,
        "verify": whole,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("phase", choices=PHASES)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--kind", choices=tuple(bench.ENVELOPES), default="signed")
    parser.add_argument("--dns", choices=("zone", "warm"), default="zone")
    parser.add_argument("--size", type=int, default=3, help="KB")
    parser.add_argument("--time", action="store_true", help="print microseconds per call")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions")
    args = parser.parse_args()
    keys = bench.fixed_keys()
    zone_text = bench.make_zone(keys)
    zone = ZoneResolver.from_text(zone_text)
    message = bench.make_messages([args.size], keys, zone)[f"{args.kind}-{args.size}KB"]
    with contextlib.ExitStack() as stack:
        resolver: DnsResolver = zone
        if args.dns == "warm":  # (the server's threads only when needed: they add noise)
            server = stack.enter_context(LoopbackDnsServer(zone_text))
            resolver = Resolver([server.address], timeout=1, lifetime=2)
        auth = Authenticator(bench.AUTHSERV_ID, resolver)
        if args.phase == "stack":
            dnsfunc, spf_lookup = bench.memory_tables(zone)
            stack_run = bench.stack(
                bench.load_authheaders(), dnsfunc, spf_lookup, message, args.kind
            )
            run: Callable[[], object] = lambda: stack_run(1)  # noqa: E731
        else:
            run = phases(auth, message, args.kind)[args.phase]
        run()  # (warms the caches)
        zone.queries.clear()
        profile = cProfile.Profile() if args.cprofile else None
        started, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        for _ in range(args.count):
            run()
        if profile is not None:
            profile.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if args.time:
        per_call = f"{elapsed / args.count * 1e6:.1f} µs ({cpu / args.count * 1e6:.1f} µs of CPU)"
        print(f"{args.phase}: {per_call} per call")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
