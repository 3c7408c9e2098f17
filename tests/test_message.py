from __future__ import annotations

import re
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailauth.errors import MessageParseError
from mailauth.message import Message


def test_fields_keep_their_exact_bytes_and_the_body_is_a_slice() -> None:
    raw = (
        b"DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n"
        b"From: Alice <alice@example.com>\r\n"
        b"Subject:  two  spaces \r\n\r\nBody line\r\n\r\n"
    )
    message = Message.parse(raw)
    assert [f.name for f in message.headers] == ["DKIM-Signature", "From", "Subject"]
    assert b"".join(f.raw for f in message.headers) + b"\r\n" + bytes(message.body) == raw
    assert message.headers[0].value == b" v=1; a=rsa-sha256;\r\n\tb=abc"
    assert message.headers[2].text() == "two  spaces"
    assert bytes(message.body) == b"Body line\r\n\r\n"


def test_bare_lf_line_endings() -> None:
    message = Message.parse(b"From: a@example.com\nSubject: x\n y\n\nbody\n")
    assert message.headers[1].raw == b"Subject: x\n y\n"
    assert message.headers[1].text() == "x y"
    assert bytes(message.body) == b"body\n"


def test_missing_body_and_missing_final_newline() -> None:
    message = Message.parse(b"From: a@example.com\r\nSubject: no body")
    assert [f.raw for f in message.headers] == [b"From: a@example.com\r\n", b"Subject: no body"]
    assert bytes(message.body) == b""


def test_empty_body_after_separator() -> None:
    message = Message.parse(b"From: a@example.com\r\n\r\n")
    assert bytes(message.body) == b""
    assert message.body_offset == len(b"From: a@example.com\r\n\r\n")


def test_obsolete_space_before_colon() -> None:
    # RFC 5322 4.5.3 (obs-optional)
    message = Message.parse(b"Subject : old style\r\nFrom: a@example.com\r\n\r\n")
    assert message.headers[0].name == "Subject" and message.headers[0].text() == "old style"


def test_eight_bit_and_utf8_headers_are_kept() -> None:
    raw = "Subject: Grüße\r\nFrom: Jörg <jörg@bücher.example>\r\n\r\n".encode()
    latin = b"X-Latin: caf\xe9\r\n"
    message = Message.parse(raw[:-2] + latin + b"\r\n")
    assert message.get("subject") is not None
    assert message.get("x-latin") is not None and message.get("x-latin").raw == latin  # type: ignore[union-attr]
    author = message.author()
    assert author.domains == ("xn--bcher-kva.example",)


def test_a_non_header_line_starts_the_body() -> None:
    message = Message.parse(b"From: a@example.com\r\nThis is not a header\r\nmore\r\n")
    assert len(message.headers) == 1
    assert bytes(message.body) == b"This is not a header\r\nmore\r\n"


def test_mbox_from_line_is_skipped() -> None:
    message = Message.parse(
        b"From alice@example.com Sun Nov 29 10:00:00 2026\nFrom: a@x.example\n\nb"
    )
    assert [f.name for f in message.headers] == ["From"]


def test_get_all_is_case_insensitive_top_to_bottom() -> None:
    message = Message.parse(b"Received: 1\r\nreceived: 2\r\nRECEIVED: 3\r\n\r\n")
    assert [f.text() for f in message.get_all("Received")] == ["1", "2", "3"]
    assert message.get("nope") is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"   \n\n",
        b"\x00\x01\x02 binary",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03 gzip",
        b"%PDF-1.7\n" + bytes(range(256)) * 4,
    ],
)
def test_not_a_message(raw: bytes) -> None:
    """Only input that is not a message at all: empty, or binary data."""
    with pytest.raises(MessageParseError):
        Message.parse(raw)


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"\nHey gang,\nThis is a test message.\n", b"Hey gang,\nThis is a test message.\n"),
        (b"\r\nbody\r\n", b"body\r\n"),
        (b" starts folded\r\n", b" starts folded\r\n"),
        (b"no colon at all", b"no colon at all"),
        (b": empty name\n\nx", b": empty name\n\nx"),
        (b"\x00From: a@b.example\n\nx", b"\x00From: a@b.example\n\nx"),
        (b"\xef\xbb\xbfFrom: a@b.example\n\nx", b"\xef\xbb\xbfFrom: a@b.example\n\nx"),
        (b"From x@y Mon Jan  1 00:00:00 2024\n\nbody", b"body"),
    ],
)
def test_a_first_line_that_is_no_field_ends_an_empty_header_section(
    raw: bytes, body: bytes
) -> None:
    """As Postfix reads it (issue 19; ValiMail ARC cv_no_headers): the header section ends
    at the first line that is not a header field, even the first; the rest is the body."""
    message = Message.parse(raw)
    assert message.headers == ()
    assert bytes(message.body) == body
    assert message.author().field_count == 0


