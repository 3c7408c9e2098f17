"""An opendkim.conf (opendkim.conf(5)) as the milter's settings: the socket and mode, the
keys and signing table (:mod:`.tables`), InternalHosts, the signature settings, and one
note for every setting that has no equivalent or is not carried over exactly."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailauth.errors import ConfigError
from mailauth.migrate.confparse import (
    DataSet,
    Setting,
    parse_bool,
    parse_dataset,
    parse_int,
    read_conf,
)
from mailauth.migrate.draft import Draft, EntryDraft, KeyDraft, source_of
from mailauth.migrate.shared import SHARED, networks_of, set_socket
from mailauth.migrate.tables import check_key_file, import_key_table, import_signing_table
from mailauth.migrate.unmapped import NO_EQUIVALENT, OPENDKIM_ONLY

MODES = {"s": "sign", "v": "verify", "sv": "both"}
# Settings read together with others below (tables, the one-key form).
TOGETHER = {
    "keytable",
    "signingtable",
    "subdomains",
    "domain",
    "selector",
    "keyfile",
    "basedirectory",
    "mode",
    "socket",
    "multiplesignatures",
}


@dataclass(slots=True)
class Site:
    """An opendkim.conf being read: its settings by name, the directory relative paths
    start from, and the output."""

    settings: dict[str, Setting]
    base: Path
    draft: Draft

    def get(self, name: str) -> Setting | None:
        return self.settings.get(name)

    def flag(self, name: str) -> bool:
        setting = self.settings.get(name)
        return parse_bool(setting) if setting else False

    def dataset(self, setting: Setting) -> DataSet | None:
        """A data set, or None (and a note) when it is of a kind that cannot be read."""
        data = parse_dataset(setting, self.base)
        if data.kind in ("file", "refile", "csl"):
            return data
        self.draft.note(
            setting,
            f"a {data.kind}: data set cannot be imported (only flat "
            "files, refile: and csl: can); write its entries by hand",
        )
        return None


Handler = Callable[[Setting, Site], None]


def import_opendkim(path: str | os.PathLike[str], draft: Draft) -> None:
    """Add what ``path`` (an opendkim.conf) configures to ``draft``."""
    settings = read_conf(path)
    by_name = {setting.name.lower(): setting for setting in settings}
    base = by_name.get("basedirectory")
    site = Site(by_name, Path(base.value) if base else Path(path).parent, draft)
    _socket_and_mode(site)
    for setting in settings:
        name = setting.name.lower()
        if name in TOGETHER:
            continue
        handler = HANDLERS.get(name)
        shared = SHARED.get(name)
        if handler is not None:
            handler(setting, site)
        elif shared is not None:
            shared(setting, draft)
        elif name.startswith("on-"):
            _on_action(setting, site)
        elif name in OPENDKIM_ONLY or name in NO_EQUIVALENT:
            draft.note(setting, OPENDKIM_ONLY.get(name) or NO_EQUIVALENT[name])
        else:
            draft.note(setting, "not an OpenDKIM setting this importer knows: left out")
    _tables(site)
    _one_key(site)
    if draft.keys and "canonicalization" not in draft.sections["signing"]:
        draft.note(
            os.fspath(path),
            "no Canonicalization: OpenDKIM signs simple/simple; mailauth's default is "
            'relaxed/relaxed (it survives more relays); canonicalization = "simple/simple" '
            "in [signing] keeps OpenDKIM's",
        )


def _socket_and_mode(site: Site) -> None:
    mode_setting = site.get("mode")
    mode = "both"
    if mode_setting is not None:
        mode = MODES.get("".join(sorted(set(mode_setting.value.lower()))), "")
        if not mode:
            raise ConfigError(
                f"{mode_setting.where}: Mode: {mode_setting.value!r} must be s, v or sv"
            )
    socket = site.get("socket")
    if socket is not None:
        set_socket(socket, site.draft, mode)
    else:
        site.draft.set(
            "",
            "mode",
            mode,
            source_of(mode_setting) if mode_setting else "OpenDKIM's default Mode (sv)",
        )


def _internal_hosts(setting: Setting, site: Site) -> None:
    data = site.dataset(setting)
    if data is None:
        return
    networks = networks_of(data.lines, site.draft, "outbound.trusted_networks")
    site.draft.set(
        "outbound",
        "trusted_networks",
        networks,
        source_of(setting),
        "signed, not verified (and SMTP-authenticated senders)",
    )


def _mta(setting: Setting, site: Site) -> None:
    data = site.dataset(setting)
    for line in data.lines if data else ():
        site.draft.set("daemon_modes", line.fields[0], "sign", source_of(setting))
    site.draft.note(
        setting,
        "OpenDKIM signs everything that comes through these services; "
        "mailauth signs only mail from trusted networks or SMTP-authenticated "
        "senders there (docs/signing.md)",
    )


def _header_list(key: str) -> Handler:
    def handle(setting: Setting, site: Site) -> None:
        data = site.dataset(setting)
        if data is None:
            return
        names = [
            field
            for line in data.lines
            for part in line.fields
            for field in part.split(",")
            if field
        ]
        if any("*" in name or name.startswith(("+", "-")) for name in names):
            site.draft.note(
                setting,
                "a wildcard or +/- list has no equivalent: mailauth "
                "takes the field names themselves; left out",
            )
            return
        comment = ""
        if key == "headers" and "from" not in (n.lower() for n in names):
            names.insert(0, "From")  # (OpenDKIM adds it too: RFC 6376 5.4)
            comment = "From added: it is always signed (RFC 6376 5.4)"
        if key == "skip_headers":
            names = [n for n in names if n.lower() != "from"]
        site.draft.set("signing", key, names, source_of(setting), comment)

    return handle


def _canonicalization(setting: Setting, site: Site) -> None:
    header, _, body = setting.value.lower().partition("/")
    body = body or "simple"  # (OpenDKIM's default for the body when one word is given)
    if header not in ("simple", "relaxed") or body not in ("simple", "relaxed"):
        raise ConfigError(
            f"{setting.where}: Canonicalization: {setting.value!r} must be simple or relaxed "
            "(header/body)"
        )
    site.draft.set("signing", "canonicalization", f"{header}/{body}", source_of(setting))


def _signature_ttl(setting: Setting, site: Site) -> None:
    seconds = parse_int(setting)
    if seconds:
        site.draft.set("signing", "expire", seconds, source_of(setting))


def _sender_headers(setting: Setting, site: Site) -> None:
    data = site.dataset(setting)
    if data is None:
        return
    sources: list[str] = []
    for name in (f.lower() for line in data.lines for part in line.fields for f in part.split(",")):
        if name in ("from", "sender") and name not in sources:
            sources.append(name)
        elif name:
            site.draft.note(
                setting,
                f"{name}: mailauth looks up From, Sender or the "
                "envelope sender (identity = [...]); this field is left out",
            )
    if sources:
        site.draft.set("signing", "identity", sources, source_of(setting))


def _max_signatures(setting: Setting, site: Site) -> None:
    count = parse_int(setting, 1, 1000)
    site.draft.set(
        "inbound",
        "max_dkim_signatures",
        count,
        source_of(setting),
        "signatures past it give one dkim=policy result here; OpenDKIM ignores them",
    )


def _max_headers(setting: Setting, site: Site) -> None:
    size = parse_int(setting, 1)
    site.draft.set(
        "",
        "max_header_size",
        size,
        source_of(setting),
        "a larger header section is refused with 552",
    )


def _authserv_id_with_job_id(setting: Setting, site: Site) -> None:
    site.draft.set("inbound", "authserv_id_with_queue_id", parse_bool(setting), source_of(setting))


def _trusted_ids(setting: Setting, site: Site) -> None:
    trusted_authserv_ids(setting, site.draft)


def trusted_authserv_ids(setting: Setting, draft: Draft) -> None:
    """TrustedAuthservIDs (both daemons): kept only from relays in mailauth, which the
    daemons' files do not name: a note says what to add."""
    ids = [part.strip() for part in setting.value.split(",") if part.strip()]
    draft.set("inbound", "trusted_authserv_ids", ids, source_of(setting))
    draft.note(
        setting,
        "fields with these ids are kept only when the message comes from "
        "one of [inbound.relay] networks, which neither daemon names: add the border "
        "hosts' addresses there (docs/milter.md, Multi-tier inbound)",
    )


