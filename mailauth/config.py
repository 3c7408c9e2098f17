"""The milter's configuration file (TOML), validated in full before anything starts.

Every problem found becomes one line of the :class:`ConfigError` message, all of them in
one run: ``FILE:LINE: key: problem`` (the line of the key, or of its table, found in the
text; ``FILE: key: problem`` when there is none): unknown keys, wrong types, bad CIDRs, a
listen socket that cannot be (unknown scheme, port out of range), nameservers that are not
addresses, zone files that do not load, unreadable key files, an authserv-id that is not a
token. The file is read with the standard library's ``tomllib``, whose syntax errors give
their line; the format is documented in docs/milter.md.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailauth.authresults import quote_pvalue
from mailauth.config_failure import FAILURE_KEYS, FailureConfig, failure_config, failure_problems
from mailauth.config_inbound import (
    INBOUND_KEYS,
    TABLES,
    InboundOptions,
    LogOptions,
    read_inbound,
    read_logging,
)
from mailauth.config_signing import (
    Listener,
    SigningConfig,
    parse_modes,
    parse_signing,
    signing_key_problems,
)
from mailauth.dkim.keys import load_private_key
from mailauth.dkim.verify import DEFAULT_MAX_SIGNATURES
from mailauth.dns import ZoneResolver, parse_nameserver
from mailauth.dns.zone import split_zone_spec
from mailauth.domains import host_name
from mailauth.errors import ConfigError, MailauthError
from mailauth.files import CONFIG_LIMIT, read_limited

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The milter's caps on one message's header section (mailauth.milter.settings imports these).
MAX_HEADER_SECTION = 1 << 20
# Real mail has a few dozen fields (a list's copy with a long Received trail perhaps a
# hundred; Postfix's hopcount_limit is 50). Each costs the end of the header section about
# 2 us of the event loop in one piece (building the section; 10,000 fields: 20 ms here).
MAX_HEADER_FIELDS = 1_000
# Mail from the host itself (local submission; Postfix's non_smtpd_milters present it as
# 127.0.0.1) is outbound unless the configuration lists its own trusted networks.
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {
        "listen": str,
        "authserv_id": str,
        "socket_mode": str,
        "deadline": (int, float),
        "idle_timeout": (int, float),
        "on_error": str,
        "dns": dict,
        "inbound": dict,
        "outbound": dict,
        "metrics_listen": str,
        "log_format": str,
        "max_header_size": int,
        "max_header_fields": int,
        "reports": dict,
        "mode": str,  # these three and [signing]: mailauth.config_signing
        "listeners": list,
        "daemon_modes": dict,
        "signing": dict,
        "logging": dict,
    },
    **TABLES,
    "reports": {
        "store": str,
        "org_name": str,
        "email": str,
        "submitter": str,
        "extra_contact_info": str,
        "record_envelope_to": bool,
        "interval": int,
        "flush_seconds": (int, float),
        "max_rows": int,
        **FAILURE_KEYS,  # RFC 9991 failure reports (mailauth.config_failure)
    },
    "dns": {"nameservers": list, "timeout": (int, float), "zone_files": list},
    "inbound": {
        "reject_dmarc": bool,
        "quarantine_dmarc": bool,
        "trusted_arc_sealers": list,
        "trusted_mailing_lists": list,
        "arc_seal": dict,
        "reject_partial_body": bool,
        "max_dkim_signatures": int,
        "dmarc_temperror": str,
        "offload_workers": int,
        **INBOUND_KEYS,
    },
    "inbound.arc_seal": {"domain": str, "selector": str, "key": str, "recipient_domains": list},
    "outbound": {"trusted_networks": list, "keys": list},
    "outbound.keys": {"domain": str, "selector": str, "key": str, "sign_for": list},
}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A signing key (``d=`` domain, selector, key file) and the From domains it signs for:
    exact names or ``*.parent`` for any subdomain of parent (default: ``domain`` only)."""

    domain: str
    selector: str
    key: Path
    sign_for: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportsConfig:
    """``[reports]`` (docs/reports.md): where verdicts are recorded (``store``: a SQLite
    file path or a ``postgresql://`` URL; "" records nothing) and who reports."""

    store: str = ""
    org_name: str = ""
    email: str = ""
    submitter: str = ""
    extra_contact_info: str = ""
    record_envelope_to: bool = False
    interval: int = 86400
    flush_seconds: float = 5.0
    max_rows: int = 200_000
    # for `mailauth reports send` (docs/reports.md, "Delivery"); the milter ignores them
    sign_key: str = ""
    sign_selector: str = ""
    relay: str = ""
    relay_tls: str = ""
    relay_cafile: str = ""
    relay_user: str = ""
    relay_password_file: str = ""
    relay_password_env: str = ""
    relay_check_certificate: bool = True
    failure: FailureConfig = field(default_factory=FailureConfig)  # RFC 9991: failure_*


