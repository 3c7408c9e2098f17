"""SPF records (RFC 7208 4.5, 4.6, 5, 6, 7.1, 12): the one parser, pure and reusable.

``mailauth verify`` (check_host(), :mod:`mailauth.spf.evaluate`) and ``mailauth check`` (the
record audit, :mod:`mailauth.check.spf`) both read records through :func:`parse_spf_record`,
so that they cannot disagree about syntax. A record becomes its terms in order, each a
:class:`Mechanism`, a :class:`Modifier` or a :class:`TermError` that says why the term does
not follow the grammar; macro-strings are parsed once into :class:`MacroString` pieces, so
that evaluation only joins them (:mod:`mailauth.spf.macro`).

The grammar is RFC 7208 12 with the prose rules beside it:

- a term that starts with a name and "=" is a modifier (4.6.1); anything else is a directive;
- names of mechanisms and modifiers, and macro letters, are case-insensitive (the ABNF);
- ``redirect`` and ``exp`` appear at most once each (6); unknown modifiers are kept, to be
  ignored, however often they appear (6), but their value must be a macro-string (12);
- a domain-spec ends in a macro-expand or in "." and a top label (7.1);
- the macro letters c, r and t appear only in explanation text (7.3);
- a DIGIT transformer is not zero (7.3); CIDR lengths are 0-32 and 0-128 without leading
  zeros (5.6); ip4 and ip6 take one length, all and ptr none (5.1, 5.5).

Out of scope: DNS, evaluation and expansion. Parsed records are memoised: a record is a pure
function of its text, and the same few records are read again and again.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from mailauth.errors import RecordSyntaxError
from mailauth.results import SpfResult


class Qualifier(StrEnum):
    """RFC 7208 4.6.2: what a matching mechanism returns."""

    PASS = "+"
    FAIL = "-"
    SOFTFAIL = "~"
    NEUTRAL = "?"


QUALIFIER_RESULTS = {
    Qualifier.PASS: SpfResult.PASS,
    Qualifier.FAIL: SpfResult.FAIL,
    Qualifier.SOFTFAIL: SpfResult.SOFTFAIL,
    Qualifier.NEUTRAL: SpfResult.NEUTRAL,
}


class MechanismKind(StrEnum):
    """RFC 7208 5: the mechanisms."""

    ALL = "all"
    INCLUDE = "include"
    A = "a"
    MX = "mx"
    PTR = "ptr"
    IP4 = "ip4"
    IP6 = "ip6"
    EXISTS = "exists"


# RFC 7208 4.6.4: the terms that cause DNS queries (and the redirect modifier)
DNS_MECHANISMS = frozenset(
    {MechanismKind.INCLUDE, MechanismKind.A, MechanismKind.MX, MechanismKind.PTR}
    | {MechanismKind.EXISTS}
)
EXPLANATION_ONLY_LETTERS = frozenset("crt")  # RFC 7208 7.3
_LETTERS = frozenset("slodiphcrtv")


@dataclass(frozen=True, slots=True)
class Macro:
    """One macro-expand ``%{...}`` (RFC 7208 7.1): the letter (lower case), how many
    right-hand parts to keep (0: all), reversal, the delimiters given ("" when none), and
    whether the letter was upper case (the value is then URL-escaped)."""

    letter: str
    keep: int = 0
    reverse: bool = False
    delimiters: str = ""
    escape: bool = False


@dataclass(frozen=True, slots=True)
class MacroString:
    """A parsed macro-string: literal text (``%%``, ``%_``, ``%-`` already replaced) and
    macros, in order; ``letters`` are the macro letters it uses."""

    text: str
    pieces: tuple[str | Macro, ...]
    letters: frozenset[str]

    @property
    def is_literal(self) -> bool:
        return not self.letters


@dataclass(frozen=True, slots=True)
class Mechanism:
    """A directive (RFC 7208 4.6.1, 5): qualifier, mechanism, its domain-spec (None: the
    current domain), the CIDR lengths (a, mx, ip4, ip6) and, for ip4 and ip6, the network
    as numbers (``version``, ``mask``, ``bits``: an address ``a`` is in it when
    ``a & mask == bits``)."""

    text: str
    qualifier: Qualifier
    kind: MechanismKind
    domain: MacroString | None = None
    cidr4: int = 32
    cidr6: int = 128
    version: int = 0
    mask: int = 0
    bits: int = -1

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The ip4/ip6 network (None for the other mechanisms)."""
        if self.version == 4:
            return ipaddress.IPv4Network((self.bits, self.cidr4))
        if self.version == 6:
            return ipaddress.IPv6Network((self.bits, self.cidr6))
        return None


