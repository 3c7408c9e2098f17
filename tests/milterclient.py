"""The MTA side of the milter protocol, for tests that drive the milter over its socket."""

from __future__ import annotations

import asyncio
import struct
import time

from mailauth.milter import protocol as p

ALL_ACTIONS = 0x1FF
ALL_PROTOCOL = 0x1FFFFF


class MilterClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = 0
        self.eom_sent = 0.0  # time.perf_counter() when message() last sent end-of-message

    @classmethod
    async def connect(cls, host: str, port: int) -> MilterClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @classmethod
    async def connect_unix(cls, path: str) -> MilterClient:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def send(self, command: bytes, data: bytes = b"") -> None:
        self.writer.write(p.encode(command, data))
        await self.writer.drain()

    async def read(self) -> tuple[bytes, bytes]:
        (length,) = struct.unpack(">I", await self.reader.readexactly(4))
        packet = await self.reader.readexactly(length)
        return packet[:1], packet[1:]

    async def negotiate(self, protocol: int = ALL_PROTOCOL) -> tuple[int, int]:
        await self.send(p.OPTNEG, struct.pack(">III", 6, ALL_ACTIONS, protocol))
        command, data = await self.read()
        assert command == p.OPTNEG
        _, actions, chosen = struct.unpack(">III", data[:12])
        self.protocol = chosen
        return actions, chosen

    async def step(self, command: bytes, data: bytes = b"") -> bytes:
        """Send; read the reply unless the milter negotiated not to give one (CONTINUE then)."""
        await self.send(command, data)
        if self.protocol & p.NO_REPLY.get(command, 0):
            return p.CONTINUE
        reply, _ = await self.read()
        return reply

    async def message(
        self,
        *,
        ip: str,
        helo: str,
        mail_from: str,
        headers: list[tuple[str, str]],
        body: bytes,
        queue_id: str = "4QTEST",
        recipients: tuple[str, ...] = ("bob@example.net",),
        daemon_name: str = "smtpd",
        auth: str = "",
    ) -> list[tuple[bytes, bytes]]:
        """A whole SMTP transaction (after negotiation); the end-of-message replies.
        ``daemon_name``: the connect macro (Postfix's service); ``auth``: the SASL user
        (the ``{auth_authen}`` macro at MAIL FROM), if any."""
        daemon = f"j\0mx.example.org\0{{daemon_name}}\0{daemon_name}\0".encode()
        await self.send(p.MACRO, p.CONNECT + daemon)
        connect = b"client.example\0" + b"4" + struct.pack(">H", 25) + ip.encode() + b"\0"
        assert await self.step(p.CONNECT, connect) == p.CONTINUE
        assert await self.step(p.HELO, helo.encode() + b"\0") == p.CONTINUE
        if auth:
            await self.send(p.MACRO, p.MAIL + b"{auth_authen}\0" + auth.encode() + b"\0")
        assert await self.step(p.MAIL, f"<{mail_from}>".encode() + b"\0") == p.CONTINUE
        for recipient in () if self.protocol & p.P_NORCPT else recipients:
            assert await self.step(p.RCPT, f"<{recipient}>".encode() + b"\0") == p.CONTINUE
        if not self.protocol & p.P_NODATA:
            assert await self.step(p.DATA) == p.CONTINUE
        for name, value in headers:
            assert await self.step(p.HEADER, f"{name}\0{value}\0".encode()) == p.CONTINUE
        if not self.protocol & p.P_NOEOH:
            assert await self.step(p.EOH) == p.CONTINUE
        for start in range(0, len(body), 65535):
            assert await self.step(p.BODY, body[start : start + 65535]) == p.CONTINUE
        await self.send(p.MACRO, p.EOM + b"i\0" + queue_id.encode() + b"\0")
        self.eom_sent = time.perf_counter()
        await self.send(p.EOM)
        replies = []
        while True:
            command, data = await self.read()
            replies.append((command, data))
            if command in (p.CONTINUE, p.ACCEPT, p.REJECT, p.TEMPFAIL, p.REPLYCODE):
                return replies

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def split_message(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers (name, value with its leading space, folding as LF) and body, as an MTA
    with SMFIP_HDR_LEADSPC passes them."""
    head, _, body = raw.partition(b"\r\n\r\n")
    headers: list[tuple[str, str]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line.decode())
        else:
            name, _, value = line.decode().partition(":")
            headers.append((name, value))
    return headers, body
