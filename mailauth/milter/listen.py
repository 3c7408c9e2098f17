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
    kind, where, host = parse_listen(spec)
    if kind == "unix":
        path = str(where)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket from a previous run
        server = await asyncio.start_unix_server(handle, path=path)
        os.chmod(path, socket_mode)
        return server
    return await asyncio.start_server(handle, host=host, port=int(where))
