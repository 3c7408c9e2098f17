"""check_host() as a plan (mailauth.spf.evaluate): each rule of RFC 7208 4-7, the limits, the
DNS outcomes, and which questions go out together."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailauth.dns import MxRecord, Query, Record, RRType, ZoneResolver
from mailauth.plan import (
    Budget,
    Checkpoint,
    Parallel,
    Plan,
    Resolve,
    run_plan,
    run_plan_async,
)
from mailauth.results import SpfOutcome, SpfResult
from mailauth.spf import check_spf, check_spf_identity, evaluate_spf, evaluate_spf_identity

T = TypeVar("T")
IP = "192.0.2.10"
REVERSE = "10.2.0.192.in-addr.arpa"
IP6 = "2001:db8::10"


def zone(
    records: Mapping[str, Sequence[str | bytes]] | None = None,
    *,
    a: Mapping[str, Sequence[str]] | None = None,
    aaaa: Mapping[str, Sequence[str]] | None = None,
    mx: Mapping[str, Sequence[MxRecord]] | None = None,
    ptr: Mapping[str, Sequence[str]] | None = None,
    faults: dict[str, str] | None = None,
) -> ZoneResolver:
    """TXT records by name (str or bytes), and the other types by keyword."""
    data: dict[tuple[str, RRType], tuple[int, Sequence[Record]]] = {}
    for name, texts in (records or {}).items():
        data[(name, RRType.TXT)] = (300, [t.encode() if isinstance(t, str) else t for t in texts])
    tables: list[tuple[RRType, Mapping[str, Sequence[Record]] | None]] = [
        (RRType.A, a),
        (RRType.AAAA, aaaa),
        (RRType.MX, mx),
        (RRType.PTR, ptr),
    ]
    for rdtype, table in tables:
        for name, values in (table or {}).items():
            data[(name, rdtype)] = (300, list(values))
    return ZoneResolver(data, faults=faults)


def spf(resolver: ZoneResolver, ip: str = IP, sender: str = "u@t.example", **kw: Any) -> SpfOutcome:
    return check_spf_identity(resolver, ip=ip, sender=sender, helo="h.example", **kw)


def asked(plan: Plan[T], resolver: ZoneResolver) -> tuple[list[tuple[Query, ...]], T]:
    """Run a plan, recording the questions of each effect."""
    effects: list[tuple[Query, ...]] = []
    value: Any = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            return effects, stop.value
        if isinstance(effect, Checkpoint):  # (between terms that ask DNS)
            value = None
            continue
        assert isinstance(effect, Resolve)
        effects.append(effect.queries)
        value = tuple(resolver.lookup(q.name, q.rdtype) for q in effect.queries)


# --- 4.3, 4.4, 4.5: the domain and its record


@pytest.mark.parametrize("sender", ["u@nodots", "u@a..b.example", "u@" + "x" * 64 + ".example"])
def test_rfc7208_4_3_a_malformed_domain_is_none_without_a_query(sender: str) -> None:
    resolver = zone()
    assert spf(resolver, sender=sender).result is SpfResult.NONE
    assert resolver.queries == []


def test_rfc7208_4_3_no_local_part_is_postmaster() -> None:
    resolver = zone({"t.example": ["v=spf1 -all exp=e.t.example"], "e.t.example": ["%{l}"]})
    outcome = spf(resolver, sender="@t.example")
    assert (outcome.sender, outcome.explanation) == ("postmaster@t.example", "postmaster")
    assert spf(resolver, sender="t.example").sender == "postmaster@t.example"


def test_rfc7208_4_4_nxdomain_and_no_record_are_none() -> None:
    assert spf(zone()).result is SpfResult.NONE
    assert spf(zone({"t.example": ["google-site-verification=x"]})).result is SpfResult.NONE


def test_rfc7208_4_4_a_temporary_failure_is_temperror() -> None:
    outcome = spf(zone(faults={"t.example": "timeout"}))
    assert outcome.result is SpfResult.TEMPERROR
    assert outcome.reason == "DNS timeout (TXT t.example)"


def test_rfc7208_4_5_two_spf_records_are_a_permerror() -> None:
    outcome = spf(zone({"t.example": ["v=spf1 +all", "V=SPF1 -all", "other"]}))
    assert outcome.result is SpfResult.PERMERROR and "2 SPF records" in outcome.reason


def test_rfc7208_3_3_strings_are_joined_without_spaces() -> None:
    resolver = ZoneResolver.from_text('t.example. 300 IN TXT "v=spf1 ip4:192.0.2" ".10 -all"\n')
    assert spf(resolver).result is SpfResult.PASS


def test_rfc7208_3_4_a_record_over_4_kib_is_permerror_unparsed() -> None:
    # RFC 7208 3.4: a record should fit a 512-octet answer. An 11-record include chain of
    # 51 KB records once cost 0.92 s of parsing for one message.
    def record(size: int) -> str:
        terms = " ".join(f"ip4:198.51.100.{i % 250}" for i in range(size // 20))
        text = f"v=spf1 {terms} ip4:{IP} -all"
        return text[:7] + " " * (size - len(text)) + text[7:]

    assert len(record(4096)) == 4096
    assert spf(zone({"t.example": [record(4096)]})).result is SpfResult.PASS
    outcome = spf(zone({"t.example": [record(4097)]}))
    assert (outcome.result, outcome.reason) == (
        SpfResult.PERMERROR,
        "t.example: SPF record too large (4097 octets, over 4096; RFC 7208 3.4)",
    )
    included = spf(
        zone({"t.example": ["v=spf1 include:i.t.example -all"], "i.t.example": [record(60_000)]})
    )
    assert (included.result, included.reason) == (
        SpfResult.PERMERROR,
        "i.t.example: SPF record too large (60000 octets, over 4096; RFC 7208 3.4)",
    )


def test_rfc7208_6_2_an_explanation_over_4_kib_is_dropped() -> None:
    records = {"t.example": ["v=spf1 -all exp=e.t.example"], "e.t.example": ["x" * 4097]}
    outcome = spf(zone(records))
    assert (outcome.result, outcome.explanation) == (SpfResult.FAIL, "")
    records["e.t.example"] = ["x" * 4096]
    assert spf(zone(records)).explanation == "x" * 1024


# --- 4.6: evaluation


def test_rfc7208_4_6_a_syntax_error_anywhere_is_permerror_before_any_lookup() -> None:
    resolver = zone({"t.example": ["v=spf1 a:x.t.example -all moo"]})
    outcome = spf(resolver)
    assert outcome.result is SpfResult.PERMERROR
    assert outcome.reason == "t.example: unknown mechanism or malformed term 'moo'"
    assert resolver.queries == [Query("t.example", RRType.TXT)]


def test_rfc7208_4_6_2_mechanisms_after_all_are_not_evaluated() -> None:
    resolver = zone({"t.example": ["v=spf1 ?all a:x.t.example include:y.t.example"]})
    assert spf(resolver).result is SpfResult.NEUTRAL
    assert len(resolver.queries) == 1


@pytest.mark.parametrize(
    ("qualifier", "result"),
    [("", "pass"), ("+", "pass"), ("-", "fail"), ("~", "softfail"), ("?", "neutral")],
)
def test_rfc7208_4_6_2_qualifiers(qualifier: str, result: str) -> None:
    outcome = spf(zone({"t.example": [f"v=spf1 {qualifier}ip4:192.0.2.0/24 -all"]}))
    assert outcome.result == result
    assert outcome.reason == f"matched {qualifier}ip4:192.0.2.0/24"


def test_rfc7208_4_7_no_match_and_no_redirect_is_neutral() -> None:
    outcome = spf(zone({"t.example": ["v=spf1 ip4:198.51.100.1"]}))
    assert outcome.result is SpfResult.NEUTRAL and "no mechanism matched" in outcome.reason


# --- 4.6.4: limits


def _terms(count: int, term: str = "a:x.t.example") -> str:
    return "v=spf1 " + " ".join([term] * count) + " -all"


def test_rfc7208_4_6_4_ten_dns_terms_and_the_eleventh_is_permerror() -> None:
    records = {"t.example": [_terms(10)], "u.example": [_terms(11)]}
    resolver = zone(records, a={"x.t.example": ["198.51.100.1"]})
    assert spf(resolver).result is SpfResult.FAIL
    outcome = spf(resolver, sender="u@u.example")
    assert outcome.result is SpfResult.PERMERROR and "more than 10" in outcome.reason


def test_rfc7208_4_6_4_terms_count_across_includes() -> None:
    records = {
        "t.example": ["v=spf1 include:i.t.example a:x.t.example -all"],
        "i.t.example": [_terms(9).replace(" -all", "")],
    }
    resolver = zone(records, a={"x.t.example": ["198.51.100.1"]})
    assert spf(resolver).result is SpfResult.PERMERROR  # 1 + 9 + 1


def test_rfc7208_4_6_4_ip_all_and_exp_do_not_count() -> None:
    record = _terms(10) + " ip4:198.51.100.1 ip6:2001:db8::/32 exp=e.t.example"
    resolver = zone({"t.example": [record]}, a={"x.t.example": ["198.51.100.1"]})
    assert spf(resolver).result is SpfResult.FAIL


def test_rfc7208_6_1_redirect_counts_only_when_followed() -> None:
    # With "all" the redirect is ignored, and so not counted; a match before it likewise.
    records = {
        "t.example": [_terms(10) + " redirect=r.t.example"],
        "u.example": [_terms(9).replace("-all", "a:y.t.example redirect=r.t.example")],
        "v.example": [_terms(10).replace(" -all", "") + " redirect=r.t.example"],
        "r.t.example": ["v=spf1 -all"],
    }
    resolver = zone(records, a={"x.t.example": ["198.51.100.1"], "y.t.example": [IP]})
    assert spf(resolver).result is SpfResult.FAIL
    u = check_spf_identity(resolver, ip=IP, sender="u@u.example", helo="h")
    assert u.result is SpfResult.PASS  # the 10th term matched: 10 counted
    v = check_spf_identity(resolver, ip=IP, sender="u@v.example", helo="h")
    assert v.result is SpfResult.PERMERROR  # no match: the redirect is the 11th


def test_rfc7208_4_6_4_two_void_lookups_and_the_third_is_permerror() -> None:
    records = {
        "t.example": ["v=spf1 a:n1.t.example exists:n2.t.example -all"],
        "u.example": ["v=spf1 a:n1.t.example exists:n2.t.example mx:n3.t.example -all"],
    }
    resolver = zone(records, a={"e.t.example": ["192.0.2.1"]})
    assert spf(resolver).result is SpfResult.FAIL
    outcome = spf(resolver, sender="u@u.example")
    assert outcome.result is SpfResult.PERMERROR
    assert outcome.reason == "more than 2 void lookups (the last: MX n3.t.example; RFC 7208 4.6.4)"


def test_rfc7208_4_6_4_nodata_is_void_too() -> None:
    record = "v=spf1 a:e.t.example a:e.t.example a:e.t.example -all"
    resolver = zone({"t.example": [record]}, aaaa={"e.t.example": ["2001:db8::1"]})
    assert spf(resolver).result is SpfResult.PERMERROR


def test_rfc7208_4_6_4_void_lookups_count_terms_not_queries() -> None:
    """An ``mx`` term whose exchanges have no addresses is one void lookup, not one per
    exchange; PTR names without addresses are skipped (5.5), not void lookups. Counted per
    query (as pyspf does), an IPv6 client listed after three IPv4-only MX hosts got
    permerror, and a reverse zone of dangling names turned -all into permerror."""
    mx = {"t.example": [MxRecord(i, f"m{i}.t.example") for i in range(4)]}
    v4 = {f"m{i}.t.example": [f"192.0.2.{i + 1}"] for i in range(4)}
    record = {"t.example": ["v=spf1 mx -all"]}
    client6 = "2001:db8::25"
    listed = zone(record, mx=mx, a=v4, aaaa={"m3.t.example": [client6]})
    assert (spf(listed, ip=client6).result, spf(listed, ip="192.0.2.1").result) == (
        SpfResult.PASS,
        SpfResult.PASS,
    )
    none = zone(record, mx=mx)  # no exchange has an address: one void term
    assert spf(none).result is SpfResult.FAIL
    three = zone({"t.example": ["v=spf1 mx mx mx -all"]}, mx=mx)
    assert spf(three).result is SpfResult.PERMERROR
    names = [f"x{i}.attacker.example" for i in range(5)]
    dangling = zone({"t.example": ["v=spf1 ptr -all"]}, ptr={REVERSE: names})
    assert spf(dangling).result is SpfResult.FAIL


def test_rfc7208_4_6_4_ten_mx_names_and_more_is_permerror() -> None:
    ten = [MxRecord(i, "m.t.example") for i in range(10)]
    eleven = [*ten, MxRecord(99, "n.t.example")]
    records = {"t.example": ["v=spf1 mx -all"], "u.example": ["v=spf1 mx -all"]}
    resolver = zone(records, mx={"t.example": ten, "u.example": eleven}, a={"m.t.example": [IP]})
    assert spf(resolver).result is SpfResult.PASS
    outcome = spf(resolver, sender="u@u.example")
    assert outcome.result is SpfResult.PERMERROR and "11 MX names" in outcome.reason


def test_rfc7208_4_6_4_only_the_first_ten_ptr_names_are_validated() -> None:
    names = [f"p{i}.t.example" for i in range(11)]
    resolver = zone(
        {"t.example": ["v=spf1 ptr -all"]},
        ptr={"10.2.0.192.in-addr.arpa": names},
        a={name: ["198.51.100.1"] for name in names[:10]} | {names[10]: [IP]},
    )
    assert spf(resolver).result is SpfResult.FAIL  # the 11th name would have validated
    assert Query("p10.t.example", RRType.A) not in resolver.queries


def test_rfc7208_4_6_4_the_explanation_counts_toward_no_limit() -> None:
    # two voids in the record, then an exp= at a name that does not exist
    record = "v=spf1 a:n1.t.example a:n2.t.example -all exp=nx.t.example"
    outcome = spf(zone({"t.example": [record]}))
    assert outcome.result is SpfResult.FAIL


# --- 5: mechanisms


def test_rfc7208_5_2_include_results() -> None:
    records = {
        "t.example": ["v=spf1 include:{} -all"],
        "pass.i.example": ["v=spf1 +all"],
        "fail.i.example": ["v=spf1 -all"],
        "softfail.i.example": ["v=spf1 ~all"],
        "neutral.i.example": ["v=spf1 ?all"],
        "perm.i.example": ["v=spf1 moo"],
        "two.i.example": ["v=spf1 -all", "v=spf1 +all"],
    }
    expected = {
        "pass": SpfResult.PASS,  # match: the include's qualifier (+)
        "fail": SpfResult.FAIL,  # no match: on to -all
        "softfail": SpfResult.FAIL,
        "neutral": SpfResult.FAIL,
        "perm": SpfResult.PERMERROR,
        "two": SpfResult.PERMERROR,
        "none": SpfResult.PERMERROR,  # no record: permerror, not none
        "temp": SpfResult.TEMPERROR,
    }
    for name, result in expected.items():
        texts = {k: v for k, v in records.items() if k != "t.example"}
        texts["t.example"] = [records["t.example"][0].format(f"{name}.i.example")]
        resolver = zone(texts, faults={"temp.i.example": "servfail"})
        assert spf(resolver).result is result, name


def test_rfc7208_5_2_include_of_a_bad_name_is_permerror() -> None:
    resolver = zone({"t.example": ["v=spf1 include:%{l}.t.example -all"]})
    outcome = spf(resolver, sender=("x" * 64) + "@t.example")
    assert outcome.result is SpfResult.PERMERROR


def test_rfc7208_5_3_a_asks_only_the_client_family() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 a:x.t.example -all"]},
        a={"x.t.example": [IP]},
        aaaa={"x.t.example": [IP6]},
    )
    assert spf(resolver).result is SpfResult.PASS
    assert spf(resolver, ip=IP6).result is SpfResult.PASS
    assert Query("x.t.example", RRType.AAAA) in resolver.queries
    assert resolver.queries.count(Query("x.t.example", RRType.A)) == 1


def test_rfc7208_5_3_dual_cidr_lengths() -> None:
    record = "v=spf1 a:x.t.example/24//64 -all"
    resolver = zone(
        {"t.example": [record]},
        a={"x.t.example": ["192.0.2.200"]},
        aaaa={"x.t.example": ["2001:db8::ffff:1"]},
    )
    assert spf(resolver).result is SpfResult.PASS
    assert spf(resolver, ip="192.0.3.10").result is SpfResult.FAIL
    assert spf(resolver, ip="2001:db8::1:2:3").result is SpfResult.PASS
    assert spf(resolver, ip="2001:db8:0:1::1").result is SpfResult.FAIL


def test_rfc7208_5_3_a_without_domain_is_the_current_domain() -> None:
    records = {"t.example": ["v=spf1 redirect=r.t.example"], "r.t.example": ["v=spf1 a -all"]}
    resolver = zone(records, a={"r.t.example": [IP]})
    assert spf(resolver).result is SpfResult.PASS  # 6.1: a of the redirect's domain


def test_rfc7208_5_4_mx_matches_any_exchange() -> None:
    mx = {"t.example": [MxRecord(20, "b.t.example"), MxRecord(10, "a.t.example")]}
    resolver = zone(
        {"t.example": ["v=spf1 mx/24 -all"]},
        mx=mx,
        a={"a.t.example": ["198.51.100.1"], "b.t.example": ["192.0.2.99"]},
    )
    assert spf(resolver).result is SpfResult.PASS


def test_rfc7208_5_4_the_exchanges_are_asked_in_one_effect() -> None:
    mx = {"t.example": [MxRecord(i, f"m{i}.t.example") for i in range(5)]}
    a = {f"m{i}.t.example": ["198.51.100.1"] for i in range(4)} | {"m4.t.example": [IP]}
    resolver = zone({"t.example": ["v=spf1 mx -all"]}, mx=mx, a=a)
    plan = evaluate_spf_identity(ip=IP, sender="u@t.example", helo="h.example")
    effects, outcome = asked(plan, resolver)
    assert outcome.result is SpfResult.PASS
    assert [len(e) for e in effects] == [1, 1, 5]
    assert effects[2] == tuple(Query(f"m{i}.t.example", RRType.A) for i in range(5))


def test_rfc7208_5_a_temporary_failure_at_an_exchange_is_temperror_even_beside_a_match() -> None:
    # "performs an address lookup on each MX name returned": the second fails, the fifth
    # would match; asked together, read in order of preference as one at a time would.
    mx = {"t.example": [MxRecord(i, f"m{i}.t.example") for i in range(1, 6)]}
    resolver = zone(
        {"t.example": ["v=spf1 mx -all"]},
        mx=mx,
        a={"m1.t.example": ["198.51.100.1"], "m5.t.example": [IP]},
        faults={"m2.t.example": "timeout"},
    )
    outcome = spf(resolver)
    assert outcome.result is SpfResult.TEMPERROR and "m2.t.example" in outcome.reason


def test_rfc7208_5_4_a_null_mx_has_no_addresses() -> None:
    resolver = zone({"t.example": ["v=spf1 mx -all"]}, mx={"t.example": [MxRecord(0, "")]})
    assert spf(resolver).result is SpfResult.FAIL
    assert len(resolver.queries) == 2  # no address query for the root


def test_rfc7208_5_5_ptr_validates_and_matches_subdomains() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 ptr -all"], "u.example": ["v=spf1 ptr:T.example -all"]},
        ptr={"10.2.0.192.in-addr.arpa": ["Mail.T.example", "forged.t.example"]},
        a={"mail.t.example": [IP], "forged.t.example": ["198.51.100.1"]},
    )
    assert spf(resolver).result is SpfResult.PASS
    assert spf(resolver, sender="u@u.example").result is SpfResult.PASS
    resolver = zone(
        {"t.example": ["v=spf1 ptr -all"]},
        ptr={"10.2.0.192.in-addr.arpa": ["forged.t.example"]},
        a={"forged.t.example": ["198.51.100.1"]},
    )
    assert spf(resolver).result is SpfResult.FAIL  # not validated


def test_rfc7208_5_5_a_dns_error_on_the_ptr_query_does_not_match() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 ptr ~all"]}, faults={"10.2.0.192.in-addr.arpa": "servfail"}
    )
    assert spf(resolver).result is SpfResult.SOFTFAIL


def test_rfc7208_5_5_a_dns_error_on_one_name_skips_that_name() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 ptr -all"]},
        ptr={"10.2.0.192.in-addr.arpa": ["loop.t.example", "mail.t.example"]},
        a={"mail.t.example": [IP]},
        faults={"loop.t.example": "timeout"},
    )
    assert spf(resolver).result is SpfResult.PASS


def test_rfc7208_5_5_the_names_are_validated_in_one_effect() -> None:
    names = [f"p{i}.t.example" for i in range(4)]
    resolver = zone(
        {"t.example": ["v=spf1 ptr -all"]},
        ptr={"10.2.0.192.in-addr.arpa": names},
        a={"p3.t.example": [IP]},
    )
    effects, outcome = asked(evaluate_spf_identity(ip=IP, sender="u@t.example", helo="h"), resolver)
    assert outcome.result is SpfResult.PASS  # (the names without addresses are skipped)
    assert [len(e) for e in effects] == [1, 1, 4]


def test_rfc7208_5_6_ip_mechanisms_match_only_their_family() -> None:
    resolver = zone({"t.example": ["v=spf1 ip6:::/0 ip4:0.0.0.0/0 -all"]})
    outcome = spf(resolver)
    assert outcome.result is SpfResult.PASS and outcome.reason == "matched ip4:0.0.0.0/0"
    resolver = zone({"t.example": ["v=spf1 ip4:0.0.0.0/0 -all"]})
    assert spf(resolver, ip=IP6).result is SpfResult.FAIL


def test_rfc7208_5_ipv4_mapped_clients_are_ipv4() -> None:
    resolver = zone({"t.example": ["v=spf1 ip4:192.0.2.0/24 -all"]})
    assert spf(resolver, ip="::ffff:192.0.2.10").result is SpfResult.PASS


def test_rfc7208_5_7_exists_asks_a_whatever_the_family() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 exists:%{l}.x.t.example -all"]}, a={"u.x.t.example": ["127.0.0.2"]}
    )
    assert spf(resolver, ip=IP6).result is SpfResult.PASS
    assert Query("u.x.t.example", RRType.A) in resolver.queries


def test_rfc7208_4_8_a_name_dns_cannot_carry_is_no_match_and_no_lookup() -> None:
    record = "v=spf1 a:%{l}.t.example exists:%{l}.t.example mx:%{l}.t.example ?all"
    resolver = zone({"t.example": [record]})
    outcome = spf(resolver, sender=("x" * 64) + "@t.example")
    assert outcome.result is SpfResult.NEUTRAL
    assert len(resolver.queries) == 1


# --- 6: modifiers


def test_rfc7208_6_unknown_modifiers_are_ignored_however_often_they_appear() -> None:
    record = "v=spf1 foo=bar ip4:192.0.2.0/24 foo=bar x.y-z=%{d} -all foo=baz"
    assert spf(zone({"t.example": [record]})).result is SpfResult.PASS


def test_rfc7208_6_1_redirect_to_no_record_is_permerror() -> None:
    outcome = spf(zone({"t.example": ["v=spf1 redirect=nx.t.example"]}))
    assert outcome.result is SpfResult.PERMERROR and "finds no SPF record" in outcome.reason


def test_rfc7208_6_1_redirect_is_ignored_with_all() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 redirect=r.t.example ?all"], "r.t.example": ["v=spf1 +all"]}
    )
    assert spf(resolver).result is SpfResult.NEUTRAL
    assert len(resolver.queries) == 1


def test_rfc7208_6_1_redirect_result_is_the_result() -> None:
    records = {"t.example": ["v=spf1 redirect=r.t.example"], "r.t.example": ["v=spf1 ~all"]}
    assert spf(zone(records)).result is SpfResult.SOFTFAIL


def test_rfc7208_6_2_the_explanation_of_a_fail() -> None:
    records = {
        "t.example": ["v=spf1 -all exp=e.%{d}"],
        "e.t.example": ["%{i} is not one of %{d}'s designated mail servers."],
    }
    outcome = spf(zone(records))
    assert outcome.explanation == "192.0.2.10 is not one of t.example's designated mail servers."


@pytest.mark.parametrize(
    "exp_data",
    [
        [],  # no record
        ["one", "two"],  # more than one
        ["100% wrong"],  # a syntax error
        [b"caf\xc3\xa9"],  # not ASCII
        ["%{p"],
    ],
)
def test_rfc7208_6_2_an_explanation_that_cannot_be_used_is_the_default(exp_data: list[Any]) -> None:
    records: dict[str, Sequence[str | bytes]] = {"t.example": ["v=spf1 -all exp=e.t.example"]}
    if exp_data:
        records["e.t.example"] = exp_data
    outcome = spf(zone(records), default_explanation="DEFAULT")
    assert (outcome.result, outcome.explanation) == (SpfResult.FAIL, "DEFAULT")
    assert spf(zone(records)).explanation == ""  # no default given: empty (6.2 allows it)


def test_rfc7208_6_2_the_explanation_is_at_most_1024_characters() -> None:
    records = {"t.example": ["v=spf1 -all exp=e.t.example"], "e.t.example": ["%{s}" * 1000]}
    outcome = spf(zone(records))
    assert outcome.result is SpfResult.FAIL
    assert outcome.explanation == ("u@t.example" * 100)[:1024]


def test_rfc7208_6_2_a_dns_error_on_the_explanation_changes_nothing() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 -all exp=e.t.example"]}, faults={"e.t.example": "timeout"}
    )
    outcome = spf(resolver)
    assert (outcome.result, outcome.explanation) == (SpfResult.FAIL, "")


def test_rfc7208_6_2_only_a_fail_has_an_explanation_and_only_then_is_it_fetched() -> None:
    records = {"t.example": ["v=spf1 ~all exp=e.t.example"], "e.t.example": ["why"]}
    resolver = zone(records)
    assert spf(resolver).explanation == ""
    assert Query("e.t.example", RRType.TXT) not in resolver.queries


def test_rfc7208_6_2_exp_of_an_included_record_is_not_used_but_a_redirected_one_is() -> None:
    records = {
        "t.example": ["v=spf1 -include:i.t.example redirect=r.t.example exp=top.t.example"],
        "i.t.example": ["v=spf1 +all exp=inc.t.example"],
        "r.t.example": ["v=spf1 -all exp=red.t.example"],
        "top.t.example": ["top"],
        "inc.t.example": ["inc"],
        "red.t.example": ["red"],
    }
    assert spf(zone(records)).explanation == "top"  # -include matched: its record's exp
    records["i.t.example"] = ["v=spf1 -all exp=inc.t.example"]
    assert spf(zone(records)).explanation == "red"  # redirected: the original exp is dropped


def test_rfc7208_7_3_p_is_the_validated_name_under_the_domain() -> None:
    records = {"t.example": ["v=spf1 -all exp=e.t.example"], "e.t.example": ["from %{p}"]}
    ptr = {"10.2.0.192.in-addr.arpa": ["other.example", "mx.t.example", "bad.t.example"]}
    a = {"other.example": [IP], "mx.t.example": [IP], "bad.t.example": ["198.51.100.1"]}
    assert spf(zone(records, ptr=ptr, a=a)).explanation == "from mx.t.example"
    ptr = {"10.2.0.192.in-addr.arpa": ["other.example"]}
    assert spf(zone(records, ptr=ptr, a=a)).explanation == "from other.example"
    assert spf(zone(records)).explanation == "from unknown"
    faults = {"10.2.0.192.in-addr.arpa": "timeout"}
    assert spf(zone(records, faults=faults)).explanation == "from unknown"  # not temperror


def test_rfc7208_7_3_p_in_a_term_is_looked_up_once() -> None:
    record = "v=spf1 exists:%{p}.a.t.example exists:%{p}.b.t.example ?all"
    ptr = {"10.2.0.192.in-addr.arpa": ["mx.t.example"]}
    resolver = zone(
        {"t.example": [record]},
        ptr=ptr,
        a={"mx.t.example": [IP], "mx.t.example.b.t.example": ["127.0.0.2"]},
    )
    assert spf(resolver).result is SpfResult.PASS
    assert resolver.queries.count(Query("10.2.0.192.in-addr.arpa", RRType.PTR)) == 1


def test_rfc7208_7_3_t_and_r_come_from_the_caller() -> None:
    records = {"t.example": ["v=spf1 -all exp=e.t.example"], "e.t.example": ["%{r} at %{t}"]}
    outcome = spf(zone(records), receiver="mx.example.org", now=1_700_000_000.7)
    assert outcome.explanation == "mx.example.org at 1700000000"


# --- identities side by side


def test_helo_and_mail_from_are_checked_side_by_side_each_within_its_budget() -> None:
    """Neither identity waits on the other's DNS (a slow HELO domain must not pace the MAIL
    FROM check that DMARC uses), and each has a budget of its own."""
    resolver = zone(
        {
            "t.example": ["v=spf1 a -all"],
            "h.example": ["v=spf1 a a:x1.h.example a:x2.h.example -all"],
        },
        a={"t.example": [IP], "h.example": ["198.51.100.1"]},
    )
    budgets = (Budget("SPF", 10), Budget("SPF HELO", 2))
    plan = evaluate_spf(ip=IP, helo="h.example", mail_from="u@t.example", budgets=budgets)
    effect = plan.send(None)
    assert isinstance(effect, Parallel) and len(effect.plans) == 2
    helo_effects, helo = asked(effect.plans[0], resolver)
    mailfrom_effects, mailfrom = asked(effect.plans[1], resolver)
    assert helo_effects == [(Query("h.example", RRType.TXT),), (Query("h.example", RRType.A),)]
    assert mailfrom_effects == [(Query("t.example", RRType.TXT),), (Query("t.example", RRType.A),)]
    assert mailfrom.result is SpfResult.PASS
    assert helo.result is SpfResult.TEMPERROR
    assert helo.reason == "SPF HELO: more than 2 DNS queries (A x1.h.example)"
    with pytest.raises(StopIteration) as done:
        plan.send((helo, mailfrom))
    check = done.value.value
    assert (check.mailfrom.result, check.helo.result) == (SpfResult.PASS, SpfResult.TEMPERROR)


def test_every_term_that_asks_dns_is_a_checkpoint() -> None:
    """A cached SPF tree (includes, mx, a, redirect) does not hold the event loop in one
    step: a checkpoint before each term that asks DNS (the loop is handed on there once the
    evaluation has had it for plan.SLICE)."""
    resolver = zone(
        {
            "t.example": ["v=spf1 include:i.example mx a redirect=r.example"],
            "i.example": ["v=spf1 a -all"],
            "r.example": ["v=spf1 ip4:192.0.2.0/24 -all"],
        },
        a={"i.example": ["192.0.2.99"], "t.example": ["192.0.2.98"]},
        mx={"t.example": [MxRecord(1, "m.t.example")]},
    )
    plan = evaluate_spf_identity(ip=IP, sender="u@t.example", helo="h.example")
    kinds: list[str] = []
    value: Any = None
    while True:
        try:
            effect = plan.send(value)
        except StopIteration as stop:
            outcome = stop.value
            break
        if isinstance(effect, Checkpoint):
            kinds.append("checkpoint")
            value = None
        else:
            assert isinstance(effect, Resolve)
            kinds.append(",".join(q.name for q in effect.queries))
            value = tuple(resolver.lookup(q.name, q.rdtype) for q in effect.queries)
    assert outcome.result is SpfResult.PASS
    assert kinds.count("checkpoint") == 5  # (include, its a, mx, a; then the redirect)
    assert kinds.index("checkpoint") == 1  # (after the record, before the include)


def test_the_async_runner_gives_the_blocking_result() -> None:
    resolver = zone(
        {"t.example": ["v=spf1 mx ptr -all"]},
        mx={"t.example": [MxRecord(1, "m1.t.example"), MxRecord(2, "m2.t.example")]},
        a={"m2.t.example": [IP]},
    )
    blocking = check_spf(resolver, ip=IP, helo="h.example", mail_from="u@t.example")
    plan = evaluate_spf(ip=IP, helo="h.example", mail_from="u@t.example")
    assert asyncio.run(run_plan_async(plan, resolver)) == blocking
    assert blocking.mailfrom.result is SpfResult.PASS


_TERMS = [
    "a", "mx", "ptr", "-all", "?all", "include:t.example", "include:u.example",
    "redirect=u.example",
    "exists:%{l}.%{d}", "a:%{ir}.%{v}.%{d2}", "mx:%{p}.t.example", "exp=%{d}", "ip4:192.0.2.0/24",
    "ip6:::/0", "a:x.t.example/0//0", "ptr:%{o}", "foo=%{s}", "exists:%{L}%{H}.t.example",
    "include:" + "x" * 64 + ".example", "a:%{l}" + "y" * 60 + ".t.example", "moo",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(_TERMS), max_size=8).map(" ".join),
    st.lists(st.sampled_from(_TERMS), max_size=4).map(" ".join),
    st.sampled_from([IP, IP6, "::ffff:192.0.2.10"]),
    st.sampled_from(["u@t.example", "", "t.example", "a.b.c@t.example"]),
)
def test_any_record_gives_a_result_and_never_raises(
    first: str, second: str, ip: str, sender: str
) -> None:
    resolver = zone(
        {"t.example": [f"v=spf1 {first}"], "u.example": [f"v=spf1 {second}"]},
        a={"x.t.example": [IP], "t.example": ["198.51.100.1"]},
        mx={"t.example": [MxRecord(1, "x.t.example")]},
        ptr={"10.2.0.192.in-addr.arpa": ["x.t.example"]},
        faults={"u.t.example": "timeout"},
    )
    check = check_spf(resolver, ip=ip, helo="t.example", mail_from=sender)
    assert check.mailfrom.result in SpfResult
    assert check.mailfrom.result is not SpfResult.NONE or not sender.endswith("t.example")


def test_a_question_a_budget_refused_is_temperror_even_where_dns_errors_pass() -> None:
    """RFC 7208 5.5 lets a DNS error while validating PTR names pass as "no match"; a
    question our own budget (count or time) gave up on is not a DNS error: read as no match
    it turned an RFC-valid record's pass into fail (and the SPF memo kept the fail)."""
    from mailauth import Authenticator

    terms = " ".join(f"mx:m{i}.s.example" for i in range(3))
    records = {"s.example": [f"v=spf1 {terms} ptr -all"]}
    mx = {f"m{i}.s.example": [MxRecord(10, f"h{j}.m{i}.s.example") for j in range(10)]
          for i in range(3)}  # fmt: skip
    a = {f"h{j}.m{i}.s.example": ["203.0.113.9"] for i in range(3) for j in range(10)}
    a["out.s.example"] = [IP]
    resolver = zone(records, mx=mx, a=a, ptr={REVERSE: ["out.s.example"]})
    assert spf(resolver, sender="u@s.example").result is SpfResult.PASS  # (no budget)
    plan = evaluate_spf(ip=IP, helo="out.s.example", mail_from="u@s.example",
                        budgets=(Budget("SPF", 34), Budget("SPF HELO", 20)))  # fmt: skip
    check = run_plan(plan, resolver)
    assert check.mailfrom.result is SpfResult.TEMPERROR
    assert "more than 34 DNS queries (PTR" in check.mailfrom.reason
    auth = Authenticator("mx.test", resolver)
    auth.limits = replace(auth.limits, spf_queries=34)
    message = b"From: a@s.example\r\n\r\nhi\r\n"
    verdict = auth.verify(message, ip=IP, helo="out.s.example", mail_from="u@s.example")
    assert verdict.spf is not None and verdict.spf.mailfrom.result is SpfResult.TEMPERROR
