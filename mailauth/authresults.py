"""Authentication-Results (RFC 8601): rendering our header, recognising forged ones.

One formatter renders every method's result clause from (ptype, property, value) triples,
writing the text authres's header and result classes would (authres remains the parser:
the tests parse every field we write back with it), without building its objects on the
hot path: the field is made as its list of unbreakable pieces, folded as they come. Every
value written goes through
:func:`quote_pvalue` and every comment through :func:`quote_comment`, so that no input (a
MAIL FROM, HELO, d= or reason) can end the header, add a result or inject another field:
control characters are dropped, and anything that is not a plain token, domain or
``local-part@domain`` becomes an RFC 5322 quoted-string. The field is folded at 78 columns
(RFC 5322 2.1.1, 2.2.3). Values are ASCII (see :func:`quote_pvalue`).

:func:`authserv_id_of` reads the authserv-id of an existing field (comments and folding
allowed, RFC 8601 2.2), for the forgery protection of RFC 8601 5.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterable, Sequence

from mailauth.address import skip_comment
from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.results import (
    ArcOutcome,
    ArcResult,
    DkimOutcome,
    DmarcOutcome,
    Policy,
    SpfCheck,
    SpfOutcome,
    SpfResult,
)

FIELD_NAME = "Authentication-Results"
LINE_LIMIT = 78

_CTL = re.compile(r"[\x00-\x1f\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 2045 token
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_ADDRESS = re.compile(rf"(?:{_DOT_ATOM})?@{_DOMAIN}")
_DOT_ATOM_RE = re.compile(_DOT_ATOM)
_COMMENT_SPECIAL = re.compile(r"([()\\])")

Prop = tuple[str, str, str]  # (ptype, property, value), e.g. ("smtp", "mailfrom", "a@b")


def _ascii(text: str) -> str:
    """Control characters dropped; a U-label domain after "@" (or alone) as A-labels; any
    other non-ASCII character as "?" (UTF-8 header text is only for SMTPUTF8 messages)."""
    clean = _CTL.sub("", text)
    if clean.isascii():
        return clean
    local, at, domain = clean.rpartition("@")
    with contextlib.suppress(InvalidDomainError):  # not a domain: kept, non-ASCII as "?"
        domain = normalize_domain(domain)
    return _NON_ASCII.sub("?", f"{local}{at}{domain}")


_MEMO_LENGTH = 256  # longer values (hostile ones, mostly) are quoted anew each time


def _memoised(quote: Callable[[str], str]) -> Callable[[str], str]:
    """``quote`` (pure) remembered for values of up to ``_MEMO_LENGTH`` characters: the
    same domains, addresses and reasons come back message after message, while long
    values would make the memo large."""
    memo = functools.lru_cache(maxsize=4096)(quote)

    @functools.wraps(quote)
    def quote_memoised(value: str) -> str:
        return memo(value) if len(value) <= _MEMO_LENGTH else quote(value)

    return quote_memoised


@_memoised
def quote_pvalue(value: str) -> str:
    """RFC 8601 2.2 pvalue: as is when a token, domain or addr-spec, else a quoted-string."""
    clean = _ascii(value)
    if _ADDRESS.fullmatch(clean):
        return clean
    return quote_value(clean)


@_memoised
def quote_value(value: str) -> str:
    """RFC 2045 value (a reason, RFC 8601 2.2): a token, else a quoted-string."""
    clean = _ascii(value)
    if _TOKEN.fullmatch(clean):
        return clean
    return _quoted_string(clean)


def _quoted_string(clean: str) -> str:
    """An RFC 5322 quoted-string around text already made ASCII and free of controls."""
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


@_memoised
def quote_comment(text: str) -> str:
    """Text safe inside an RFC 5322 comment: parentheses and backslashes escaped."""
    return _COMMENT_SPECIAL.sub(r"\\\1", _ascii(text))


def _clause(
    method: str, result: str, props: Iterable[Prop], reason: str = "", comment: str = ""
) -> list[str]:
    """A result clause as its pieces: what authres's ``AuthenticationResult`` prints
    (``method=result (comment) reason=value ptype.property=pvalue ...``), split at the
    spaces outside comments and quoted strings, where folding may break it."""
    pieces = [f"{method}={result}"]
    quoted = quote_comment(comment) if comment else ""
    if quoted:
        pieces.append(f"({quoted})")
    if reason and (value := quote_value(reason)) != '""':  # (nothing left: no reason)
        pieces.append(f"reason={value}")
    pieces.extend(f"{ptype}.{name}={quote_pvalue(value)}" for ptype, name, value in props)
    return pieces


def _spf_clauses(spf: SpfCheck) -> list[list[str]]:
    # RFC 8601 2.7.2: smtp.mailfrom for the MAIL FROM identity, smtp.helo for HELO.
    mf, helo = spf.mailfrom, spf.helo
    sender = mf.sender or mf.domain
    clauses = [_clause("spf", mf.result, [("smtp", "mailfrom", sender)], _spf_reason(mf))]
    if helo is not None:
        props: list[Prop] = [("smtp", "helo", helo.domain)]
        clauses.append(_clause("spf", helo.result, props, _spf_reason(helo)))
    return clauses


def _spf_reason(outcome: SpfOutcome) -> str:
    """A reason only where it explains an error; a pass or fail needs none."""
    if outcome.result in (SpfResult.TEMPERROR, SpfResult.PERMERROR):
        return outcome.reason
    return ""


def _dkim_clause(d: DkimOutcome) -> list[str]:
    # RFC 8601 2.7.1 (header.d, header.i), RFC 6008 (header.b), RFC 8616/IANA (header.s, a).
    props: list[Prop] = [("header", "d", d.domain)]
    if d.identity:
        props.append(("header", "i", d.identity))
    if d.selector:
        props.append(("header", "s", d.selector))
    if d.algorithm:
        props.append(("header", "a", d.algorithm))
    if d.signature_prefix:
        props.append(("header", "b", d.signature_prefix))
    comment = f"{d.key_bits}-bit key" if d.key_bits else ""
    if d.testing:
        comment = f"{comment}; test key" if comment else "test key"
    return _clause("dkim", d.result, props if d.domain else [], d.reason, comment)


def _dmarc_clause(d: DmarcOutcome) -> list[str]:
    # As OpenDMARC and the large receivers write it: the policy and the disposition in a
    # comment; policy.dmarc (RFC 7489 11.2 registration) when a disposition is applied.
    comment = f"p={d.policy} dis={d.disposition}" if d.policy else ""
    props: list[Prop] = [("header", "from", d.domain)] if d.domain else []
    if d.disposition is not Policy.NONE:
        props.append(("policy", "dmarc", str(d.disposition)))
    reason = d.reason or d.override_comment
    return _clause("dmarc", d.result, props, reason, comment)


def _arc_clause(a: ArcOutcome, remote_ip: str) -> list[str]:
    # RFC 8617 10.2: smtp.remote-ip, and header.oldest-pass for a passing chain (section 6).
    props: list[Prop] = [("smtp", "remote-ip", remote_ip)] if remote_ip else []
    if a.result is ArcResult.PASS and a.oldest_pass is not None:
        props.append(("header", "oldest-pass", str(a.oldest_pass)))
    chain = " ".join(f"as[{s.instance}].d={s.domain}" for s in reversed(a.sets))
    return _clause("arc", a.result, props, a.reason, chain)


def render_authentication_results(
    authserv_id: str,
    *,
    spf: SpfCheck | None = None,
    dkim: Sequence[DkimOutcome] | None = None,
    dmarc: DmarcOutcome | None = None,
    arc: ArcOutcome | None = None,
    remote_ip: str = "",
) -> str:
    """The whole field, folded with CRLF, without a final line ending."""
    clauses: list[list[str]] = []
    if spf is not None:
        clauses.extend(_spf_clauses(spf))
    if dkim is not None:
        if dkim:
            clauses.extend(_dkim_clause(d) for d in dkim)
        else:
            clauses.append(_clause("dkim", "none", []))
    if arc is not None:
        clauses.append(_arc_clause(arc, remote_ip))
    if dmarc is not None:
        clauses.append(_dmarc_clause(dmarc))
    return _field(authserv_id, clauses)


def _field(authserv_id: str, clauses: list[list[str]]) -> str:
    """The folded field of these clauses: authres's ``AuthenticationResultsHeader`` text,
    "authserv-id; clause; clause" (RFC 8601 2.2), or "authserv-id; none"."""
    pieces = [f"{FIELD_NAME}:", quote_pvalue(authserv_id.lower()).lower()]
    for clause in clauses or [["none"]]:
        pieces[-1] += ";"
        pieces.extend(clause)
    return _fold(pieces)


_SPF_COMMENTS = {
    SpfResult.PASS: "domain of {sender} designates {ip} as permitted sender",
    SpfResult.FAIL: "domain of {sender} does not designate {ip} as permitted sender",
    SpfResult.SOFTFAIL: (
        "domain of transitioning {sender} does not designate {ip} as permitted sender"
    ),
    SpfResult.NEUTRAL: "{ip} is neither permitted nor denied by domain of {sender}",
    SpfResult.NONE: "domain of {sender} does not designate permitted sender hosts",
    SpfResult.TEMPERROR: "error in processing during lookup of {sender}",
    SpfResult.PERMERROR: "error in processing during lookup of {sender}",
}


@_memoised
def _kv_value(value: str) -> str:
    """RFC 7208 9.1: a key-value-pair's value is a dot-atom or a quoted-string."""
    clean = _ascii(value)
    if _DOT_ATOM_RE.fullmatch(clean):
        return clean
    return _quoted_string(clean)


