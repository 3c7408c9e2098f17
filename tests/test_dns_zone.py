from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mailauth.dns import DnsStatus, MxRecord, Query, RRType, ZoneResolver
from mailauth.errors import ConfigError, InvalidDomainError

ZONE = r"""
$ORIGIN example.com.
$TTL 300
@       IN SOA ns hostmaster 1 3600 600 86400 120
@       IN TXT "v=spf1 " "ip4:192.0.2.0/24 -all"
@       IN TXT "google-site-verification=abc"
@       IN MX  10 mx.example.com.
@       IN MX  20 MX2.Example.COM.
mx      IN A   192.0.2.1
mx      IN AAAA 2001:db8::1
www     IN CNAME mx
loop1   IN CNAME loop2
loop2   IN CNAME loop1
a.b.c   IN TXT "deep"
ctl     IN TXT "bin\000ary\255"
; mailauth-fault: slow.example.com timeout
; mailauth-fault: mx.example.com servfail
$ORIGIN example.net.
@       IN SOA ns hostmaster 1 3600 600 86400 120
@       IN A   198.51.100.1
"""


@pytest.fixture
def zone() -> ZoneResolver:
    return ZoneResolver.from_text(ZONE)


def test_txt_strings_are_joined_without_separator_and_records_kept_apart(
    zone: ZoneResolver,
) -> None:
    # RFC 7208 3.3, RFC 6376 3.6.2.2
    lookup = zone.lookup("example.com", RRType.TXT)
    assert lookup.status is DnsStatus.ANSWER
    assert lookup.texts == (b"v=spf1 ip4:192.0.2.0/24 -all", b"google-site-verification=abc")


def test_txt_bytes_are_kept_exactly(zone: ZoneResolver) -> None:
    assert zone.lookup("ctl.example.com", RRType.TXT).texts == (b"bin\x00ary\xff",)


def test_names_are_case_insensitive_and_normalised(zone: ZoneResolver) -> None:
    lookup = zone.lookup("EXAMPLE.Com.", RRType.MX)
    assert lookup.exchanges == (MxRecord(10, "mx.example.com"), MxRecord(20, "mx2.example.com"))


def test_cname_is_followed(zone: ZoneResolver) -> None:
    lookup = zone.lookup("www.example.com", RRType.A)
    assert lookup.hosts == ("192.0.2.1",)
    assert lookup.canonical_name == "mx.example.com"


def test_cname_loop_is_a_failure_not_a_hang(zone: ZoneResolver) -> None:
    assert zone.lookup("loop1.example.com", RRType.A).status is DnsStatus.TEMPFAIL


def test_nxdomain_and_nodata_are_told_apart(zone: ZoneResolver) -> None:
    assert zone.lookup("nope.example.com", RRType.TXT).status is DnsStatus.NXDOMAIN
    assert zone.lookup("example.com", RRType.AAAA).status is DnsStatus.NODATA
    # an empty non-terminal exists (RFC 8020)
    assert zone.lookup("b.c.example.com", RRType.TXT).status is DnsStatus.NODATA
    # names in no zone at all
    assert zone.lookup("example.org", RRType.A).status is DnsStatus.NXDOMAIN


def test_several_domains_in_one_file(zone: ZoneResolver) -> None:
    assert zone.lookup("example.net", RRType.A).hosts == ("198.51.100.1",)


def test_fault_pragmas_fail_only_types_without_records(zone: ZoneResolver) -> None:
    slow = zone.lookup("slow.example.com", RRType.TXT)
    assert slow.status is DnsStatus.TEMPFAIL and slow.reason == "DNS timeout"
    assert zone.lookup("mx.example.com", RRType.A).hosts == ("192.0.2.1",)
    failed = zone.lookup("mx.example.com", RRType.TXT)
    assert failed.status is DnsStatus.TEMPFAIL and "SERVFAIL" in failed.reason


def test_queries_are_logged(zone: ZoneResolver) -> None:
    zone.lookup("Example.com", RRType.TXT)
    asyncio.run(zone.lookup_async("nope.example.com", RRType.A))
    assert zone.queries == [
        Query("example.com", RRType.TXT),
        Query("nope.example.com", RRType.A),
    ]


def test_unicode_names_are_asked_as_a_labels() -> None:
    zone = ZoneResolver.from_text('xn--bcher-kva.example. 60 IN TXT "ok"\n')
    assert zone.lookup("Bücher.example", RRType.TXT).texts == (b"ok",)


def test_invalid_names_raise(zone: ZoneResolver) -> None:
    with pytest.raises(InvalidDomainError):
        zone.lookup("a..example.com", RRType.TXT)
    with pytest.raises(InvalidDomainError):
        zone.lookup("x" * 64 + ".example", RRType.TXT)


def test_from_files_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.zone"
    good.write_text("$ORIGIN example.org.\n@ 60 IN A 192.0.2.7\n")
    assert ZoneResolver.from_files([good]).lookup("example.org", RRType.A).hosts == ("192.0.2.7",)
    bad = tmp_path / "bad.zone"
    bad.write_text("$ORIGIN example.org.\n@ 60 IN A not-an-address\n")
    with pytest.raises(ConfigError, match=r"bad\.zone"):
        ZoneResolver.from_files([bad])
    with pytest.raises(ConfigError, match="cannot read"):
        ZoneResolver.from_files([tmp_path / "missing.zone"])


def test_programmatic_records() -> None:
    zone = ZoneResolver(
        {("a.example", RRType.TXT): (60, [b"one", b"two"])}, faults={"t.example": "timeout"}
    )
    assert zone.lookup("a.example", RRType.TXT).texts == (b"one", b"two")
    assert zone.lookup("example", RRType.TXT).status is DnsStatus.NODATA
    assert zone.lookup("t.example", RRType.A).status is DnsStatus.TEMPFAIL


def test_fault_pragma_semantics() -> None:
    """docs/dns.md: absolute names, that name only, the end of a CNAME chain."""
    zone = ZoneResolver.from_text(
        "$ORIGIN example.com.\n"
        "alias IN CNAME broken\n"
        "hop IN CNAME fine\n"
        'fine IN TXT "ok"\n'
        "; mailauth-fault: broken.example.com. servfail\n"
        "; mailauth-fault: hop.example.com timeout\n"
        "; mailauth-fault: relative timeout\n"
    )
    assert zone.lookup("alias.example.com", RRType.TXT).status is DnsStatus.TEMPFAIL
    assert zone.lookup("hop.example.com", RRType.TXT).texts == (b"ok",)  # the CNAME answers
    assert zone.lookup("x.broken.example.com", RRType.TXT).status is DnsStatus.NXDOMAIN
    assert zone.lookup("relative.example.com", RRType.TXT).status is DnsStatus.NXDOMAIN
    assert zone.lookup("relative", RRType.TXT).status is DnsStatus.TEMPFAIL


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(ConfigError, match="refused"):
        ZoneResolver({}, faults={"a.example": "refused"})


def test_a_zone_file_loads_in_linear_name_comparisons(monkeypatch: pytest.MonkeyPatch) -> None:
    """dnspython's reader looked every name up by scanning all records read so far: 200
    records cost 0.4 s of a ``verify``, 3,000 about 10 s. The index keeps it linear, and the
    CNAME-and-other-data rule still holds."""
    import dns.name

    compared = [0]
    fullcompare = dns.name.Name.fullcompare

    def counting(self: dns.name.Name, other: dns.name.Name) -> Any:
        compared[0] += 1
        return fullcompare(self, other)

    monkeypatch.setattr(dns.name.Name, "fullcompare", counting)
    text = "".join(f'n{i}.big.test. 300 IN TXT "v{i}"\nn{i}.big.test. 300 IN A 192.0.2.1\n'
                   for i in range(2000))  # fmt: skip
    zone = ZoneResolver.from_text(text)
    assert zone.lookup("n1999.big.test", RRType.TXT).texts == (b"v1999",)
    assert compared[0] < 10 * 4000
    with pytest.raises(ConfigError):
        ZoneResolver.from_text('a.test. 300 IN CNAME b.test.\na.test. 300 IN TXT "x"\n')


def test_the_query_log_is_bounded() -> None:
    """A milter serving from zone files runs for months: the log keeps the recent queries."""
    from mailauth.dns import zone as zone_module

    resolver = ZoneResolver.from_text('n.test. 300 IN TXT "x"\n')
    for _ in range(zone_module.MAX_LOGGED_QUERIES + 10):
        resolver.lookup("n.test", RRType.TXT)
    assert len(resolver.queries) <= zone_module.MAX_LOGGED_QUERIES
    assert resolver.queries[-1] == Query("n.test", RRType.TXT)
