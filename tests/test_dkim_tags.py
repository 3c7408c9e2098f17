"""DKIM tag=value lists (RFC 6376 3.2): values, raw offsets, and every syntax error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailauth.dkim.tags import TagSyntaxError, decode_base64, parse_tag_list, split_list


def test_values_and_the_offsets_of_their_raw_bytes() -> None:
    data = b"v=1; a=rsa-sha256;\r\n\tb= abc\r\n def ; bh=xyz;"
    tags = parse_tag_list(data)
    assert {k: t.value for k, t in tags.items()} == {
        "v": "1", "a": "rsa-sha256", "b": "abc\r\n def", "bh": "xyz",
    }  # fmt: skip
    b = tags["b"]
    assert data[b.start : b.end] == b" abc\r\n def "  # whitespace included, ";" excluded
    assert data[tags["v"].start : tags["v"].end] == b"1"
    assert parse_tag_list(b"") == {}
    assert parse_tag_list(b"  x = \xc3\xa9 ").get("x") is not None  # UTF-8 (RFC 8616)
    assert parse_tag_list(b"k=v;")["k"].value == "v"  # a final ";" is allowed
    assert parse_tag_list(b"A_1=x; a=y").keys() == {"A_1", "a"}  # names are case-sensitive


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a=1;;", "empty tag-spec"),
        (b";a=1", "empty tag-spec"),
        (b"a=1; ; b=2", "empty tag-spec"),
        (b"=x", "malformed tag '=x'"),
        (b"a", "malformed tag 'a'"),
        (b"1a=x", "malformed tag '1a=x'"),
        (b"a-b=x", "malformed tag 'a-b=x'"),
        (b"_a=x", "malformed tag '_a=x'"),
        (b"a b=x", "malformed tag 'a b=x'"),
        (b"a=1; a=2", "duplicate tag a="),
        (b"a=\xff", "value of a= is not UTF-8"),
        (b"a=1\x00", "control character in tag list"),
        (b"a=\x7f", "control character in tag list"),
    ],
)
def test_syntax_errors(data: bytes, message: str) -> None:
    with pytest.raises(TagSyntaxError, match=message):
        parse_tag_list(data)


@pytest.mark.parametrize("octet", range(256))
def test_control_characters_are_refused_and_only_they(octet: int) -> None:
    data = b"a=x" + bytes([octet]) + b"y"
    if (octet < 0x20 and octet not in (0x09, 0x0A, 0x0D)) or octet == 0x7F:
        with pytest.raises(TagSyntaxError, match="control character"):
            parse_tag_list(data)
        return
    try:  # other octets pass, or fail for another reason (";" splits, lone 0x80+ is not UTF-8)
        parse_tag_list(data)
    except TagSyntaxError as exc:
        assert "control character" not in str(exc)  # noqa: PT017


_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,5}", fullmatch=True)
_VALUES = st.from_regex(r"[!-:<-~]{0,8}( [!-:<-~]{1,8})?", fullmatch=True)
_SPACE = st.sampled_from(["", " ", "\t", "\r\n ", "  "])


@given(
    st.dictionaries(_NAMES, _VALUES, max_size=6),
    st.lists(_SPACE, min_size=24, max_size=24),
    st.booleans(),
)
def test_any_well_formed_list_gives_back_its_values(
    tags: dict[str, str], spaces: list[str], final: bool
) -> None:
    parts, offsets = [], {}
    text = ""
    for i, (name, value) in enumerate(tags.items()):
        spec = f"{spaces[4 * i]}{name}{spaces[4 * i + 1]}="
        start = len(text) + len(spec)
        spec += f"{spaces[4 * i + 2]}{value}{spaces[4 * i + 3]}"
        offsets[name] = (start, len(text) + len(spec))
        parts.append(spec)
        text += spec + ";"
    text = ";".join(parts) + (";" if final and parts else "")
    parsed = parse_tag_list(text.encode())
    assert {k: t.value for k, t in parsed.items()} == {k: v.strip() for k, v in tags.items()}
    assert {k: (t.start, t.end) for k, t in parsed.items()} == offsets


def test_base64_and_lists() -> None:
    assert decode_base64(" YW\r\n\tJj ", "b") == b"abc"
    with pytest.raises(TagSyntaxError, match="b= is not valid base64"):
        decode_base64("YW*j", "b")
    assert split_list(" from : To\r\n :subject ") == ("from", "To", "subject")
