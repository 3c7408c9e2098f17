"""The message as it arrived: header fields and body as raw bytes (RFC 5322 2.1, 2.2).

DKIM and ARC hash the exact bytes that arrived, so nothing here rewrites a byte: each
:class:`HeaderField` keeps its raw bytes, folding and line endings included, and the body is
the slice of the input after the blank line. Line endings may be CRLF or bare LF (files on
disk); 8-bit and UTF-8 header bytes are kept as they are (RFC 6532).

The header section ends at the first empty line, or at the first line that is not a header
field (no colon, an empty name or one with characters outside RFC 5322 ftext, a NUL or a
byte-order mark before the name, a continuation line with no field to continue): that line
starts the body, as Postfix treats it. So the header section may be empty (the first line
already ends it): such a message is evaluated as it is (no From, no signatures), not refused.
A leading mbox ``From `` line is skipped. Whitespace before the colon (obsolete syntax, RFC
5322 4.5) is accepted. A message without a blank line has an empty body. Only input that is
not a message at all is refused: empty (or only white space), or binary data (control octets
that no text holds, at the start of input with no header field).

Out of scope: MIME structure and RFC 2047 decoding; mailauth never needs them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

from mailauth.address import AddressError, Mailbox, parse_address_list, salvage_domains
from mailauth.errors import MessageParseError

# One header field: a name of RFC 5322 ftext (%d33-57 / %d59-126), optional WSP (obsolete
# syntax, 4.5), the colon, the rest of the line, and every continuation line (2.2.3). The
# runs are possessive: nothing is ever given back, so the engine keeps no backtracking state
# per line (a 1 MiB field of 340,000 folded lines took 80 MB and 160 ms; now 2 MB, 35 ms).
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*+(?:\n[ \t][^\n]*+)*+(?:\n|\Z)")


class HeaderField(NamedTuple):
    """One header field: its name as written and its exact bytes (with line endings).

    A named tuple rather than a frozen dataclass: messages carry dozens of fields and every
    check walks them, so construction cost matters (about 5x less).
    """

    name: str
    raw: bytes

    @property
    def lname(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> bytes:
        """The raw bytes after the colon, final line ending removed, folding kept."""
        value = self.raw[self.raw.index(b":") + 1 :]
        if value.endswith(b"\r\n"):
            return value[:-2]
        if value.endswith(b"\n"):
            return value[:-1]
        return value

    def text(self) -> str:
        """The value unfolded (RFC 5322 2.2.3), decoded as UTF-8, surrounding space removed."""
        unfolded = self.value.replace(b"\r\n", b"").replace(b"\n", b"")
        return unfolded.decode("utf-8", errors="replace").strip()


_new_tuple = tuple.__new__
# Octets that text does not hold: C0 controls but TAB, LF, FF and CR, and DEL.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_BINARY_SPAN = 4096


def _is_binary(raw: bytes, start: int) -> bool:
    """Input with no header field that is binary data rather than a message with an empty
    header section: two control octets in its first line, or more than eight in its first
    4 KiB (a NUL or two before a field name, as a broken client may send, is still mail)."""
    span = raw[start : start + _BINARY_SPAN]
    eol = span.find(b"\n")
    first_line = span if eol < 0 else span[:eol]
    return len(_CONTROL.findall(first_line)) >= 2 or len(_CONTROL.findall(span)) > 8


@dataclass(frozen=True, slots=True)
class Author:
    """What the RFC5322.From fields say (RFC 9989 "Extract Author Domain" reads this).

    ``error`` is "" when every From field parsed; otherwise it says what went wrong, and
    ``salvaged`` holds the domains that follow an "@" in the fields that did not parse (as
    written, not validated): mail readers show such fields anyway, so a spoofed domain in
    one must still count.
    """

    field_count: int
    mailboxes: tuple[Mailbox, ...]
    error: str = ""
    salvaged: tuple[str, ...] = ()

    @property
    def domains(self) -> tuple[str, ...]:
        """Distinct author domains, in order of appearance ("" for domain literals)."""
        return tuple(dict.fromkeys(m.domain for m in self.mailboxes))


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message; ``raw`` is the input itself, never modified."""

    raw: bytes
    headers: tuple[HeaderField, ...]
    body_offset: int

    @classmethod
    def parse(cls, raw: bytes) -> Message:
        """Split ``raw`` into header fields and body; raises :class:`MessageParseError`."""
        if not raw or raw.isspace():  # (no strip(): it would copy a large message)
            raise MessageParseError("empty message")
        pos, size = 0, len(raw)
        if raw.startswith(b"From "):  # mbox separator line, not a header field
            eol = raw.find(b"\n")
            pos = size if eol < 0 else eol + 1
        headers: list[HeaderField] = []
        field_at = _FIELD.match
        while (match := field_at(raw, pos)) is not None:  # one field, folding included
            # (tuple.__new__ skips the named tuple's Python-level __new__: 40% of the parse)
            fields = (match.group(1).decode("ascii"), match.group(0))
            headers.append(_new_tuple(HeaderField, fields))
            pos = match.end()
        body_offset = size
        if raw.startswith(b"\r\n", pos):
            body_offset = pos + 2
        elif raw.startswith(b"\n", pos):
            body_offset = pos + 1
        elif pos < size:
            body_offset = pos  # a line that is not a header field starts the body
        if not headers and _is_binary(raw, pos):
            raise MessageParseError("not a message: binary data (control octets at its start)")
        return cls(raw, tuple(headers), body_offset)

    @property
    def line_ending(self) -> bytes:
        """CRLF or LF, as the message writes them (its first line's): what fields added on
        top of it end with."""
        first = self.headers[0].raw if self.headers else self.raw[: self.raw.find(b"\n") + 1]
        return b"\n" if first.endswith(b"\n") and not first.endswith(b"\r\n") else b"\r\n"

    @property
    def body(self) -> memoryview:
        """The body bytes, without a copy."""
        return memoryview(self.raw)[self.body_offset :]

    def get_all(self, name: str) -> tuple[HeaderField, ...]:
        """Every field of that name (case-insensitive), top to bottom."""
        lname = name.lower()
        return tuple(f for f in self.headers if f[0].lower() == lname)  # (f[0]: f.name)

    def get(self, name: str) -> HeaderField | None:
        """The topmost field of that name, or None."""
        lname = name.lower()
        return next((f for f in self.headers if f[0].lower() == lname), None)

    def author(self) -> Author:
        """The RFC5322.From mailboxes; several fields or addresses are reported, not hidden."""
        fields = self.get_all("From")
        if len(fields) == 1:  # (the usual case: the memoised reading as it is)
            mailboxes, error, salvaged = _read_from_field(fields[0].raw)
            return Author(1, mailboxes, error, tuple(dict.fromkeys(salvaged)))
        found: list[Mailbox] = []
        errors: list[str] = []
        domains: list[str] = []
        for field in fields:
            mailboxes, error, salvaged = _read_from_field(field.raw)
            found.extend(mailboxes)
            if error:
                errors.append(error)
            domains.extend(salvaged)
        return Author(len(fields), tuple(found), "; ".join(errors), tuple(dict.fromkeys(domains)))


_MEMO_FIELD_SIZE = 998  # From fields up to a line's length (RFC 5322 2.1.1) are memoised


def _read_from_field(raw: bytes) -> tuple[tuple[Mailbox, ...], str, tuple[str, ...]]:
    """One From field (its raw bytes): the mailboxes, or the error and the domains after an
    "@" (Author.salvaged). Fields of up to a line are memoised: the same senders come back,
    and parsing an address list costs more than the DMARC evaluation it feeds."""
    if len(raw) <= _MEMO_FIELD_SIZE:
        return _read_from_field_memo(raw)
    return _parse_from_field(raw)


def _parse_from_field(raw: bytes) -> tuple[tuple[Mailbox, ...], str, tuple[str, ...]]:
    text = _new_tuple(HeaderField, ("From", raw)).text()
    try:
        return tuple(parse_address_list(text)), "", ()
    except AddressError as exc:
        return (), f"unparseable From field: {exc}", tuple(salvage_domains(text))


_read_from_field_memo = functools.lru_cache(maxsize=4096)(_parse_from_field)
