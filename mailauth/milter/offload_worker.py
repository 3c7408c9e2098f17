"""A worker process of :mod:`mailauth.milter.offload`: ``python -m
mailauth.milter.offload_worker FD LIGHT``, started by the milter with one end of each of two
unix socket pairs: FD for heavy messages, LIGHT for SPF requests (so that none waits behind
a message being written); requests are served alike from both, each answered on its own.

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

from mailauth.milter.offload_wire import WORKER_NICE, frame, read_request, recv_frame_blocking
from mailauth.pipeline import Authenticator


async def _serve(sock: socket.socket, light: socket.socket, authenticator: Authenticator) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    writer.write(frame("ready"))
    light_reader, light_writer = await asyncio.open_unix_connection(sock=light)
    tasks: set[asyncio.Task[None]] = set()
    streams = [
        asyncio.ensure_future(_requests(reader, writer, authenticator, tasks)),
        asyncio.ensure_future(_requests(light_reader, light_writer, authenticator, tasks)),
    ]
    # (the end of either socket, or anything not a request on it: the milter went away or
    # the stream is lost; the worker ends)
    await asyncio.wait(streams, return_when=asyncio.FIRST_COMPLETED)
    for task in (*streams, *tasks):
        task.cancel()


async def _requests(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    authenticator: Authenticator,
    tasks: set[asyncio.Task[None]],
) -> None:
    """Serve the requests of one socket until its end, each answered on it."""

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
        writer.write(frame(reply))

    while True:  # (requests are JSON: nothing a message holds is ever unpickled here)
        request = await read_request(reader)
        if request is None:  # (the end of the socket, or not a request: the stream is lost)
            return
        try:
            message = await reader.readexactly(request[1]) if request[1] else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        task = asyncio.ensure_future(answer(request, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    light = socket.socket(fileno=int(sys.argv[2]))
    sock.settimeout(120)
    sys.path[:] = recv_frame_blocking(sock)  # (before the factory: it may need the path)
    try:
        authenticator = recv_frame_blocking(sock)()
    except Exception as exc:  # (said to the milter, which stops)
        sock.sendall(frame(f"{type(exc).__name__}: {exc}"))
        return
    with contextlib.suppress(OSError):  # (after the start-up: not starved while importing)
        os.nice(WORKER_NICE)
    sock.setblocking(False)
    light.setblocking(False)
    asyncio.run(_serve(sock, light, authenticator))


if __name__ == "__main__":
    main()
