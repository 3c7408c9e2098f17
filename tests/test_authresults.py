from __future__ import annotations

from pathlib import Path
from typing import Any

import authres
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mailauth.authresults import (
    _clause,
    _field,
    authserv_id_of,
    fold,
    quote_comment,
    quote_pvalue,
    quote_value,
    render_authentication_results,
    render_received_spf,
)
from mailauth.results import (
    ArcOutcome,
    ArcResult,
    ArcSetInfo,
    DkimOutcome,
    DkimResult,
    DmarcOutcome,
    DmarcResult,
    Policy,
    SpfCheck,
    SpfOutcome,
    SpfResult,
)

RFC8601 = Path(__file__).resolve().parent.parent / "fixtures" / "authres-rfc8601"


def _parse(field: str) -> Any:
    return authres.AuthenticationResultsHeader.parse(field.replace("\r\n", ""))


def _spf(sender: str, helo: str = "mail.example.com") -> SpfCheck:
    return SpfCheck(
        SpfOutcome(SpfResult.PASS, "mailfrom", sender.rpartition("@")[2], sender),
        SpfOutcome(SpfResult.NONE, "helo", helo),
    )


def test_no_methods_is_none() -> None:
    # RFC 8601 2.2: "none" when no method was applied
    assert (
        render_authentication_results("mx.example.org")
        == "Authentication-Results: mx.example.org; none"
    )


def test_rendered_field_parses_back() -> None:
    field = render_authentication_results(
        "MX.example.org",
        spf=_spf("alice@example.com"),
        dkim=[
            DkimOutcome(
                DkimResult.PASS,
                "example.com",
                "sel",
                "rsa-sha256",
                identity="@example.com",
                key_bits=2048,
                signature_prefix="abcdefgh",
            )
        ],
        arc=ArcOutcome(ArcResult.NONE),
        dmarc=DmarcOutcome(DmarcResult.PASS, "example.com", Policy.REJECT),
        remote_ip="192.0.2.1",
    )
    parsed = _parse(field)
    assert parsed.authserv_id == "mx.example.org"
    methods = [(r.method, r.result) for r in parsed.results]
    assert methods == [
        ("spf", "pass"),
        ("spf", "none"),
        ("dkim", "pass"),
        ("arc", "none"),
        ("dmarc", "pass"),
    ]
    assert parsed.results[0].properties[0].value == "alice@example.com"
    assert parsed.results[1].properties[0].value == "mail.example.com"
    assert [p.value for p in parsed.results[2].properties] == [
        "example.com",
        "@example.com",
        "sel",
        "rsa-sha256",
        "abcdefgh",
    ]
    assert "(p=reject dis=none)" in field


def test_empty_dkim_list_is_dkim_none() -> None:
    assert "dkim=none" in render_authentication_results("mx.example.org", dkim=[])


@pytest.mark.parametrize(
    "hostile",
    [
        "a@b; dkim=pass",
        "a@b\r\nX-Injected: yes",
        "x\ny",
        'quote"s@example.com',
        "back\\slash@example.com",
        "semi;colon",
        "(comment)",
        "a@b.example (c)",
        "ünicode@example.com",
        "",
    ],
)
def test_values_cannot_inject(hostile: str) -> None:
    """STYLE 8: CR, LF and ';' in MAIL FROM, HELO, d= and reasons stay inside one value."""
    field = render_authentication_results(
        "mx.example.org",
        spf=SpfCheck(
            SpfOutcome(SpfResult.FAIL, "mailfrom", hostile, hostile, reason=hostile),
            SpfOutcome(SpfResult.NONE, "helo", hostile),
        ),
        dkim=[DkimOutcome(DkimResult.FAIL, hostile, hostile, "rsa-sha256", reason=hostile)],
    )
    lines = field.split("\r\n")
    assert all(line.startswith(" ") for line in lines[1:])
    assert "\n" not in field.replace("\r\n ", "")
    assert "\r" not in field.replace("\r\n ", "")
    parsed = _parse(field)
    assert [r.method for r in parsed.results] == ["spf", "spf", "dkim"]


