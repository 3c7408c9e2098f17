"""SPF macro expansion (mailauth.spf.macro): RFC 7208 7.3 and the examples of 7.4."""

from __future__ import annotations

import ipaddress

import pytest

from mailauth.spf.macro import expand, expand_domain, ip_values, reverse_name
from mailauth.spf.record import parse_domain_spec, parse_explanation

# RFC 7208 7.4: sender strong-bad@email.example.com, client 192.0.2.3
VALUES = {
    "s": "strong-bad@email.example.com",
    "l": "strong-bad",
    "o": "email.example.com",
    "d": "email.example.com",
    "h": "mx.example.org",
    "p": "mx.example.org",
    "r": "receiver.example.net",
    "t": "1700000000",
    **ip_values(ipaddress.ip_address("192.0.2.3")),
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ],
)
def test_rfc7208_7_4_examples(spec: str, expected: str) -> None:
    assert expand(parse_domain_spec(spec), VALUES) == expected


def test_rfc7208_7_4_ipv6_example() -> None:
    values = {**VALUES, **ip_values(ipaddress.ip_address("2001:db8::cb01"))}
    assert expand_domain(parse_domain_spec("%{ir}.%{v}._spf.%{d2}"), values) == (
        "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com"
    )
    assert values["c"] == "2001:db8::cb01" and values["v"] == "ip6"


def test_rfc7208_7_3_transformed_parts_are_rejoined_with_dots() -> None:
    # "the parts are rejoined using "." and not the original splitting characters"
    values = {**VALUES, "h": "a_b-c.example", "l": "x+y=z/w,v"}
    assert expand(parse_domain_spec("%{h_-}.x.example"), values) == "a.b.c.example.x.example"
    assert expand(parse_domain_spec("%{h_}.x.example"), values) == "a.b-c.example.x.example"
    assert expand(parse_domain_spec("%{l+=/,}.x.example"), values) == "x.y.z.w.v.x.example"
    assert expand(parse_domain_spec("%{h2-}.x.example"), values) == "a_b.c.example.x.example"


def test_rfc7208_7_3_more_parts_than_there_are_keeps_them_all() -> None:
    assert expand(parse_domain_spec("%{d99}"), VALUES) == "email.example.com"


def test_rfc7208_7_3_empty_parts_are_parts() -> None:
    values = {**VALUES, "l": "a..b"}
    assert expand(parse_domain_spec("%{l2}"), values) == ".b"


def test_rfc7208_7_3_upper_case_macros_are_url_escaped() -> None:
    # all but RFC 3986 unreserved (ALPHA DIGIT "-" "." "_" "~")
    values = {**VALUES, "l": "~jack&jill=up-a_b3.c"}
    text = parse_explanation("http://example.com/why.html?l=%{L}&s=%{S}")
    assert expand(text, values) == (
        "http://example.com/why.html?l=~jack%26jill%3Dup-a_b3.c&s=strong-bad%40email.example.com"
    )
    assert expand(parse_explanation("%{C}"), {**VALUES, "c": "2001:db8::1"}) == "2001%3Adb8%3A%3A1"


def test_rfc7208_7_1_escapes() -> None:
    assert expand(parse_explanation("%% %_ %-"), VALUES) == "%   %20"


def test_rfc7208_7_3_explanation_letters() -> None:
    text = parse_explanation("%{c} %{r} %{t} %{v}")
    assert expand(text, VALUES) == "192.0.2.3 receiver.example.net 1700000000 in-addr"


def test_rfc7208_7_3_names_over_253_octets_lose_labels_on_the_left() -> None:
    values = {**VALUES, "l": ".".join(["abcdefghij"] * 30)}
    name = expand_domain(parse_domain_spec("%{l}.example.com"), values)
    assert len(name) <= 253 and name.endswith("abcdefghij.example.com")
    assert not name.startswith(".")
    assert len(name) > 240  # as many labels as fit


def test_rfc7208_7_3_the_cut_takes_one_pass() -> None:
    # Labels removed one at a time used to copy the name once per label.
    values = {**VALUES, "l": "a." * 50_000}
    name = expand_domain(parse_domain_spec("%{l}example.com"), values)
    assert name == "a." * 121 + "example.com" and len(name) == 253
    values = {**VALUES, "l": "x" * 300}  # a last label too long stays: DNS cannot carry it
    assert expand_domain(parse_domain_spec("a.%{l}"), values) == "x" * 300


def test_the_final_dot_of_a_domain_is_dropped() -> None:
    assert expand_domain(parse_domain_spec("x.%{d2}.example."), VALUES) == "x.example.com.example"
    assert expand_domain(parse_domain_spec("x.example."), VALUES) == "x.example"


def test_reverse_names() -> None:
    assert reverse_name(ipaddress.ip_address("192.0.2.3")) == "3.2.0.192.in-addr.arpa"
    six = reverse_name(ipaddress.ip_address("2001:db8::1"))
    assert six.startswith("1.0.0.0.") and six.endswith(".8.b.d.0.1.0.0.2.ip6.arpa")
