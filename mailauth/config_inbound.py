"""The milter configuration's inbound options for multi-tier sites and the knobs of an
OpenDMARC site, and its ``[logging]`` table: parsed and validated here, one problem per
line as ``key: problem`` (:mod:`mailauth.config` adds the file and line).

The TOML shape (docs/milter.md, "Multi-tier inbound" and "OpenDMARC's settings"; the
input of a future ``mailauth config import --opendmarc``)::

    [inbound]
    trusted_authserv_ids = ["border.example.org"]   # TrustedAuthservIDs
    verify_trusted_networks = false                 # verify internal mail that is not signed
    ignore_networks = ["192.0.2.0/24"]              # IgnoreHosts
    ignore_author_domains = ["partner.example"]     # IgnoreDomains
    ignore_mail_from_domains = ["bounce.example"]   # IgnoreMailFrom
    required_headers = false                        # RequiredHeaders
    multiple_authors = "evaluate"   # "reject-domains" (RejectMultiValueFrom), "reject"
    authserv_id_with_queue_id = false               # AuthservIDWithJobID
    received_spf = false                            # insert Received-SPF (RFC 7208 9.1)

    [inbound.relay]                                 # our own border hosts
    networks = ["10.1.0.25/32"]
    received_by = ["border.example.org"]
    spf = "verify"                                  # or "upstream"

    [logging]
    stderr = true
    syslog = false
    syslog_socket = "/dev/log"
    syslog_facility = "mail"
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from mailauth.domains import host_name

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Keys of [inbound] added here, and the tables of their own (mailauth.config's schema).
INBOUND_KEYS: dict[str, type | tuple[type, ...]] = {
    "trusted_authserv_ids": list,
    "relay": dict,
    "verify_trusted_networks": bool,
    "ignore_networks": list,
    "ignore_author_domains": list,
    "ignore_mail_from_domains": list,
    "required_headers": bool,
    "multiple_authors": str,
    "authserv_id_with_queue_id": bool,
    "received_spf": bool,
}
TABLES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "inbound.relay": {"networks": list, "received_by": list, "spf": str},
    "logging": {"stderr": bool, "syslog": bool, "syslog_socket": str, "syslog_facility": str},
}
MULTIPLE_AUTHORS = ("evaluate", "reject-domains", "reject")
RELAY_SPF = ("verify", "upstream")
# syslog facilities by name (the names of syslog.conf and logger(1); "mail" is the MTA's)
FACILITIES = {
    "mail": 2, "daemon": 3, "user": 1, "local0": 16, "local1": 17, "local2": 18,
    "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class InboundOptions:
    """What a multi-tier site and an OpenDMARC site configure (docs/milter.md).

    ``trusted_authserv_ids``: Authentication-Results (and Received-SPF) fields with these
    ids are kept when the message comes from a relay (``relay_networks``), removed
    otherwise, like our own id's. ``relay_received_by``: the ``by`` host of the relays'
    own Received fields, where the real client is read; ``relay_spf``: ``verify`` (SPF
    for that client) or ``upstream`` (the relay's SPF result, from its topmost
    Authentication-Results field with a trusted id)."""

    trusted_authserv_ids: tuple[str, ...] = ()
    relay_networks: tuple[Network, ...] = ()
    relay_received_by: tuple[str, ...] = ()
    relay_spf: str = "verify"
    verify_trusted_networks: bool = False
    ignore_networks: tuple[Network, ...] = ()
    ignore_author_domains: tuple[str, ...] = ()
    ignore_mail_from_domains: tuple[str, ...] = ()
    required_headers: bool = False
    multiple_authors: str = "evaluate"
    authserv_id_with_queue_id: bool = False
    received_spf: bool = False


@dataclass(frozen=True, slots=True)
class LogOptions:
    """``[logging]``: where the milter's log lines go (stderr, and/or a syslog socket)."""

    stderr: bool = True
    syslog: bool = False
    syslog_socket: str = "/dev/log"
    syslog_facility: str = "mail"


