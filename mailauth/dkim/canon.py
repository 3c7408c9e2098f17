"""DKIM canonicalization (RFC 6376 3.4) and the streaming body hash (RFC 6376 3.7).

Header canonicalization works on one :class:`~mailauth.message.HeaderField` at a time;
:func:`select_headers` picks the instances that ``h=`` names, from the bottom up (RFC 6376
5.4.2). :class:`BodyHasher` canonicalizes and hashes a body fed in chunks of any size, in
memory bounded by the longest line, and honours a body length limit (``l=``).

Messages read from files often have bare LF line endings; both algorithms treat a bare LF as
CRLF (RFC 6376 5.3: the message is hashed in network form), so a file and the same message
received over SMTP hash identically. ARC (RFC 8617) reuses this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from enum import StrEnum

from mailauth.message import HeaderField

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
_FEED_CHUNK = 1 << 20
_BLANK_CHUNK = 1 << 16  # emit held-back empty lines in slices of this many CRLFs


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


def canonicalize_header(field: HeaderField, method: Canonicalization) -> bytes:
    """One header field in canonical form, ending with CRLF (RFC 6376 3.4.1, 3.4.2)."""
    return canonicalize_header_bytes(field.raw, method)


def canonicalize_header_bytes(raw: bytes, method: Canonicalization) -> bytes:
    """As :func:`canonicalize_header`, for a field's raw bytes (``name:value`` + line end)."""
    if method is Canonicalization.SIMPLE:
        # 3.4.1: no change at all (bar the network line ending).
        return to_crlf(raw)
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
    block = to_crlf(_CRLF.join(parts))
    if b"\r\n " in block or b"\r\n\t" in block:
        block = block.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    return collapse_wsp(block).replace(b" \r\n", _CRLF)


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
    return b"".join(to_crlf(raw) for raw in raws)


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
    data = b"".join(to_crlf(raw) for raw in raws) + to_crlf(own)
    return data[:-2] if data.endswith(_CRLF) else data


def hash_body(
    body: bytes | memoryview,
    method: Canonicalization,
    hash_name: str = "sha256",
    limit: int | None = None,
) -> bytes:
    """The body hash of a whole body, fed in 1 MiB chunks (no copy of the body)."""
    view = memoryview(body)
    hasher = BodyHasher(method, hash_name, limit)
    for start in range(0, len(view), _FEED_CHUNK):
        hasher.update(view[start : start + _FEED_CHUNK])
    return hasher.digest()


class BodyHasher:
    """Canonicalize and hash a body incrementally (RFC 6376 3.4.3, 3.4.4, 3.7).

    Trailing empty lines are held back (as a count) until a non-empty line follows, since
    both algorithms drop them at the end of the body. ``limit`` is the ``l=`` value: only that
    many canonical octets are hashed, while :attr:`length` keeps counting all of them.
    """

    def __init__(
        self, method: Canonicalization, hash_name: str = "sha256", limit: int | None = None
    ) -> None:
        self.method = method
        self.limit = limit
        self.length = 0  # canonical body octets seen
        # (hashlib.sha256() directly: hashlib.new's name lookup costs more than the call.)
        self._hash = hashlib.sha256() if hash_name == "sha256" else hashlib.new(hash_name)
        self._hashed = 0
        self._pending: list[bytes] = []  # a line without its line ending yet
        self._blank = 0  # empty lines held back
        self._done = False

    def update(self, chunk: bytes | memoryview) -> None:
        """Feed the next part of the body (any split, even inside a CRLF)."""
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if data:
                self._pending.append(data)
            return
        # (Slices only where needed: a body usually arrives ending with a line ending.)
        lines = data if cut == len(data) else data[:cut]
        if self._pending:
            self._pending.append(lines)
            lines = b"".join(self._pending)
            self._pending = []
        if cut < len(data):
            self._pending.append(data[cut:])
        self._feed_lines(self._canonical_lines(to_crlf(lines)))

    def digest(self) -> bytes:
        """Finish the body and return the hash; the hasher cannot be fed afterwards."""
        if not self._done:
            self._done = True
            last = b"".join(self._pending)
            self._pending = []
            if self.method is Canonicalization.RELAXED:
                # 3.4.4 in its order: WSP is stripped before a CRLF, and a missing final CRLF
                # is added last, so a final unterminated line keeps one trailing SP (as
                # dkimpy does). Mail over SMTP always ends with CRLF; files may not.
                last = collapse_wsp(last)
            if last:
                self._emit_blank()
                self._emit(last)
                self._emit(_CRLF)
            elif self.length == 0 and self.method is Canonicalization.SIMPLE:
                self._emit(_CRLF)  # 3.4.3: an empty body is one CRLF under simple
        return self._hash.digest()

    def _canonical_lines(self, lines: bytes) -> bytes:
        if self.method is Canonicalization.RELAXED:
            # 3.4.4: WSP runs to one SP, then no WSP at the end of a line.
            lines = collapse_wsp(lines).replace(b" \r\n", _CRLF)
        return lines

    def _feed_lines(self, lines: bytes) -> None:
        """``lines`` ends with CRLF; split off its trailing empty lines."""
        size = len(lines)
        if size > 2 and not lines.endswith(b"\r\n\r\n"):
            content = size - 2  # the usual case: the last line is not empty
        else:
            content = len(lines.rstrip(b"\r\n"))
            # After to_crlf every LF follows a CR, so the stripped tail is CRLF pairs with
            # perhaps lone CRs among them; the last lone CR ends the content.
            lone_cr = lines.rfind(b"\r\r", content)
            if lone_cr >= 0:
                content = lone_cr + 1
        pairs = (size - content) // 2
        if content == 0:
            self._blank += pairs
            return
        self._emit_blank()
        self._emit(lines if content + 2 == size else lines[: content + 2])
        self._blank = pairs - 1

    def _emit_blank(self) -> None:
        while self._blank:
            count = min(self._blank, _BLANK_CHUNK)
            self._emit(_CRLF * count)
            self._blank -= count

    def _emit(self, data: bytes) -> None:
        self.length += len(data)
        if self.limit is None:
            self._hash.update(data)
            return
        room = self.limit - self._hashed
        if room > 0:
            part = data[:room]
            self._hash.update(part)
            self._hashed += len(part)
