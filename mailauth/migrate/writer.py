"""Writing the imported configuration as the milter's TOML (docs/milter.md,
docs/signing.md), each value under a comment naming the line it comes from, and the notes
(what was not carried over) at the top."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mailauth.migrate.draft import Draft, Value

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HEADER = """\
# mailauth milter configuration written by `mailauth config import` from:
{files}
# Check it before use: mailauth milter --config THIS-FILE --check-config
# Migration guide: docs/migrating.md
"""


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else toml_string(name)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")  # (the importer writes only these)


def comment(text: str) -> str:
    """A comment line: what it quotes from an input file made printable."""
    clean = "".join(c if c.isprintable() or c == "\t" else "?" for c in text)
    return f"# {clean}".rstrip()


def _values(values: dict[str, Value]) -> list[str]:
    lines = []
    for key, item in values.items():
        lines.append(comment(item.source))
        if item.comment:
            lines.extend(comment(part) for part in item.comment.split("\n"))
        lines.append(f"{toml_key(key)} = {toml_value(item.value)}")
    return lines


def render_toml(draft: Draft, inputs: Sequence[str]) -> str:
    """The whole file."""
    files = "\n".join(comment(f"  {name}") for name in inputs)
    lines = _HEADER.format(files=files).splitlines()
    if draft.notes:
        lines += ["#", f"# Not carried over, or not exactly ({len(draft.notes)}):"]
        lines += [comment(f"  {note}") for note in draft.notes]
    if draft.warnings:
        lines += ["#", f"# Warnings ({len(draft.warnings)}):"]
        lines += [comment(f"  {warning}") for warning in draft.warnings]
    lines.append("")
    lines += _values(draft.sections[""])
    for section, values in draft.sections.items():
        if section and values:
            lines += ["", f"[{section}]", *_values(values)]
    for key in draft.keys:
        lines += ["", f"[signing.keys.{toml_key(key.name)}]", comment(key.source)]
        lines.append(f"domain = {toml_string(key.domain)}")
        lines.append(f"selector = {toml_string(key.selector)}")
        lines.append(f"key = {toml_string(key.key)}")
    for entry in draft.table:
        lines += ["", "[[signing.table]]", comment(entry.source)]
        lines.append(f"from = {toml_string(entry.pattern)}")
        lines.append(f"keys = {toml_value(entry.keys)}")
    return "\n".join(lines) + "\n"