def _on_action(setting: Setting, site: Site) -> None:
    """On-DNSError, On-InternalError (and On-Default): on_error; the others are about
    DKIM results, which mailauth does not act on alone (DMARC does)."""
    event = setting.name.lower().removeprefix("on-")
    action = setting.value.lower()
    if action not in (
        "a",
        "accept",
        "t",
        "tempfail",
        "r",
        "reject",
        "d",
        "discard",
        "q",
        "quarantine",
    ):
        raise ConfigError(f"{setting.where}: {setting.name}: {setting.value!r} is not an action")
    action = {"a": "accept", "t": "tempfail", "r": "reject", "d": "discard", "q": "quarantine"}.get(
        action, action
    )
    if event in ("dnserror", "internalerror", "default") and action in ("accept", "tempfail"):
        site.draft.set(
            "",
            "on_error",
            action,
            source_of(setting),
            "when checks fail or time out; a DNS error in a check is its temperror",
        )
        if event == "default":
            site.draft.note(
                setting,
                "mailauth takes no action on a DKIM result alone; "
                "only the error action (on_error) is carried over",
            )
        return
    if event in ("dnserror", "internalerror", "default"):
        site.draft.note(setting, f"{action}: on_error is accept or tempfail; left out")
        return
    site.draft.note(
        setting,
        "mailauth takes no action on a DKIM result alone (DMARC "
        "decides: inbound.reject_dmarc, quarantine_dmarc); left out",
    )


