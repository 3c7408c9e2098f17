"""Fair turns on the milter's event loop (issue 14): a connection sending thousands of header
fields in one write is handled in turns of a few milliseconds, and a message past LANE_AFTER
of loop time goes on in the slow lane, one such connection's turn at a time."""

from __future__ import annotations

import asyncio
import gc
import struct
import time
from typing import Literal

from mailauth.milter import Milter
from mailauth.milter import protocol as p
from mailauth.pipeline import Authenticator
from tests.milterclient import MilterClient
from tests.test_milter import RESOLVER, SENDER

FIELDS = 9_000  # (under the 10,000 fields a message may have)


def _packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + command + data


class _CountingLock(asyncio.Lock):
    """The slow lane, counting its turns."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.turns += 1
        return True


async def _flood(port: int) -> tuple[MilterClient, float]:
    """A connection that writes FIELDS header fields at once, then ABORT and QUIT (so that
    the milter closes it once it has handled every field: the caller waits for that).
    Returns the client and when it wrote."""
    client = await MilterClient.connect("127.0.0.1", port)
    await client.negotiate()
    assert client.protocol & p.NO_REPLY[p.HEADER]  # (no reply awaited per field)
    connect = b"c\0" + b"4" + struct.pack(">H", 25) + SENDER["ip"].encode() + b"\0"
    assert await client.step(p.CONNECT, connect) == p.CONTINUE
    assert await client.step(p.HELO, SENDER["helo"].encode() + b"\0") == p.CONTINUE
    assert await client.step(p.MAIL, f"<{SENDER['mail_from']}>".encode() + b"\0") == p.CONTINUE
    flood = b"".join(_packet(p.HEADER, b"X-F\0%d\0" % n) for n in range(FIELDS))
    client.writer.write(flood + _packet(p.ABORT) + _packet(p.QUIT))
    return client, time.perf_counter()


def test_a_flood_of_header_fields_is_handled_in_short_turns_in_the_slow_lane() -> None:
    """Two connections each write 9,000 header fields at once (a 64 KiB read holds about
    3,000: before, each read was handled in one turn, tens of milliseconds of CPU; a
    message's end is another matter, not measured here). Between
    two turns of another task, the loop now spends at most a few milliseconds of CPU
    (measured in this thread's CPU time, so that a busy machine preempting the test does not
    count), and the slow lane was taken in turns."""

    async def go() -> tuple[float, int]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER))
        lane = milter._lane = _CountingLock()
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        floods = [await _flood(port) for _ in range(2)]
        ends = asyncio.gather(*(client.reader.read() for client, _ in floods))
        largest, last = 0.0, time.thread_time()
        while not ends.done():
            await asyncio.sleep(0)
            now = time.thread_time()
            largest = max(largest, now - last)
            last = now
        assert ends.result() == [b"", b""]  # (closed after QUIT: every field handled)
        server.close()
        return largest, lane.turns

    gc.disable()  # (a full collection of pytest's own heap takes ~50 ms here: not a turn)
    try:
        largest, turns = asyncio.run(go())
    finally:
        gc.enable()
    assert turns >= 10  # (the floods went on in the lane, turn by turn)
    assert largest < 0.006, f"{largest * 1000:.1f} ms of CPU in one stretch"
