"""Canonicalization (RFC 6376 3.4) and the streaming body hash, with dkimpy as the oracle."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import given, settings
from hypothesis import strategies as st

from mailauth.dkim import canon
from mailauth.dkim.body import BodyHasher, BodyHashes, hash_body
from mailauth.dkim.canon import (
    Canonicalization,
    canonicalize_header,
    header_data,
    relax_lines,
    select_headers,
    to_crlf,
)
from mailauth.message import HeaderField, Message

SIMPLE, RELAXED = Canonicalization.SIMPLE, Canonicalization.RELAXED
ROOT = Path(__file__).resolve().parent.parent
# Without a C compiler, MAILAUTH_TEST_PURE_PYTHON=1 runs the suite on the Python functions
# alone (the C tests are skipped); CI's machine has one, and there a missing accelerator
# fails the tests below.
_PURE_ONLY = os.environ.get("MAILAUTH_TEST_PURE_PYTHON") == "1"


def _native() -> ModuleType:
    """The C accelerator (mailauth/dkim/_canon.c), which the tests compare with the Python."""
    if canon.native is None:
        if _PURE_ONLY:
            pytest.skip("MAILAUTH_TEST_PURE_PYTHON=1: the C accelerator is not tested")
        pytest.fail("the C accelerator mailauth.dkim._canon is not built (see setup.py)")
    return canon.native


@contextlib.contextmanager
def _python_lines() -> Iterator[None]:
    """Body hashes made inside use the Python line functions, as without the accelerator."""
    saved, canon.native = canon.native, None
    try:
        yield
    finally:
        canon.native = saved


def _both_lines() -> list[contextlib.AbstractContextManager[None]]:
    """Contexts for the C line functions (when built) and the Python ones."""
    if canon.native is None:  # (test_the_c_accelerator_is_built fails, unless allowed)
        return [_python_lines()]
    return [contextlib.nullcontext(), _python_lines()]


def test_the_c_accelerator_is_built() -> None:
    _native()


def test_without_the_c_accelerator_the_python_functions_are_used() -> None:
    # As on a machine without a compiler: the extension module cannot be imported.
    code = (
        "import sys\n"
        "sys.modules['mailauth.dkim._canon'] = None\n"
        "from mailauth.dkim import canon\n"
        "from mailauth.dkim.body import hash_body\n"
        "assert canon.native is None\n"
        "assert canon.line_functions() == (canon.to_crlf, canon.relax_lines)\n"
        "print(hash_body(b' a \\t b \\n\\n', canon.Canonicalization.RELAXED).hex())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == _sha(b" a b\r\n").hex()


@pytest.fixture(params=["c", "python"])
def lines_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Runs a body test with the C accelerator's line functions, then with the Python ones."""
    if request.param == "python":
        monkeypatch.setattr(canon, "native", None)
    else:
        _native()
    yield request.param


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_rfc6376_3_4_6_example_headers(lines_impl: str) -> None:
    message = Message.parse(b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n")
    relaxed = b"".join(canonicalize_header(f, RELAXED) for f in message.headers)
    simple = b"".join(canonicalize_header(f, SIMPLE) for f in message.headers)
    assert relaxed == b"a:X\r\nb:Y Z\r\n"
    assert simple == b"A: X\r\nB : Y\t\r\n\tZ  \r\n"


def test_rfc6376_3_4_6_example_body(lines_impl: str) -> None:
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    assert hash_body(body, RELAXED) == _sha(b" C\r\nD E\r\n")
    assert hash_body(body, SIMPLE) == _sha(b" C \r\nD \t E\r\n")


def test_rfc6376_3_4_3_empty_body_is_one_crlf_under_simple(lines_impl: str) -> None:
    assert hash_body(b"", SIMPLE) == _sha(b"\r\n")
    assert hash_body(b"\r\n\r\n", SIMPLE) == _sha(b"\r\n")


def test_rfc6376_3_4_4_empty_body_is_empty_under_relaxed(lines_impl: str) -> None:
    assert hash_body(b"", RELAXED) == _sha(b"")
    assert hash_body(b" \r\n\t\r\n", RELAXED) == _sha(b"")


def test_a_missing_final_crlf_is_added(lines_impl: str) -> None:
    assert hash_body(b"abc", SIMPLE) == _sha(b"abc\r\n")
    assert hash_body(b"abc  ", RELAXED) == _sha(b"abc \r\n")  # CRLF added after 3.4.4


def test_bare_lf_is_hashed_as_crlf(lines_impl: str) -> None:
    assert hash_body(b"a \nb\n\n", RELAXED) == hash_body(b"a \r\nb\r\n\r\n", RELAXED)
    assert hash_body(b"a \nb\n\n", SIMPLE) == hash_body(b"a \r\nb\r\n\r\n", SIMPLE)
    field = HeaderField("Subject", b"Subject: a\n b\n")
    assert canonicalize_header(field, SIMPLE) == b"Subject: a\r\n b\r\n"


def test_lone_cr_is_content(lines_impl: str) -> None:
    assert hash_body(b"a\r\r\n\r\n", SIMPLE) == _sha(b"a\r\r\n")


def test_body_length_limit_hashes_a_prefix_and_counts_everything() -> None:
    hasher = BodyHasher(SIMPLE, limit=4)
    hasher.update(b"abcdef\r\n")
    assert hasher.digest() == _sha(b"abcd")
    assert hasher.length == 8


def test_a_million_blank_lines_then_text_is_streamed(lines_impl: str) -> None:
    hasher = BodyHasher(SIMPLE)
    for _ in range(100):
        hasher.update(b"\r\n" * 10_000)
    hasher.update(b"x\r\n")
    assert hasher.digest() == _sha(b"\r\n" * 1_000_000 + b"x\r\n")


@pytest.mark.parametrize("unit", [b"ab \t", b"a\r", b" \r", b"x" * 7 + b"\t" * 9])
def test_a_line_without_line_ending_is_canonicalized_as_it_comes(
    lines_impl: str, unit: bytes
) -> None:
    """A body that is one 8 MB line (no LF for megabytes) was held whole until its end:
    memory of the body's size in a streaming milter. Now only what the rest of the line
    can still change is held (a final CR, and under relaxed the WSP before it, as one SP)."""
    import tracemalloc

    line = unit * (8_000_000 // len(unit))
    body = b"\r\n\r\n" + line + b"  \r\nend \r\n" + line
    for method, reference in ((SIMPLE, Simple), (RELAXED, Relaxed)):
        hasher = BodyHasher(method)
        tracemalloc.start()
        try:
            for start in range(0, len(body), 65_536):
                hasher.update(body[start : start + 65_536])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000  # (a chunk and its canonical copies: not the line)
        assert hasher.digest() == _sha(reference.canonicalize_body(body))


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
    _check_body(body, cuts)


def _check_body(body: bytes, cuts: list[int]) -> None:
    """The body hashes, fed at these cuts, equal dkimpy's, with each implementation."""
    for method, oracle in ((SIMPLE, Simple), (RELAXED, Relaxed)):
        # dkimpy canonicalizes network-form (CRLF) text; a bare LF is CRLF for both.
        expected = _sha(oracle.canonicalize_body(to_crlf(body)))
        assert _hashes_fed(body, cuts, method) == [expected] * len(_both_lines()), method


def _hashes_fed(body: bytes, cuts: list[int], method: Canonicalization) -> list[bytes]:
    """The body hash fed at these cuts, with each implementation (C first)."""
    points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    digests = []
    for lines in _both_lines():
        with lines:
            hasher = BodyHasher(method)
            for start, end in itertools.pairwise(points):
                hasher.update(body[start:end])
            digest = hasher.digest()
            assert hash_body(body, method) == digest
            digests.append(digest)
    return digests


# Hostile bodies for the C accelerator: runs of the octets canonicalization looks at (SP,
# HTAB, CR, LF), NUL, high octets, other whitespace Python knows (VT, FF, NEL), at any
# offset from the 64-octet blocks the C code tests at once.
_OCTETS = [b" ", b"\t", b"\r", b"\n", b"\r\n", b" \r\n", b"\t\r\n", b"\x00", b"\xff", b"\xa0"]
_OCTETS += [b"\x0b", b"\x0c", b"\x85", b"a", b"bc", b"  ", b" \t ", b"\r\r\n", b"\n\n", b"\r \n"]
_NASTY = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(_OCTETS), max_size=150).map(b"".join),
    st.builds(
        lambda pad, tail, more: b"x" * pad + tail + b"y" * more + tail,
        st.integers(min_value=0, max_value=200),
        st.lists(st.sampled_from(_OCTETS), max_size=8).map(b"".join),
        st.integers(min_value=0, max_value=130),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(data=_NASTY)
def test_c_line_functions_equal_the_python_ones(data: bytes) -> None:
    native = _native()
    assert native.to_crlf(data) == to_crlf(data)
    assert native.relax_lines(data) == relax_lines(data)
    assert native.relax_lines(native.to_crlf(data)) == relax_lines(to_crlf(data))


@settings(max_examples=1500, deadline=None)
@given(body=_NASTY, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_hostile_bodies_hash_alike_in_c_python_and_dkimpy(body: bytes, cuts: list[int]) -> None:
    _check_body(body, cuts)


@pytest.mark.parametrize(
    "unit",
    [b" ", b"\t", b" \t", b"a ", b"ab  ", b" \r", b"\r", b"\n", b" \n", b"\r \n", b"\x00 \t"],
)
def test_huge_lines_canonicalize_alike_in_c_python_and_dkimpy(unit: bytes) -> None:
    native = _native()
    line = unit * ((3 << 20) // len(unit))  # about 3 MiB of one pattern
    for data in (line, line + b"\r\n", b"z" + line + b" \r\n" + line):
        assert native.to_crlf(data) == to_crlf(data)
        assert native.relax_lines(data) == relax_lines(data)
    body = b"z" + line + b" \r\nq" + line
    for method in (SIMPLE, RELAXED):
        c, python = _hashes_fed(body, [1, 65536, 70000, 3 << 20], method)
        assert c == python
    # dkimpy's regular expressions take quadratic time on long WSP runs: 8 KiB for it.
    line = line[: 8 << 10]
    _check_body(b"z" + line + b" \r\nq" + line, [1, 4096, 5000])


def test_c_line_functions_return_unchanged_input_itself_and_take_only_bytes() -> None:
    native = _native()
    text = b"a b\r\nc\r\n" * 100
    assert native.to_crlf(text) is text
    assert native.relax_lines(text) is text
    for bad in ("a b\r\n", bytearray(b"a\n"), memoryview(b"a\n"), None):
        with pytest.raises(TypeError, match="takes bytes"):
            native.to_crlf(bad)
        with pytest.raises(TypeError, match="takes bytes"):
            native.relax_lines(bad)


@settings(max_examples=300, deadline=None)
@given(
    body=_BODY,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    limits=st.lists(st.integers(min_value=0, max_value=120), max_size=5),
)
def test_one_pass_serves_every_canonicalization_hash_and_l_bound(
    body: bytes, cuts: list[int], limits: list[int]
) -> None:
    for lines in _both_lines():
        with lines:
            _check_one_pass(body, cuts, limits)


def _check_one_pass(body: bytes, cuts: list[int], limits: list[int]) -> None:
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
    for lines in _both_lines():
        with lines:
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


def test_a_bytes_subclass_is_hashed_as_its_bytes() -> None:
    """The C line functions take bytes exactly; a subclass (from some caller's library) is
    copied to bytes first, as the pure-Python functions would have read it."""

    class Chunk(bytes):
        pass

    hasher = BodyHasher(RELAXED)
    hasher.update(Chunk(b"a  b \r\nc\r\n"))
    assert hasher.digest() == _sha(b"a b\r\nc\r\n")
