"""Canonicalization (RFC 6376 3.4) and the streaming body hash, with dkimpy as the oracle."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import given, settings
from hypothesis import strategies as st

from mailauth.dkim.body import BodyHasher, BodyHashes, hash_body
from mailauth.dkim.canon import (
    Canonicalization,
    canonicalize_header,
    header_data,
    select_headers,
    to_crlf,
)
from mailauth.message import HeaderField, Message

SIMPLE, RELAXED = Canonicalization.SIMPLE, Canonicalization.RELAXED


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_rfc6376_3_4_6_example_headers() -> None:
    message = Message.parse(b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n")
    relaxed = b"".join(canonicalize_header(f, RELAXED) for f in message.headers)
    simple = b"".join(canonicalize_header(f, SIMPLE) for f in message.headers)
    assert relaxed == b"a:X\r\nb:Y Z\r\n"
    assert simple == b"A: X\r\nB : Y\t\r\n\tZ  \r\n"


def test_rfc6376_3_4_6_example_body() -> None:
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    assert hash_body(body, RELAXED) == _sha(b" C\r\nD E\r\n")
    assert hash_body(body, SIMPLE) == _sha(b" C \r\nD \t E\r\n")


def test_rfc6376_3_4_3_empty_body_is_one_crlf_under_simple() -> None:
    assert hash_body(b"", SIMPLE) == _sha(b"\r\n")
    assert hash_body(b"\r\n\r\n", SIMPLE) == _sha(b"\r\n")


def test_rfc6376_3_4_4_empty_body_is_empty_under_relaxed() -> None:
    assert hash_body(b"", RELAXED) == _sha(b"")
    assert hash_body(b" \r\n\t\r\n", RELAXED) == _sha(b"")


def test_a_missing_final_crlf_is_added() -> None:
    assert hash_body(b"abc", SIMPLE) == _sha(b"abc\r\n")
    assert hash_body(b"abc  ", RELAXED) == _sha(b"abc \r\n")  # CRLF added after 3.4.4


def test_bare_lf_is_hashed_as_crlf() -> None:
    assert hash_body(b"a \nb\n\n", RELAXED) == hash_body(b"a \r\nb\r\n\r\n", RELAXED)
    assert hash_body(b"a \nb\n\n", SIMPLE) == hash_body(b"a \r\nb\r\n\r\n", SIMPLE)
    field = HeaderField("Subject", b"Subject: a\n b\n")
    assert canonicalize_header(field, SIMPLE) == b"Subject: a\r\n b\r\n"


def test_lone_cr_is_content() -> None:
    assert hash_body(b"a\r\r\n\r\n", SIMPLE) == _sha(b"a\r\r\n")


def test_body_length_limit_hashes_a_prefix_and_counts_everything() -> None:
    hasher = BodyHasher(SIMPLE, limit=4)
    hasher.update(b"abcdef\r\n")
    assert hasher.digest() == _sha(b"abcd")
    assert hasher.length == 8


def test_a_million_blank_lines_then_text_is_streamed() -> None:
    hasher = BodyHasher(SIMPLE)
    for _ in range(100):
        hasher.update(b"\r\n" * 10_000)
    hasher.update(b"x\r\n")
    assert hasher.digest() == _sha(b"\r\n" * 1_000_000 + b"x\r\n")


def test_header_selection_is_bottom_up_and_missing_fields_are_null() -> None:
    message = Message.parse(b"X: 1\r\nY: a\r\nX: 2\r\n\r\n")
    chosen = select_headers(message.headers, ["x", "x", "x", "y"])
    assert [f.raw if f else None for f in chosen] == [b"X: 2\r\n", b"X: 1\r\n", None, b"Y: a\r\n"]


_LINE = st.text(alphabet="ab \t=:\r\n", max_size=12).map(str.encode)
_BODY = st.builds(
    lambda lines, final: b"\r\n".join(lines) + (b"\r\n" if final else b""),
    st.lists(_LINE, max_size=12),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(body=_BODY, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_streaming_equals_one_shot_and_dkimpy(body: bytes, cuts: list[int]) -> None:
    for method, oracle in ((SIMPLE, Simple), (RELAXED, Relaxed)):
        hasher = BodyHasher(method)
        points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
        for start, end in itertools.pairwise(points):
            hasher.update(body[start:end])
        # dkimpy canonicalizes network-form (CRLF) text; a bare LF is CRLF for both.
        expected = _sha(oracle.canonicalize_body(to_crlf(body)))
        assert hasher.digest() == expected == hash_body(body, method)


@settings(max_examples=300, deadline=None)
@given(
    body=_BODY,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    limits=st.lists(st.integers(min_value=0, max_value=120), max_size=5),
)
def test_one_pass_serves_every_canonicalization_hash_and_l_bound(
    body: bytes, cuts: list[int], limits: list[int]
) -> None:
    hashes = BodyHashes()
    wanted = [
        (method, name, limit)
        for method in (SIMPLE, RELAXED)
        for name in ("sha256", "sha1")
        for limit in (None, *limits)
    ]
    for method, name, limit in wanted:
        hashes.want(method, name, limit)
    points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    for start, end in itertools.pairwise(points):
        hashes.update(body[start:end])
    for method, name, limit in wanted:
        alone = BodyHasher(method, name, limit)
        alone.update(body)
        assert hashes.digest(method, name, limit) == alone.digest(), (method, name, limit)
        assert hashes.length(method) == alone.length


def test_body_hashes_are_asked_for_before_the_body() -> None:
    hashes = BodyHashes()
    hashes.want(SIMPLE)
    hashes.update(b"a\r\n")
    with pytest.raises(ValueError, match="before the body"):
        hashes.want(RELAXED)


_VALUE = st.lists(
    st.sampled_from(["a", "b", " ", "\t", ":", "\r\n ", "\r\n\t", "  "]), max_size=10
).map(lambda parts: "".join(parts).encode())
_FIELDS = st.lists(
    st.tuples(
        st.sampled_from([b"Subject", b"X-A", b"TO"]), st.sampled_from([b"", b" ", b"\t"]), _VALUE
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(fields=_FIELDS)
def test_header_canonicalization_matches_dkimpy(fields: list[tuple[bytes, bytes, bytes]]) -> None:
    headers = [HeaderField(n.decode(), n + ws + b":" + v + b"\r\n") for n, ws, v in fields]
    # dkimpy takes (name, value) pairs as its parser splits them (WSP before the colon kept
    # with the name, which relaxed canonicalization removes).
    canonical = [
        name + b":" + value
        for name, value in Relaxed.canonicalize_headers(
            [(n + ws, v + b"\r\n") for n, ws, v in fields]
        )
    ]
    assert b"".join(canonicalize_header(h, RELAXED) for h in headers) == b"".join(canonical)
    # h= naming the fields bottom-up selects each instance once, in that order (5.4.2).
    bottom_up = [h.name for h in reversed(headers)]
    assert header_data(headers, bottom_up, RELAXED) == b"".join(reversed(canonical))