@given(st.text(max_size=80))
def test_any_value_round_trips_as_one_pvalue(value: str) -> None:
    quoted = quote_pvalue(value)
    assert "\r" not in quoted and "\n" not in quoted
    field = f"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom={quoted}"
    parsed = _parse(field)
    assert len(parsed.results) == 1
    assert len(parsed.results[0].properties) == 1


def test_folding_keeps_lines_short_and_tokens_whole() -> None:
    field = render_authentication_results(
        "mx.example.org",
        spf=_spf("a" * 30 + "@example.com"),
        dkim=[
            DkimOutcome(DkimResult.PASS, "example.com", "s", "ed25519-sha256", reason="a b c " * 20)
        ],
    )
    for line in field.split("\r\n"):
        assert len(line) <= 78 or " " not in line.strip()
    long = 'Authentication-Results: x; spf=pass reason="' + "a  b " * 30 + '"'
    assert fold(long).replace("\r\n", "") == long  # unfolding gives back the exact text


@pytest.mark.parametrize(
    "case",
    yaml.safe_load((RFC8601 / "rfc8601-appendix-b.yaml").read_text())["cases"],
    ids=lambda case: case["id"],
)
def test_authserv_id_of_rfc8601_appendix_b(case: dict[str, Any]) -> None:
    field: str = case["field"]
    value = field.split(":", 1)[1].replace("\n", "\r\n")
    assert authserv_id_of(value) == case["expect"]["authserv_id"].lower()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" mx.example.org; spf=pass", "mx.example.org"),
        ("(comment (nested)) MX.Example.Org (x); none", "mx.example.org"),
        ('"mx.example.org"; none', "mx.example.org"),
        ("mx.example.org(c);none", "mx.example.org"),
        (b"\r\n\tmx.example.org;\r\n\tnone", "mx.example.org"),
        ("   ", None),
        ("(unterminated", "unterminated"),
        # Read as leniently as a reader downstream might: such fields claiming to be ours
        # are removed (a forged "( mx.example.org; dkim=pass" was kept before).
        ("( mx.example.org; dkim=pass header.d=bank.example", "mx.example.org"),
        ("mx.example.org.; dkim=pass", "mx.example.org"),
        ('"MX.example.org."; none', "mx.example.org"),
        ("(", None),
    ],
)
def test_authserv_id_of(value: str | bytes, expected: str | None) -> None:
    assert authserv_id_of(value) == expected


# The formatter writes the field as its pieces, without authres objects (they cost more than
# the checks on the pipeline's hot path). authres's classes stay the reference: the same
# clauses built with them must print the same text, and authres must parse it back.

_HOSTILE = st.text(
    st.sampled_from(list('ab.-_@ ;="()\\\r\n\t\x7fé[]ü,:/')) | st.characters(), max_size=24
)
_PROPS = st.lists(
    st.tuples(
        st.sampled_from(["smtp", "header", "policy"]),
        st.sampled_from(["mailfrom", "helo", "d", "i", "b", "from", "remote-ip"]),
        _HOSTILE,
    ),
    max_size=4,
)
_CLAUSE = st.tuples(
    st.sampled_from(["spf", "dkim", "arc", "dmarc"]),
    st.sampled_from(["pass", "fail", "none", "temperror", "permerror", "softfail"]),
    _PROPS,
    _HOSTILE,  # reason
    _HOSTILE,  # comment
)


class _PValue(str):
    def quote_if_needed(self) -> str:
        return quote_pvalue(self)


class _Value(str):
    def quote_if_needed(self) -> str:
        return quote_value(self)


def _authres_field(authserv_id: str, clauses: list[Any]) -> str:
    """The field as mailauth built it with authres's objects (its quoting put in)."""
    results = []
    for method, result, props, reason, comment in clauses:
        properties = []
        for ptype, name, value in props:
            prop = authres.AuthenticationResultProperty(ptype, name, value)
            prop.value = _PValue(value)
            properties.append(prop)
        clause = authres.AuthenticationResult(
            method=method,
            result=result,
            result_comment=quote_comment(comment) or None,
            properties=properties,
        )
        if reason and quote_value(reason) != '""':  # (nothing printable: left out)
            clause.reason = _Value(reason)
        results.append(clause)
    header = authres.AuthenticationResultsHeader(
        authserv_id=quote_pvalue(authserv_id.lower()), results=results
    )
    return fold(f"Authentication-Results: {header.header_value()}")


