"""The network resolver against a DNS server the tests start on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, TypeVar, cast

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.resolver
import dns.rrset
import pytest

from mailauth.dns import DnsCache, DnsStatus, Query, Resolver, RRType, parse_nameserver
from mailauth.dns.outcomes import lookup_from_error
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
    resolver = Resolver([server.address], timeout=1.0, lifetime=2.0, edns_payload=1232)
    lookup = resolver.lookup("huge.example.test", RRType.TXT)
    assert lookup.status is DnsStatus.ANSWER
    assert sorted(lookup.texts) == [(BIG * 6).encode(), (OTHER * 6).encode()]
    assert [q[0] for q in server.questions] == ["udp", "tcp"]


def test_a_loopback_resolver_asks_for_4096_octets_others_for_1232(
    server: LoopbackDnsServer,
) -> None:
    # No fragmentation on the loopback interface: a 3 KB answer in one UDP exchange.
    resolver = _resolver(server)
    assert resolver.edns_payload == 4096
    lookup = resolver.lookup("huge.example.test", RRType.TXT)
    assert len(lookup.texts) == 2
    assert [q[0] for q in server.questions] == ["udp"]
    assert Resolver(["192.0.2.53", "127.0.0.1"]).edns_payload == 1232
    assert Resolver(["[::1]:5353", "127.0.0.53"]).edns_payload == 4096


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


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("truncate_tcp_refused", "answered: truncated answer; TCP: Connection refused"),
        ("truncate_tcp_reset", "answered: truncated answer; TCP: Connection reset by peer"),
        ("notimp", "answered: NOTIMP"),
        ("formerr", "answered: FORMERR"),
        ("yxdomain", "too long after DNAME"),
        ("wrong_type", "the answer holds IN A at example.test."),
        ("wrong_class", "the answer holds CH TXT at example.test."),
        ("referral", "a referral"),
    ],
)
def test_every_other_failure_is_temporary_and_never_cached(mode: str, said: str) -> None:
    """Whatever the server does short of a consistent answer, NXDOMAIN or NODATA, the query
    failed temporarily (both front ends), and the next message asks again."""
    with LoopbackDnsServer(ZONE, mode=mode) as broken:
        # (a UDP timeout long enough that a loaded machine's server still answers in time:
        # the reason must be the fault's, not "timed out")
        resolver = Resolver([broken.address], timeout=1.5, lifetime=3.0)
        started = time.monotonic()
        lookup = resolver.lookup("example.test", RRType.TXT)
        again = asyncio.run(resolver.lookup_async("example.test", RRType.TXT))
        assert time.monotonic() - started < 2.5  # a refused or reset TCP retry ends at once
        assert lookup.status is again.status is DnsStatus.TEMPFAIL
        assert said in lookup.reason and "127.0.0.1" not in lookup.reason
        assert len(resolver.cache) == 0
        if mode.startswith("truncate"):
            transports = [q[0] for q in broken.questions]
            assert transports[:2] == ["udp", "tcp" if mode == "truncate_tcp_reset" else "udp"]


@pytest.mark.parametrize("fault", ["silent", "servfail", "truncate_tcp_reset"])
def test_a_cname_chain_failing_midway_is_a_temporary_failure(fault: str) -> None:
    """The recursive server fails at a name the chain reaches: the whole query failed."""
    zone = ZONE + 'chain IN CNAME mid\nmid IN CNAME target\ntarget IN TXT "found"\n'
    with LoopbackDnsServer(zone, faults={"target.example.test": fault}) as server:
        resolver = Resolver([server.address], timeout=0.3, lifetime=0.6)
        assert resolver.lookup("chain.example.test", RRType.TXT).status is DnsStatus.TEMPFAIL
        assert resolver.lookup("mx.example.test", RRType.A).status is DnsStatus.ANSWER


def test_negative_answers_without_an_soa_are_not_cached() -> None:
    """RFC 2308 5: without an SOA there is no negative TTL; the name is asked again."""
    zone = "$ORIGIN example.test.\n$TTL 600\nalias IN CNAME nowhere\nmx IN A 192.0.2.1\n"
    with LoopbackDnsServer(zone) as server:
        resolver = Resolver([server.address], timeout=0.5, lifetime=1.0)
        for name in ("nope.example.test", "alias.example.test", "mx.example.test"):
            first = resolver.lookup(name, RRType.TXT)
            assert first.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA) and first.ttl == 0
        assert len(resolver.cache) == 0
        resolver.lookup("alias.example.test", RRType.TXT)
        assert len(server.questions) == 4


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


# --- The one map from dnspython's exceptions to outcomes (STYLE.md 2), as a table ---------

QNAME = "example.test."
SOA = ("example.test.", 600, "IN", "SOA", "ns.test. hostmaster.test. 1 3600 600 86400 60")
OTHER_SOA = ("elsewhere.test.", 600, "IN", "SOA", "ns.test. hostmaster.test. 1 3600 600 86400 60")
TO_TARGET = (QNAME, 120, "IN", "CNAME", "target.example.test.")
SIGNATURE = "TXT 8 2 300 20300101000000 20200101000000 1 example.test. AAAA"


E = TypeVar("E", bound=Exception)


def _made(cls: type[E], **kwargs: Any) -> E:
    """An exception as dnspython makes it (its constructors are untyped)."""
    return cls(**kwargs)


def _response(
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    answer: tuple[tuple[str, int, str, str, str], ...] = (),
    authority: tuple[tuple[str, int, str, str, str], ...] = (),
) -> dns.message.QueryMessage:
    response = dns.message.make_response(dns.message.make_query(QNAME, "TXT"))
    response.set_rcode(rcode)
    response.answer.extend(dns.rrset.from_text(*spec) for spec in answer)
    response.authority.extend(dns.rrset.from_text(*spec) for spec in authority)
    # As the resolver gets it: from the wire (which also indexes the sections).
    return cast(dns.message.QueryMessage, dns.message.from_wire(response.to_wire()))


def _nxdomain(**sections: Any) -> dns.resolver.NXDOMAIN:
    response = _response(dns.rcode.NXDOMAIN, **sections)
    name = dns.name.from_text(QNAME)
    return _made(dns.resolver.NXDOMAIN, qnames=[name], responses={name: response})


def _no_nameservers(*errors: tuple[bool, object]) -> dns.resolver.NoNameservers:
    request = dns.message.make_query(QNAME, "TXT")
    return _made(
        dns.resolver.NoNameservers,
        request=request,
        errors=[("Do53:192.0.2.53@53", tcp, 53, error, None) for tcp, error in errors],
    )


NX, NODATA, TEMPFAIL = DnsStatus.NXDOMAIN, DnsStatus.NODATA, DnsStatus.TEMPFAIL


def _no_answer(**sections: Any) -> dns.resolver.NoAnswer:
    return _made(dns.resolver.NoAnswer, response=_response(**sections))


A_RECORD = (QNAME, 300, "IN", "A", "192.0.2.1")
CH_TXT = (QNAME, 300, "CH", "TXT", '"x"')
RRSIG = (QNAME, 30, "IN", "RRSIG", SIGNATURE)
REFERRAL = ("test.", 300, "IN", "NS", "ns.test.")
REFUSED_TCP = ConnectionRefusedError(111, "Connection refused")
EXCEPTIONS = {
    # NXDOMAIN: the name does not exist, cached for the SOA's negative TTL (RFC 2308 5)
    "nxdomain": (_nxdomain(authority=(SOA,)), NX, 60, "example.test", ""),
    "nxdomain-no-soa": (_nxdomain(), NX, 0, "example.test", ""),  # RFC 2308 5: not cached
    "nxdomain-soa-of-another-zone": (_nxdomain(authority=(OTHER_SOA,)), NX, 0, "example.test", ""),
    # RFC 6604 3: after a CNAME, the rcode speaks of the chain's end
    "nxdomain-after-cname": (
        _nxdomain(answer=(TO_TARGET,), authority=(SOA,)),
        NX,
        60,
        "target.example.test",
        "",
    ),
    # (dnspython's own default for this one would be 300 s)
    "nxdomain-after-cname-no-soa": (
        _nxdomain(answer=(TO_TARGET,)),
        NX,
        0,
        "target.example.test",
        "",
    ),
    "nxdomain-beside-its-answer": (
        _nxdomain(answer=((QNAME, 300, "IN", "TXT", '"x"'),)),
        TEMPFAIL,
        0,
        "",
        "inconsistent",
    ),
    # NODATA
    "nodata": (_no_answer(authority=(SOA,)), NODATA, 60, "example.test", ""),
    "nodata-no-soa": (_no_answer(), NODATA, 0, "example.test", ""),  # RFC 2308 2.2.1 type 3
    "nodata-after-cname": (
        _no_answer(answer=(TO_TARGET,), authority=(SOA,)),
        NODATA,
        60,
        "target.example.test",
        "",
    ),
    "nodata-with-a-signature": (_no_answer(answer=(RRSIG,)), NODATA, 0, "example.test", ""),
    # records of another type or class, or a referral: no proof of absence
    "wrong-type": (_no_answer(answer=(A_RECORD,)), TEMPFAIL, 0, "", "IN A at example.test."),
    "wrong-class": (_no_answer(answer=(CH_TXT,)), TEMPFAIL, 0, "", "CH TXT at example.test."),
    "referral": (_no_answer(authority=(REFERRAL,)), TEMPFAIL, 0, "", "referral"),
    # timeouts
    "timeout": (_made(dns.exception.Timeout), TEMPFAIL, 0, "", "DNS timeout"),
    "lifetime": (
        _made(dns.resolver.LifetimeTimeout, timeout=1.0, errors=[]),
        TEMPFAIL,
        0,
        "",
        "timeout",
    ),
    # every server failed: what each said
    "servfail": (_no_nameservers((False, "SERVFAIL")), TEMPFAIL, 0, "", "answered: SERVFAIL"),
    "refused": (_no_nameservers((False, "REFUSED")), TEMPFAIL, 0, "", "REFUSED"),
    "notimp": (_no_nameservers((False, "NOTIMP")), TEMPFAIL, 0, "", "NOTIMP"),
    "formerr": (_no_nameservers((False, "FORMERR")), TEMPFAIL, 0, "", "FORMERR"),
    "bad-response": (_no_nameservers((False, _made(dns.message.BadEDNS))), TEMPFAIL, 0, "", "OPT"),
    "truncated-then-tcp-refused": (
        _no_nameservers((False, _made(dns.message.Truncated)), (True, REFUSED_TCP)),
        TEMPFAIL,
        0,
        "",
        "no nameserver answered: truncated answer; TCP: Connection refused",
    ),
    # asyncio's text names the server; the reason must not (docs/dns.md)
    "tcp-refused-as-asyncio-says": (
        _no_nameservers(
            (False, _made(dns.message.Truncated)),
            (True, ConnectionRefusedError(111, "Connect call failed ('192.0.2.53', 53)")),
        ),
        TEMPFAIL,
        0,
        "",
        "no nameserver answered: truncated answer; TCP: Connection refused",
    ),
    "tcp-closed": (_no_nameservers((True, EOFError())), TEMPFAIL, 0, "", "TCP: EOFError"),
    "network": (
        _no_nameservers((False, OSError(101, "Network is unreachable"))),
        TEMPFAIL,
        0,
        "",
        "Network is unreachable",
    ),
    "no-servers-left": (_no_nameservers(), TEMPFAIL, 0, "", "no nameserver to ask"),
    # raised by dnspython itself, or escaping it
    "yxdomain": (_made(dns.resolver.YXDOMAIN), TEMPFAIL, 0, "", "too long after DNAME"),
    "formerror": (_made(dns.exception.FormError), TEMPFAIL, 0, "", "DNS error"),
    "truncated": (_made(dns.message.Truncated), TEMPFAIL, 0, "", "DNS error"),
    "reset": (ConnectionResetError(104, "Connection reset by peer"), TEMPFAIL, 0, "", "reset"),
    "eof": (EOFError(), TEMPFAIL, 0, "", "EOFError"),
}


@pytest.mark.parametrize(
    ("exc", "status", "ttl", "canonical", "reason"), EXCEPTIONS.values(), ids=EXCEPTIONS.keys()
)
def test_dnspython_exception_to_lookup(
    exc: Exception, status: DnsStatus, ttl: int, canonical: str, reason: str
) -> None:
    lookup = lookup_from_error(Query("example.test", RRType.TXT), exc)
    assert (lookup.status, lookup.ttl, lookup.canonical_name) == (status, ttl, canonical)
    assert reason in lookup.reason and "192.0.2.53" not in lookup.reason
    assert not lookup.records


def test_a_bug_is_raised_not_turned_into_a_temporary_failure() -> None:
    with pytest.raises(KeyError):
        lookup_from_error(Query("example.test", RRType.TXT), KeyError("bug"))
