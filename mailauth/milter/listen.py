"""Where the milter listens: ``inet:PORT@HOST``, ``inet6:PORT@HOST`` or ``unix:PATH`` (the
socket names Postfix and Sendmail use in their milter settings)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable

from mailauth.config import parse_listen_spec

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def parse_listen(spec: str) -> tuple[str, str | int, str]:
    """``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:PATH`` (or ``local:PATH``)."""
    return parse_listen_spec(spec)


async def start_server(handle: Handler, spec: str, socket_mode: int = 0o660) -> asyncio.Server:
    """Listen on ``spec``, each connection served by ``handle`` (``Milter.handle``); a
    stale unix socket from a previous run is replaced, the new one gets ``socket_mode``."""
    if not 0 <= socket_mode <= 0o777:  # (no setuid/setgid/sticky bit; -1 would be 07777)
        raise ValueError(f"socket mode {socket_mode:#o}: not a permission mode from 0 to 0o777")
    kind, where, host = parse_listen(spec)
    if kind == "unix":
        path = str(where)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket from a previous run
        server = await asyncio.start_unix_server(handle, path=path)
        os.chmod(path, socket_mode)
        return server
    return await asyncio.start_server(handle, host=host, port=int(where))


def socket_file(spec: str) -> tuple[str, tuple[int, int]] | None:
    """The unix socket file ``spec`` names and what identifies it (device and inode, from
    ``lstat``: a chmod or chgrp by the administrator changes the change time, not these),
    once listening (None for inet, or if no socket is there): what
    :func:`remove_socket_file` removes at exit."""
    kind, where, _ = parse_listen(spec)
    if kind != "unix":
        return None
    try:
        status = os.lstat(str(where))
    except OSError:
        return None
    return (str(where), _identity(status)) if stat.S_ISSOCK(status.st_mode) else None


def remove_socket_file(found: tuple[str, tuple[int, int]] | None) -> None:
    """Remove the socket file at exit, unless what is there now is not that socket: another
    process's socket, a symlink, any other file (``lstat``: a symlink is never followed)."""
    if found is None:
        return
    path, identity = found
    with contextlib.suppress(OSError):
        status = os.lstat(path)
        if stat.S_ISSOCK(status.st_mode) and _identity(status) == identity:
            os.unlink(path)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino
