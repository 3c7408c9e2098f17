from __future__ import annotations

import asyncio
import re
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


# --- what a newcomer's zone file looks like (issue 19)


def test_relative_names_with_no_origin_are_an_error_at_their_line(tmp_path: Path) -> None:
    """dnspython alone reads ``foo`` as ``foo.`` (never asked) and ``@`` as the root."""
    path = tmp_path / "example.com.zone"
    path.write_text('$TTL 300\n\n@ IN TXT "v=spf1 -all"\n')
    with pytest.raises(ConfigError) as error:
        ZoneResolver.from_files([path])
    assert str(error.value).startswith(f"{path}:3: relative name '@' with no $ORIGIN")
    path.write_text('example.com. IN TXT "v=spf1 -all"\nfoo IN TXT "x"\n')
    with pytest.raises(ConfigError, match=r"example\.com\.zone:2: relative name 'foo'"):
        ZoneResolver.from_files([path])
    path.write_text("example.com. IN MX 10 mx\n")  # (a relative name in the data, too)
    with pytest.raises(ConfigError, match=r":1: relative name 'mx' with no \$ORIGIN"):
        ZoneResolver.from_files([path])
    path.write_text("$GENERATE 1-3 h$ A 192.0.2.$\n")
    with pytest.raises(ConfigError, match=r":1: \$GENERATE with no \$ORIGIN"):
        ZoneResolver.from_files([path])


def test_the_origin_given_with_the_file(tmp_path: Path) -> None:
    """``FILE:ORIGIN`` (as a server's configuration names a zone's origin); a $ORIGIN line
    still moves it, and absolute names stay where they are."""
    path = tmp_path / "db.example"
    path.write_text('@ IN TXT "v=spf1 -all"\nmx IN A 192.0.2.1\nother.test. IN A 192.0.2.2\n')
    zone = ZoneResolver.from_files([(path, "example.com")])
    assert zone.lookup("example.com", RRType.TXT).texts == (b"v=spf1 -all",)
    assert zone.lookup("mx.example.com", RRType.A).hosts == ("192.0.2.1",)
    assert zone.lookup("other.test", RRType.A).hosts == ("192.0.2.2",)
    assert ZoneResolver.from_text("www IN A 192.0.2.3\n", origin="example.org.").lookup(
        "www.example.org", RRType.A
    ).hosts == ("192.0.2.3",)


def test_zone_specs_on_the_command_line(tmp_path: Path) -> None:
    from mailauth.dns.zone import split_zone_spec

    assert split_zone_spec("db.example:example.com") == ("db.example", "example.com")
    assert split_zone_spec("example.com.zone") == ("example.com.zone", None)
    odd = tmp_path / "a:b"  # a file whose name has a colon is a file name
    odd.write_text("")
    assert split_zone_spec(str(odd)) == (str(odd), None)
    assert split_zone_spec("dir:x/file.zone") == ("dir:x/file.zone", None)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('$ORIGIN example.com.\n@ IN TXT "unterminated\n', 2, "newline in quoted string"),
        ("$ORIGIN example.com.\n@ IN MX 10\n", 2, "expecting an identifier"),
        ("$ORIGIN example.com.\n\n@ IN A 192.0.2.300\n", 3, ""),
        ("$ORIGIN example.com.\n@ IN BOGUS x\n", 2, "unknown rdatatype"),
        ("$ORIGIN example.com.\n" + "a" * 64 + " IN A 192.0.2.1\n", 2, "label"),
        ('$ORIGIN example.com.\n@ IN TXT (\n  "a"\n  "b"\n', 4, "unbalanced parentheses"),
    ],
)
def test_syntax_errors_name_the_line_they_are_on(text: str, line: int, message: str) -> None:
    """dnspython counts the line ending of a line that ended too soon: a 2-line file had
    its error at line 3."""
    with pytest.raises(ConfigError) as error:
        ZoneResolver.from_text(text)
    assert str(error.value).startswith(f"<text>:{line}: "), str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_names_that_are_not_host_names_load_as_dns_holds_them() -> None:
    """RFC 1035 5.1 \\DDD: such a name exists (its parents too), and a lookup by a name
    that can be typed simply does not match it; other records answer as usual."""
    zone = ZoneResolver.from_text(
        "$ORIGIN example.com.\n"
        '\\200\\201._domainkey IN TXT "v=DKIM1; p="\n'
        "a\\.b IN CNAME \\200\\201._domainkey\n"
        'sp\\032ace IN TXT "spaced"\n'
        "@ IN MX 10 \\255mx\n"
        '@ IN TXT "v=spf1 -all"\n'
    )
    assert zone.lookup("example.com", RRType.TXT).texts == (b"v=spf1 -all",)
    assert zone.lookup("_domainkey.example.com", RRType.TXT).status is DnsStatus.NODATA
    assert zone.lookup("a.b.example.com", RRType.TXT).status is DnsStatus.NXDOMAIN
    assert zone.lookup("sp ace.example.com", RRType.TXT).texts == (b"spaced",)
    (mx,) = zone.lookup("example.com", RRType.MX).exchanges
    assert mx.exchange == "\\255mx.example.com"  # (as the network resolver writes it)
    # names in the constructor may be written with escapes too
    programmatic = ZoneResolver({("\\200.example", RRType.TXT): (60, [b"x"])})
    assert programmatic.lookup("example", RRType.TXT).status is DnsStatus.NODATA


def test_a_zone_with_such_a_name_serves_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every `verify` with such a zone exited 2 ("invalid domain name ... backslash")."""
    from mailauth.cli import main

    demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
    zone = tmp_path / "extra.zone"
    zone.write_text('$ORIGIN example.com.\n\\200\\201._domainkey IN TXT "v=DKIM1; p="\n')
    argv = ["verify", str(demo / "message.eml"), "--ip", "192.0.2.10"]
    argv += ["--dns-zone", str(demo / "example.com.zone"), "--dns-zone", str(zone)]
    assert main(argv) == 0
    assert "dkim=pass" in capsys.readouterr().out


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.zone"
    path.write_bytes(b'$ORIGIN example.com.\n@ IN TXT "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.zone:2: not UTF-8 text"):
        ZoneResolver.from_files([path])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (' TXT "x"\n', ":1: the last used name is undefined"),  # (it was the root's)
        ("$ORIGIN example.com.\n$GENERATE 1-100000000 h$ A 192.0.2.1\n", ":2: $GENERATE range"),
    ],
)
def test_zone_file_mistakes_are_errors(text: str, problem: str) -> None:
    """A record with no owner name first, and a $GENERATE that would never end, loaded
    silently (the first stored at the root, the second never finishing)."""
    with pytest.raises(ConfigError, match=re.escape(problem)):
        ZoneResolver.from_text(text)
