from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailauth.address import AddressError, Mailbox, parse_address_list, salvage_domains


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a@example.com", [Mailbox("", "a", "example.com")]),
        ('"Doe, John" <john@Example.COM>', [Mailbox("Doe, John", "john", "example.com")]),
        (
            "Joe (a, b) <j@x.org>, b@y.org",
            [Mailbox("Joe", "j", "x.org"), Mailbox("", "b", "y.org")],
        ),
        ('team: a@x.com, "b c"@y.com;', [Mailbox("", "a", "x.com"), Mailbox("", '"b c"', "y.com")]),
        ("undisclosed-recipients:;", []),
        ("<@route.example,@other.example:u@z.example>", [Mailbox("", "u", "z.example")]),
        ("x@[192.0.2.1]", [Mailbox("", "x", "")]),
        (
            "a@b.example,,c@d.example",
            [Mailbox("", "a", "b.example"), Mailbox("", "c", "d.example")],
        ),
        ("first . last @ x.example", [Mailbox("", "first.last", "x.example")]),
        ("((nested) comment) a@x.example", [Mailbox("", "a", "x.example")]),
        ("Jörg <jörg@bücher.example>", [Mailbox("Jörg", "jörg", "xn--bcher-kva.example")]),
    ],
)
def test_parse(text: str, expected: list[Mailbox]) -> None:
    assert parse_address_list(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "bad",
        "a@b@c",
        '"open <a@b>',
        "<a@x.example",
        "a@exa mple.com",
        "(open a@x.example",
        "a@",
        "@x.example",
        "<a@x.example> trailing",
        "a@x..example",
        "grp: a@x.example",
        ";",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address_list(text)


@given(st.text(max_size=300))
def test_never_crashes(text: str) -> None:
    try:
        for mailbox in parse_address_list(text):
            assert mailbox.domain == mailbox.domain.lower()
    except AddressError:
        pass


def test_linear_on_deep_nesting() -> None:
    with pytest.raises(AddressError):
        parse_address_list("(" * 100_000 + "a@x.example")
    assert parse_address_list("(" * 50_000 + ")" * 50_000 + "a@x.example")[0].domain == "x.example"


@pytest.mark.parametrize(
    "text",
    [
        "ceo@bank.example\x7f",
        "CEO <ceo@bank.example\x1b>",
        "ceo@bank.examp\x01le",
        "ceo@bank\x08.example",
        "ceo@bank.example\x00",
        "ceo@bank.example\x85",
    ],
)
def test_rfc5322_3_2_3_a_control_character_in_the_domain_is_invalid(text: str) -> None:
    with pytest.raises(AddressError, match="control character in the domain"):
        parse_address_list(text)
    assert salvage_domains(text) == ["bank.example"]


def test_salvaged_domains() -> None:
    assert salvage_domains('"a@b" <c@@d.example> x@y;') == ["b", "d.example", "y"]
    assert salvage_domains("a@\x7f, b@ (c)") == []
