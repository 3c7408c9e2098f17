"""Importing an OpenDKIM + OpenDMARC site's configuration as the milter's TOML
(``mailauth config import``, docs/migrating.md).

:func:`import_site` reads an opendkim.conf (with the tables and host lists it names) and an
opendmarc.conf and returns the TOML text and the notes: one line for every setting that has
no equivalent or is not carried over exactly, and warnings about key files. Key files are
pointed at, never read or copied. A file that cannot be read or does not parse is a
:class:`~mailauth.errors.ConfigError` with one line, ``FILE:LINE: problem``.

Modules: :mod:`.confparse` (the files' syntax, data sets), :mod:`.opendkim`,
:mod:`.tables` (KeyTable, SigningTable), :mod:`.opendmarc`, :mod:`.shared` (what both
daemons have), :mod:`.unmapped` (the notes' texts), :mod:`.draft` (the configuration
being built), :mod:`.writer` (the TOML).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from mailauth.migrate.draft import Draft
from mailauth.migrate.opendkim import import_opendkim
from mailauth.migrate.opendmarc import import_opendmarc
from mailauth.migrate.writer import render_toml

__all__ = ["Imported", "import_site"]

DEFAULT_LISTEN = "inet:8891@127.0.0.1"
_DMARC_ONLY_MODE = (
    "mail from trusted networks (loopback: OpenDMARC's IgnoreHosts default) and SMTP-\n"
    "authenticated senders passes unchecked; with no keys nothing is signed"
)


@dataclass(frozen=True, slots=True)
class Imported:
    """The TOML text, the notes (not carried over, or not exactly), the key warnings."""

    toml: str
    notes: tuple[str, ...]
    warnings: tuple[str, ...]


def import_site(
    opendkim: str | os.PathLike[str] | None = None,
    opendmarc: str | os.PathLike[str] | None = None,
    hostname: str | None = None,
) -> Imported:
    """The milter configuration equivalent to these files (at least one); ``hostname``
    is the authserv-id when neither file sets one (both daemons' default: the host name)."""
    draft = Draft()
    inputs = []
    if opendkim is not None:
        import_opendkim(opendkim, draft)
        inputs.append(os.fspath(opendkim))
    if opendmarc is not None:
        if opendkim is None:  # (OpenDMARC alone; no keys: nothing is signed)
            draft.set("", "mode", "both", "OpenDMARC alone", _DMARC_ONLY_MODE)
        import_opendmarc(opendmarc, draft)
        inputs.append(os.fspath(opendmarc))
    top = draft.sections[""]
    if "authserv_id" not in top:
        draft.set(
            "",
            "authserv_id",
            hostname or socket.gethostname(),
            "no AuthservID: the host name, as both daemons default to",
        )
    if "listen" not in top:
        draft.set("", "listen", DEFAULT_LISTEN, "no Socket given")
        draft.note(
            inputs[0] if inputs else "-",
            f"no Socket: listen = {DEFAULT_LISTEN!r} "
            "written; change it to the socket Postfix names",
        )
    # (the top level's keys in a stable order: listen first)
    order = ("listen", "mode", "authserv_id", "socket_mode", "on_error", "max_header_size")
    draft.sections[""] = {key: top[key] for key in order if key in top}
    return Imported(render_toml(draft, inputs), tuple(draft.notes), tuple(draft.warnings))
