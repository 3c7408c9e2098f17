"""DKIM tag=value lists (RFC 6376 3.2), shared by signatures, key records and ARC.

A tag list is parsed from the raw bytes of a field value or TXT record; each tag keeps the
offsets of its value so that the verifier can blank the ``b=`` value in the exact bytes it
hashes (RFC 6376 3.7). Pure parsing: no DNS, no crypto.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

from mailauth.errors import RecordSyntaxError

# RFC 6376 3.2: VALCHAR = %x21-3A / %x3C-7E, separated by FWS (WSP, CR, LF). Octets above
# 0x7E are accepted: RFC 8616 allows UTF-8 in i= for internationalised addresses. Every
# other octet below 0x20, and DEL, is refused: deleting all allowed octets leaves nothing.
_ALLOWED_OCTETS = bytes(o for o in range(256) if (o >= 0x20 and o != 0x7F) or o in b"\t\r\n")
_FWS = b" \t\r\n"


class TagSyntaxError(RecordSyntaxError):
    """A tag list that does not follow RFC 6376 3.2."""


class Tag(NamedTuple):
    """One tag: its value with surrounding whitespace removed, and where the raw value lies.

    ``start``/``end`` delimit everything between the ``=`` and the next ``;`` (or the end),
    whitespace included, in the bytes that were parsed.
    """

    value: str
    start: int
    end: int


_new_tuple = tuple.__new__


def _is_tag_name(name: bytes) -> bool:
    # RFC 6376 3.2: tag-name = ALPHA *ALNUMPUNC; ALNUMPUNC = ALPHA / DIGIT / "_"
    # (bytes.isalpha/isalnum are ASCII-only)
    return name[:1].isalpha() and (len(name) == 1 or name.replace(b"_", b"a").isalnum())


def parse_tag_list(data: bytes) -> dict[str, Tag]:
    """Parse a tag list; names are case-sensitive (RFC 6376 3.2). Raises TagSyntaxError.

    A trailing ``;`` is allowed; an empty tag-spec elsewhere (``;;``) is not, and neither is a
    duplicate name: either makes the whole list invalid (RFC 6376 3.2). Control characters
    are refused anywhere in the list.
    """
    if data.translate(None, _ALLOWED_OCTETS):
        raise TagSyntaxError("control character in tag list")
    tags: dict[str, Tag] = {}
    start = 0
    specs = data.split(b";")
    last = len(specs) - 1
    for index, spec in enumerate(specs):
        eq = spec.find(b"=")
        name = spec[:eq].strip(_FWS) if eq > 0 else b""
        if not (name.isalpha() or _is_tag_name(name)):  # (letters only: most names, no call)
            if index == last and not spec.strip(_FWS):
                continue  # tag-list = tag-spec *( ";" tag-spec ) [ ";" ]
            shown = spec.strip(_FWS)[:40].decode("ascii", "replace")
            raise TagSyntaxError(f"malformed tag {shown!r}" if shown else "empty tag-spec")
        try:
            value = spec[eq + 1 :].strip(_FWS).decode("utf-8")
        except UnicodeDecodeError:
            raise TagSyntaxError(f"value of {name.decode()}= is not UTF-8") from None
        key = name.decode("ascii")
        if key in tags:
            raise TagSyntaxError(f"duplicate tag {key}=")
        end = start + len(spec)
        # (tuple.__new__ skips the named tuple's Python-level __new__: a third of the cost
        # of parsing a signature's tags.)
        tags[key] = _new_tuple(Tag, (value, start + eq + 1, end))
        start = end + 1
    return tags


def remove_whitespace(value: str) -> str:
    """The value with all FWS removed (for b=, bh=, p=, whose base64 may be folded)."""
    return "".join(value.split())


def decode_base64(value: str, tag: str) -> bytes:
    """Strict base64 after removing FWS (RFC 6376 2.4); raises TagSyntaxError."""
    compact = remove_whitespace(value)
    try:
        # (base64.b64decode(validate=True) is this call behind a Python-level wrapper.)
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError):
        raise TagSyntaxError(f"{tag}= is not valid base64") from None


def split_list(value: str, separator: str = ":") -> tuple[str, ...]:
    """A colon-separated list (h=, q=, s=, t=, key h=) with FWS around items removed."""
    return tuple(item.strip(" \t\r\n") for item in value.split(separator))
