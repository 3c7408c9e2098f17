"""Repairs of aggregate report XML that is not well-formed, limited to those that cannot
change what a value means (:mod:`.aggregate_xml` tries them only after a strict parse fails,
and notes them in the report).

- :func:`fix_declaration`: an XML declaration that names an encoding the octets are not in
  (``encoding="UTF-16"`` over ASCII) or one Python does not know, when the octets are valid
  UTF-8 (RFC 9990 section 3: reports are UTF-8): read as UTF-8.
- :func:`repair_markup`: text around the ``<feedback>`` element dropped (a stray wrapper
  element such as an unclosed ``<xs:schema>``, junk after the end); inside it, a ``<`` that
  starts no element of the report's vocabulary, and an ``&`` that starts no reference, are
  taken as the characters they are (``<email><bad@example.net></email>``, ``AT&T``). An
  element name of the vocabulary is never changed, so the structure read is the one the
  reporter wrote.
"""

from __future__ import annotations

import re

_NAMES_TEXT = (
    "feedback version report_metadata org_name email extra_contact_info report_id date_range "
    "begin end error generator policy_published domain discovery_method adkim aspf p sp np "
    "pct fo testing psd record row source_ip count policy_evaluated disposition dkim spf "
    "reason type comment identifiers envelope_to envelope_from header_from auth_results "
    "selector result human_result scope extensions extension"
)
VOCABULARY = frozenset(_NAMES_TEXT.split(" "))
_PREFIX = rb"(?:[A-Za-z_][A-Za-z0-9_.-]*:)?"
_DECLARATION = re.compile(rb"\s*<\?xml[^>]*?\?>")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([^"']*)["']""")
_START = re.compile(rb"<" + _PREFIX + rb"feedback[\s/>]")
_END = re.compile(rb"</" + _PREFIX + rb"feedback\s*>")
_NAMES = "|".join(sorted(VOCABULARY, key=len, reverse=True)).encode()
_STRAY_LT = re.compile(rb"<(?!/?" + _PREFIX + rb"(?:" + _NAMES + rb")[\s/>])(?![?!])")
_STRAY_AMP = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)")


def fix_declaration(data: bytes) -> bytes | None:
    """``data`` with its declaration saying UTF-8, when it says otherwise and the octets
    are UTF-8; None when that is not the case."""
    declaration = _DECLARATION.match(data)
    if declaration is None:
        return None
    encoding = _ENCODING.search(declaration.group())
    if encoding is None or encoding.group(1).upper() in (b"UTF-8", b"UTF8"):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    start, end = declaration.start() + encoding.start(1), declaration.start() + encoding.end(1)
    return data[:start] + b"UTF-8" + data[end:]


def repair_markup(data: bytes) -> bytes | None:
    """``data`` repaired as the module says; None when it has no ``<feedback>`` element."""
    start = _START.search(data)
    if start is None:
        return None
    ends = list(_END.finditer(data, start.start()))
    body = data[start.start() : ends[-1].end() if ends else len(data)]
    declaration = _DECLARATION.match(data)
    head = declaration.group().strip() + b"\n" if declaration else b""
    body = _STRAY_LT.sub(b"&lt;", body)
    body = _STRAY_AMP.sub(b"&amp;", body)
    return head + body
