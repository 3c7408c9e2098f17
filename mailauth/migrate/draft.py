"""The mailauth milter configuration being built from an OpenDKIM or OpenDMARC site: the
values, where each came from, and the notes about what could not be carried over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailauth.migrate.confparse import Line, Setting

# The tables of the output, in the order they are written ("" is the top level).
SECTIONS = ("", "dns", "inbound", "outbound", "logging", "daemon_modes", "signing")


@dataclass(slots=True)
class Value:
    """A value of the output and the line it comes from (a comment above it)."""

    value: Any
    source: str
    comment: str = ""


@dataclass(slots=True)
class KeyDraft:
    """A ``[signing.keys.NAME]`` table (a KeyTable line, or the Domain/Selector/KeyFile
    form)."""

    name: str
    domain: str
    selector: str
    key: str
    source: str


@dataclass(slots=True)
class EntryDraft:
    """A ``[[signing.table]]`` entry."""

    pattern: str
    keys: list[str]
    source: str


@dataclass(slots=True)
class Draft:
    sections: dict[str, dict[str, Value]] = field(
        default_factory=lambda: {name: {} for name in SECTIONS}
    )
    keys: list[KeyDraft] = field(default_factory=list)
    table: list[EntryDraft] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not carried over (exactly)
    warnings: list[str] = field(default_factory=list)  # key files

    def set(self, section: str, key: str, value: Any, source: str, comment: str = "") -> None:
        """Set a value; one that another file set already stays, with a note when they
        differ (an OpenDKIM and an OpenDMARC AuthservID, say)."""
        table = self.sections[section]
        old = table.get(key)
        if old is None:
            table[key] = Value(value, source, comment)
        elif isinstance(old.value, list) and isinstance(value, list):  # (both files' lists)
            old.value += [item for item in value if item not in old.value]
            old.source += f"; {source}"
        elif old.value != value:
            dotted = f"{section}.{key}" if section else key
            self.notes.append(f"{source}: differs from {old.source}, which {dotted} keeps")

    def note(self, where: Setting | Line | str, text: str) -> None:
        """One line about what is not carried over exactly: ``FILE:LINE: Name: text``."""
        if isinstance(where, Setting):
            self.notes.append(f"{where.where}: {where.name}: {text}")
        elif isinstance(where, Line):
            self.notes.append(f"{where.where}: {' '.join(where.fields)}: {text}")
        else:
            self.notes.append(f"{where}: {text}")


def source_of(setting: Setting) -> str:
    """The comment naming where a value comes from: ``FILE:LINE: Name value``."""
    return f"{setting.where}: {setting.name} {setting.value}"
