"""The milter's outbound configuration beyond ``[outbound]``: modes per listening socket and
per ``{daemon_name}``, and ``[signing]``: OpenDKIM's KeyTable and SigningTable, the
binding of SMTP-AUTH users to the addresses they may sign for, and the DKIM signature
settings (RFC 6376 5), globally or per key. Parsed here, validated with one problem line
each (``key: problem``, located by :mod:`mailauth.config`); the milter builds its signers
from these values (:mod:`mailauth.milter.signing_table`). The format is in docs/signing.md.

Patterns (the SigningTable's ``from`` and the users' lists), matched against an address
``local@domain`` with the domain as lowercase A-labels and the local part lowercased:
``local@domain`` (that address), ``*@domain`` or ``domain`` (any address at the domain),
``*.domain`` or ``*@*.domain`` (any address at a subdomain, not the domain itself), ``*``
(anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from mailauth.dkim.canon import canonicalization_pair
from mailauth.dkim.keys import load_private_key
from mailauth.dkim.sign import signed_header_lists, signing_identity
from mailauth.dkim.signature import MAX_TIME
from mailauth.domains import host_name
from mailauth.errors import MailauthError

MODES = ("verify", "sign", "both")
IDENTITY_SOURCES = ("from", "sender", "return-path")
UNAUTHORIZED = ("refuse", "unsigned")
DEFAULT_MIN_KEY_BITS = 1024  # RFC 8301 3.2: verifiers accept 1024 bits; 2048 recommended
_SETTINGS_KEYS = {
    "canonicalization": str,
    "headers": list,
    "oversign": list,
    "skip_headers": list,
    "expire": int,
    "min_key_bits": int,
}
_SIGNING_KEYS = {
    **_SETTINGS_KEYS,
    "identity": list,
    "unauthorized": str,
    "keys": dict,
    "table": list,
    "users": dict,
}
_KEY_KEYS = {**_SETTINGS_KEYS, "domain": str, "selector": str, "key": str}


@dataclass(frozen=True, slots=True)
class SignatureSettings:
    """How a signature is made (RFC 6376 5.4, 3.4, 3.5): ``headers`` (None: the default
    list), ``oversign`` (None: the default), fields never signed, ``c=``, ``x=`` seconds
    after ``t=`` (0: none), and the least RSA key size accepted at start."""

    headers: tuple[str, ...] | None = None
    oversign: tuple[str, ...] | None = None
    skip_headers: tuple[str, ...] = ()
    canonicalization: str = "relaxed/relaxed"
    expire: int = 0
    min_key_bits: int = DEFAULT_MIN_KEY_BITS


@dataclass(frozen=True, slots=True)
class NamedKey:
    """A KeyTable entry: a name, the ``d=`` domain, the selector, the key file, settings."""

    name: str
    domain: str
    selector: str
    key: Path
    settings: SignatureSettings = field(default_factory=SignatureSettings)


@dataclass(frozen=True, slots=True)
class TableEntry:
    """A SigningTable line: the pattern (normalised) and the names of its keys, in order."""

    pattern: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """``[signing]``. ``users`` is None when there is no ``[signing.users]`` table (no
    binding: any authenticated user may sign for any entry)."""

    keys: tuple[NamedKey, ...] = ()
    table: tuple[TableEntry, ...] = ()
    identity: tuple[str, ...] = ("from",)
    users: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    unauthorized: str = "refuse"
    settings: SignatureSettings = field(default_factory=SignatureSettings)


@dataclass(frozen=True, slots=True)
class Listener:
    """A further ``[[listeners]]`` socket and its mode."""

    listen: str
    mode: str


def normalize_pattern(text: str) -> str:
    """A pattern in its one written form (``*``, ``*.domain``, ``domain``, ``local@domain``);
    ValueError when it is none of the forms."""
    if text == "*":
        return text
    local, at, domain = text.rpartition("@")
    if at and not local:
        raise ValueError(f"{text!r} has an empty local part")
    if local == "*":
        local = ""
    if local and ("*" in local or not local.isprintable() or " " in local):
        raise ValueError(f"{text!r}: the local part must be a plain address part or *")
    star = "*." if domain.startswith("*.") else ""
    name = host_name(domain.removeprefix(star))  # (InvalidDomainError is a ValueError)
    if local and star:
        raise ValueError(f"{text!r}: an address pattern takes an exact domain")
    return f"{local.lower()}@{name}" if local else star + name


def match_pattern(pattern: str, local: str, domain: str) -> bool:
    """Whether ``local@domain`` (lowercased local part, or "" when unknown; normalised
    domain) matches a normalised pattern."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    mailbox, at, name = pattern.rpartition("@")
    if at:
        return bool(local) and local == mailbox and domain == name
    return domain == pattern