@dataclass(frozen=True, slots=True)
class MilterConfig:
    listen: str = ""
    authserv_id: str = ""
    socket_mode: int = 0o660
    deadline: float = 30.0
    idle_timeout: float = 7210.0
    on_error: str = "accept"
    nameservers: tuple[str, ...] = ()
    dns_timeout: float = 5.0
    zone_files: tuple[str, ...] = ()
    reject_dmarc: bool = False
    quarantine_dmarc: bool = False
    trusted_arc_sealers: tuple[str, ...] = ()
    trusted_mailing_lists: tuple[str, ...] = ()
    trusted_networks: tuple[Network, ...] = field(default=LOOPBACK)  # replaced by the file's
    keys: tuple[KeySpec, ...] = field(default=())
    arc_seal: KeySpec | None = None  # ARC-seal verified inbound mail with this key ...
    arc_seal_domains: tuple[str, ...] = ()  # ... when a recipient is in one of these (or all)
    metrics_listen: str = ""
    log_format: str = "json"
    dmarc_temperror: str = "tempfail"  # or "accept": DMARC temperror with a policy acted on
    reject_partial_body: bool = False  # DKIM l= leaving body unsigned: policy, not pass
    max_dkim_signatures: int = DEFAULT_MAX_SIGNATURES
    max_header_size: int = MAX_HEADER_SECTION
    max_header_fields: int = MAX_HEADER_FIELDS
    offload_workers: int | None = None  # heavy messages' worker processes; None: automatic
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    mode: str = "both"  # of the ``listen`` socket: verify, sign or both (docs/signing.md)
    listeners: tuple[Listener, ...] = ()  # more sockets, each with its mode
    daemon_modes: tuple[tuple[str, str], ...] = ()  # {daemon_name} value -> mode
    signing: SigningConfig = field(default_factory=SigningConfig)
    inbound: InboundOptions = field(default_factory=InboundOptions)  # (config_inbound.py)
    logging: LogOptions = field(default_factory=LogOptions)


def load_milter_config(path: str | os.PathLike[str]) -> MilterConfig:
    """Read and validate; raises ConfigError listing every problem, one per line."""
    config, problems = read_milter_config(path)
    if problems or config is None:
        raise ConfigError("\n".join(problems))
    return config


