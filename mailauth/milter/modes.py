"""OpenDKIM's ``Mode`` per listening socket and per ``{daemon_name}`` (docs/signing.md):
``verify`` (every message is verified, none signed), ``sign`` (mail from trusted networks
and SMTP-authenticated senders is signed, other mail passes unchecked) or ``both`` (the
former for those senders, verification for the rest: the default, and what the milter did
before modes).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Route(StrEnum):
    """What the milter does with one message."""

    SIGN = "sign"
    VERIFY = "verify"
    PASS = "pass"  # neither (a sign-only socket, a client neither trusted nor authenticated)


def mode_of(
    listener: str,
    macros: Mapping[str, str],
    default: str,
    listener_modes: Mapping[str, str],
    daemon_modes: Mapping[str, str],
) -> str:
    """The mode for a connection: its ``{daemon_name}``'s when configured, else its
    socket's, else ``default`` (the ``listen`` socket's)."""
    daemon = macros.get("daemon_name")
    if daemon is not None and daemon in daemon_modes:
        return daemon_modes[daemon]
    return listener_modes.get(listener, default)


def route(mode: str, originating: bool) -> Route:
    """``originating``: the client is trusted or SMTP-authenticated."""
    if mode == "verify":
        return Route.VERIFY
    if originating:
        return Route.SIGN
    return Route.PASS if mode == "sign" else Route.VERIFY
