"""Domain names normalised once: lowercase A-labels without a trailing dot.

U-labels become A-labels with IDNA 2008 and the UTS 46 mapping (what mail clients and
registries use); every label must be 1-63 octets and the name at most 253 (RFC 1035 2.3.4).
Syntax beyond that (which characters a protocol admits) is each protocol's business.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import idna

from mailauth.errors import InvalidDomainError

MAX_NAME = 253
MAX_LABEL = 63


@functools.lru_cache(maxsize=8192)
def normalize_domain(name: str) -> str:
    """``Example.COM.`` -> ``example.com``; ``bücher.example`` -> ``xn--bcher-kva.example``.

    Memoised: a pure function of its argument, called for every DNS question and domain tag.
    """
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise InvalidDomainError("empty domain name")
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidDomainError(f"invalid domain name {name!r}: {exc}") from None
    text = text.lower()
    if len(text) > MAX_NAME:
        raise InvalidDomainError(f"domain name longer than {MAX_NAME} octets")
    for label in text.split("."):
        if not label:
            raise InvalidDomainError(f"invalid domain name {name!r}: empty label")
        if len(label) > MAX_LABEL:
            raise InvalidDomainError(f"invalid domain name {name!r}: label over 63 octets")
    if "\\" in text:
        raise InvalidDomainError(f"invalid domain name {name!r}: backslash")
    return text


_LDH = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def name_problem(name: str) -> str:
    """Why ``name`` cannot be asked in DNS, or "" when it can (for names read from records:
    a record may name anything, and one bad name must not end the whole evaluation)."""
    try:
        normalize_domain(name)
    except InvalidDomainError as exc:
        return str(exc)
    return ""


def host_name(name: str) -> str:
    """:func:`normalize_domain` for names given by people (configuration, command line): also
    letters, digits and hyphens only in each label (RFC 1123 2.1), so that a typo such as a
    space or a stray comma is refused instead of silently matching nothing."""
    text = normalize_domain(name)
    if not all(_LDH.fullmatch(label) for label in text.split(".")):
        raise InvalidDomainError(f"{name!r} is not a host name")
    return text


def at_or_under(name: str, domain: str) -> bool:
    """Whether ``name`` is ``domain`` or below it (both normalised)."""
    return name == domain or name.endswith("." + domain)


def name_and_parents(name: str) -> Iterator[str]:
    """``name``, then each parent up to the top label: a.b.c, b.c, c."""
    labels = name.split(".")
    for start in range(len(labels)):
        yield ".".join(labels[start:])