def parse_modes(
    data: dict[str, Any], problems: list[str]
) -> tuple[str, tuple[Listener, ...], tuple[tuple[str, str], ...]]:
    """``mode``, ``[[listeners]]`` and ``[daemon_modes]`` of the file's top level."""
    # (A wrong type at the top level is mailauth.config's to report.)
    mode = data.get("mode", "both")
    if isinstance(mode, str) and mode not in MODES:
        problems.append(f"mode: {mode!r} must be verify, sign or both")
    mode = mode if mode in MODES else "both"
    listeners: list[Listener] = []
    entries = data.get("listeners", [])
    entries = entries if isinstance(entries, list) else []
    for index, entry in enumerate(entries):
        name = f"listeners[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{name}: must be a table")
            continue
        for key in entry.keys() - {"listen", "mode"}:
            problems.append(f"{name}.{key}: unknown key")
        listen, kind = entry.get("listen"), entry.get("mode", "both")
        if not isinstance(listen, str) or not listen:
            problems.append(f"{name}: lacks listen")
            continue
        if not isinstance(kind, str) or kind not in MODES:
            problems.append(f"{name}.mode: {kind!r} must be verify, sign or both")
            kind = "both"
        listeners.append(Listener(listen, kind))
    daemons = data.get("daemon_modes", {})
    daemons = daemons if isinstance(daemons, dict) else {}
    found = []
    for daemon, kind in daemons.items():
        if not isinstance(kind, str) or kind not in MODES:
            problems.append(f"daemon_modes.{daemon}: {kind!r} must be verify, sign or both")
            continue
        found.append((str(daemon), kind))
    return mode, tuple(listeners), tuple(found)


def parse_signing(table: Any, problems: list[str]) -> SigningConfig:
    """``[signing]``; every problem one line, ``signing.<key>: problem``."""
    if not isinstance(table, dict):  # (absent, or a wrong type mailauth.config reports)
        return SigningConfig()
    for key, value in table.items():
        expected = _SIGNING_KEYS.get(key)
        if expected is None:
            problems.append(f"signing.{key}: unknown key")
        elif not isinstance(value, expected) or isinstance(value, bool):
            problems.append(f"signing.{key}: must be {_KIND[expected]}")
    settings = _settings(table, "signing", SignatureSettings(), problems)
    keys = _named_keys(table.get("keys"), settings, problems)
    known = {k.name for k in keys} | set(
        table.get("keys", {}) if isinstance(table.get("keys"), dict) else ()
    )
    return SigningConfig(
        keys=keys,
        table=_table(table.get("table"), known, problems),
        identity=_identity(table.get("identity", ["from"]), problems),
        users=_users(table["users"], problems) if isinstance(table.get("users"), dict) else None,
        unauthorized=_choice(table, "unauthorized", UNAUTHORIZED, problems),
        settings=settings,
    )


_KIND = {str: "a string", list: "an array", dict: "a table", int: "an integer"}


def _choice(table: dict[str, Any], key: str, allowed: tuple[str, ...], problems: list[str]) -> str:
    value = table.get(key, allowed[0])
    if not isinstance(value, str) or value not in allowed:
        problems.append(f"signing.{key}: {value!r} must be {' or '.join(allowed)}")
        return allowed[0]
    return value


def _names(value: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}: must be an array of field names")
        return None
    return tuple(v.lower() for v in value)


def _settings(
    table: dict[str, Any], where: str, base: SignatureSettings, problems: list[str]
) -> SignatureSettings:
    """The settings of a table (``[signing]`` or a key's), on top of ``base``."""
    headers = _names(table.get("headers"), f"{where}.headers", problems)
    oversign = _names(table.get("oversign"), f"{where}.oversign", problems)
    skip = _names(table.get("skip_headers"), f"{where}.skip_headers", problems)
    settings = SignatureSettings(
        headers=base.headers if headers is None else headers,
        oversign=base.oversign if oversign is None else oversign,
        skip_headers=base.skip_headers if skip is None else skip,
        canonicalization=_string(table, "canonicalization", base.canonicalization),
        expire=_integer(table, "expire", base.expire),
        min_key_bits=_integer(table, "min_key_bits", base.min_key_bits),
    )
    # (Only what this table sets is checked: a key inherits the global values, checked once.)
    lists = [k for k in ("headers", "oversign", "skip_headers") if k in table]
    if lists:
        try:
            signed_header_lists(settings.headers, settings.oversign, settings.skip_headers)
        except MailauthError as exc:
            problems.append(f"{where}.{lists[-1]}: {exc}")
    if "canonicalization" in table and canonicalization_pair(settings.canonicalization) is None:
        problems.append(
            f"{where}.canonicalization: {settings.canonicalization!r} must be HEADER/BODY, "
            "each simple or relaxed"
        )
    if "expire" in table and not 0 <= settings.expire < MAX_TIME:
        problems.append(f"{where}.expire: must be 0 (no x=) or a positive number of seconds")
    if "min_key_bits" in table and not 512 <= settings.min_key_bits <= 8192:
        problems.append(f"{where}.min_key_bits: must be from 512 to 8192")
    return settings


