"""Settings OpenDKIM and OpenDMARC share (the milter socket, the authserv-id, syslog,
process settings, DNS) and the host lists both use, as the milter's keys."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from mailauth.config_inbound import FACILITIES
from mailauth.errors import ConfigError
from mailauth.migrate.confparse import Line, Setting, parse_bool, parse_int
from mailauth.migrate.draft import Draft, source_of

Handler = Callable[[Setting, Draft], None]


def set_socket(setting: Setting, draft: Draft, mode: str) -> None:
    """``Socket``: the milter's ``listen`` (OpenDKIM's and OpenDMARC's forms)."""
    value = setting.value
    kind, colon, rest = value.partition(":")
    if value.startswith("/"):
        listen = f"unix:{value}"
    elif colon and kind in ("local", "unix") and rest:
        listen = f"unix:{rest}"
    elif colon and kind in ("inet", "inet6"):
        port, at, host = rest.partition("@")
        if not (port.isascii() and port.isdigit()):
            raise ConfigError(f"{setting.where}: Socket: {value!r}: port {port!r} is not a number")
        if not at:  # (all interfaces, as OpenDKIM means it)
            host = "0.0.0.0" if kind == "inet" else "::"  # noqa: S104
        elif host == "localhost":
            host = "127.0.0.1" if kind == "inet" else "::1"
        else:
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                draft.note(
                    setting,
                    f"a host name ({host}) is not resolved: listen on its "
                    "address instead (the value is written as given)",
                )
        listen = f"{kind}:{port}@{host.strip('[]')}"
    else:
        raise ConfigError(
            f"{setting.where}: Socket: {value!r} is not inet:PORT@HOST, inet6:PORT@HOST, "
            "local:PATH or a path"
        )
    current = draft.sections[""].get("listen")
    if current is not None:
        draft.note(
            setting,
            f"one mailauth socket ({current.value}) replaces both milters: "
            "list only it in Postfix's smtpd_milters and non_smtpd_milters",
        )
        return
    draft.set("", "listen", listen, source_of(setting))
    draft.set("", "mode", mode, source_of(setting))


def set_umask(setting: Setting, draft: Draft) -> None:
    """``UMask``: the mode of the milter's unix socket is what the umask leaves of 777."""
    text = setting.value
    if not text or any(c not in "01234567" for c in text) or int(text, 8) > 0o777:
        raise ConfigError(f"{setting.where}: UMask: {text!r} is not an octal umask")
    mode = 0o777 & ~int(text, 8)
    draft.set(
        "",
        "socket_mode",
        f"{mode:03o}",
        source_of(setting),
        "the unix socket's mode: what the umask leaves (files are not written)",
    )


def set_syslog(setting: Setting, draft: Draft) -> None:
    draft.set("logging", "syslog", parse_bool(setting), source_of(setting))


def set_facility(setting: Setting, draft: Draft) -> None:
    facility = setting.value.lower().removeprefix("log_")
    if facility not in FACILITIES:
        draft.note(
            setting,
            f"facility {setting.value!r} is not one mailauth names "
            f"({', '.join(FACILITIES)}): the default (mail) applies",
        )
        return
    draft.set("logging", "syslog_facility", facility, source_of(setting))


def set_authserv_id(setting: Setting, draft: Draft) -> None:
    value = setting.value
    if value.upper() == "HOSTNAME":  # (OpenDKIM's word for the host's name)
        return  # (the default the importer writes anyway)
    draft.set("", "authserv_id", value, source_of(setting))


def set_dns_timeout(setting: Setting, draft: Draft) -> None:
    seconds = parse_int(setting, 1, 3600)
    draft.set(
        "dns",
        "timeout",
        seconds,
        source_of(setting),
        "per query here (retries included); OpenDKIM and OpenDMARC: per lookup",
    )


def set_nameservers(setting: Setting, draft: Draft) -> None:
    servers = [part.strip() for part in setting.value.split(",") if part.strip()]
    draft.set("dns", "nameservers", servers, source_of(setting))


def networks_of(entries: Iterable[Line], draft: Draft, what: str) -> list[str]:
    """Host list entries as CIDR networks (an address is a /32 or /128); host names and
    ``!`` exceptions cannot be carried over: a note each."""
    found: list[str] = []
    for line in entries:
        for item in line.fields:
            text = item.strip("[]")
            if text.lower() == "localhost":  # (the host's own name: its loopback addresses)
                found += [n for n in ("127.0.0.1/32", "::1/128") if n not in found]
                continue
            if text.startswith("!"):
                draft.note(line, f"an exception ({item}) has no equivalent in {what}: left out")
                continue
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                draft.note(
                    line,
                    f"{item} is not an address or network ({what} takes only "
                    "those; a host name is not resolved): left out",
                )
                continue
            if str(network) not in found:
                found.append(str(network))
    return found


SHARED: dict[str, Handler] = {
    "umask": set_umask,
    "syslog": set_syslog,
    "syslogfacility": set_facility,
    "authservid": set_authserv_id,
    "dnstimeout": set_dns_timeout,
    "nameservers": set_nameservers,
}
