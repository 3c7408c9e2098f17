"""The network resolver against a DNS server the tests start on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from mailauth.dns import DnsCache, DnsStatus, Resolver, RRType, parse_nameserver
from mailauth.errors import ConfigError
from tests.dnsserver import LoopbackDnsServer

BIG = "x" * 250
OTHER = "y" * 250
ZONE = f"""
$ORIGIN example.test.
$TTL 600
@       IN SOA ns hostmaster 1 3600 600 86400 60
@       IN NS  ns
ns      IN A   127.0.0.1
@       IN TXT "v=spf1 " "ip4:192.0.2.0/24 " "-all"
@       IN TXT "second record"
@       IN MX  10 mx.example.test.
mx      IN A   192.0.2.1
alias   IN CNAME mx
dangling IN CNAME nowhere
medium  IN TXT "{BIG}" "{BIG}" "{BIG}"
huge    IN TXT "{BIG}" "{BIG}" "{BIG}" "{BIG}" "{BIG}" "{BIG}"
huge    IN TXT "{OTHER}" "{OTHER}" "{OTHER}" "{OTHER}" "{OTHER}" "{OTHER}"
"""


@pytest.fixture
def server() -> Iterator[LoopbackDnsServer]:
    with LoopbackDnsServer(ZONE) as srv:
        yield srv


def _resolver(server: LoopbackDnsServer, **kwargs: float) -> Resolver:
    return Resolver(
        [server.address], timeout=kwargs.get("timeout", 1.0), lifetime=kwargs.get("lifetime", 2.0)
    )


def test_answer_with_joined_strings_and_separate_records(server: LoopbackDnsServer) -> None:
    lookup = _resolver(server).lookup("example.test", RRType.TXT)
    assert lookup.status is DnsStatus.ANSWER
    assert sorted(lookup.texts) == [b"second record", b"v=spf1 ip4:192.0.2.0/24 -all"]
    assert lookup.ttl == 600


def test_mx_and_cname(server: LoopbackDnsServer) -> None:
    resolver = _resolver(server)
    assert resolver.lookup("example.test", RRType.MX).exchanges[0].exchange == "mx.example.test"
    alias = resolver.lookup("alias.example.test", RRType.A)
    assert alias.hosts == ("192.0.2.1",) and alias.canonical_name == "mx.example.test"


def test_answer_over_512_bytes_uses_edns0(server: LoopbackDnsServer) -> None:
    lookup = _resolver(server).lookup("medium.example.test", RRType.TXT)
    assert lookup.texts == ((BIG * 3).encode(),)
    assert [q[0] for q in server.questions] == ["udp"]  # fits the 1232-byte EDNS0 payload


def test_truncated_answer_falls_back_to_tcp(server: LoopbackDnsServer) -> None:
    lookup = _resolver(server).lookup("huge.example.test", RRType.TXT)
    assert lookup.status is DnsStatus.ANSWER
    assert sorted(lookup.texts) == [(BIG * 6).encode(), (OTHER * 6).encode()]
    assert [q[0] for q in server.questions] == ["udp", "tcp"]


def test_nxdomain_with_rfc2308_negative_ttl(server: LoopbackDnsServer) -> None:
    lookup = _resolver(server).lookup("nope.example.test", RRType.TXT)
    assert lookup.status is DnsStatus.NXDOMAIN
    assert lookup.ttl == 60  # min(SOA TTL 600, SOA MINIMUM 60)
    assert lookup.canonical_name == "nope.example.test"


def test_nxdomain_at_the_end_of_a_cname_says_where(server: LoopbackDnsServer) -> None:
    lookup = _resolver(server).lookup("dangling.example.test", RRType.TXT)
    assert (lookup.status, lookup.canonical_name) == (DnsStatus.NXDOMAIN, "nowhere.example.test")


def test_nodata(server: LoopbackDnsServer) -> None:
    lookup = _resolver(server).lookup("mx.example.test", RRType.TXT)
    assert lookup.status is DnsStatus.NODATA
    assert lookup.ttl == 60


def test_cache_is_shared_by_sync_and_async(server: LoopbackDnsServer) -> None:
    resolver = _resolver(server)
    resolver.lookup("example.test", RRType.TXT)
    resolver.lookup("nope.example.test", RRType.TXT)
    asyncio.run(resolver.lookup_async("example.test", RRType.TXT))
    asyncio.run(resolver.lookup_async("nope.example.test", RRType.TXT))
    assert len(server.questions) == 2
    assert resolver.cache.hits == 2


def test_async_front_end(server: LoopbackDnsServer) -> None:
    resolver = _resolver(server)

    async def run() -> list[DnsStatus]:
        lookups = await asyncio.gather(
            resolver.lookup_async("example.test", RRType.MX),
            resolver.lookup_async("huge.example.test", RRType.TXT),
            resolver.lookup_async("nope.example.test", RRType.A),
        )
        return [lookup.status for lookup in lookups]

    assert asyncio.run(run()) == [DnsStatus.ANSWER, DnsStatus.ANSWER, DnsStatus.NXDOMAIN]


def test_silent_server_is_a_temporary_failure_within_the_lifetime() -> None:
    with LoopbackDnsServer(ZONE, mode="silent") as silent:
        resolver = Resolver([silent.address], timeout=0.3, lifetime=0.8, cache=DnsCache())
        started = time.monotonic()
        lookup = resolver.lookup("example.test", RRType.TXT)
        elapsed = time.monotonic() - started
        assert lookup.status is DnsStatus.TEMPFAIL and "timeout" in lookup.reason
        assert elapsed < 1.5
        started = time.monotonic()
        again = asyncio.run(resolver.lookup_async("example.test", RRType.TXT))
        assert again.status is DnsStatus.TEMPFAIL  # never cached
        assert time.monotonic() - started < 1.5
        assert resolver.check_reachable() is not None


@pytest.mark.parametrize("mode", ["servfail", "refused"])
def test_servfail_and_refused_are_temporary_failures(mode: str) -> None:
    with LoopbackDnsServer(ZONE, mode=mode) as broken:
        resolver = Resolver([broken.address], timeout=0.5, lifetime=1.0)
        lookup = resolver.lookup("example.test", RRType.TXT)
        assert lookup.status is DnsStatus.TEMPFAIL
        assert mode.upper() in lookup.reason
        assert resolver.check_reachable() is None  # it answered: DNS is reachable


def test_closed_port_is_unreachable() -> None:
    with LoopbackDnsServer(ZONE) as srv:
        address = srv.address
    resolver = Resolver([address], timeout=0.3, lifetime=0.6)
    assert resolver.lookup("example.test", RRType.TXT).status is DnsStatus.TEMPFAIL
    assert resolver.check_reachable() is not None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("192.0.2.1:5353", ("192.0.2.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize(
    "spec", ["dns.example", "1.2.3.4:0", "1.2.3.4:x", "[::1", "[::1]x", "", "1.2.3.4:²", "[::1]:٥٣"]
)
def test_parse_nameserver_rejects(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_nameserver(spec)


def test_nameservers_are_shown_with_ports() -> None:
    assert Resolver(["::1", "127.0.0.1:5353"]).nameservers == ["[::1]:53", "127.0.0.1:5353"]