def _string(table: dict[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    return value if isinstance(value, str) else default


def _integer(table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _named_keys(
    keys: Any, settings: SignatureSettings, problems: list[str]
) -> tuple[NamedKey, ...]:
    if not isinstance(keys, dict):
        return ()
    found = []
    for name, entry in keys.items():
        where = f"signing.keys.{name}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key, value in entry.items():
            expected = _KEY_KEYS.get(key)
            if expected is None:
                problems.append(f"{where}.{key}: unknown key")
            elif not isinstance(value, expected) or isinstance(value, bool):
                problems.append(f"{where}.{key}: must be {_KIND[expected]}")
        missing = [k for k in ("domain", "selector", "key") if not isinstance(entry.get(k), str)]
        if missing:
            problems.append(f"{where}: lacks {', '.join(missing)}")
            continue
        try:
            domain, selector = signing_identity(entry["domain"], entry["selector"])
        except MailauthError as exc:
            problems.append(f"{where}: {exc}")
            continue
        own = _settings(entry, where, settings, problems)
        found.append(NamedKey(str(name), domain, selector, Path(entry["key"]), own))
    return tuple(found)


def _table(entries: Any, known: set[str], problems: list[str]) -> tuple[TableEntry, ...]:
    if not isinstance(entries, list):
        return ()
    found = []
    for index, entry in enumerate(entries):
        where = f"signing.table[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in entry.keys() - {"from", "keys"}:
            problems.append(f"{where}.{key}: unknown key")
        pattern, names = entry.get("from"), entry.get("keys")
        if not isinstance(pattern, str) or not isinstance(names, list):
            problems.append(f"{where}: needs from (a pattern) and keys (an array of key names)")
            continue
        try:
            normalized = normalize_pattern(pattern)
        except ValueError as exc:
            problems.append(f"{where}.from: {exc}")
            continue
        unknown = [n for n in names if not isinstance(n, str) or n not in known]
        if unknown:
            problems.append(f"{where}.keys: {unknown[0]!r} is not a key of [signing.keys]")
            continue
        found.append(TableEntry(normalized, tuple(dict.fromkeys(names))))
    return tuple(found)


def _identity(value: Any, problems: list[str]) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.lower() in IDENTITY_SOURCES for v in value)
    ):
        problems.append(
            f"signing.identity: {value!r} must list sources among from, sender, return-path"
        )
        return ("from",)
    return tuple(dict.fromkeys(v.lower() for v in value))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_login(name: str) -> str:
    """A SASL login name as ``[signing.users]`` matches it: ASCII letters in either case
    are the same (Postfix's reject_sender_login_mismatch compares the login with
    smtpd_sender_login_maps' owners by strcasecmp; Dovecot lowercases logins with its
    default ``auth_username_format = %Lu``; "Alice@Example.COM" is alice@example.com),
    every other character as it is (str.lower() would also make the Kelvin sign K, U+212A,
    an ASCII "k": a login another backend treats as distinct must not take a user's
    entry)."""
    return name.translate(_ASCII_LOWER)


def _users(table: dict[str, Any], problems: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    found = []
    seen: dict[str, str] = {}
    for user, patterns in table.items():
        where = f"signing.users.{user}"
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            problems.append(f"{where}: must be an array of patterns")
            continue
        folded = fold_login(str(user))
        if folded in seen:
            problems.append(
                f"{where}: the same login as {seen[folded]!r} (logins match in any case)"
            )
            continue
        seen[folded] = str(user)
        normalized = []
        for pattern in patterns:
            try:
                normalized.append(normalize_pattern(pattern))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        found.append((folded, tuple(normalized)))
    return tuple(found)


def signing_key_problems(signing: SigningConfig, legacy: tuple[tuple[str, Path], ...]) -> list[str]:
    """Keys that cannot be read or are weaker than ``min_key_bits`` (RSA; Ed25519 keys have
    one size): one line each. ``legacy``: ``outbound.keys`` (where, file), held to the
    global ``min_key_bits``, whose other problems mailauth.config reports."""
    problems = []
    for key in signing.keys:
        where = f"signing.keys.{key.name}.key"
        try:
            loaded = load_private_key(key.key)
        except MailauthError as exc:
            problems.append(f"{where}: {exc}")
            continue
        problems += _weak(where, key.key, loaded, key.settings.min_key_bits)
    for where, path in legacy:
        try:
            loaded = load_private_key(path)
        except MailauthError:
            continue
        problems += _weak(where, path, loaded, signing.settings.min_key_bits)
    return problems


def _weak(where: str, path: Path, key: object, bits: int) -> list[str]:
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < bits:
        return [f"{where}: {path}: RSA key of {key.key_size} bits, less than min_key_bits {bits}"]
    return []
