"""OpenDKIM's KeyTable and SigningTable (opendkim.conf(5)) as ``[signing.keys.NAME]`` and
``[[signing.table]]`` (docs/signing.md).

KeyTable lines are ``NAME domain:selector:keyfile``; the key file is pointed at, never
read or copied (its mode is checked: a key readable by others is a warning). A
SigningTable is either a flat file, looked up by exact keys (the address, the domain,
``.parent`` domains, ``*``: written as entries in that order, so that mailauth's first
match is OpenDKIM's), or a ``refile:`` of wildcard patterns tried in the file's order.
What has no exact equivalent (``user@.domain``, ``user@*``, a ``*`` inside a word, a
``%`` domain) is a note, never a guess.
"""

from __future__ import annotations

import os
from pathlib import Path

from mailauth.config_signing import normalize_pattern
from mailauth.dkim.keys import key_file_warning
from mailauth.errors import ConfigError
from mailauth.migrate.confparse import DataSet, Line, Setting
from mailauth.migrate.draft import Draft, EntryDraft, KeyDraft


def import_key_table(data: DataSet, setting: Setting, base: Path, draft: Draft) -> set[str]:
    """The keys of a KeyTable; the names of the keys it could carry over."""
    names: set[str] = set()
    for line in data.lines:
        if len(line.fields) != 2 or line.fields[1].count(":") < 2:
            raise _bad(line, "a KeyTable line is NAME domain:selector:keyfile")
        name = line.fields[0]
        domain, selector, key = line.fields[1].split(":", 2)
        if name in names:
            raise _bad(line, f"key {name!r} is named twice")
        if domain == "%":
            draft.note(
                line,
                "a '%' domain (the From domain, whatever it is) has no "
                "equivalent: each key has its own d=; key left out",
            )
            continue
        if not domain or not selector or not key:
            raise _bad(line, "a KeyTable line is NAME domain:selector:keyfile")
        path = Path(key) if key.startswith("/") else base / key
        if not key.startswith(("/", ".")) and not path.exists() and len(key) > 64:
            draft.note(
                line,
                "the key is written in the table itself: mailauth reads keys "
                "from files; put it in a file (mode 600) and name that; key left out",
            )
            continue
        check_key_file(path, line.where, draft)
        names.add(name)
        draft.keys.append(KeyDraft(name, domain, selector, os.fspath(path), line.where))
    return names


def check_key_file(path: Path, where: str, draft: Draft) -> None:
    """Warnings about a key file: missing, unreadable by us, or open to others."""
    if not path.is_file():
        draft.warnings.append(f"{where}: key file {path} does not exist (or is not a file)")
        return
    if not os.access(path, os.R_OK):
        draft.warnings.append(
            f"{where}: key file {path} is not readable by this user; the milter's user must read it"
        )
    warning = key_file_warning(path)
    if warning:
        draft.warnings.append(f"{where}: {warning}")


def import_signing_table(data: DataSet, known: set[str], multiple: bool, draft: Draft) -> None:
    """The entries of a SigningTable (``multiple``: OpenDKIM's MultipleSignatures).

    Without MultipleSignatures the first match signs: a refile's lines stay in the file's
    order, a flat file's keys go in OpenDKIM's lookup order (a second line for one key is
    never read). With it, every matching line signs (in a flat file, the first line of
    each key that matches): as the patterns mailauth takes are nested (an address inside
    its domain, a domain inside ``*.parent``, everything inside ``*``), the lines matching
    an address are its most specific entry and those that cover it, so each entry gets
    their keys and
    the entries go most specific first."""
    rows: list[tuple[Line, str, list[str]]] = []
    for line in data.lines:
        if len(line.fields) < 2:
            raise _bad(line, "a SigningTable line is PATTERN KEYNAME")
        names = [n for field in line.fields[1:] for n in field.split(",") if n]
        for name in names:
            if name not in known:
                raise _bad(line, f"key {name!r} is not in the KeyTable")
        rows.append((line, line.fields[0], names))
    entries: dict[str, EntryDraft] = {}
    refile = data.kind == "refile"
    for line, written, names in rows:
        pattern = _refile_pattern(written) if refile else _flat_pattern(written.lower())
        if pattern is None:
            draft.note(line, _REFILE_NOTE if refile else _FLAT_NOTE)
            continue
        entry = entries.get(pattern)
        if entry is not None and (not multiple or not refile):
            # (a flat file's second line for a key is never read: OpenDKIM 2.11 takes the
            # first, MultipleSignatures or not -- observed, tests/test_config_import.py)
            draft.note(line, f"{written} is matched first by {entry.source}: left out")
            continue
        if entry is None:
            entry = entries[pattern] = EntryDraft(pattern, [], "")
        entry.keys += [n for n in names if n not in entry.keys]
        entry.source += ("; " if entry.source else "") + f"{line.where} {' '.join(line.fields)}"
    order = list(entries.values())
    if multiple:
        for entry in order:
            covering = [entries[w] for w in _wider(entry.pattern) if w in entries]
            entry.keys += [k for w in covering for k in w.keys if k not in entry.keys]
    if multiple or not refile:
        order.sort(key=lambda entry: _lookup_rank(entry.pattern))
    draft.table += order


_REFILE_NOTE = (
    "this wildcard pattern has no exact equivalent (OpenDKIM's * matches any characters; "
    "mailauth takes local@domain, *@domain, *.domain, *): line left out; mail it matched "
    "may match another entry now"
)
_FLAT_NOTE = (
    "no equivalent for this key (an address entry takes an exact domain; user@* is not a "
    "pattern here): line left out"
)


def _refile_pattern(written: str) -> str | None:
    """The mailauth form of a refile pattern when it means exactly the same addresses."""
    text = written.lower()
    if text in ("*", "*@*"):
        return "*"
    if text.startswith("*@*."):
        text = text[2:]
    local, at, _ = text.rpartition("@")
    if not at:
        if not text.startswith("*."):
            return None  # ("example.com" is a whole address to OpenDKIM's refile: no match)
    elif local != "*" and "*" in local:
        return None
    try:
        return normalize_pattern(text)
    except ValueError:
        return None


def _flat_pattern(key: str) -> str | None:
    if key == "*":
        return "*"
    if key.startswith("."):
        key = "*" + key
    if "@" in key and (key.endswith("@*") or "@." in key):
        return None
    try:
        return normalize_pattern(key)
    except ValueError:
        return None


def _lookup_rank(pattern: str) -> tuple[int, int, str]:
    """Addresses, then domains, then ``*.parent`` (longest first), then ``*``."""
    if pattern == "*":
        return (3, 0, pattern)
    if pattern.startswith("*."):
        return (2, -len(pattern), pattern)
    return (0 if "@" in pattern else 1, 0, pattern)


def _wider(pattern: str) -> list[str]:
    """The patterns that match every address ``pattern`` matches, nearest first: an
    address's domain, ``*.`` each parent domain, ``*`` (a few lookups, not a scan: a table
    of many domains costs linear time)."""
    if pattern == "*":
        return []
    _, at, domain = pattern.rpartition("@")
    domain = domain.removeprefix("*.")
    labels = domain.split(".")
    parents = ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]
    return [domain] * bool(at) + parents + ["*"]


def _bad(line: Line, problem: str) -> ConfigError:
    return ConfigError(f"{line.where}: {problem}")
