"""Reading the files of an OpenDKIM or OpenDMARC site: the ``Name value`` configuration
files (opendkim.conf(5), opendmarc.conf(5)) and OpenDKIM's data sets (a flat file,
``file:``, ``refile:``, ``csl:``).

Every problem of the input is a :class:`~mailauth.errors.ConfigError` whose message is one
line, ``FILE:LINE: problem`` (``FILE: problem`` when it is about the whole file). Data-set
kinds held in a database or a script (``db:``, ``dsn:``, ``ldap:``, ``lua:``, ...) are not
read: :func:`parse_dataset` says so and the importer turns that into a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mailauth.errors import ConfigError
from mailauth.files import CONFIG_LIMIT, ZONE_LIMIT, read_limited

TABLE_LIMIT = ZONE_LIMIT  # a signing table of many hosted domains is larger than a config
BOOLEANS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
# Data-set kinds of opendkim.conf(5) kept in a database, a directory or a script.
UNREADABLE_KINDS = (
    "db", "dsn", "ldap", "ldapi", "ldaps", "lua", "memcache", "redis", "mdb", "erlang",
    "socket",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``Name value`` line: the name as written, the value, and where it is."""

    name: str
    value: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Line:
    """A line of a data-set file, comment and blanks removed: its fields split on white
    space (``key value...``), and where it is."""

    fields: tuple[str, ...]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class DataSet:
    """A data set named by a setting: ``kind`` is ``file``, ``refile``, ``csl`` or one that
    cannot be read (then ``lines`` is empty); ``lines`` its entries."""

    kind: str
    source: str
    lines: tuple[Line, ...]


def read_text(path: str | os.PathLike[str], limit: int = CONFIG_LIMIT) -> str:
    """A file's text (UTF-8; Latin-1 bytes, which old files hold in comments, kept)."""
    try:
        data = read_limited(path, limit)
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise ConfigError(f"{os.fspath(path)}: not a text file (it holds NUL octets)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _content(text: str) -> str:
    """A line without its comment (``#`` to the end of the line) and outer blanks."""
    return text.split("#", 1)[0].strip()


def read_conf(path: str | os.PathLike[str]) -> list[Setting]:
    """The settings of an opendkim.conf or opendmarc.conf file, in order. A name given
    twice is an error (which one the daemon uses is not something to guess)."""
    name_of_file = os.fspath(path)
    seen: dict[str, int] = {}
    found = []
    for number, raw in enumerate(read_text(path).splitlines(), 1):
        text = _content(raw)
        if not text:
            continue
        name, value = [*text.split(None, 1), ""][:2]
        where = f"{name_of_file}:{number}"
        if not name.replace("-", "").replace("_", "").isalnum() or not name.isascii():
            raise ConfigError(f"{where}: {name!r} is not a setting name")
        if not value:
            raise ConfigError(f"{where}: {name}: no value")
        key = name.lower()
        if key in seen:
            raise ConfigError(f"{where}: {name}: given twice (line {seen[key]} too)")
        seen[key] = number
        found.append(Setting(name, value, name_of_file, number))
    return found


def parse_bool(setting: Setting) -> bool:
    """A boolean value (yes/no, true/false, 1/0, any case)."""
    value = BOOLEANS.get(setting.value.lower())
    if value is None:
        raise ConfigError(
            f"{setting.where}: {setting.name}: {setting.value!r} is not a boolean "
            "(yes, no, true, false, 1 or 0)"
        )
    return value


def parse_int(setting: Setting, low: int = 0, high: int = 2**31 - 1) -> int:
    value = setting.value
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ConfigError(
            f"{setting.where}: {setting.name}: {value!r} is not a number from {low} to {high}"
        )
    return int(value)


def dataset_kind(setting: Setting) -> tuple[str, str]:
    """The kind of the data set a setting names and what follows the kind: a value with
    a known ``kind:`` prefix, a plain path (``/...``: a flat file), else a comma list."""
    kind, colon, rest = setting.value.partition(":")
    if colon and kind.lower() in (*UNREADABLE_KINDS, "file", "refile", "csl"):
        return kind.lower(), rest
    if setting.value.startswith("/"):
        return "file", setting.value
    return "csl", setting.value


def parse_dataset(setting: Setting, base: Path) -> DataSet:
    """The entries of the data set ``setting`` names; a relative file path is taken from
    ``base`` (the daemon's BaseDirectory or the configuration file's directory)."""
    kind, rest = dataset_kind(setting)
    if kind in UNREADABLE_KINDS:
        return DataSet(kind, rest, ())
    if kind == "csl":
        items = tuple(item.strip() for item in rest.split(",") if item.strip())
        return DataSet(kind, rest, tuple(Line((i,), setting.file, setting.line) for i in items))
    path = base / rest if not rest.startswith("/") else Path(rest)
    text = read_text(path, TABLE_LIMIT)
    return DataSet(kind, os.fspath(path), tuple(read_lines(path, text)))


def read_lines(path: Path, text: str) -> list[Line]:
    """The entries of a list or table file: fields split on white space, comments and
    blank lines left out."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        content = _content(raw)
        if content:
            found.append(Line(tuple(content.split()), os.fspath(path), number))
    return found
