"""RFC 5322 address lists (section 3.4), as the From field carries them.

Handles display names with quoted commas, nested comments, angle addresses with obsolete
routes (RFC 5322 4.4), groups (``undisclosed: a@x, b@y;``), empty list members (obs-mbox-list)
and UTF-8 (RFC 6532). A domain holding a control character (RFC 5322 atext has none) is
invalid. Out of scope: decoding RFC 2047 encoded words in display names (DMARC needs none of
it).

Cost: linear in the input, never recursive, and bounded. Runs of characters (whitespace,
atoms, quoted strings, comments without nesting) are taken by one regular expression each,
and the list is read lazily, one token at a time: reading stops with an :class:`AddressError`
after :data:`MAX_MAILBOXES` mailboxes or :data:`MAX_TOKENS` tokens (a nested comment's
parentheses count as tokens), so a From field of a megabyte costs no more than its first
hundred mailboxes. :func:`salvage_domains` is bounded likewise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError, MailauthError

# Mailboxes read from one address list: far more than a From field names (RFC 5322 3.6.2
# allows several authors; DMARC evaluates at most 5 of their domains), far fewer than the
# 75,000 of a 0.9 MiB field, which took 3.8 s to read whole.
MAX_MAILBOXES = 100
# Tokens read from one address list: 100 mailboxes with display names take about 2,000.
MAX_TOKENS = 5000

# One token (or a run of whitespace) at a position. An atom is any run of characters that
# are neither specials nor whitespace (control characters and UTF-8 included: the domain
# check refuses them there); a quoted string and a comment without nesting are one match
# (possessive runs: a megabyte of quoted-pairs takes 7 ms, not 160).
_TOKEN = re.compile(
    r"""(?P<wsp>[ \t\r\n]+)"""
    r"""|(?P<atom>[^()<>\[\]:;@\\,."\ \t\r\n]+)"""
    r'|"(?P<quoted>(?:\\.)*+(?:[^"\\]++(?:\\.)*+)*+)"'
    r"""|(?P<comment>\((?:\\.)*+(?:[^()\\]++(?:\\.)*+)*+\))"""
    r"""|(?P<literal>\[[^\]]*\])"""
    r"""|(?P<other>.)""",
    re.DOTALL,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_COMMENT_STOP = re.compile(r"[\\()]")
# C0 controls, DEL and C1 controls: not atext (RFC 5322 3.2.3), in no domain name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What follows an "@" up to a character no domain has (whitespace or a special): how a
# reader finds the domain in a From field that is not RFC 5322.
_AFTER_AT = re.compile(r"@+([^\s<>@,;:\"()\[\]\\]+)")


class AddressError(MailauthError, ValueError):
    """An address list that does not follow RFC 5322 3.4 (or is too long to read whole)."""


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
    return _comment_end(text, start, len(text))[0]


def _comment_end(text: str, start: int, limit: int) -> tuple[int, int]:
    """:func:`skip_comment`, and how many parentheses and backslashes it stepped on (each
    one a step in Python; the text between them is skipped by the regular expression),
    stopping (unterminated) after ``limit`` steps."""
    depth, i, steps = 1, start + 1, 0
    search = _COMMENT_STOP.search
    while depth and steps <= limit and (stop := search(text, i)) is not None:
        i, steps = stop.end(), steps + 1
        ch = stop.group()
        if ch == "\\":
            i += 1
        else:
            depth += 1 if ch == "(" else -1
    return (-1 if depth or i > len(text) else i), steps


Token = tuple[str, str]  # (kind, text); kind: "atom", "quoted", "literal" or a special


def _tokenize(text: str) -> Iterator[Token]:
    """The tokens of ``text``, lazily; raises AddressError past :data:`MAX_TOKENS`."""
    i, n, budget = 0, len(text), MAX_TOKENS
    match_at = _TOKEN.match
    while i < n:
        if budget <= 0:
            raise AddressError(f"more than {MAX_TOKENS} tokens (the rest not read)")
        token = match_at(text, i)
        assert token is not None  # (the last alternative matches any character)
        kind, i = token.lastgroup, token.end()
        if kind == "wsp":
            continue
        budget -= 1
        if kind == "atom":
            yield ("atom", token.group())
        elif kind == "quoted":
            content = token.group("quoted")
            if "\\" in content:  # each quoted-pair is a step: counted as a token
                budget -= content.count("\\")
                if budget < 0:
                    raise AddressError(f"more than {MAX_TOKENS} tokens (the rest not read)")
                content = "".join(_QUOTED_PAIR.split(content))
            yield ("quoted", content)
        elif kind == "literal":
            yield ("literal", token.group())
        elif kind == "comment":
            continue
        else:
            ch = token.group()
            if ch == "(":  # a nested comment (one without nesting was matched whole)
                i, steps = _comment_end(text, i - 1, budget)
                budget -= steps
                if budget < 0:
                    raise AddressError(f"more than {MAX_TOKENS} tokens (the rest not read)")
                if i < 0:
                    raise AddressError("unterminated comment")
            elif ch == '"':
                raise AddressError(f"unterminated quoted string at offset {i - 1}")
            elif ch == "[":
                raise AddressError("unterminated domain literal")
            else:
                yield (ch, ch)


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
    """All mailboxes of an address list, groups flattened; raises :class:`AddressError`
    (also when a mailbox starts after :data:`MAX_MAILBOXES`: the rest is not read)."""
    mailboxes: list[Mailbox] = []
    current: list[Token] = []
    in_group = in_angle = False
    for token in _tokenize(text):
        kind = token[0]
        if kind == "<":
            in_angle = True
        elif kind == ">":
            in_angle = False
        if in_angle or kind not in (":", ",", ";"):
            if not current and len(mailboxes) == MAX_MAILBOXES:
                raise AddressError(f"more than {MAX_MAILBOXES} mailboxes (the rest not read)")
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
    followed by DEL reads as ``bank.example``), as written, not validated; the first
    :data:`MAX_MAILBOXES` only."""
    found = []
    for count, match in enumerate(_AFTER_AT.finditer(text)):
        if count == MAX_MAILBOXES:
            break
        domain = _CONTROL.sub("", match.group(1))
        if domain:
            found.append(domain)
    return found