def read_inbound(table: Any, problems: list[str]) -> InboundOptions:
    """The options of ``[inbound]`` (a wrong type was reported by the schema: the default)."""
    inbound = table if isinstance(table, dict) else {}
    relay = inbound.get("relay") if isinstance(inbound.get("relay"), dict) else {}
    assert isinstance(relay, dict)
    options = InboundOptions(
        trusted_authserv_ids=_ids(inbound, "trusted_authserv_ids", problems),
        relay_networks=_networks(relay, "inbound.relay.networks", "networks", problems),
        relay_received_by=_hosts(relay, "inbound.relay.received_by", "received_by", problems),
        relay_spf=_choice(relay, "inbound.relay.spf", "spf", RELAY_SPF, problems),
        verify_trusted_networks=_bool(inbound, "verify_trusted_networks"),
        ignore_networks=_networks(inbound, "inbound.ignore_networks", "ignore_networks", problems),
        ignore_author_domains=_hosts(
            inbound, "inbound.ignore_author_domains", "ignore_author_domains", problems
        ),
        ignore_mail_from_domains=_hosts(
            inbound, "inbound.ignore_mail_from_domains", "ignore_mail_from_domains", problems
        ),
        required_headers=_bool(inbound, "required_headers"),
        multiple_authors=_choice(
            inbound, "inbound.multiple_authors", "multiple_authors", MULTIPLE_AUTHORS, problems
        ),
        authserv_id_with_queue_id=_bool(inbound, "authserv_id_with_queue_id"),
        received_spf=_bool(inbound, "received_spf"),
    )
    if relay and not options.relay_networks:
        problems.append("inbound.relay.networks: the relays' addresses are needed")
    if options.relay_networks and options.relay_spf == "verify" and not options.relay_received_by:
        problems.append(
            'inbound.relay.received_by: needed with spf = "verify" (the host name in the '
            "relays' Received fields, where the real client is read)"
        )
    if options.relay_spf == "upstream" and not options.trusted_authserv_ids:
        problems.append(
            'inbound.relay.spf: "upstream" needs inbound.trusted_authserv_ids (whose '
            "Authentication-Results give the SPF result)"
        )
    return options


def read_logging(table: Any, problems: list[str]) -> LogOptions:
    """``[logging]``: the facility a known name, the socket an absolute path."""
    logging = table if isinstance(table, dict) else {}
    defaults = LogOptions()
    options = LogOptions(
        stderr=_bool(logging, "stderr", defaults.stderr),
        syslog=_bool(logging, "syslog"),
        syslog_socket=_str(logging, "syslog_socket", defaults.syslog_socket),
        syslog_facility=_str(logging, "syslog_facility", defaults.syslog_facility).lower(),
    )
    if options.syslog_facility not in FACILITIES:
        names = ", ".join(FACILITIES)
        problems.append(
            f"logging.syslog_facility: {options.syslog_facility!r} is not one of {names}"
        )
    if not options.syslog_socket.startswith("/"):
        problems.append(
            f"logging.syslog_socket: {options.syslog_socket!r} must be an absolute path "
            "(a local socket such as /dev/log)"
        )
    if not (options.stderr or options.syslog):
        problems.append("logging.stderr: with syslog off too, nothing would be logged")
    return options


def _bool(table: dict[str, Any], key: str, default: bool = False) -> bool:
    value = table.get(key, default)
    return value if isinstance(value, bool) else default


def _str(table: dict[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    return value if isinstance(value, str) else default


def _list(table: dict[str, Any], key: str) -> list[Any]:
    value = table.get(key, [])
    return value if isinstance(value, list) else []


def _choice(
    table: dict[str, Any], where: str, key: str, choices: tuple[str, ...], problems: list[str]
) -> str:
    value = _str(table, key, choices[0])
    if value not in choices:
        problems.append(f"{where}: {value!r} must be {' or '.join(choices)}")
        return choices[0]
    return value


def _networks(
    table: dict[str, Any], where: str, key: str, problems: list[str]
) -> tuple[Network, ...]:
    found = []
    for value in _list(table, key):
        try:
            found.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            problems.append(f"{where}: {value!r} is not a CIDR network")
    return tuple(found)


def _hosts(table: dict[str, Any], where: str, key: str, problems: list[str]) -> tuple[str, ...]:
    """Host names as compared: lowercase A-labels, no final dot."""
    found = []
    for value in _list(table, key):
        try:
            found.append(host_name(str(value)))
        except ValueError:
            problems.append(f"{where}: {value!r} is not a host name")
    return tuple(found)


def _ids(table: dict[str, Any], key: str, problems: list[str]) -> tuple[str, ...]:
    """authserv-ids as :func:`mailauth.authresults.authserv_id_of` reads them (lowercase,
    no final dot): tokens, usually host names."""
    found = []
    for value in _list(table, key):
        text = str(value).strip().lower().rstrip(".")
        if not text or not text.isprintable() or any(c in text for c in ' ;()"/\\'):
            problems.append(f"inbound.{key}: {value!r} is not an authserv-id (a host name)")
            continue
        found.append(text)
    return tuple(found)
