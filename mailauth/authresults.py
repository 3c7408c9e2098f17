"""Authentication-Results (RFC 8601): rendering our header, recognising forged ones.

One formatter renders every method's result clause from (ptype, property, value) triples,
through authres's header and result classes. Every value written goes through
:func:`quote_pvalue` and every comment through :func:`quote_comment`, so that no input (a
MAIL FROM, HELO, d= or reason) can end the header, add a result or inject another field:
control characters are dropped, and anything that is not a plain token, domain or
``local-part@domain`` becomes an RFC 5322 quoted-string. The field is folded at 78 columns
(RFC 5322 2.1.1, 2.2.3). Values are ASCII (see :func:`quote_pvalue`).

:func:`authserv_id_of` reads the authserv-id of an existing field (comments and folding
allowed, RFC 8601 2.2), for the forgery protection of RFC 8601 5.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import authres

from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.results import ArcOutcome, DkimOutcome, DmarcOutcome, SpfCheck

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

Prop = tuple[str, str, str]  # (ptype, property, value), e.g. ("smtp", "mailfrom", "a@b")


class _PValue(str):
    """A property value that authres prints through our quoting instead of its own."""

    def quote_if_needed(self) -> str:
        return quote_pvalue(self)


class _Value(str):
    """A reason that authres prints through our quoting instead of its own."""

    def quote_if_needed(self) -> str:
        return quote_value(self)


def _ascii(text: str) -> str:
    """Control characters dropped; a U-label domain after "@" (or alone) as A-labels; any
    other non-ASCII character as "?" (UTF-8 header text is only for SMTPUTF8 messages)."""
    clean = _CTL.sub("", text)
    if clean.isascii():
        return clean
    local, at, domain = clean.rpartition("@")
    try:
        domain = normalize_domain(domain)
    except InvalidDomainError:
        pass
    return _NON_ASCII.sub("?", f"{local}{at}{domain}")


def quote_pvalue(value: str) -> str:
    """RFC 8601 2.2 pvalue: as is when a token, domain or addr-spec, else a quoted-string."""
    clean = _ascii(value)
    if _ADDRESS.fullmatch(clean):
        return clean
    return quote_value(clean)


def quote_value(value: str) -> str:
    """RFC 2045 value (a reason, RFC 8601 2.2): a token, else a quoted-string."""
    clean = _ascii(value)
    if _TOKEN.fullmatch(clean):
        return clean
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_comment(text: str) -> str:
    """Text safe inside an RFC 5322 comment: parentheses and backslashes escaped."""
    return re.sub(r"([()\\])", r"\\\1", _ascii(text))


def _clause(
    method: str, result: str, props: Iterable[Prop], reason: str = "", comment: str = ""
) -> authres.AuthenticationResult:
    properties = []
    for ptype, name, value in props:
        prop = authres.AuthenticationResultProperty(ptype, name, value)
        prop.value = _PValue(value)
        properties.append(prop)
    clause = authres.AuthenticationResult(
        method=method,
        result=result,
        result_comment=quote_comment(comment) or None,
        properties=properties,
    )
    if reason:
        clause.reason = _Value(reason)
    return clause


def _spf_clauses(spf: SpfCheck) -> list[authres.AuthenticationResult]:
    # RFC 8601 2.7.2: smtp.mailfrom for the MAIL FROM identity, smtp.helo for HELO.
    mf = spf.mailfrom
    clauses = [_clause("spf", mf.result, [("smtp", "mailfrom", mf.sender or mf.domain)], mf.reason)]
    if spf.helo is not None:
        helo = spf.helo
        clauses.append(_clause("spf", helo.result, [("smtp", "helo", helo.domain)], helo.reason))
    return clauses


def _dkim_clause(d: DkimOutcome) -> authres.AuthenticationResult:
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


def _dmarc_clause(d: DmarcOutcome) -> authres.AuthenticationResult:
    comment = f"p={d.policy} dis={d.disposition}" if d.policy else ""
    return _clause("dmarc", d.result, [("header", "from", d.domain)], d.reason, comment)


def _arc_clause(a: ArcOutcome, remote_ip: str) -> authres.AuthenticationResult:
    # RFC 8617 10.2: smtp.remote-ip
    return _clause("arc", a.result, [("smtp", "remote-ip", remote_ip)], a.reason)


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
    clauses: list[authres.AuthenticationResult] = []
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
    header = authres.AuthenticationResultsHeader(
        authserv_id=quote_pvalue(authserv_id.lower()), results=clauses
    )
    return fold(f"{FIELD_NAME}: {header.header_value()}")


def fold(field: str, limit: int = LINE_LIMIT) -> str:
    """Fold at spaces so that lines stay within ``limit`` where a space allows it.

    Each break turns one space into CRLF + space, so unfolding (RFC 5322 2.2.3) gives back
    the exact text, even inside quoted strings and comments, where FWS is allowed too.
    """
    words = field.split(" ")
    lines: list[str] = []
    line = words[0]
    for word in words[1:]:
        if word and len(line) + 1 + len(word) > limit:
            lines.append(line)
            line = " " + word
        else:
            line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines)


def authserv_id_of(value: str | bytes) -> str | None:
    """The authserv-id of an Authentication-Results field value, lowercased, or None.

    Comments (nested), folding whitespace and a quoted-string authserv-id are allowed
    (RFC 8601 2.2: authserv-id = value, CFWS anywhere between tokens).
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "(":
            depth, i = 1, i + 1
            while i < n and depth:
                if text[i] == "\\":
                    i += 1
                elif text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                i += 1
        elif ch == '"':
            out, i = [], i + 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                if i < n:
                    out.append(text[i])
                i += 1
            return "".join(out).strip().lower() or None
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in ";(":
                i += 1
            return text[start:i].lower() or None
    return None
