"""An opendmarc.conf (opendmarc.conf(5)) as the milter's settings: the ``[inbound]`` keys
of an OpenDMARC site (docs/milter.md, "OpenDMARC's settings"), with one note for every
setting that has no equivalent or is not carried over exactly."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mailauth.domains import host_name
from mailauth.migrate.confparse import Setting, parse_bool, read_conf, read_lines, read_text
from mailauth.migrate.draft import Draft, source_of
from mailauth.migrate.opendkim import trusted_authserv_ids
from mailauth.migrate.shared import SHARED, networks_of, set_socket
from mailauth.migrate.unmapped import NO_EQUIVALENT, OPENDMARC_ONLY

Handler = Callable[[Setting, Draft, Path], None]


def import_opendmarc(path: str | os.PathLike[str], draft: Draft) -> None:
    """Add what ``path`` (an opendmarc.conf) configures to ``draft``."""
    settings = read_conf(path)
    by_name = {setting.name.lower(): setting for setting in settings}
    base = by_name.get("basedirectory")
    directory = Path(base.value) if base else Path(path).parent
    for setting in settings:
        name = setting.name.lower()
        handler = HANDLERS.get(name)
        shared = SHARED.get(name)
        if handler is not None:
            handler(setting, draft, directory)
        elif shared is not None:
            shared(setting, draft)
        elif name in OPENDMARC_ONLY:
            if OPENDMARC_ONLY[name]:
                draft.note(setting, OPENDMARC_ONLY[name])
        elif name in NO_EQUIVALENT:
            draft.note(setting, NO_EQUIVALENT[name])
        else:
            draft.note(setting, "not an OpenDMARC setting this importer knows: left out")
    _spf(by_name, draft)
    _quarantine(by_name, draft)


def _socket(setting: Setting, draft: Draft, base: Path) -> None:
    set_socket(setting, draft, "both")  # (no keys: "both" signs nothing)


def _bool_key(key: str, true_value: object = True, false_value: object = False) -> Handler:
    def handle(setting: Setting, draft: Draft, base: Path) -> None:
        value = true_value if parse_bool(setting) else false_value
        draft.set("inbound", key, value, source_of(setting))

    return handle


def _ignore_hosts(setting: Setting, draft: Draft, base: Path) -> None:
    """IgnoreHosts: a file of hosts and networks (OpenDMARC's default: 127.0.0.1 only)."""
    path = Path(setting.value)
    path = path if path.is_absolute() else base / path
    lines = read_lines(path, read_text(path))
    networks = networks_of(lines, draft, "inbound.ignore_networks")
    draft.set(
        "inbound",
        "ignore_networks",
        networks,
        source_of(setting),
        "no DMARC disposition applied to these clients' mail (still verified)",
    )


def _domains(key: str) -> Handler:
    def handle(setting: Setting, draft: Draft, base: Path) -> None:
        found = []
        for item in (part.strip() for part in setting.value.split(",")):
            if not item:
                continue
            try:
                found.append(host_name(item))
            except ValueError:
                draft.note(setting, f"{item!r} is not a domain name: left out")
        draft.set("inbound", key, found, source_of(setting))

    return handle


def _ignore_authenticated(setting: Setting, draft: Draft, base: Path) -> None:
    if not parse_bool(setting):
        draft.note(
            setting,
            "false has no equivalent: SMTP-authenticated senders' mail is "
            "outbound here (signed, not verified) in mode both",
        )


def _spf(by_name: dict[str, Setting], draft: Draft) -> None:
    """SPFIgnoreResults and SPFSelfValidate: mailauth does SPF itself; using a border's
    SPF result needs [inbound.relay], which the file does not name."""
    ignore, self_validate = by_name.get("spfignoreresults"), by_name.get("spfselfvalidate")
    upstream = by_name.get("trustedauthservids") if ignore is None else ignore
    if upstream is not None and (ignore is None or not parse_bool(ignore)):
        where = upstream
        draft.note(
            where,
            "SPF results of trusted upstream fields are used here only from "
            '[inbound.relay] networks with relay.spf = "upstream"; this host checks '
            "SPF itself until those are set",
        )
    if self_validate is not None and not parse_bool(self_validate):
        draft.note(
            self_validate,
            "false has no equivalent: mailauth always checks SPF "
            "itself when no trusted result is used",
        )


def _quarantine(by_name: dict[str, Setting], draft: Draft) -> None:
    hold = by_name.get("holdquarantinedmessages")
    if hold is not None:
        draft.set(
            "inbound",
            "quarantine_dmarc",
            parse_bool(hold),
            source_of(hold),
            "Postfix's hold queue for a DMARC quarantine disposition",
        )


HANDLERS: dict[str, Handler] = {
    "socket": _socket,
    "trustedauthservids": lambda setting, draft, base: trusted_authserv_ids(setting, draft),
    "authservidwithjobid": _bool_key("authserv_id_with_queue_id"),
    "ignorehosts": _ignore_hosts,
    "ignoredomains": _domains("ignore_author_domains"),
    "ignoremailfrom": _domains("ignore_mail_from_domains"),
    "ignoreauthenticatedclients": _ignore_authenticated,
    "rejectfailures": _bool_key("reject_dmarc"),
    "requiredheaders": _bool_key("required_headers"),
    "rejectmultivaluefrom": _bool_key("multiple_authors", "reject-domains", "evaluate"),
}
