"""The frames between the milter and its worker processes (:mod:`.offload`,
:mod:`.offload_worker`), over unix socket pairs: a 4-octet length, then the value. The milter
sends its ``sys.path`` and the factory of the worker's Authenticator as pickles before any
request, then requests as JSON, never as pickles (so that a message's octets read as a
frame can never be code); the worker replies with pickles, which only the milter reads."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import struct
from typing import Any

# The workers' nice value once started (they start at the milter's: not starved while
# importing): the loop's ordinary mail comes first when the CPUs are busy (the scheduler's
# weight 110 against the loop's 1,024), yet a worker is not starved by other programs at
# nice 0, and every SPF evaluation goes to it. At 19 (weight 15) it got 1.5 % of a CPU
# shared with one busy program: beside four busy loops two offload tests took 152 s instead
# of 5 (12 s at nice 10). bench_hostile --pin 0, same run: p99 with the hostile stream
# 13.7 ms at nice 19, 14.9 ms at 10, 19.0 ms at 5.
WORKER_NICE = 10
MAX_FRAME = 1 << 30
MAX_REQUEST = 1 << 20  # octets of a request's JSON (an envelope: far less)
_LENGTH = struct.Struct(">I")


class OffloadError(Exception):
    """The worker could not answer (it died, could not start, or the request failed)."""


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def request_frame(value: tuple[Any, ...]) -> bytes:
    """A request to a worker: JSON, never a pickle (the worker unpickles only the frames
    the milter writes before any request), so that octets of a message read as a frame
    can never be code."""
    data = json.dumps(value).encode()
    return _LENGTH.pack(len(data)) + data


async def read_request(reader: asyncio.StreamReader) -> list[Any] | None:
    """The next request (in the worker), or None at the end of the stream or when what
    comes is not a request."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_REQUEST:
            return None
        value = json.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return None
    return value if isinstance(value, list) and len(value) == 7 else None


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next value, or None at the end of the stream."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_FRAME:
            raise OffloadError(f"a frame of {length} octets")
        return pickle.loads(await reader.readexactly(length))  # noqa: S301 - our own worker
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def recv_frame_blocking(sock: socket.socket) -> Any:
    def exactly(count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise EOFError("the worker process exited")
            data += chunk
        return bytes(data)

    (length,) = _LENGTH.unpack(exactly(_LENGTH.size))
    return pickle.loads(exactly(length))  # noqa: S301 - our own worker
