"""The SPF record parser (mailauth.spf.record): the grammar of RFC 7208 12 and its prose."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailauth.errors import RecordSyntaxError
from mailauth.spf.record import (
    Macro,
    Mechanism,
    MechanismKind,
    Modifier,
    Qualifier,
    TermError,
    parse_domain_spec,
    parse_explanation,
    parse_macro_string,
    parse_spf_bytes,
    parse_spf_record,
    parse_term,
    select_spf_records,
)


def test_rfc7208_4_5_version_is_exactly_v_spf1_then_space_or_end() -> None:
    texts = [
        b"v=spf1 -all",
        b"V=SPF1",
        b"v=spf10 -all",
        b"v=spf1\t-all",
        b"xv=spf1 -all",
        b"google-site-verification=x",
        b" v=spf1 -all",
    ]
    assert select_spf_records(texts) == ["v=spf1 -all", "V=SPF1"]


def test_terms_in_order_with_their_parts() -> None:
    record = parse_spf_record(
        "v=spf1  -a:mail.example.com/24//64 ~mx ?ptr:Example.com ip4:192.0.2.0/24 "
        "ip6:2001:db8::/32 +exists:%{i}.x.example include:_spf.example.org all "
        "redirect=other.example exp=exp.example foo=bar "
    )
    kinds = [t.kind for t in record.terms if isinstance(t, Mechanism)]
    assert kinds == [*list(MechanismKind)[2:], MechanismKind.INCLUDE, MechanismKind.ALL]
    a = record.mechanisms[0]
    assert (a.qualifier, a.cidr4, a.cidr6) == (Qualifier.FAIL, 24, 64)
    assert a.domain is not None and a.domain.text == "mail.example.com"
    assert record.mechanisms[1].domain is None  # the current domain
    assert record.mechanisms[3].network == ipaddress.ip_network("192.0.2.0/24")
    assert record.redirect is not None and record.redirect.value.text == "other.example"
    assert record.explanation is not None and record.explanation.name == "exp"
    assert record.has_all and not record.errors
    assert [t.name for t in record.terms if isinstance(t, Modifier)] == ["redirect", "exp", "foo"]


def test_rfc7208_4_6_1_names_are_case_insensitive() -> None:
    record = parse_spf_record("v=spf1 IP4:192.0.2.1 A:X.example MX -ALL REDIRECT=y.example")
    assert [m.kind for m in record.mechanisms] == ["ip4", "a", "mx", "all"]
    assert record.redirect is not None


def test_ip4_network_keeps_the_cidr_and_drops_host_bits() -> None:
    (term,) = parse_spf_record("v=spf1 ip4:192.0.2.77/24").mechanisms
    assert term.network == ipaddress.ip_network("192.0.2.0/24")


@pytest.mark.parametrize(
    "word",
    [
        "moo",  # unknown mechanism
        "ipv4:192.0.2.1",
        "=a",  # not a qualifier
        "-all:3030",  # RFC 7208 5.1: all takes nothing
        "all/8",
        "include",  # RFC 7208 5.2: include needs a domain
        "include:",
        "exists",
        "a:",
        "a:foo",  # RFC 7208 7.1: domain-end needs a dot and a top label
        "a:foo.1",  # a top label is not all digits
        "a:-bad-",
        "a:foo.com..",
        "a:1.2.3.4",
        "a/33",  # RFC 7208 5.6: 0-32
        "a//129",
        "a/024",  # no leading zero
        "mx/",
        "ptr/0",  # RFC 7208 5.5: ptr takes no length
        "ip4:192.0.2.1//64",  # one length only
        "ip4:01.2.3.4",  # qnum has no leading zero
        "ip4:192.0.2.256",
        "ip4:192.0.2",
        "ip4",
        "ip6:2001:db8::/129",
        "ip6:fe80::1%eth0",
        "ip6:192.0.2.1",
        "ip6:2001:db8::1//64",
        "a:mail.example.com,",
        "a:%{x}.example.com",  # RFC 7208 7.1: unknown macro letter
        "a:%{d}x",
        "a:%.example.com",  # "%" not followed by { % - _
        "a:%{d0}.example.com",  # RFC 7208 7.3: the DIGIT transformer is not zero
        "a:%{dx}.example.com",
        "a:%{c}.example.com",  # c, r, t only in explanations
        "exists:%{r}.example.com",
        "exists:%{t}.example.com",
        "a:ex\u00e4mple.com",  # macro-literal is visible ASCII
        "a:example.com\x0d",
        "1foo=bar",  # not a modifier name: a (bad) directive
        "foo=%",  # unknown modifier: its value must be a macro-string
        "foo=%{z}",
        "foo=\u00e9",
    ],
)
def test_rfc7208_12_terms_outside_the_grammar_are_errors(word: str) -> None:
    term = parse_term(word)
    assert isinstance(term, TermError), term
    assert term.reason and term.text == word


@pytest.mark.parametrize(
    "word",
    [
        "a",
        "a/0",
        "a//0",
        "a/32//128",
        "mx:%{d}/27",
        "a:example.com.",  # a final dot
        "a:foo-bar.example",
        "a:x.example.c0m",
        "a:x.example.xn--p1ai",
        "exists:%{i}.%{l1r-}.%{d2}._spf.example.com",
        "exists:%{ir}.%{v}.arpa._spf.example.com",
        "a:%{d}",  # domain-end may be a macro-expand
        "a:foo%%",  # "%%" is a macro-expand too
        "ptr",
        "ptr:Example.com",
        "ip4:0.0.0.0/0",
        "ip6:::/0",
        "ip6:::ffff:192.0.2.1",
        "ip6:2001:DB8::1/64",
        "moo.cow-far_out=man:dog/cat",  # an unknown modifier (ignored)
        "default=-",
        "a=b",  # a modifier named "a"
        "exp=%{l}._exp.%{d}",
    ],
)
def test_terms_the_grammar_allows(word: str) -> None:
    assert not isinstance(parse_term(word), TermError), parse_term(word)


def test_rfc7208_6_redirect_and_exp_at_most_once() -> None:
    for text in (
        "v=spf1 redirect=a.example redirect=b.example",
        "v=spf1 exp=a.example EXP=b.example",
    ):
        record = parse_spf_record(text)
        (error,) = record.errors
        assert "more than once" in error.reason and error.modifier in ("redirect", "exp")


def test_rfc7208_6_unknown_modifiers_may_repeat() -> None:
    record = parse_spf_record("v=spf1 foo=bar foo=bar -all foo=baz")
    assert not record.errors
    assert len([t for t in record.terms if isinstance(t, Modifier)]) == 3


@pytest.mark.parametrize("text", ["v=spf1 redirect=", "v=spf1 exp=", "v=spf1 redirect=foo"])
def test_rfc7208_6_1_redirect_and_exp_need_a_domain_spec(text: str) -> None:
    (error,) = parse_spf_record(text).errors
    assert error.modifier in {"redirect", "exp"}
    assert "names no domain" in error.reason or "top label" in error.reason


def test_errors_anywhere_are_kept_with_the_valid_terms_around_them() -> None:
    record = parse_spf_record("v=spf1 ip4:192.0.2.1 moo -all a/33")
    assert [e.text for e in record.errors] == ["moo", "a/33"]
    assert [t.text for t in record.terms] == ["ip4:192.0.2.1", "moo", "-all", "a/33"]


def test_parse_refuses_what_is_not_an_spf_record() -> None:
    with pytest.raises(RecordSyntaxError):
        parse_spf_record("v=DMARC1; p=none")


def test_parsed_records_are_memoised() -> None:
    text = "v=spf1 a mx -all"
    assert parse_spf_record(text) is parse_spf_record(text)
    assert parse_spf_bytes(text.encode()) is parse_spf_bytes(text.encode())
    long = "v=spf1 " + "ip4:192.0.2.1 " * 300 + "-all"
    assert parse_spf_record(long) == parse_spf_record(long)


def test_a_huge_record_is_parsed_once_too() -> None:
    # 4,000 ip4 terms (60 KB): parsed once, not once per message from that sender.
    huge = ("v=spf1 " + " ".join(f"ip4:10.{i // 256}.{i % 256}.0/24" for i in range(4000))).encode()
    first = parse_spf_bytes(huge)
    assert len(first.mechanisms) == 4000 and not first.errors
    assert parse_spf_bytes(huge) is first


@pytest.mark.parametrize(
    ("word", "network"),
    [
        ("ip4:192.0.2.77/24", "192.0.2.0/24"),
        ("ip4:0.0.0.0/0", "0.0.0.0/0"),
        ("ip6:::/0", "::/0"),
        ("ip6:2001:DB8::1/64", "2001:db8::/64"),
        ("ip6:::ffff:192.0.2.1", "::ffff:c000:201/128"),
    ],
)
def test_ip_networks_as_numbers(word: str, network: str) -> None:
    term = parse_term(word)
    assert isinstance(term, Mechanism) and term.network == ipaddress.ip_network(network)
    assert term.version == term.network.version
    assert term.bits == int(term.network.network_address)
    assert term.mask == int(term.network.netmask)


def test_macro_strings_are_parsed_once_into_pieces() -> None:
    parsed = parse_domain_spec("%{ir}.%{v}.%{L2r-}._spf.%%%_%-.%{d}")
    assert parsed.pieces == (
        Macro("i", reverse=True),
        ".",
        Macro("v"),
        ".",
        Macro("l", keep=2, reverse=True, delimiters="-", escape=True),
        "._spf.% %20.",
        Macro("d"),
    )
    assert parsed.letters == {"i", "v", "l", "d"} and not parsed.is_literal
    assert parse_domain_spec("example.com").is_literal


def test_rfc7208_7_1_delimiters_are_the_seven_of_the_grammar() -> None:
    assert parse_macro_string("%{l.-+,/_=}").pieces == (Macro("l", delimiters=".-+,/_="),)
    with pytest.raises(RecordSyntaxError):
        parse_macro_string("%{l;}")


def test_rfc7208_6_2_explanations_allow_spaces_and_c_r_t() -> None:
    text = parse_explanation("%{c} is not one of %{d}'s servers, says %{r} at %{t}.")
    assert {"c", "d", "r", "t"} == text.letters
    with pytest.raises(RecordSyntaxError):
        parse_explanation("100% wrong")
    with pytest.raises(RecordSyntaxError):
        parse_explanation("tab\there")


_PIECES = [
    "a", "mx", "ptr", "ip4:", "ip6:", "include:", "exists:", "all", "redirect=", "exp=", "x=",
    "%{", "}", "%", "%%", "%{d}", "%{ir}", "%{p2r-}", "%{c}", ":", "/", "//", "24", "0", "129",
    ".", "..", "-", "+", "~", "?", "example.com", "192.0.2.1", "::1", " ", "\t", "\u00e9",
    "\x00", "9" * 40,
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_any_record_parses_into_terms_and_errors_without_raising(rest: str) -> None:
    record = parse_spf_record("v=spf1 " + rest)
    assert [t.text for t in record.terms] == [w for w in rest.split(" ") if w]
    assert set(record.errors) <= set(record.terms)
    for term in record.terms:
        assert isinstance(term, (Mechanism, Modifier, TermError))