@dataclass(frozen=True, slots=True)
class Modifier:
    """A modifier (RFC 7208 6): its name in lower case and its value."""

    text: str
    name: str
    value: MacroString


@dataclass(frozen=True, slots=True)
class TermError:
    """A term that does not follow the grammar; ``modifier`` names a redirect or exp modifier
    that is at fault (RFC 7208 6), "" otherwise."""

    text: str
    reason: str
    modifier: str = ""


Term = Mechanism | Modifier | TermError


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A record's terms in order, and the parts check_host() looks at."""

    text: str
    terms: tuple[Term, ...]
    mechanisms: tuple[Mechanism, ...]
    redirect: Modifier | None
    explanation: Modifier | None
    errors: tuple[TermError, ...]
    uses_macros: bool = False  # in a mechanism's domain-spec or in redirect=

    @property
    def has_all(self) -> bool:
        return any(m.kind is MechanismKind.ALL for m in self.mechanisms)


def is_spf_record(text: bytes) -> bool:
    """RFC 7208 4.5: whether the version section is exactly "v=spf1" (then a space or the
    end; case-insensitive, as ABNF strings are)."""
    return text[:7].lower() in (b"v=spf1", b"v=spf1 ")


def select_spf_records(texts: Iterable[bytes]) -> list[str]:
    """RFC 7208 4.5: the TXT records that are SPF records, as text. Other octets than ASCII
    stay visible as U+FFFD or themselves, and make the terms holding them invalid."""
    return [text.decode("utf-8", "replace") for text in texts if is_spf_record(text)]


def parse_spf_record(text: str) -> SpfRecord:
    """Parse a record selected by :func:`select_spf_records`; raises RecordSyntaxError
    (caller misuse) when ``text`` is not one. Syntax errors are kept in ``errors``."""
    if len(text) <= _CACHED_LENGTH:
        return _parse_cached(text)
    return _parse(text)


_CACHED_LENGTH = 2048


def parse_spf_bytes(text: bytes) -> SpfRecord:
    """:func:`parse_spf_record` of a TXT record as DNS gave it. Memoised by the bytes (a
    cached answer hands back the same object, whose hash Python keeps): 1,024 records up
    to 2 KiB, and the last 16 longer ones, so that a sender with a huge record costs one
    parse, not one per message."""
    if len(text) <= _CACHED_LENGTH:
        return _parse_bytes_cached(text)
    return _parse_long_cached(text)


@functools.lru_cache(maxsize=1024)
def _parse_bytes_cached(text: bytes) -> SpfRecord:
    return _parse(text.decode("utf-8", "replace"))


@functools.lru_cache(maxsize=16)
def _parse_long_cached(text: bytes) -> SpfRecord:
    return _parse(text.decode("utf-8", "replace"))


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> SpfRecord:
    return _parse(text)


def _parse(text: str) -> SpfRecord:
    version, _, rest = text.partition(" ")
    if version.lower() != "v=spf1":
        raise RecordSyntaxError(f"not an SPF record: {text[:40]!r}")
    terms: list[Term] = []
    seen: set[str] = set()
    for word in rest.split(" "):  # RFC 7208 12: terms = *( 1*SP ( directive / modifier ) )
        if not word:
            continue
        term = parse_term(word)
        if isinstance(term, Modifier) and term.name in ("redirect", "exp"):
            name = term.name
            if name in seen:  # RFC 7208 6: at most once each
                term = TermError(word, f"{name}= appears more than once", name)
            seen.add(name)
        terms.append(term)
    mechanisms = tuple(t for t in terms if isinstance(t, Mechanism))
    modifiers = {t.name: t for t in terms if isinstance(t, Modifier)}
    specs = [m.domain for m in mechanisms if m.domain is not None]
    if "redirect" in modifiers:
        specs.append(modifiers["redirect"].value)
    return SpfRecord(
        text=text,
        terms=tuple(terms),
        mechanisms=mechanisms,
        redirect=modifiers.get("redirect"),
        explanation=modifiers.get("exp"),
        errors=tuple(t for t in terms if isinstance(t, TermError)),
        uses_macros=any(spec.letters for spec in specs),
    )


