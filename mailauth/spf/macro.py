"""SPF macro expansion (RFC 7208 7.3, 7.4): parsed macro-strings in, text out.

The values of the letters are the caller's (the evaluator knows ``d``, the current domain,
and ``p``, the validated name, which needs DNS): :func:`expand` only splits, reverses, keeps
the right-hand parts, rejoins with "." and URL-escapes. Pure; no DNS.

- ``%{i}`` is the dotted quad for IPv4 and 32 dot-separated nibbles for IPv6, upper case as
  in the RFC 7208 7.4 example; ``%{c}`` the readable form (RFC 5952 for IPv6);
- transformers split on the delimiters given ("." when none), reverse, keep the right-hand
  parts, and rejoin with "." (7.3), empty parts included;
- an upper-case letter's value is URL-escaped: every character outside RFC 3986's
  unreserved set (7.3);
- a domain name longer than 253 octets loses labels on the left until it fits (7.3).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import quote

from mailauth.domains import MAX_NAME
from mailauth.spf.record import Macro, MacroString


def expand(text: MacroString, values: Mapping[str, str]) -> str:
    """``text`` with each macro replaced by its value from ``values`` (letter -> value)."""
    if not text.letters:
        return str(text.pieces[0]) if text.pieces else ""
    out = []
    for piece in text.pieces:
        if isinstance(piece, str):
            out.append(piece)
        else:
            out.append(_expand_macro(piece, values[piece.letter]))
    return "".join(out)


def expand_domain(text: MacroString, values: Mapping[str, str]) -> str:
    """A domain-spec expanded for a query: without its final dot, cut to 253 octets on the
    left (RFC 7208 7.3)."""
    name = expand(text, values)
    if name.endswith("."):
        name = name[:-1]
    if len(name) > MAX_NAME:  # the first dot from which at most 253 octets remain
        cut = name.find(".", len(name) - MAX_NAME - 1)
        name = name[cut + 1 :] if cut >= 0 else name[name.rfind(".") + 1 :]
    return name


def _expand_macro(macro: Macro, value: str) -> str:
    if macro.keep or macro.reverse or macro.delimiters:
        delimiters = macro.delimiters or "."
        if len(delimiters) == 1:
            parts = value.split(delimiters)
        else:
            parts = _pattern(delimiters).split(value)
        if macro.reverse:
            parts.reverse()
        if macro.keep:
            parts = parts[-macro.keep :]
        value = ".".join(parts)
    if macro.escape:
        value = quote(value, safe="")  # keeps only ALPHA DIGIT "-" "." "_" "~"
    return value


@functools.lru_cache(maxsize=64)
def _pattern(delimiters: str) -> re.Pattern[str]:
    return re.compile(f"[{re.escape(delimiters)}]")


@functools.lru_cache(maxsize=1024)
def ip_values(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, str]:
    """The letters that come from the client's address: i, c and v (RFC 7208 7.3).
    (Memoised: clients come back; the caller copies the dict, never changes it.)"""
    if isinstance(address, ipaddress.IPv4Address):
        return {"i": str(address), "c": str(address), "v": "in-addr"}
    nibbles = ".".join(address.exploded.replace(":", "").upper())
    return {"i": nibbles, "c": str(address), "v": "ip6"}


def reverse_name(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The name of the address's PTR records (RFC 7208 5.5, RFC 1035 3.5, RFC 3596 2.5)."""
    return address.reverse_pointer
