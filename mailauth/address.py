"""RFC 5322 address lists (section 3.4), as the From field carries them.

Handles display names with quoted commas, nested comments, angle addresses with obsolete
routes (RFC 5322 4.4), groups (``undisclosed: a@x, b@y;``), empty list members (obs-mbox-list)
and UTF-8 (RFC 6532). A domain holding a control character (RFC 5322 atext has none) is
invalid. Parsing is linear in the input and never recurses on it.
Out of scope: decoding RFC 2047 encoded words in display names (DMARC needs none of it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError, MailauthError

_SPECIALS = frozenset('()<>[]:;@\\,."')
_WSP = frozenset(" \t\r\n")
# C0 controls, DEL and C1 controls: not atext (RFC 5322 3.2.3), in no domain name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What follows an "@" up to a character no domain has (whitespace or a special): how a
# reader finds the domain in a From field that is not RFC 5322.
_AFTER_AT = re.compile(r"@+([^\s<>@,;:\"()\[\]\\]+)")


class AddressError(MailauthError, ValueError):
    """An address list that does not follow RFC 5322 3.4."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox. ``domain`` is the normalised A-label form, "" for a domain literal."""

    display_name: str
    local_part: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"


def skip_comment(text: str, start: int) -> int:
    """The index just after the comment opening at ``text[start]``, or -1 if unterminated.

    Comments nest and may hold quoted-pairs (RFC 5322 3.2.2); linear, no recursion.
    """
    depth, i, n = 1, start + 1, len(text)
    while i < n and depth:
        if text[i] == "\\":
            i += 1
        elif text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
        i += 1
    return -1 if depth else i


Token = tuple[str, str]  # (kind, text); kind: "atom", "quoted", "literal" or a special


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _WSP:
            i += 1
        elif ch == "(":
            i = skip_comment(text, i)
            if i < 0:
                raise AddressError("unterminated comment")
        elif ch == '"':
            i += 1
            start, chars = i, []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                raise AddressError(f"unterminated quoted string at offset {start - 1}")
            tokens.append(("quoted", "".join(chars)))
            i += 1
        elif ch == "[":
            end = text.find("]", i)
            if end < 0:
                raise AddressError("unterminated domain literal")
            tokens.append(("literal", text[i : end + 1]))
            i = end + 1
        elif ch in _SPECIALS:
            tokens.append((ch, ch))
            i += 1
        else:
            start = i
            while i < n and text[i] not in _SPECIALS and text[i] not in _WSP:
                i += 1
            tokens.append(("atom", text[start:i]))
    return tokens


def _dotted(tokens: list[Token], words: tuple[str, ...]) -> bool:
    """word *("." word): dot-atom, or obs-local-part / obs-domain with CFWS removed."""
    if len(tokens) % 2 == 0:
        return False
    return all((kind in words) if k % 2 == 0 else kind == "." for k, (kind, _) in enumerate(tokens))


def _addr_spec(tokens: list[Token], display_name: str) -> Mailbox:
    at = max((k for k, (kind, _) in enumerate(tokens) if kind == "@"), default=-1)
    if at <= 0 or at == len(tokens) - 1:
        shown = "".join(t for _, t in tokens)
        raise AddressError(f"not an address: {shown!r}")
    local_tokens, domain_tokens = tokens[:at], tokens[at + 1 :]
    if not _dotted(local_tokens, ("atom", "quoted")):
        raise AddressError("invalid local part")
    local = "".join(f'"{t}"' if kind == "quoted" else t for kind, t in local_tokens)
    if len(domain_tokens) == 1 and domain_tokens[0][0] == "literal":
        return Mailbox(display_name, local, "")
    if not _dotted(domain_tokens, ("atom",)):
        raise AddressError("invalid domain")
    raw_domain = "".join(t for _, t in domain_tokens)
    if _CONTROL.search(raw_domain):
        raise AddressError("control character in the domain")
    try:
        domain = normalize_domain(raw_domain)
    except InvalidDomainError as exc:
        raise AddressError(str(exc)) from None
    return Mailbox(display_name, local, domain)


def _mailbox(tokens: list[Token]) -> Mailbox:
    kinds = [kind for kind, _ in tokens]
    if "<" not in kinds:
        return _addr_spec(tokens, "")
    start = kinds.index("<")
    if ">" not in kinds[start:]:
        raise AddressError("unterminated angle address")
    end = kinds.index(">", start)
    if any(k not in ("atom", "quoted", ".") for k in kinds[:start]) or any(kinds[end + 1 :]):
        raise AddressError("text around an angle address")
    display = " ".join(t for _, t in tokens[:start])
    inner = tokens[start + 1 : end]
    if inner and inner[0][0] == "@" and ":" in [k for k, _ in inner]:  # obs-route
        inner = inner[[k for k, _ in inner].index(":") + 1 :]
    return _addr_spec(inner, display)


def parse_address_list(text: str) -> list[Mailbox]:
    """All mailboxes of an address list, groups flattened; raises :class:`AddressError`."""
    mailboxes: list[Mailbox] = []
    current: list[Token] = []
    in_group = in_angle = False
    for token in _tokenize(text):
        kind = token[0]
        if kind == "<":
            in_angle = True
        elif kind == ">":
            in_angle = False
        if in_angle:
            current.append(token)
        elif kind == ":" and not in_group:
            if any(k in ("@", "<") for k, _ in current):
                raise AddressError("misplaced ':'")
            in_group, current = True, []
        elif kind in (",", ";"):
            if kind == ";" and not in_group:
                raise AddressError("';' outside a group")
            if current:
                mailboxes.append(_mailbox(current))
            current = []
            if kind == ";":
                in_group = False
        else:
            current.append(token)
    if in_angle:
        raise AddressError("unterminated angle address")
    if in_group:
        raise AddressError("group without ';'")
    if current:
        mailboxes.append(_mailbox(current))
    return mailboxes


def salvage_domains(text: str) -> list[str]:
    """The domains a reader would see in an address list that did not parse: what follows
    each "@" up to whitespace or a special, control characters removed (``ceo@bank.example``
    followed by DEL reads as ``bank.example``), as written, not validated."""
    found = (_CONTROL.sub("", domain) for domain in _AFTER_AT.findall(text))
    return [domain for domain in found if domain]
