"""The body hash (RFC 6376 3.4.3, 3.4.4, 3.7): canonicalized once, hashed once.

A message may carry many signatures (DKIM-Signatures with different ``l=`` and algorithms,
ARC-Message-Signatures) over one body. :class:`BodyHashes` canonicalizes the body once per
canonicalization and hashes the canonical stream once per hash algorithm: the digest for an
``l=`` bound is a copy of the running hash taken as the stream passes that many octets. So
N signatures cost one pass of each canonicalization and hash in use, not N.

The body is fed in chunks of any size, in memory bounded by the longest line. Trailing empty
lines are held back (as a count) until a non-empty line follows, since both algorithms drop
them at the end of the body. Messages read from files often have bare LF line endings; both
algorithms treat a bare LF as CRLF (RFC 6376 5.3: the message is hashed in network form).
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Any

from mailauth.dkim.canon import Canonicalization, line_functions

_CRLF = b"\r\n"
_FEED_CHUNK = 1 << 20
_BLANK_CHUNK = 1 << 16  # emit held-back empty lines in slices of this many CRLFs


def _new_hash(name: str) -> Any:
    # (hashlib.sha256() directly: hashlib.new's name lookup costs more than the call.)
    return hashlib.sha256() if name == "sha256" else hashlib.new(name)


class _Digests:
    """One hash algorithm over a canonical stream, with a digest at each requested bound."""

    def __init__(self, hash_name: str) -> None:
        self.hash = _new_hash(hash_name)
        self.hashed = 0
        self.bounds: list[int] = []  # sorted l= values not yet reached
        self.at_bound: dict[int, Any] = {}  # l= value -> the hash state after that many

    def bound(self, limit: int) -> None:
        if limit not in self.bounds and limit not in self.at_bound:
            bisect.insort(self.bounds, limit)

    def feed(self, data: bytes) -> None:
        end = self.hashed + len(data)
        if self.bounds and self.bounds[0] <= end:
            view = memoryview(data)
            while self.bounds and self.bounds[0] <= end:
                limit = self.bounds.pop(0)
                cut = limit - self.hashed
                self.hash.update(view[:cut])
                view, self.hashed = view[cut:], limit
                self.at_bound[limit] = self.hash.copy()
            self.hash.update(view)
        else:
            self.hash.update(data)
        self.hashed = end

    def digest(self, limit: int | None) -> bytes:
        state = self.at_bound.get(limit) if limit is not None else None
        # A bound beyond the body: the whole body (the verifier fails such an l= anyway).
        return (state if state is not None else self.hash).digest()  # type: ignore[no-any-return]


class _Lines:
    """Splits the fed body into blocks of whole lines in network form (CRLF), shared by every
    canonicalization, and the start of a line whose end has not arrived yet."""

    def __init__(self) -> None:
        self._to_crlf = line_functions()[0]
        self._after_cr = False  # the last octet fed was a CR

    def take(self, data: bytes) -> tuple[bytes, bytes]:
        """The whole lines that ``data`` ends (b"" if none), bare LFs made CRLF; and what
        follows the last LF (no LF in it). A line is never held here: one with no line
        ending for megabytes is canonicalized as it comes (_CanonicalBody.partial)."""
        after_cr = self._after_cr
        if data:
            self._after_cr = data[-1] == 0x0D
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return b"", data
        # (Slices only where needed: a body usually arrives ending with a line ending.)
        head = data if cut == len(data) else data[:cut]
        if after_cr and head[0] == 0x0A:  # the LF of a CRLF split between two chunks
            lines = b"\n" + self._to_crlf(head[1:])
        else:
            lines = self._to_crlf(head)
        return lines, data[cut:]


class _CanonicalBody:
    """One canonicalization of the body, feeding every hash asked of it."""

    def __init__(self, method: Canonicalization) -> None:
        self.method = method
        self.length = 0  # canonical body octets seen
        self.digests: dict[str, _Digests] = {}
        self._sinks: list[_Digests] = []
        self._blank = 0  # empty lines held back
        self._open = False  # the start of a line was emitted, its end has not arrived
        self._tail = b""  # the end of that line that may still change (see partial)
        self.done = False
        self._relax = line_functions()[1]

    def want(self, hash_name: str, limit: int | None) -> None:
        digests = self.digests.get(hash_name)
        if digests is None:
            digests = self.digests[hash_name] = _Digests(hash_name)
            self._sinks.append(digests)
        if limit is not None:
            digests.bound(limit)

    def update(self, lines: bytes) -> None:
        """Whole lines in network form (the first one ends a line begun in ``partial``)."""
        if self._tail:
            lines, self._tail = self._tail + lines, b""
        if self.method is Canonicalization.RELAXED:
            # 3.4.4: WSP runs to one SP, then no WSP at the end of a line.
            lines = self._relax(lines)
        if self._open:  # the end of a line whose start is out: not an empty line
            self._open = False
            end = lines.index(b"\n") + 1
            self._emit(lines if end == len(lines) else lines[:end])
            lines = lines[end:]
            if not lines:
                return
        self._feed_lines(lines)

    def partial(self, data: bytes) -> None:
        """The start (or more) of a line whose line ending has not arrived (no LF in it).

        What the rest of the line cannot change is emitted now, so that a line of any
        length costs no memory: all but a final CR (which an LF may make a line ending)
        and, under relaxed, the WSP before it (which a line ending would remove). Under
        relaxed that WSP is kept as one SP, which is what it becomes either way.
        """
        data = self._tail + data if self._tail else data
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        if self.method is Canonicalization.RELAXED:
            end = len(data[:end].rstrip(b" \t"))
        self._tail = data[end:]
        if self.method is Canonicalization.RELAXED and len(self._tail) > 2:
            self._tail = b" \r" if self._tail.endswith(b"\r") else b" "
        if end == 0:
            return
        content = data[:end]
        if self.method is Canonicalization.RELAXED:
            content = self._relax(content)  # (no line ending in it: runs of WSP only)
        if not self._open:
            self._open = True
            self._emit_blank()
        self._emit(content)

    def finish(self, last: bytes) -> None:
        """The body ends; ``last`` is its unterminated last line (often "")."""
        if self.done:
            return
        self.done = True
        last, self._tail = self._tail + last, b""
        if self.method is Canonicalization.RELAXED:
            # 3.4.4 in its order: WSP is stripped before a CRLF, and a missing final CRLF is
            # added last, so a final unterminated line keeps one trailing SP (as dkimpy
            # does). Mail over SMTP always ends with CRLF; files may not. (``last`` holds
            # no LF, so relax_lines only collapses its WSP runs.)
            last = self._relax(last)
        if last or self._open:
            if not self._open:
                self._emit_blank()
            self._emit(last)
            self._emit(_CRLF)
        elif self.length == 0 and self.method is Canonicalization.SIMPLE:
            self._emit(_CRLF)  # 3.4.3: an empty body is one CRLF under simple

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
        for sink in self._sinks:
            sink.feed(data)


class BodyHashes:
    """The body hashes one message's signatures need, from one pass over the body.

    Say what is needed first (:meth:`want`, one call per signature), then feed the body
    (:meth:`update`), then read the results (:meth:`digest`, :meth:`length`).
    """

    def __init__(self) -> None:
        self._bodies: dict[Canonicalization, _CanonicalBody] = {}
        self._lines = _Lines()
        self._started = False

    def want(
        self, method: Canonicalization, hash_name: str = "sha256", limit: int | None = None
    ) -> None:
        """A hash of the body under ``method``, of its first ``limit`` canonical octets."""
        if self._started:
            raise ValueError("body hashes must be asked for before the body is fed")
        body = self._bodies.get(method)
        if body is None:
            body = self._bodies[method] = _CanonicalBody(method)
        body.want(hash_name, limit)

    @property
    def wanted(self) -> bool:
        return bool(self._bodies)

    def has(self, method: Canonicalization) -> bool:
        """Whether a hash under ``method`` was asked for."""
        return method in self._bodies

    def update(self, chunk: bytes | memoryview) -> None:
        """Feed the next part of the body (any split, even inside a CRLF)."""
        self._started = True
        if not self._bodies:
            return  # (nothing signed: no copy of the chunk)
        # (bytes exactly: the C line functions take no subclass)
        lines, partial = self._lines.take(chunk if type(chunk) is bytes else bytes(chunk))
        for body in self._bodies.values():
            if lines:
                body.update(lines)
            if partial:
                body.partial(partial)

    def _finish(self, method: Canonicalization) -> _CanonicalBody:
        body = self._bodies[method]
        body.finish(b"")
        return body

    def digest(
        self, method: Canonicalization, hash_name: str = "sha256", limit: int | None = None
    ) -> bytes:
        """The hash asked for with :meth:`want` (the body ends with the first call)."""
        return self._finish(method).digests[hash_name].digest(limit)

    def length(self, method: Canonicalization) -> int:
        """The length of the whole canonical body (read after :meth:`digest`)."""
        return self._finish(method).length


class BodyHasher:
    """One body hash, fed in chunks: ``limit`` is the ``l=`` value (only that many
    canonical octets are hashed, while :attr:`length` counts all of them)."""

    def __init__(
        self, method: Canonicalization, hash_name: str = "sha256", limit: int | None = None
    ) -> None:
        self.method, self.hash_name, self.limit = method, hash_name, limit
        self._hashes = BodyHashes()
        self._hashes.want(method, hash_name, limit)

    @property
    def length(self) -> int:
        return self._hashes._bodies[self.method].length

    def update(self, chunk: bytes | memoryview) -> None:
        self._hashes.update(chunk)

    def digest(self) -> bytes:
        """Finish the body and return the hash; the hasher cannot be fed afterwards."""
        return self._hashes.digest(self.method, self.hash_name, self.limit)


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