def read_milter_config(path: str | os.PathLike[str]) -> tuple[MilterConfig | None, list[str]]:
    """The configuration (with defaults where the file's values are unusable; None when
    the file is not TOML) and every problem of the file, each a line ``FILE:LINE: key:
    problem``, in the order of their lines."""
    try:
        text = read_limited(path, CONFIG_LIMIT).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (octet {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = _TOML_LINE.search(str(exc))
        if where is None:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        what = str(exc)[: where.start()].rstrip()
        return None, [f"{path}:{where.group(1)}: not valid TOML: {what}"]
    problems: list[str] = []
    _check_types(data, "", problems)
    config = _config_of(data, problems)
    problems += config_problems(config)
    lines = _key_lines(text)
    located = [_located(str(path), lines, problem) for problem in problems]
    return config, sorted(located, key=_line_of)


def locate_problem(path: str | os.PathLike[str], problem: str) -> str:
    """``key: problem`` about a value of the file at ``path``, as ``FILE:LINE: key:
    problem`` (for what only a start finds: the directory of a unix socket)."""
    try:
        text = read_limited(path, CONFIG_LIMIT).decode("utf-8", "replace")
    except OSError:
        text = ""
    return _located(str(path), _key_lines(text), problem)


def _line_of(located: str) -> int:
    line = re.match(r"[^\n]*?:(\d+): ", located)
    return int(line.group(1)) if line else 1 << 30


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)$")


def _config_of(data: dict[str, Any], problems: list[str]) -> MilterConfig:
    dns, inbound, outbound = (data.get(k, {}) for k in ("dns", "inbound", "outbound"))
    return MilterConfig(
        listen=_get(data, "listen", ""),
        authserv_id=_get(data, "authserv_id", ""),
        socket_mode=_mode(data.get("socket_mode", "660"), problems),
        deadline=float(_get(data, "deadline", 30.0)),
        idle_timeout=float(_get(data, "idle_timeout", 7210.0)),
        on_error=_get(data, "on_error", "accept"),
        nameservers=tuple(str(n) for n in _get(dns, "nameservers", [])),
        dns_timeout=float(_get(dns, "timeout", 5.0)),
        zone_files=tuple(str(z) for z in _get(dns, "zone_files", [])),
        reject_dmarc=bool(_get(inbound, "reject_dmarc", False)),
        quarantine_dmarc=bool(_get(inbound, "quarantine_dmarc", False)),
        trusted_arc_sealers=tuple(str(d) for d in _get(inbound, "trusted_arc_sealers", [])),
        trusted_mailing_lists=tuple(str(d) for d in _get(inbound, "trusted_mailing_lists", [])),
        trusted_networks=(
            _networks(outbound["trusted_networks"], problems)
            if isinstance(outbound, dict) and isinstance(outbound.get("trusted_networks"), list)
            else LOOPBACK
        ),
        keys=_keys(_get(outbound, "keys", []), "outbound.keys", problems),
        arc_seal=_arc_seal(_get(inbound, "arc_seal", {}), problems),
        arc_seal_domains=tuple(
            str(d) for d in _get(_get(inbound, "arc_seal", {}), "recipient_domains", [])
        ),
        metrics_listen=_get(data, "metrics_listen", ""),
        log_format=_get(data, "log_format", "json"),
        dmarc_temperror=_get(inbound, "dmarc_temperror", "tempfail"),
        reject_partial_body=bool(_get(inbound, "reject_partial_body", False)),
        max_dkim_signatures=_get(inbound, "max_dkim_signatures", DEFAULT_MAX_SIGNATURES),
        max_header_size=_get(data, "max_header_size", MAX_HEADER_SECTION),
        max_header_fields=_get(data, "max_header_fields", MAX_HEADER_FIELDS),
        offload_workers=_optional_int(inbound, "offload_workers"),
        reports=_reports(_get(data, "reports", {})),
        **_outbound_of(data, problems),
        inbound=read_inbound(inbound, problems),
        logging=read_logging(data.get("logging"), problems),
    )


def _outbound_of(data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The keys mailauth.config_signing reads (modes, listeners, ``[signing]``)."""
    mode, listeners, daemon_modes = parse_modes(data, problems)
    signing = parse_signing(data.get("signing"), problems)
    return {"mode": mode, "listeners": listeners, "daemon_modes": daemon_modes, "signing": signing}


_OWN_CHECKS = frozenset({"daemon_modes", "signing"})  # (checked by mailauth.config_signing)
_TABLE = re.compile(r"\[\s*([A-Za-z0-9_.\- ]+?)\s*\]")
_ARRAY_TABLE = re.compile(r"\[\[\s*([A-Za-z0-9_.\- ]+?)\s*\]\]")
_KEY = re.compile(r"""([A-Za-z0-9_\-"'.]+?)\s*=""")


def _key_lines(text: str) -> dict[str, int]:
    """Where each key (``dns.nameservers``, ``outbound.keys[1].key``) and each table is
    written: the first line of it (tomllib gives no positions; a plain reading of key lines
    and table headers is enough for messages)."""
    lines: dict[str, int] = {}
    table, arrays = "", dict[str, int]()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if (header := _ARRAY_TABLE.match(stripped)) is not None:
            name = header.group(1).replace(" ", "")
            arrays[name] = arrays.get(name, -1) + 1
            table = f"{name}[{arrays[name]}]"
            lines.setdefault(table, number)
        elif (header := _TABLE.match(stripped)) is not None:
            table = header.group(1).replace(" ", "")
            lines.setdefault(table, number)
        elif (key := _KEY.match(stripped)) is not None:
            name = key.group(1).replace('"', "").replace("'", "")
            lines.setdefault(f"{table}.{name}" if table else name, number)
    return lines


def _located(path: str, lines: dict[str, int], problem: str) -> str:
    """``FILE:LINE: key: problem``: the line of the key, else of the nearest table above
    it that is written in the file."""
    key = problem.partition(": ")[0]
    while key:
        if key in lines:
            return f"{path}:{lines[key]}: {problem}"
        key = re.sub(r"(\[\d+\]|\.[^.\[]*)$", "", key)
    return f"{path}: {problem}"


def _get(table: Any, key: str, default: Any) -> Any:
    value = table.get(key, default) if isinstance(table, dict) else default
    expected = type(default)
    if isinstance(default, float) and isinstance(value, int):
        return value
    return value if isinstance(value, expected) else default


def _optional_int(table: Any, key: str) -> int | None:
    value = table.get(key) if isinstance(table, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_types(
    table: dict[str, Any], where: str, problems: list[str], shown: str | None = None
) -> None:
    """Unknown keys and wrong types; ``shown`` names the table in messages (an entry of
    an array of tables: ``outbound.keys[1]``), ``where`` its schema."""
    schema = _SCHEMA[where]
    prefix = where if shown is None else shown
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if key not in schema:
            problems.append(f"{name}: unknown key")
            continue
        expected = schema[key]
        if isinstance(value, bool) and expected in ((int, float), int):
            problems.append(f"{name}: must be a number")
        elif not isinstance(value, expected):
            kind = expected.__name__ if isinstance(expected, type) else "number"
            problems.append(f"{name}: must be a {'table' if kind == 'dict' else kind}")
        elif isinstance(value, dict) and (where or key not in _OWN_CHECKS):
            _check_types(value, f"{where}.{key}" if where else key, problems)
    keys = table.get("keys") if where == "outbound" else None
    for index, entry in enumerate(keys if isinstance(keys, list) else []):
        if not isinstance(entry, dict):
            problems.append(f"outbound.keys[{index}]: must be a table")
            continue
        _check_types(entry, "outbound.keys", problems, f"outbound.keys[{index}]")


def _mode(value: Any, problems: list[str]) -> int:
    try:
        return parse_socket_mode(str(value))
    except ValueError as exc:
        problems.append(f"socket_mode: {exc}")
        return 0o660


def parse_socket_mode(text: str) -> int:
    """An octal permission mode for the unix socket, 0 to 777: no setuid, setgid or sticky
    bit (and nothing os.chmod would overflow on or wrap: ``-1`` used to become 07777).
    ValueError (``'TEXT' is not ...``) otherwise."""
    if not text or not all(c in "01234567" for c in text):
        raise ValueError(f"{text!r} is not an octal mode such as 660")
    mode = int(text, 8)
    if mode > 0o777:
        raise ValueError(f"{text!r} is not a permission mode from 0 to 777 (such as 660)")
    return mode


def _networks(values: list[Any], problems: list[str]) -> tuple[Network, ...]:
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            problems.append(f"outbound.trusted_networks: {value!r} is not a CIDR network")
    return tuple(found)


def _keys(entries: list[Any], where: str, problems: list[str]) -> tuple[KeySpec, ...]:
    specs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        name = f"{where}[{index}]" if where == "outbound.keys" else where
        missing = [k for k in ("domain", "selector", "key") if not isinstance(entry.get(k), str)]
        if missing:
            problems.append(f"{name}: lacks {', '.join(missing)}")
            continue
        path = Path(entry["key"])
        if not os.access(path, os.R_OK):
            problems.append(f"{name}.key: cannot read key file {path}")
            continue
        sign_for = []
        for pattern in map(str, _get(entry, "sign_for", [])):  # (a wrong type: reported)
            star = "*." if pattern.startswith("*.") else ""
            try:  # kept as From domains are compared: lowercase A-labels
                sign_for.append(star + host_name(pattern.removeprefix(star)))
            except ValueError:
                problems.append(f"{name}.sign_for: {pattern!r} is not a domain or *.domain")
        specs.append(KeySpec(entry["domain"], entry["selector"], path, tuple(sign_for)))
    return tuple(specs)


def _reports(table: dict[str, Any]) -> ReportsConfig:
    defaults = ReportsConfig()
    return ReportsConfig(
        store=_get(table, "store", ""),
        org_name=_get(table, "org_name", ""),
        email=_get(table, "email", ""),
        submitter=_get(table, "submitter", ""),
        extra_contact_info=_get(table, "extra_contact_info", ""),
        record_envelope_to=_get(table, "record_envelope_to", False),
        interval=_get(table, "interval", defaults.interval),
        flush_seconds=float(_get(table, "flush_seconds", defaults.flush_seconds)),
        max_rows=_get(table, "max_rows", defaults.max_rows),
        sign_key=_get(table, "sign_key", ""),
        sign_selector=_get(table, "sign_selector", ""),
        relay=_get(table, "relay", ""),
        relay_tls=_get(table, "relay_tls", ""),
        relay_cafile=_get(table, "relay_cafile", ""),
        relay_user=_get(table, "relay_user", ""),
        relay_password_file=_get(table, "relay_password_file", ""),
        relay_password_env=_get(table, "relay_password_env", ""),
        relay_check_certificate=_get(table, "relay_check_certificate", True),
        failure=failure_config(table),
    )


def _arc_seal(table: dict[str, Any], problems: list[str]) -> KeySpec | None:
    found = _keys([table], "inbound.arc_seal", problems) if table else ()
    return found[0] if found else None


def config_problems(config: MilterConfig) -> list[str]:
    """What is wrong with the values of a configuration, one line each (the file's, or the
    file's with the command line's options on top)."""
    problems: list[str] = []
    _check_values(config, problems)
    return problems


def _check_reports(reports: ReportsConfig, problems: list[str]) -> None:
    """``[reports]``: the numbers in range, the submitter a host name, the address one."""
    for name, value, low, high in (
        ("reports.interval", reports.interval, 60, 86400),  # RFC 9990: at least daily
        ("reports.max_rows", reports.max_rows, 100, 100_000_000),
    ):
        if not low <= value <= high:
            problems.append(f"{name}: must be from {low} to {high}, not {value}")
    if not 0 < reports.flush_seconds <= 3600:
        problems.append(
            f"reports.flush_seconds: must be from 0 to 3600, not {reports.flush_seconds}"
        )
    if 86400 % reports.interval:
        problems.append(f"reports.interval: {reports.interval} must divide a day (86400)")
    if reports.submitter:
        try:
            host_name(reports.submitter)
        except ValueError:
            problems.append(f"reports.submitter: {reports.submitter!r} is not a domain")
    if reports.email and (reports.email.count("@") != 1 or not reports.email.isprintable()):
        problems.append(f"reports.email: {reports.email!r} is not an address")
    for field_name, text in (
        ("org_name", reports.org_name),
        ("extra_contact_info", reports.extra_contact_info),
    ):
        if not text.isprintable():
            problems.append(f"reports.{field_name}: has control characters")
    problems.extend(failure_problems(reports.failure, reports.store))


def _check_values(config: MilterConfig, problems: list[str]) -> None:
    if config.listen:
        try:
            parse_listen_spec(config.listen)
        except ValueError as exc:
            problems.append(f"listen: {exc}")
    if config.authserv_id and quote_pvalue(config.authserv_id) != config.authserv_id:
        problems.append(f"authserv_id: {config.authserv_id!r} must be a plain token (a host name)")
    if config.on_error not in ("accept", "tempfail"):
        problems.append(f"on_error: {config.on_error!r} must be accept or tempfail")
    if config.dmarc_temperror not in ("accept", "tempfail"):
        problems.append(
            f"inbound.dmarc_temperror: {config.dmarc_temperror!r} must be accept or tempfail"
        )
    if config.log_format not in ("json", "text"):
        problems.append(f"log_format: {config.log_format!r} must be json or text")
    for name, seconds in (
        ("deadline", config.deadline),
        ("idle_timeout", config.idle_timeout),
        ("dns.timeout", config.dns_timeout),
    ):
        if not 0 < seconds < math.inf:  # (false for NaN too: TOML has nan and inf)
            problems.append(f"{name}: must be a positive number of seconds, not {seconds!r}")
    if config.metrics_listen:
        host, _, port = config.metrics_listen.rpartition(":")
        if not (host and port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            problems.append(f"metrics_listen: {config.metrics_listen!r} must be HOST:PORT")
    for name, value, low, high in (
        ("inbound.max_dkim_signatures", config.max_dkim_signatures, 1, 1000),
        ("max_header_size", config.max_header_size, 1024, 1 << 30),
        ("max_header_fields", config.max_header_fields, 10, 1_000_000),
        ("inbound.offload_workers", config.offload_workers, 0, 16),
    ):
        if value is None:
            continue
        if not low <= value <= high:
            problems.append(f"{name}: must be from {low} to {high}, not {value}")
    _check_dns(config, problems)
    _check_reports(config.reports, problems)
    for where, names in (
        ("inbound.trusted_arc_sealers", config.trusted_arc_sealers),
        ("inbound.trusted_mailing_lists", config.trusted_mailing_lists),
        ("inbound.arc_seal.recipient_domains", config.arc_seal_domains),
    ):
        for name in names:
            try:
                host_name(name)
            except ValueError:
                problems.append(f"{where}: {name!r} is not a host name")
    listens = [config.listen, *(listener.listen for listener in config.listeners)]
    for index, listener in enumerate(config.listeners):
        try:
            parse_listen_spec(listener.listen)
        except ValueError as exc:
            problems.append(f"listeners[{index}].listen: {exc}")
        if listens.index(listener.listen) <= index:
            problems.append(f"listeners[{index}].listen: {listener.listen!r} is given twice")
    legacy = tuple((f"outbound.keys[{i}]", k.key) for i, k in enumerate(config.keys))
    problems += signing_key_problems(config.signing, legacy)
    for where, spec in [
        *((f"outbound.keys[{i}]", k) for i, k in enumerate(config.keys)),
        ("inbound.arc_seal", config.arc_seal),
    ]:
        if spec is None:
            continue
        try:
            load_private_key(spec.key)
        except MailauthError as exc:
            problems.append(f"{where}: {exc}")


def _check_dns(config: MilterConfig, problems: list[str]) -> None:
    if config.nameservers and config.zone_files:
        problems.append("dns.nameservers: dns.nameservers and dns.zone_files exclude each other")
    for nameserver in config.nameservers:
        try:
            parse_nameserver(nameserver)
        except ValueError as exc:
            problems.append(f"dns.nameservers: {exc}")
    for spec in config.zone_files:
        try:
            ZoneResolver.from_files([split_zone_spec(spec)])
        except ValueError as exc:
            problems.append(f"dns.zone_files: {exc}")


_SCHEMES = "use inet:PORT@HOST, inet6:PORT@HOST or unix:PATH"


def parse_listen_spec(spec: str) -> tuple[str, str | int, str]:
    """``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:PATH`` (or ``local:PATH``): the
    socket names Postfix and Sendmail use. ValueError says what is wrong."""
    kind, colon, rest = spec.partition(":")
    if kind in ("unix", "local") and rest:
        return "unix", rest, ""
    if kind in ("unix", "local"):
        raise ValueError(f"bad listen socket {spec!r}: {kind}: needs a path")
    if kind not in ("inet", "inet6"):
        what = f"unknown scheme {kind!r}" if colon else "no scheme"
        raise ValueError(f"bad listen socket {spec!r}: {what}; {_SCHEMES}")
    port, _, host = rest.partition("@")
    if not (port.isascii() and port.isdigit()):  # (not '²' or '١')
        raise ValueError(f"bad listen socket {spec!r}: port {port!r} is not a number")
    if not 0 < int(port) < 65536:
        raise ValueError(f"bad listen socket {spec!r}: port {int(port)} out of range 1-65535")
    return kind, int(port), host or ("127.0.0.1" if kind == "inet" else "::1")
