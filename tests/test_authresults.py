from __future__ import annotations

from pathlib import Path
from typing import Any

import authres
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mailauth.authresults import authserv_id_of, fold, quote_pvalue, render_authentication_results
from mailauth.results import (
    ArcOutcome,
    ArcResult,
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
        ("(unterminated", None),
    ],
)
def test_authserv_id_of(value: str | bytes, expected: str | None) -> None:
    assert authserv_id_of(value) == expected