_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)\Z", re.S)
_DIRECTIVE = re.compile(r"([-+?~]?)([A-Za-z][A-Za-z0-9_.-]*)(.*)\Z", re.S)
_KINDS = {kind.value: kind for kind in MechanismKind}
_QUALIFIERS = {"": Qualifier.PASS} | {q.value: q for q in Qualifier}


def parse_term(word: str) -> Term:
    """One term (RFC 7208 4.6.1): a modifier when it starts with ``name=``."""
    modifier = _MODIFIER.match(word)
    if modifier is not None:
        name = modifier.group(1).lower()
        try:
            if name in ("redirect", "exp"):
                value = parse_domain_spec(modifier.group(2))
            else:
                value = parse_macro_string(modifier.group(2))
        except RecordSyntaxError as exc:
            return TermError(word, f"{word} {exc}", _known(name))
        return Modifier(word, name, value)
    directive = _DIRECTIVE.match(word)
    kind = _KINDS.get(directive.group(2).lower()) if directive else None
    if directive is None or kind is None:
        return TermError(word, f"unknown mechanism or malformed term {word!r}")
    qualifier = _QUALIFIERS[directive.group(1)]
    try:
        return _parse_mechanism(word, qualifier, kind, directive.group(3))
    except RecordSyntaxError as exc:
        return TermError(word, f"{word!r} {exc}")


def _known(name: str) -> str:
    return name if name in ("redirect", "exp") else ""


_DUAL_CIDR = re.compile(r"//(0|[1-9][0-9]*)\Z")
_CIDR = re.compile(r"/(0|[1-9][0-9]*)\Z")
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IP4 = re.compile(rf"{_QNUM}(?:\.{_QNUM}){{3}}\Z")
_IP6_CHARS = re.compile(r"[0-9A-Fa-f:.]+\Z")


def _parse_mechanism(word: str, qualifier: Qualifier, kind: MechanismKind, rest: str) -> Term:
    """RFC 7208 5.1-5.7: what may follow each mechanism's name."""
    if kind is MechanismKind.ALL:
        if rest:
            raise RecordSyntaxError("has a value, which all takes none of")
        return Mechanism(word, qualifier, kind)
    if kind in (MechanismKind.IP4, MechanismKind.IP6):
        return _parse_network(word, qualifier, kind, rest)
    cidr4, cidr6 = 32, 128
    if kind in (MechanismKind.A, MechanismKind.MX):  # RFC 7208 5.3, 5.4: dual-cidr-length
        dual = _DUAL_CIDR.search(rest)
        if dual is not None:
            cidr6, rest = _length(dual.group(1), 128), rest[: dual.start()]
        single = _CIDR.search(rest)
        if single is not None:
            cidr4, rest = _length(single.group(1), 32), rest[: single.start()]
    if not rest:
        if kind in (MechanismKind.INCLUDE, MechanismKind.EXISTS):
            raise RecordSyntaxError(f"lacks the ':' and domain that {kind} needs")
        return Mechanism(word, qualifier, kind, cidr4=cidr4, cidr6=cidr6)
    if not rest.startswith(":"):
        raise RecordSyntaxError(f"has {rest!r} where {kind} takes ':' and a domain")
    domain = parse_domain_spec(rest[1:])
    return Mechanism(word, qualifier, kind, domain, cidr4=cidr4, cidr6=cidr6)


def _parse_network(word: str, qualifier: Qualifier, kind: MechanismKind, rest: str) -> Term:
    """RFC 7208 5.6: ip4-network / ip6-network (RFC 4291 2.2) and one optional length."""
    if not rest.startswith(":"):
        raise RecordSyntaxError(f"lacks the ':' and network that {kind} needs")
    text, limit = rest[1:], 32 if kind is MechanismKind.IP4 else 128
    length = limit
    single = _CIDR.search(text)
    if single is not None:
        length, text = _length(single.group(1), limit), text[: single.start()]
    if kind is MechanismKind.IP4:
        if not _IP4.match(text):
            raise RecordSyntaxError(f"has {text!r}, not an IPv4 address")
        packed = socket.inet_aton(text)  # (the pattern let through dotted quads only)
    else:
        try:  # RFC 4291 2.2 (the character check keeps out a "%zone")
            if not _IP6_CHARS.match(text):
                raise OSError(text)
            packed = socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            raise RecordSyntaxError(f"has {text!r}, not an IPv6 address") from None
    mask = ((1 << length) - 1) << (limit - length)
    bits = int.from_bytes(packed, "big") & mask
    version = 4 if limit == 32 else 6
    return Mechanism(word, qualifier, kind, None, length, length, version, mask, bits)


