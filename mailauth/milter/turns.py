"""The milter's connections: each MTA connection read as it comes, its packets handled in
fair turns of the event loop, its replies written in one go, an idle one closed.

:class:`PacketServer` knows packets, not what they mean: :class:`~mailauth.milter.server.
Milter` answers each (``_dispatch``) and drops a message cut off (``_reset``). What a turn is,
and why a slow lane: the constants below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from abc import ABC, abstractmethod

from mailauth.milter import protocol as p
from mailauth.milter.session import Session
from mailauth.milter.settings import MilterSettings

log = logging.getLogger("mailauth.milter")
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_ACK_NOW = 2  # TCP_QUICKACK value: see PacketServer.handle
_READ_SIZE = 1 << 16  # octets taken at once (a Postfix body chunk; more held more memory)
# Fair turns (PacketServer._packets): one connection handles packets for at most TURN seconds
# before the others get the loop (a read holds up to 64 KiB: 3,000 small header fields, tens
# of milliseconds of work). A message whose packets have taken more than LANE_AFTER seconds of
# the loop's CPU in all (an ordinary one about 0.4 ms; with a 1 MB body 1.9 ms) goes on in
# the *slow lane*, in turns of LANE_TURN: one lane turn per turn of the loop, so however many
# hostile messages are being received at once, an ordinary message waits behind at most one
# LANE_TURN of theirs (and the TURNs of connections not yet in the lane) at each of its steps.
# bench_hostile --pin 0, quiet machine, p99 with the hostile stream: 9.0 ms at 2 / 10 / 0.5 ms,
# 6.4 ms (twice) at 0.5 / 2 / 0.25 ms, 6.2 ms at 0.25 / 1 / 0.1 ms (alone: 3.0-3.4 ms).
TURN = 0.0005
LANE_AFTER = 0.002
LANE_TURN = 0.00025
SKIPPED = 64  # header fields of a refused message skipped between two looks at the clock
_WAITED = 0.0002  # seconds a read took beyond which it waited for data (others ran meanwhile)
CONTINUE = p.encode(p.CONTINUE)  # the reply most packets get


class PacketServer(ABC):
    """Serves milter connections: reads, turns, replies; what each packet means is
    :meth:`_dispatch`'s."""

    settings: MilterSettings

    def __init__(self) -> None:
        self.connections = 0
        self._lane = asyncio.Lock()  # the slow lane (see LANE_AFTER)

    @abstractmethod
    async def _dispatch(self, session: Session, command: bytes, data: bytes) -> bytes | None:
        """The reply to one packet: bytes to send, b"" for none, None to close."""

    @abstractmethod
    def _reset(self, session: Session, mail_from: str = "") -> None:
        """The message in progress is over (or dropped): a new one begins."""

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: str = ""
    ) -> None:
        """One MTA connection, until QUIT, EOF or a protocol error; ``listener``: the listen
        spec of its socket (for its mode)."""
        self.connections += 1
        session = Session(listener)
        sock = writer.get_extra_info("socket")
        quickack = sock is not None and sock.family != socket.AF_UNIX and _QUICKACK is not None
        loop = asyncio.get_running_loop()
        idle = self.settings.idle_timeout
        waiting = [loop.time()]  # since when we wait for the MTA; [] while a packet is handled
        timers: list[asyncio.TimerHandle] = []

        def watch() -> None:
            # One timer per idle period, not one per packet: a packet only stores a time.
            since = waiting[0] if waiting else loop.time()
            if loop.time() - since < idle:
                timers[:] = [loop.call_at(since + idle, watch)]
                return
            log.warning("milter connection idle for %g s: closed", idle)
            writer.transport.abort()  # the pending read ends: the connection is over

        timers.append(loop.call_at(waiting[0] + idle, watch))
        received = bytearray()  # what the MTA sent that is not a whole packet yet
        try:
            while True:
                try:
                    # Whatever has arrived (one read for all the packets of an MTA's write:
                    # Postfix sends the steps we do not answer in one go).
                    asked = time.perf_counter()
                    chunk = await reader.read(_READ_SIZE)
                    if time.perf_counter() - asked > _WAITED:  # (the others ran meanwhile)
                        session.turn_began = time.perf_counter()
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    return  # the MTA went away, possibly mid-message: nothing to clean up
                waiting.clear()
                received += chunk
                replies = await self._packets(session, received)
                if replies is None:
                    return
                if replies:
                    if not await _send(writer, b"".join(replies)):  # (our ACK goes with it)
                        return
                elif quickack:
                    # The MTA goes on without waiting for us: its next small write (Postfix:
                    # cleanup's, after smtpd's) would wait for our delayed ACK, Nagle on its
                    # side, up to 40 ms. Acknowledge now -- once per read, not per packet;
                    # 2, not 1: send the pending ACK but stay in delayed-ACK mode, so that
                    # the ACK of the rest of the message goes with our reply (Linux).
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, _ACK_NOW)
                waiting.append(loop.time())
        except p.ProtocolError as exc:
            log.warning("milter protocol error from the MTA: %s", exc)
        finally:
            timers[0].cancel()
            self._reset(session)  # a connection dropped mid-message: no SPF left running
            self.connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _packets(self, session: Session, received: bytearray) -> list[bytes] | None:
        """Handle the whole packets in ``received`` (taken from it), in fair turns (TURN,
        the slow lane: LANE_AFTER); the replies to send, or None to close. A turn goes on
        across reads that did not wait (``session.turn_began``): data already buffered is
        read without letting the others run."""
        replies = []
        in_lane = False  # whether this connection holds the slow lane
        cpu = time.thread_time()
        skipped = 0
        try:
            for command, data in p.take_packets(received):
                message = session.message
                if command == p.HEADER and message.oversized:
                    # Refused at its end whatever follows: its further header fields are
                    # not looked at (a flood of 5,000 took the loop 40 ms), and the clock
                    # is read for every SKIPPED of them only. Each still has its reply
                    # where the MTA waits for one (no SMFIP_NR_HDR: it would hang there).
                    if command not in session.no_reply:
                        replies.append(CONTINUE)
                    skipped += 1
                    if skipped % SKIPPED:
                        continue
                else:
                    if command == p.EOM:  # (it waits for the checks: never in the lane)
                        if in_lane:
                            self._lane.release()
                            in_lane = False
                    elif not in_lane and message.loop_used > LANE_AFTER:
                        await self._lane.acquire()
                        in_lane = True
                        session.turn_began = time.perf_counter()  # (waited: a new turn)
                        cpu = time.thread_time()
                    reply = await self._dispatch(session, command, data)
                    if reply is None:
                        return None
                    if reply and command not in session.no_reply:
                        replies.append(reply)
                now, cpu_now = time.perf_counter(), time.thread_time()
                if command == p.EOM:  # (the message's last: the next one starts a new turn)
                    session.turn_began = now
                else:  # (CPU time: a machine busy with other processes does not count)
                    message.loop_used += cpu_now - cpu
                cpu = cpu_now
                if now - session.turn_began >= (LANE_TURN if in_lane else TURN):
                    # The others' turn. In the lane, the lane is held through it (the other
                    # lane connections queue for it meanwhile), then handed on: one lane
                    # turn per turn of the loop, however many connections are in the lane.
                    await asyncio.sleep(0)
                    if in_lane:
                        self._lane.release()
                        in_lane = False
                    session.turn_began = time.perf_counter()
                    cpu = time.thread_time()
            return replies
        finally:
            if in_lane:
                self._lane.release()


async def _send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write replies; False when the MTA closed the connection without reading them (one
    log line: a reset connection is the MTA's business, not a traceback)."""
    writer.write(data)
    try:
        await writer.drain()
    except ConnectionError as exc:
        log.info("milter connection closed by the MTA before our reply: %s", exc.strerror or exc)
        return False
    return True
