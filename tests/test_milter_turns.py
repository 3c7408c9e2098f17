"""Fair turns on the milter's event loop (issue 14): a connection sending thousands of header
fields in one write is handled in turns of a few milliseconds, and a message past LANE_AFTER
of loop time goes on in the slow lane, one such connection's turn at a time."""

from __future__ import annotations

import asyncio
import gc
import struct
import time
from typing import Literal

import pytest

from mailauth.milter import Milter, MilterSettings
from mailauth.milter import protocol as p
from mailauth.milter.offload import Offloader
from mailauth.pipeline import Authenticator
from tests.milterclient import MilterClient
from tests.test_milter import RESOLVER, SENDER
from tests.test_milter_offload import worker_authenticator

FIELDS = 9_990


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


async def _flood(port: int, fields: int = FIELDS, end: bytes = b"") -> tuple[MilterClient, float]:
    """A connection that writes FIELDS header fields at once, then ``end`` or ABORT and QUIT
    (so that the milter closes it once it has handled every field: the caller waits for that).
    Returns the client and when it wrote."""
    client = await MilterClient.connect("127.0.0.1", port)
    await client.negotiate()
    assert client.protocol & p.NO_REPLY[p.HEADER]  # (no reply awaited per field)
    connect = b"c\0" + b"4" + struct.pack(">H", 25) + SENDER["ip"].encode() + b"\0"
    assert await client.step(p.CONNECT, connect) == p.CONTINUE
    assert await client.step(p.HELO, SENDER["helo"].encode() + b"\0") == p.CONTINUE
    assert await client.step(p.MAIL, f"<{SENDER['mail_from']}>".encode() + b"\0") == p.CONTINUE
    flood = b"".join(_packet(p.HEADER, b"X-F\0%d\0" % n) for n in range(fields))
    client.writer.write(flood + (end or _packet(p.ABORT) + _packet(p.QUIT)))
    return client, time.perf_counter()


@pytest.mark.parametrize("floods", [2, 8])
def test_a_flood_of_header_fields_is_handled_in_short_turns_in_the_slow_lane(floods: int) -> None:
    """Connections each write 9,990 header fields at once (to a milter that takes that
    many: past its cap, a message's further fields are skipped, the last test). A 64 KiB
    read holds about 3,000: before, each read was handled in one turn, tens of milliseconds of
    CPU (a message's end: the next test). Between two turns of another task, the loop now
    spends at most a few milliseconds of CPU (measured in this thread's CPU time, so that a
    busy machine preempting the test does not count), and the slow lane was taken in turns:
    at most one lane turn (or two, where a turn of the ticker falls between a lane turn and
    the next) between two of the ticker's,
    however many connections are in the lane."""

    async def go() -> tuple[float, int, int]:
        settings = MilterSettings(max_header_fields=FIELDS)
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
        lane = milter._lane = _CountingLock()
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await _flood(port) for _ in range(floods)]
        ends = asyncio.gather(*(client.reader.read() for client, _ in clients))
        largest, last, most, turns = 0.0, time.thread_time(), 0, lane.turns
        while not ends.done():
            await asyncio.sleep(0)
            now = time.thread_time()
            largest = max(largest, now - last)
            most, turns = max(most, lane.turns - turns), lane.turns
            last = now
        assert ends.result() == [b""] * floods  # (closed after QUIT: every field handled)
        server.close()
        return largest, lane.turns, most

    gc.disable()  # (a full collection of pytest's own heap takes ~50 ms here: not a turn)
    try:
        largest, turns, most = asyncio.run(go())
    finally:
        gc.enable()
    assert turns >= 10 * floods  # (the floods went on in the lane, turn by turn)
    assert most <= 2, f"{most} lane turns between two turns of another task"
    assert largest < 0.006, f"{largest * 1000:.1f} ms of CPU in one stretch"


def test_the_end_of_a_header_flood_goes_to_a_worker() -> None:
    """999 tiny header fields (under the 1,000 a message may have, and the 64 KiB of a heavy
    header section) then the end of the message: before, the whole message was checked on
    the loop (its end of headers in one piece); now more than 300 fields make it heavy, it
    is checked in a worker, and the loop's longest stretch stays short."""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> tuple[float, list[bytes]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), offloader=pool)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client, _ = await _flood(port, fields=999, end=_packet(p.EOM))
        replies: list[bytes] = []

        async def read_replies() -> None:
            while not replies or replies[-1] not in (p.CONTINUE, p.REPLYCODE, p.TEMPFAIL):
                replies.append((await client.read())[0])

        reading = asyncio.ensure_future(read_replies())
        largest, last = 0.0, time.thread_time()
        while not reading.done():
            await asyncio.sleep(0)
            now = time.thread_time()
            largest, last = max(largest, now - last), now
        await client.close()
        server.close()
        return largest, replies

    gc.disable()  # (as above)
    try:
        largest, replies = asyncio.run(go())
    finally:
        gc.enable()
        pool.close()
    assert pool.offloaded == 1
    assert replies[-1] == p.CONTINUE
    assert largest < 0.006, f"{largest * 1000:.1f} ms of CPU in one stretch"


def test_the_header_fields_of_a_message_already_refused_are_not_looked_at() -> None:
    """Past the 1,000 header fields a message may have, it is refused at its end (552)
    whatever follows: the 8,990 further fields of a flood are skipped as packets, not handled
    one by one (before: each parsed and checked for Authentication-Results, 8 us apiece)."""
    seen: list[bytes] = []

    class Counting(Milter):
        async def _dispatch(self, session, command, data):  # type: ignore[no-untyped-def]
            seen.append(command)
            return await super()._dispatch(session, command, data)

    async def go() -> list[tuple[bytes, bytes]]:
        milter = Counting(Authenticator("mx.example.org", RESOLVER))
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client, _ = await _flood(port, end=_packet(p.EOH) + _packet(p.EOM))
        replies = [await client.read()]
        await client.close()
        server.close()
        return replies

    replies = asyncio.run(go())
    assert replies == [(p.REPLYCODE, b"552 5.3.4 Message header too large "
                        b"(more than 1000 header fields)\0")]  # fmt: skip
    assert seen.count(p.HEADER) == 1_001  # (the one past the cap made it refused)
    assert seen[-2:] == [p.EOH, p.EOM]


def test_a_refused_message_s_skipped_fields_are_answered_where_the_mta_waits() -> None:
    """An MTA that does not let us skip the reply to each header field (no SMFIP_NR_HDR:
    Postfix with milter_protocol 5 or less, older sendmails) waits for one: the fields
    skipped past the cap still get CONTINUE, or the MTA would hang until its timeout."""

    async def go() -> list[bytes]:
        milter = Milter(
            Authenticator("mx.example.org", RESOLVER), MilterSettings(max_header_fields=5)
        )
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate(protocol=p.P_NORCPT | p.P_HDR_LEADSPC)  # a reply to each step
        connect = b"c\0" + b"4" + struct.pack(">H", 25) + SENDER["ip"].encode() + b"\0"
        assert await client.step(p.CONNECT, connect) == p.CONTINUE
        assert await client.step(p.MAIL, f"<{SENDER['mail_from']}>".encode() + b"\0") == p.CONTINUE
        replies = [
            await asyncio.wait_for(client.step(p.HEADER, b"X-H%d\0 v\0" % n), 5) for n in range(200)
        ]
        await client.close()
        server.close()
        return replies

    assert asyncio.run(go()) == [p.CONTINUE] * 200