def render_received_spf(outcome: SpfOutcome, *, ip: str, helo: str, receiver: str) -> str:
    """The Received-SPF field (RFC 7208 9.1) for one outcome, folded, no final line ending."""
    sender = outcome.sender or outcome.domain or "unknown"
    comment = f"{receiver}: " + _SPF_COMMENTS[outcome.result].format(sender=sender, ip=ip)
    pairs = [("client-ip", ip), ("envelope-from", outcome.sender)]
    if helo:
        pairs.append(("helo", helo))
    problem = _spf_reason(outcome)
    if problem:
        pairs.append(("problem", problem))
    pairs += [("receiver", receiver), ("identity", outcome.identity)]
    values = [f"{key}={_kv_value(value)};" for key, value in pairs if value]
    # "Received-SPF: result (comment) key=value; ..." as pieces (see _clause)
    head = ["Received-SPF:", str(outcome.result), f"({quote_comment(comment)})"]
    return _fold([*head, *(values or [""])])  # ("": the space that ends a field with no pair)


_SPECIAL = re.compile(r'[ "()\\]')


def _segments(text: str) -> list[str]:
    """Split at the spaces that are outside quoted strings and comments.

    Only the characters that matter (space, quote, parentheses, backslash) are visited.
    """
    segments: list[str] = []
    start = depth = 0
    quoted = False
    skip_to = -1  # the character after a backslash is taken literally
    for match in _SPECIAL.finditer(text):
        k = match.start()
        if k <= skip_to:
            continue
        ch = text[k]
        if ch == "\\" and (quoted or depth):
            skip_to = k + 1
        elif ch == '"' and not depth:
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth += 1
        elif ch == ")" and not quoted and depth:
            depth -= 1
        elif ch == " " and not quoted and not depth:
            segments.append(text[start:k])
            start = k + 1
    segments.append(text[start:])
    return segments