@pytest.mark.parametrize(
    ("from_fields", "domains", "error"),
    [
        ([b'"Doe, John" <john@Example.COM>'], ("example.com",), ""),
        ([b"a@one.example, b@two.example"], ("one.example", "two.example"), ""),
        ([b"a@one.example", b"b@one.example"], ("one.example",), ""),
        ([b"Joe (work, mostly) <joe@x.example>"], ("x.example",), ""),
        ([b"friends: a@x.example, b@y.example;"], ("x.example", "y.example"), ""),
        ([b"undisclosed-recipients:;"], (), ""),
        ([b"not an address"], (), "unparseable"),
        ([b"<a@x.example"], (), "unparseable"),
    ],
)
def test_author(from_fields: list[bytes], domains: tuple[str, ...], error: str) -> None:
    raw = b"".join(b"From: " + value + b"\r\n" for value in from_fields) + b"\r\nbody"
    author = Message.parse(raw).author()
    assert author.field_count == len(from_fields)
    assert author.domains == domains
    assert (error in author.error) if error else author.error == ""


def test_domains_are_salvaged_from_from_fields_that_do_not_parse() -> None:
    """What follows an "@", as written: DMARC still checks such domains for a failure."""
    raw = b"From: ceo@@Bank.example <ceo@bank.example\r\nFrom: a@x.example\r\n\r\n"
    author = Message.parse(raw).author()
    assert author.domains == ("x.example",)  # the field that parsed
    assert author.salvaged == ("Bank.example", "bank.example")
    assert Message.parse(b"From: a@x.example\r\n\r\n").author().salvaged == ()


def test_no_from_field() -> None:
    author = Message.parse(b"Subject: x\r\n\r\n").author()
    assert author.field_count == 0 and author.mailboxes == ()


@given(st.binary(max_size=2000))
def test_parse_never_crashes(raw: bytes) -> None:
    try:
        message = Message.parse(raw)
    except MessageParseError:
        return
    # the parse is lossless from the first field on
    if message.headers:
        start = raw.index(message.headers[0].raw)
        rebuilt = b"".join(f.raw for f in message.headers)
        assert raw[start:].startswith(rebuilt)
    assert raw.endswith(bytes(message.body))
    message.author()
    for field in message.headers:
        field.text()


@given(
    st.lists(
        st.sampled_from(
            [
                b"From",
                b"To",
                b"X",
                b":",
                b" ",
                b"\t",
                b"\r\n",
                b"\n",
                b"a@b.example",
                b'"',
                b"(",
                b")",
                b"<",
                b">",
                b",",
                b";",
            ]
        ),
        max_size=60,
    )
)
def test_header_shaped_noise_never_crashes(parts: list[bytes]) -> None:
    try:
        Message.parse(b"From: " + b"".join(parts)).author()
    except MessageParseError:
        pass


# The field pattern as it was: the reference for the field boundaries.
_REFERENCE_FIELD = re.compile(
    rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*"
)


@given(st.lists(st.sampled_from([b"X", b"To", b":", b" ", b"\t", b"\r", b"\n", b"v"]), max_size=80))
def test_fields_are_those_of_the_reference_pattern(parts: list[bytes]) -> None:
    raw = b"X: " + b"".join(parts)
    expected, pos = [], 0
    while (match := _REFERENCE_FIELD.match(raw, pos)) is not None:
        expected.append(match.group(0))
        pos = match.end()
    assert [f.raw for f in Message.parse(raw).headers] == expected


def test_a_megabyte_folded_field_costs_no_memory_per_line() -> None:
    """A 1 MiB field of 340,000 folded lines made the field pattern keep a backtracking
    state per line: 80 MB for one message, and 80 ms."""
    raw = (
        b"From: a@x.example\r\nX-A: a" + b"\r\n a" * 340_000 + b"\r\nTo: b@y.example\r\n\r\nhi\r\n"
    )
    tracemalloc.start()
    try:
        message = Message.parse(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [f.name for f in message.headers] == ["From", "X-A", "To"]
    assert len(message.headers[1].raw) == 6 + 4 * 340_000 + 2
    assert peak < 3 * len(raw)  # the fields' own bytes, and little else


@pytest.mark.parametrize(
    "value",
    [
        b'"Doe, John" <john@Example.COM>',
        b"a@one.example, b@two.example",
        b"ceo@@Bank.example <ceo@bank.example",
        b"not an address",
    ],
)
def test_author_reading_is_the_same_for_long_fields_and_repeats(value: bytes) -> None:
    """From fields of up to a line are read once and remembered (the same senders come
    back); longer ones are read each time: both readings agree, and so do repeats."""
    short = Message.parse(b"From: " + value + b"\r\n\r\n").author()
    assert Message.parse(b"From: " + value + b"\r\n\r\n").author() == short
    padded = b"From: (" + b"x" * 1000 + b") " + value + b"\r\n\r\n"
    long = Message.parse(padded).author()
    assert (long.mailboxes, long.salvaged, long.field_count) == (
        short.mailboxes,
        short.salvaged,
        short.field_count,
    )
    assert bool(long.error) == bool(short.error)
    twice = Message.parse(b"From: " + value + b"\r\nFrom: " + value + b"\r\n\r\n").author()
    assert twice.field_count == 2
    assert twice.mailboxes == short.mailboxes * 2
    assert twice.error == "; ".join([short.error] * 2 if short.error else [])
