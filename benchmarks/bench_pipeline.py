"""The whole pipeline per message, mailauth beside dkimpy + pyspf + authheaders, in one run.

Each message goes through SPF (MAIL FROM and HELO), DKIM (one RSA-2048 signature by the
author domain), ARC, DMARC and the Authentication-Results header:

- mailauth: ``Authenticator.verify`` (blocking), DNS answered from memory by a
  ``ZoneResolver`` and, separately, by a ``Resolver`` whose cache is warm, in front of a DNS
  server on loopback (``tests/dnsserver.py``; never the system resolver); and
  ``verify_async`` on an event loop with that warm ``Resolver`` (``async``, as the milter
  runs it);
- the stack: ``authheaders.authenticate_message(spf=True, dkim=True, arc=True, dmarc=True)``,
  which runs pyspf, dkimpy and its own DMARC code and renders the field with authres. Its
  DNS is answered from an in-memory dict of the same zone (dkimpy's and authheaders'
  ``dnsfunc``, pyspf's ``DNSLookup`` hook), the cheapest DNS it can have. As shipped it
  reads and parses the public suffix list each time it wants an organizational domain
  (about four times per message): ``get_org_domain`` is memoised here, for a fair baseline.

Two kinds of message, each at several sizes (plain-text prose bodies): ``signed`` (a DKIM
signature by the author domain; ARC finds no chain) and ``arc`` (the same message forwarded:
one ARC set sealed by the forwarder on top, the envelope the forwarder's). Both sides must
agree on every result (asserted before measuring). The contenders run in alternating short
rounds, so that a change in the machine's load touches them alike; the rate of each is its
total count over its total time.

authheaders is not a dependency of mailauth; install it into the venv for this benchmark:
``.venv/bin/pip install authheaders`` (it brings publicsuffix2; dkimpy, pyspf and authres
are already in the ``test`` extra).

Run: python benchmarks/bench_pipeline.py [--seconds 1.5] [--rounds 10] [--sizes 2,10,50,100]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import spf as pyspf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth import Authenticator
from mailauth.arc import verify_arc
from mailauth.arc.seal import Sealer, results_payload
from mailauth.dkim import Signer, public_key_record
from mailauth.dns import DnsResolver, Resolver, RRType, ZoneResolver
from mailauth.message import Message
from mailauth.plan import run_plan
from tests.dnsserver import LoopbackDnsServer

AUTHOR, FORWARDER = "bench.test", "forwarder.test"
AUTHSERV_ID = "mx.receiver.test"
ENVELOPES = {  # kind: (ip, helo, mail_from)
    "signed": ("192.0.2.10", "mail.bench.test", "alice@bench.test"),
    "arc": ("198.51.100.7", "mx.forwarder.test", "list-bounces@forwarder.test"),
}
PROSE = (
    b"Thanks for the notes from Tuesday. I went through the figures again this morning and\r\n"
    b"the numbers for the third quarter look right to me, apart from the travel line, which\r\n"
    b"still counts the October conference twice. Could you ask Dana to send the corrected\r\n"
    b"sheet before Friday? Once that is in, I will forward everything to the board.\r\n"
    b"\r\n"
)
HEAD = (
    b"Received: from mail.bench.test (mail.bench.test [192.0.2.10])\r\n"
    b"\tby mx.forwarder.test (Postfix) with ESMTPS id 4QxYz1abcd\r\n"
    b"\tfor <bob@forwarder.test>; Sun, 29 Nov 2026 10:00:01 +0000 (UTC)\r\n"
    b"From: Alice Example <alice@bench.test>\r\nTo: Bob <bob@forwarder.test>\r\n"
    b"Cc: Carol <carol@example.org>\r\nSubject: Re: third quarter figures\r\n"
    b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <20261129100000.4QxYz1abcd@bench.test>\r\n"
    b"In-Reply-To: <20261124160000.9AbCd@example.org>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
)
ZONE_HEAD = """
$ORIGIN test.
$TTL 3600
@                       IN SOA ns hostmaster 1 3600 600 86400 300
bench                   IN TXT "v=spf1 include:_spf.bench.test -all"
_spf.bench              IN TXT "v=spf1 ip4:198.51.100.0/25 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all"
mail.bench              IN A 192.0.2.10
mail.bench              IN TXT "v=spf1 a -all"
_dmarc.bench            IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@bench.test; adkim=r; aspf=r"
forwarder               IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
mx.forwarder            IN A 198.51.100.7
mx.forwarder            IN TXT "v=spf1 a -all"
_dmarc.forwarder        IN TXT "v=DMARC1; p=none"
"""
Run = Callable[[int], str]  # n verifications; the last Authentication-Results, normalised


def fixed_keys() -> dict[str, rsa.RSAPrivateKey]:
    """RSA-2048 keys of the repository's fixtures (the same every run), by key record name."""
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    keys = {}
    for name, path in (
        (f"s2048._domainkey.{AUTHOR}", fixtures / "demo" / "demo.key.pem"),
        (f"arc._domainkey.{FORWARDER}", fixtures / "hostile" / "ordinary.key.pem"),
    ):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == 2048
        keys[name] = key
    return keys