@given(_HOSTILE.filter(bool), st.lists(_CLAUSE, max_size=5))
def test_formatter_writes_what_authres_objects_print(authserv_id: str, clauses: Any) -> None:
    ours = _field(authserv_id, [_clause(*clause) for clause in clauses])
    assert ours == _authres_field(authserv_id, clauses)


# What authres's parser reads back: no ``""`` reason (an empty quoted-string, valid RFC 5322,
# which it rejects) and property values that need no quoting (it drops a quoted pvalue that
# another property follows). The fields are the text authres's own objects print (above); a
# lone quoted pvalue round-trips (test_any_value_round_trips_as_one_pvalue).
_PLAIN = st.from_regex(
    r"[a-z0-9]{1,8}(\.[a-z0-9-]{1,8}){0,3}|[a-z.]{1,8}@[a-z]{1,8}\.test", fullmatch=True
)
_PARSEABLE_CLAUSE = st.tuples(
    st.sampled_from(["spf", "dkim", "arc", "dmarc"]),
    st.sampled_from(["pass", "fail", "none", "temperror", "permerror", "softfail"]),
    st.lists(
        st.tuples(
            st.sampled_from(["smtp", "header", "policy"]),
            st.sampled_from(["mailfrom", "helo", "d", "i", "b", "from", "remote-ip"]),
            _PLAIN.filter(lambda v: quote_pvalue(v) == v),
        ),
        max_size=4,
    ),
    _HOSTILE.filter(lambda reason: quote_value(reason or "x") != '""'),
    _HOSTILE,
)


@given(st.lists(_PARSEABLE_CLAUSE, min_size=1, max_size=5))
def test_formatter_output_parses_back_with_authres(clauses: Any) -> None:
    field = _field("mx.example.org", [_clause(*clause) for clause in clauses])
    assert all(line.startswith(" ") for line in field.split("\r\n")[1:])
    parsed = _parse(field)
    assert [(r.method, r.result) for r in parsed.results] == [(c[0], c[1]) for c in clauses]
    for result, (_, _, props, _, _) in zip(parsed.results, clauses, strict=True):
        assert [(p.type, p.name, p.value) for p in result.properties] == props


_SPF_OUTCOMES = st.builds(
    SpfOutcome,
    st.sampled_from(list(SpfResult)),
    st.sampled_from(["mailfrom", "helo"]),
    _HOSTILE,
    _HOSTILE,
    _HOSTILE,
)
_DKIM_OUTCOMES = st.builds(
    DkimOutcome,
    st.sampled_from(list(DkimResult)),
    _HOSTILE,
    _HOSTILE,
    st.sampled_from(["rsa-sha256", "ed25519-sha256", ""]),
    _HOSTILE,
    _HOSTILE,
    st.none() | st.integers(1, 8192),
    _HOSTILE,
    st.booleans(),
)
_ARC_OUTCOMES = st.builds(
    ArcOutcome,
    st.sampled_from(list(ArcResult)),
    _HOSTILE,
    st.none() | st.integers(0, 50),
    st.just(()),
    st.lists(
        st.builds(ArcSetInfo, st.integers(1, 50), _HOSTILE, _HOSTILE, _HOSTILE, _HOSTILE),
        max_size=3,
    ).map(tuple),
)
_DMARC_OUTCOMES = st.builds(
    DmarcOutcome,
    st.sampled_from(list(DmarcResult)),
    _HOSTILE,
    st.none() | st.sampled_from(list(Policy)),
    st.sampled_from(list(Policy)),
    _HOSTILE,
    override_comment=_HOSTILE,
)