def _tables(site: Site) -> None:
    key_table, signing_table = site.get("keytable"), site.get("signingtable")
    if key_table is None and signing_table is None:
        return
    if key_table is None or signing_table is None:
        given = key_table or signing_table
        assert given is not None
        raise ConfigError(f"{given.where}: {given.name}: KeyTable and SigningTable go together")
    keys = site.dataset(key_table)
    table = site.dataset(signing_table)
    known = import_key_table(keys, key_table, site.base, site.draft) if keys else set()
    if table is None:
        return
    if keys is None:  # (the KeyTable's note says why; the names cannot be checked)
        site.draft.note(signing_table, "left out with the KeyTable it names")
        return
    # (SubDomains does not widen a SigningTable: Debian's OpenDKIM 2.11, observed)
    import_signing_table(table, known, site.flag("multiplesignatures"), site.draft)


def _one_key(site: Site) -> None:
    """Domain, Selector, KeyFile: one key, for each domain (and subdomains, SubDomains)."""
    domain, selector, key_file = site.get("domain"), site.get("selector"), site.get("keyfile")
    if site.get("keytable") is not None:
        for setting in (domain, selector, key_file):
            if setting is not None:
                site.draft.note(setting, "ignored with a KeyTable (as OpenDKIM does)")
        return
    if domain is None and selector is None and key_file is None:
        return
    if selector is None or key_file is None or domain is None:
        given = next(s for s in (domain, selector, key_file) if s is not None)
        raise ConfigError(f"{given.where}: {given.name}: Domain, Selector and KeyFile go together")
    path = Path(key_file.value)
    path = path if path.is_absolute() else site.base / path
    check_key_file(path, key_file.where, site.draft)
    data = site.dataset(domain)
    if data is None:
        return
    subdomains = site.flag("subdomains")
    for line in data.lines:
        for name in line.fields:
            key_name = name.lower().replace(".", "-")
            site.draft.keys.append(
                KeyDraft(key_name, name.lower(), selector.value, os.fspath(path), source_of(domain))
            )
            entries = [name.lower()] + ([f"*.{name.lower()}"] if subdomains else [])
            for pattern in entries:
                site.draft.table.append(EntryDraft(pattern, [key_name], source_of(domain)))


HANDLERS: dict[str, Handler] = {
    "internalhosts": _internal_hosts,
    "mta": _mta,
    "signheaders": _header_list("headers"),
    "oversignheaders": _header_list("oversign"),
    "omitheaders": _header_list("skip_headers"),
    "canonicalization": _canonicalization,
    "signaturettl": _signature_ttl,
    "senderheaders": _sender_headers,
    "maximumsignaturestoverify": _max_signatures,
    "maximumheaders": _max_headers,
    "authservidwithjobid": _authserv_id_with_job_id,
    "trustedauthservids": _trusted_ids,
}