def make_zone(keys: dict[str, rsa.RSAPrivateKey]) -> str:
    zone = ZONE_HEAD
    for name, key in keys.items():
        text = public_key_record(key)
        strings = " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
        zone += f"{name}. IN TXT {strings}\n"
    return zone


def make_messages(
    sizes: list[int], keys: dict[str, rsa.RSAPrivateKey], zone: ZoneResolver
) -> dict[str, bytes]:
    """``signed-<n>KB`` and ``arc-<n>KB`` for each size."""
    signer = Signer(AUTHOR, "s2048", keys[f"s2048._domainkey.{AUTHOR}"])
    sealer = Sealer(FORWARDER, "arc", keys[f"arc._domainkey.{FORWARDER}"])
    forwarder = Authenticator(FORWARDER, zone)
    messages = {}
    for size in sizes:
        body = PROSE * max(1, (size * 1000 - len(HEAD) - 700) // len(PROSE))
        signed = signer.sign(HEAD + body)
        messages[f"signed-{size}KB"] = signed
        ip, helo, mail_from = ENVELOPES["signed"]
        verdict = forwarder.verify(signed, ip=ip, helo=helo, mail_from=mail_from)
        chain = run_plan(verify_arc(Message.parse(signed)), zone)
        messages[f"arc-{size}KB"] = sealer.seal(
            signed,
            authentication_results=results_payload(verdict.authentication_results),
            chain=chain,
        )
    return messages


def memory_tables(zone: ZoneResolver) -> tuple[Callable[..., str], Callable[..., list[Any]]]:
    """The stack's DNS from memory: a TXT function for dkimpy and authheaders, and pyspf's
    ``DNSLookup`` contract; each answer converted from the zone once, then kept in a dict."""

    @functools.cache
    def txt(name: str) -> str:
        return "".join(t.decode() for t in zone.lookup(name, RRType.TXT).texts)

    def dnsfunc(name: str | bytes, timeout: float = 5) -> str:
        text = name.decode() if isinstance(name, bytes) else name
        return txt(text.lower().rstrip("."))

    @functools.cache
    def answers(name: str, qtype: str) -> list[Any]:
        found = zone.lookup(name, RRType(qtype))
        key = (name, qtype)
        if qtype == "TXT":
            return [(key, (text,)) for text in found.texts]
        if qtype == "MX":
            return [(key, (mx.preference, mx.exchange)) for mx in found.exchanges]
        return [(key, host) for host in found.hosts]

    def spf_lookup(name: str, qtype: str, *args: Any) -> list[Any]:
        return answers(name.lower().rstrip("."), qtype)

    return dnsfunc, spf_lookup


def load_authheaders() -> ModuleType:
    """authheaders, its ``get_org_domain`` memoised; a message and exit when missing."""
    try:
        authheaders = importlib.import_module("authheaders")
        dmarc_lookup = importlib.import_module("authheaders.dmarc_lookup")
    except ImportError:
        print(
            "bench_pipeline needs authheaders (not a mailauth dependency):\n"
            "    .venv/bin/pip install authheaders\n"
            "then run this again.",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    # As shipped, get_org_domain reads and parses the whole public suffix list per call.
    memo = functools.cache(dmarc_lookup.get_org_domain)
    for module in (dmarc_lookup, authheaders):  # (the package imports it by name too)
        setattr(module, "get_org_domain", memo)  # noqa: B010
    return authheaders


def results_of(header: str) -> str:
    """The distinct ``method=result`` words of an Authentication-Results field (to compare:
    the stack checks SPF for the MAIL FROM identity only, mailauth for HELO too)."""
    unfolded = " ".join(header.split())
    words = [w.strip(";") for w in unfolded.split() if "=" in w and w.split("=")[0] in METHODS]
    return " ".join(sorted(set(words)))


METHODS = ("spf", "dkim", "arc", "dmarc")


def ours(auth: Authenticator, message: bytes, kind: str) -> Run:
    ip, helo, mail_from = ENVELOPES[kind]
    asked = auth.resolver.queries if isinstance(auth.resolver, ZoneResolver) else None

    def run(times: int) -> str:
        for _ in range(times):
            verdict = auth.verify(message, ip=ip, helo=helo, mail_from=mail_from)
        if asked is not None:  # (the questions a ZoneResolver records for tests: not kept)
            asked.clear()
        return verdict.authentication_results

    return run


def ours_async(auth: Authenticator, message: bytes, kind: str) -> Run:
    """``verify_async`` one message after another on an event loop, as the milter runs it."""
    ip, helo, mail_from = ENVELOPES[kind]
    loop = asyncio.new_event_loop()

    async def verify(times: int) -> str:
        for _ in range(times):
            verdict = await auth.verify_async(message, ip=ip, helo=helo, mail_from=mail_from)
        return verdict.authentication_results

    return lambda times: loop.run_until_complete(verify(times))


def stack(
    authheaders: ModuleType,
    dnsfunc: Callable[..., str],
    spf_lookup: Callable[..., list[Any]],
    message: bytes,
    kind: str,
) -> Run:
    ip, helo, mail_from = ENVELOPES[kind]

    def run(times: int) -> str:
        saved, pyspf.DNSLookup = pyspf.DNSLookup, spf_lookup
        try:
            for _ in range(times):
                header = authheaders.authenticate_message(
                    message,
                    AUTHSERV_ID,
                    spf=True,
                    dkim=True,
                    arc=True,
                    dmarc=True,
                    ip=ip,
                    mail_from=mail_from,
                    helo=helo,
                    dnsfunc=dnsfunc,
                )
        finally:
            pyspf.DNSLookup = saved
        return str(header)

    return run


def rates(contenders: dict[str, Run], seconds: float, rounds: int) -> dict[str, float]:
    """Messages per second of each, from ``rounds`` alternating rounds of ``seconds/rounds``."""
    counts = dict.fromkeys(contenders, 0)
    times = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for label, run in contenders.items():
            count, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds / rounds:
                run(5)
                count += 5
            counts[label] += count
            times[label] += elapsed
    return {label: counts[label] / times[label] for label in contenders}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="per contender and message")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sizes", default="2,10,50,100", help="KB, comma-separated")
    parser.add_argument("--kinds", default="signed,arc")
    args = parser.parse_args()
    authheaders = load_authheaders()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    keys = fixed_keys()
    zone_text = make_zone(keys)
    zone = ZoneResolver.from_text(zone_text)
    messages = make_messages(sizes, keys, zone)
    dnsfunc, spf_lookup = memory_tables(zone)
    print(
        "Whole pipeline (SPF MAIL FROM + HELO, DKIM RSA-2048, ARC, DMARC, header), "
        "messages/s on one core"
    )
    print(
        f"{'':24}{'messages/s':^38}{'mailauth / stack':^27}\n"
        f"{'message':>16}{'bytes':>8}{'Zone':>8}{'Resolver':>10}{'async':>8}{'stack':>8}"
        f"{'Zone':>9}{'Resolver':>9}{'async':>9}"
    )
    ratios: dict[str, list[float]] = {"zone": [], "warm": [], "async": []}
    with LoopbackDnsServer(zone_text) as server:
        network = Resolver([server.address], timeout=1, lifetime=2)
        resolvers: dict[str, DnsResolver] = {"zone": zone, "warm": network}
        for kind in kinds:
            for size in sizes:
                name = f"{kind}-{size}KB"
                message = messages[name]
                contenders = {
                    label: ours(Authenticator(AUTHSERV_ID, resolver), message, kind)
                    for label, resolver in resolvers.items()
                }
                contenders["async"] = ours_async(Authenticator(AUTHSERV_ID, network), message, kind)
                contenders["stack"] = stack(authheaders, dnsfunc, spf_lookup, message, kind)
                found = {label: results_of(run(1)) for label, run in contenders.items()}
                if len(set(found.values())) != 1:  # (warms the caches too)
                    raise SystemExit(f"{name}: the results differ: {found}")
                got = rates(contenders, args.seconds, args.rounds)
                for label, values in ratios.items():
                    values.append(got[label] / got["stack"])
                print(
                    f"{name:>16}{len(message):8}{got['zone']:8,.0f}{got['warm']:10,.0f}"
                    f"{got['async']:8,.0f}{got['stack']:8,.0f}"
                    + "".join(f"{values[-1]:8.2f}x" for values in ratios.values())
                )
    means = [math.prod(values) ** (1 / len(values)) for values in ratios.values()]
    print(f"{'geometric mean':>66}" + "".join(f"{mean:8.2f}x" for mean in means))
    print(f"results (both sides): {found['stack']}")


if __name__ == "__main__":
    main()