@given(
    st.none() | st.builds(SpfCheck, _SPF_OUTCOMES, st.none() | _SPF_OUTCOMES),
    st.none() | st.lists(_DKIM_OUTCOMES, max_size=3),
    st.none() | _ARC_OUTCOMES,
    st.none() | _DMARC_OUTCOMES,
    st.sampled_from(["", "192.0.2.1", "2001:db8::1"]),
)
def test_rendered_field_folds_as_its_unfolded_text_would(
    spf: SpfCheck | None,
    dkim: list[DkimOutcome] | None,
    arc: ArcOutcome | None,
    dmarc: DmarcOutcome | None,
    remote_ip: str,
) -> None:
    """The pieces are exactly the text's segments: folding the unfolded field again (the
    general folder, which finds the spaces outside comments and quoted strings) gives back
    the same field."""
    field = render_authentication_results(
        "mx.example.org", spf=spf, dkim=dkim, arc=arc, dmarc=dmarc, remote_ip=remote_ip
    )
    assert fold(field.replace("\r\n", "")) == field
    assert "\n" not in field.replace("\r\n ", "")
    assert "\r" not in field.replace("\r\n ", "")


@given(_SPF_OUTCOMES, _HOSTILE, _HOSTILE)
def test_received_spf_folds_as_its_unfolded_text_would(
    outcome: SpfOutcome, helo: str, receiver: str
) -> None:
    field = render_received_spf(outcome, ip="192.0.2.1", helo=helo, receiver=receiver or "mx")
    assert fold(field.replace("\r\n", "")) == field
    assert "\n" not in field.replace("\r\n ", "")
    assert "\r" not in field.replace("\r\n ", "")


def test_fields_as_before() -> None:
    """The exact text the authres-built formatter wrote for a usual message."""
    spf = SpfCheck(
        SpfOutcome(SpfResult.PASS, "mailfrom", "bench.test", "alice@bench.test"),
        SpfOutcome(SpfResult.PASS, "helo", "mail.bench.test", "postmaster@mail.bench.test"),
    )
    dkim = DkimOutcome(
        DkimResult.PASS,
        "bench.test",
        "s2048",
        "rsa-sha256",
        key_bits=2048,
        signature_prefix="KIE9hODWcML9",
    )
    field = render_authentication_results(
        "mx.receiver.test",
        spf=spf,
        dkim=[dkim],
        arc=ArcOutcome(ArcResult.NONE),
        dmarc=DmarcOutcome(DmarcResult.PASS, "bench.test", Policy.REJECT),
        remote_ip="192.0.2.10",
    )
    assert field == (
        "Authentication-Results: mx.receiver.test; spf=pass\r\n"
        " smtp.mailfrom=alice@bench.test; spf=pass smtp.helo=mail.bench.test; dkim=pass\r\n"
        " (2048-bit key) header.d=bench.test header.s=s2048 header.a=rsa-sha256\r\n"
        " header.b=KIE9hODWcML9; arc=none smtp.remote-ip=192.0.2.10; dmarc=pass\r\n"
        " (p=reject dis=none) header.from=bench.test"
    )
    received = render_received_spf(
        spf.mailfrom, ip="192.0.2.10", helo="mail.bench.test", receiver="mx.receiver.test"
    )
    assert received == (
        "Received-SPF: pass\r\n"
        " (mx.receiver.test: domain of alice@bench.test designates 192.0.2.10 as\r\n"
        ' permitted sender) client-ip=192.0.2.10; envelope-from="alice@bench.test";\r\n'
        " helo=mail.bench.test; receiver=mx.receiver.test; identity=mailfrom;"
    )


def test_long_values_are_quoted_alike() -> None:
    """Values of up to 256 characters are remembered (the same ones come back); longer ones,
    hostile mostly, are quoted anew each time, the same way."""
    for size in (10, 256, 257, 5000):
        text = ("x y(\\" * size)[:size]
        assert quote_comment(text) == text.replace("\\", "\\\\").replace("(", "\\(")
        assert quote_value(text) == '"' + text.replace("\\", "\\\\") + '"'
        assert quote_pvalue(text) == quote_value(text)


def test_a_reason_with_nothing_printable_is_left_out() -> None:
    """reason="" is valid RFC 8601, but authres (and other parsers) refuse the field."""
    from mailauth.results import DkimOutcome, DkimResult

    outcome = DkimOutcome(DkimResult.PERMERROR, "example.com", "s1", "rsa-sha256", "\x01\x02")
    header = render_authentication_results("mx.example.org", dkim=[outcome])
    assert "reason" not in header