def _length(digits: str, limit: int) -> int:
    value = int(digits)
    if value > limit:
        raise RecordSyntaxError(f"has a CIDR length over {limit}: /{value}")
    return value


# RFC 7208 7.1: toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" )
# alphanum ); domain-end = ( "." toplabel [ "." ] ) / macro-expand
_DOMAIN_END = re.compile(
    r"\.(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])\.?\Z"
)
_TOKEN = re.compile(r"%\{([A-Za-z])([0-9]*)([rR]?)([-.+,/_=]*)\}|%[%_-]|%|[^%]+")
_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]*\Z")  # macro-literal: visible but "%"
_EXPLAIN_LITERAL = re.compile(r"[\x20-\x24\x26-\x7e]*\Z")  # explain-string: and SP
_ESCAPES = {"%%": "%", "%_": " ", "%-": "%20"}


def parse_domain_spec(text: str) -> MacroString:
    """RFC 7208 7.1: domain-spec = macro-string domain-end (c, r, t not allowed)."""
    if "%" not in text and _LITERAL.match(text):  # (the common case: a plain name)
        if not _DOMAIN_END.search(text):
            raise RecordSyntaxError(_no_domain(text))
        return MacroString(text, (text,) if text else (), frozenset())
    parsed, ends_with_macro = _parse_macros(text, _LITERAL, explanation=False)
    if not ends_with_macro and not _DOMAIN_END.search(text):
        raise RecordSyntaxError(_no_domain(text))
    return parsed


def _no_domain(text: str) -> str:
    """RFC 7208 7.1: domain-end is a dot and a top label (or a macro)."""
    if not text:
        return "names no domain"
    return (
        f"names {text!r}, not a fully qualified domain name (RFC 7208 7.1: a dot and a top label)"
    )


def parse_macro_string(text: str) -> MacroString:
    """RFC 7208 7.1: a macro-string outside explanations (unknown modifiers)."""
    return _parse_macros(text, _LITERAL, explanation=False)[0]


def parse_explanation(text: str) -> MacroString:
    """RFC 7208 6.2: explain-string = *( macro-string / SP ), where c, r and t are allowed."""
    return _parse_macros(text, _EXPLAIN_LITERAL, explanation=True)[0]


def _parse_macros(
    text: str, literal: re.Pattern[str], *, explanation: bool
) -> tuple[MacroString, bool]:
    """The pieces, and whether the last token is a macro-expand (for domain-end)."""
    pieces: list[str | Macro] = []
    letters: set[str] = set()
    last_is_macro = False
    for token in _TOKEN.finditer(text):
        value = token.group()
        last_is_macro = value.startswith("%")
        if not last_is_macro:
            if not literal.match(value):
                raise RecordSyntaxError(f"has a character SPF does not allow in {value!r}")
            pieces.append(value)
        elif value in _ESCAPES:
            pieces.append(_ESCAPES[value])
        elif value == "%":  # RFC 7208 7.1: "%" not followed by "{", "%", "-" or "_"
            raise RecordSyntaxError(f"has a malformed macro at {text[token.start() :][:12]!r}")
        else:
            macro = _macro(token, explanation)
            letters.add(macro.letter)
            pieces.append(macro)
    merged = _merge_literals(pieces)
    return MacroString(text, merged, frozenset(letters)), last_is_macro


def _macro(token: re.Match[str], explanation: bool) -> Macro:
    letter, digits, reverse, delimiters = token.groups()
    lower = letter.lower()
    if lower not in _LETTERS:
        raise RecordSyntaxError(f"has an unknown macro letter: {token.group()!r}")
    if lower in EXPLANATION_ONLY_LETTERS and not explanation:
        raise RecordSyntaxError(f"uses {token.group()!r}: c, r and t are for explanations only")
    keep = int(digits) if digits else 0
    if digits and keep == 0:  # RFC 7208 7.3: "the value MUST be nonzero"
        raise RecordSyntaxError(f"keeps zero parts: {token.group()!r}")
    return Macro(lower, keep, bool(reverse), delimiters, letter != lower)


def _merge_literals(pieces: list[str | Macro]) -> tuple[str | Macro, ...]:
    merged: list[str | Macro] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return tuple(merged)
