"""DKIM header canonicalization (RFC 6376 3.4) and the c= tag; the body hash, which
canonicalizes bodies with the same rules, is in :mod:`mailauth.dkim.body`.

Header canonicalization works on one :class:`~mailauth.message.HeaderField` at a time;
:func:`select_headers` picks the instances that ``h=`` names, from the bottom up (RFC 6376
5.4.2).

Messages read from files often have bare LF line endings; both algorithms treat a bare LF as
CRLF (RFC 6376 5.3: the message is hashed in network form), so a file and the same message
received over SMTP hash identically. ARC (RFC 8617) reuses this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from types import ModuleType

from mailauth.message import HeaderField

native: ModuleType | None
try:  # the optional C accelerator of to_crlf and relax_lines (docs/dkim.md, "Speed")
    from mailauth.dkim import _canon as native
except ImportError:  # not built (no compiler at install time): the same functions in Python
    native = None

_CRLF = b"\r\n"


def collapse_wsp(data: bytes) -> bytes:
    """Every run of WSP (SP, HTAB) becomes one SP (RFC 6376 3.4.2, 3.4.4).

    Done with ``bytes.replace`` (C speed; each pass halves the longest run) rather than a
    regular expression, which costs a Python-level call per match.
    """
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data


_EMPTY: list[HeaderField] = []  # (shared, never appended to: a name with no field yet)


class Canonicalization(StrEnum):
    """RFC 6376 3.4.1-3.4.4."""

    SIMPLE = "simple"
    RELAXED = "relaxed"


# c= words. A dict, not Canonicalization(word): the enum's constructor is a Python-level call.
_BY_NAME = {c.value: c for c in Canonicalization}


def canonicalization_pair(value: str) -> tuple[Canonicalization, Canonicalization] | None:
    """A c= value as (header, body) algorithms, or None when it names none (RFC 6376 3.5:
    "relaxed" alone is relaxed/simple; "relaxed/" is no sig-c-tag-alg ["/" sig-c-tag-alg])."""
    header, slash, body = value.lower().partition("/")
    header_canon, body_canon = _BY_NAME.get(header), _BY_NAME.get(body if slash else "simple")
    if header_canon is None or body_canon is None:
        return None
    return header_canon, body_canon


def to_crlf(data: bytes) -> bytes:
    """Bare LF becomes CRLF; CRLF and lone CR are kept."""
    if data.count(b"\n") == data.count(_CRLF):
        return data
    return data.replace(_CRLF, b"\n").replace(b"\n", _CRLF)


def relax_lines(data: bytes) -> bytes:
    """Relaxed body canonicalization of lines in network form (RFC 6376 3.4.4): every WSP run
    becomes one SP, and a run just before a CRLF goes."""
    return collapse_wsp(data).replace(b" \r\n", _CRLF)


def line_functions() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """:func:`to_crlf` and :func:`relax_lines`, from the C accelerator when it is built.

    Both give the same results (tests/test_dkim_canon.py compares them on hostile input);
    the C ones are 10-20 times faster, on bodies and header blocks alike. ``native = None``
    here (a test, a benchmark) makes header canonicalization, and the body hashes created
    afterwards, use the Python ones.
    """
    if native is not None:
        return native.to_crlf, native.relax_lines
    return to_crlf, relax_lines


def canonicalize_header(field: HeaderField, method: Canonicalization) -> bytes:
    """One header field in canonical form, ending with CRLF (RFC 6376 3.4.1, 3.4.2)."""
    return canonicalize_header_bytes(field.raw, method)


def canonicalize_header_bytes(raw: bytes, method: Canonicalization) -> bytes:
    """As :func:`canonicalize_header`, for a field's raw bytes (``name:value`` + line end)."""
    if method is Canonicalization.SIMPLE:
        # 3.4.1: no change at all (bar the network line ending).
        return line_functions()[0](raw)
    return _relaxed_block([raw])


def _relaxed_block(fields: Sequence[bytes]) -> bytes:
    """Relaxed header canonicalization (3.4.2) of several fields at once.

    Per field: the name lowercased, WSP around the colon and the final line ending removed.
    Then, over the joined fields (each now ending with one CRLF): unfold (a CRLF followed by
    WSP goes, the WSP stays), WSP runs to one SP, no SP before a CRLF. Whole-block ``bytes``
    operations run at C speed; a field boundary is always CRLF + a name, never CRLF + WSP.
    """
    parts = []
    for raw in fields:
        colon = raw.index(b":")
        value = raw[colon + 1 :]
        if value.endswith(b"\n"):
            value = value[:-2] if value.endswith(_CRLF) else value[:-1]
        parts.append(raw[:colon].rstrip(b" \t").lower() + b":" + value.lstrip(b" \t\r\n"))
    parts.append(b"")
    crlf, relax = line_functions()
    block = crlf(_CRLF.join(parts))
    if b"\r\n " in block or b"\r\n\t" in block:
        block = block.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    return relax(block)


def select_headers(
    headers: Sequence[HeaderField], names: Iterable[str]
) -> list[HeaderField | None]:
    """The field each listed name signs: the last unused instance, from the bottom (5.4.2).

    A name with no instance left selects ``None`` (a "null" field: it contributes nothing to
    the hash, which is how over-signing works).
    """
    wanted = [name.lower() for name in names]
    stacks: dict[str, list[HeaderField]] = dict.fromkeys(wanted, _EMPTY)
    for field in headers:
        name = field.name.lower()
        stack = stacks.get(name)
        if stack is _EMPTY:
            stacks[name] = [field]
        elif stack is not None:
            stack.append(field)
    return [stacks[name].pop() if stacks[name] else None for name in wanted]


def header_data(
    headers: Sequence[HeaderField], names: Iterable[str], method: Canonicalization
) -> bytes:
    """The canonical fields that ``h=`` names, in ``h=`` order (RFC 6376 3.7 step 1)."""
    raws = [field.raw for field in select_headers(headers, names) if field is not None]
    if method is Canonicalization.RELAXED:
        return _relaxed_block(raws) if raws else b""
    return line_functions()[0](b"".join(raws))


def hash_input(
    headers: Sequence[HeaderField], names: Iterable[str], own: bytes, method: Canonicalization
) -> bytes:
    """All a header hash covers (RFC 6376 3.7 steps 1 and 2, RFC 8617 5.1): the canonical
    fields that ``names`` selects, then ``own`` (the signature field with its b= value
    removed) without its final CRLF. One canonicalization pass over all of them."""
    raws = [field.raw for field in select_headers(headers, names) if field is not None]
    return raw_hash_input(raws, own, method)


def raw_hash_input(raws: Sequence[bytes], own: bytes, method: Canonicalization) -> bytes:
    """:func:`hash_input` for fields already chosen, as raw bytes."""
    if method is Canonicalization.RELAXED:
        return _relaxed_block([*raws, own])[:-2]
    data = line_functions()[0](b"".join([*raws, own]))
    return data[:-2] if data.endswith(_CRLF) else data
