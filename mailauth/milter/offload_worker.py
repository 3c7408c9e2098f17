"""A worker process of :mod:`mailauth.milter.offload`: ``python -m
mailauth.milter.offload_worker FD``, started by the milter with one end of a unix socket pair
as FD.

The first frames are the milter's ``sys.path`` and the factory of the worker's Authenticator;
the worker answers "ready", then serves requests (JSON arrays, never pickles), many at once,
each within the deadline it carries: ``[id, N, "verify", ip, helo, mail_from, until]``
followed by the N octets of the message -> a Verdict, and ``[id, 0, "spf", ip, helo,
mail_from, until]`` -> (SpfCheck, seconds it may be reused); replies are ``(id, True,
value)``, ``(id, True, "timeout")`` or ``(id, False, reason)``. At the end of the socket (the
milter went away), or at anything that is not a request, it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from typing import Any

from mailauth.milter.offload import WORKER_NICE, _frame, _recv_frame_blocking, read_request
from mailauth.pipeline import Authenticator


async def _serve(sock: socket.socket, authenticator: Authenticator) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    writer.write(_frame("ready"))
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request: list[Any], message: bytes) -> None:
        ident, _, kind, *args = request
        try:
            until = args[-1]
            async with asyncio.timeout(until - time.time()):
                if kind == "verify":
                    ip, helo, mail_from, _ = args
                    value: Any = await authenticator.verify_async(
                        message, ip=ip, helo=helo, mail_from=mail_from
                    )
                else:
                    ip, helo, mail_from, _ = args
                    value = await authenticator.spf_with_lifetime(
                        ip=ip, helo=helo, mail_from=mail_from
                    )
            reply: tuple[Any, ...] = (ident, True, value)
        except TimeoutError:
            reply = (ident, True, "timeout")
        except ValueError as exc:  # (what the loop would say of the same input)
            reply = (ident, False, str(exc) or type(exc).__name__)
        except Exception as exc:  # (a bug: this message fails, not the worker)
            reply = (ident, False, f"{type(exc).__name__}: {exc}"[:500])
        writer.write(_frame(reply))

    while True:  # (requests are JSON: nothing a message holds is ever unpickled here)
        request = await read_request(reader)
        if request is None:  # (the end of the socket, or not a request: the stream is lost)
            break
        try:
            message = await reader.readexactly(request[1]) if request[1] else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        task = asyncio.ensure_future(answer(request, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)
    sock.settimeout(120)
    sys.path[:] = _recv_frame_blocking(sock)  # (before the factory: it may need the path)
    try:
        authenticator = _recv_frame_blocking(sock)()
    except Exception as exc:  # (said to the milter, which stops)
        sock.sendall(_frame(f"{type(exc).__name__}: {exc}"))
        return
    sock.setblocking(False)
    asyncio.run(_serve(sock, authenticator))


if __name__ == "__main__":
    main()