def fold(field: str, limit: int = LINE_LIMIT) -> str:
    """Fold so that lines stay within ``limit`` where a space allows it.

    Breaks go between tokens first; inside a quoted string or comment (where FWS is allowed
    too) only when one is longer than a line. Each break turns one space into CRLF + space,
    so unfolding (RFC 5322 2.2.3) gives back the exact text.
    """
    return _fold(_segments(field), limit)


def _fold(segments: list[str], limit: int = LINE_LIMIT) -> str:
    """:func:`fold` of ``" ".join(segments)``, its pieces already known (no piece has a
    space outside a comment or quoted string)."""
    lines: list[str] = []
    line = ""
    for segment in segments:
        if not line or len(line) + 1 + len(segment) <= limit:
            line = f"{line} {segment}" if line else segment
            continue
        lines.append(line)
        line = ""
        for word in segment.split(" "):  # a segment longer than a line
            if line and word and len(line) + 1 + len(word) > limit:
                lines.append(line)
                line = ""
            line = f"{line} {word}" if line else f" {word}"
    lines.append(line)
    return "\r\n".join(lines)


def authserv_id_of(value: str | bytes) -> str | None:
    """The authserv-id of an Authentication-Results field value, lowercased, or None.

    Comments (nested), folding whitespace and a quoted-string authserv-id are allowed
    (RFC 8601 2.2: authserv-id = value, CFWS anywhere between tokens). Read as leniently
    as any reader downstream might, since what it decides is whether a field claiming to
    be ours is removed: a comment that never ends is read as no comment (its "(" skipped),
    and a final dot is dropped ("mx.example.org." is the same host).
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "(":
            end = skip_comment(text, i)
            i = end if end >= 0 else i + 1
        elif ch == '"':
            out, i = [], i + 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                if i < n:
                    out.append(text[i])
                i += 1
            return "".join(out).strip().lower().rstrip(".") or None
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in ";(":
                i += 1
            return text[start:i].lower().rstrip(".") or None
    return None
