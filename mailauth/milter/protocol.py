"""The Sendmail milter protocol, version 6 as Postfix speaks it: packets and their payloads.

A packet is a 4-octet big-endian length, then a one-octet command and its data (the length
counts both). Strings are NUL-terminated. Pure: bytes in, values out, or a
:class:`ProtocolError`; no sockets here.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mailauth.errors import MailauthError

VERSION = 6
MAX_PACKET = 1 << 20  # MTAs send at most 64 KiB of body per packet; anything far larger is hostile

# Commands from the MTA
OPTNEG, MACRO, CONNECT, HELO, MAIL, RCPT, DATA = b"O", b"D", b"C", b"H", b"M", b"R", b"T"
HEADER, EOH, BODY, EOM, ABORT, QUIT, QUIT_NC, UNKNOWN = (
    b"L",
    b"N",
    b"B",
    b"E",
    b"A",
    b"Q",
    b"K",
    b"U",
)

# Replies to the MTA
CONTINUE, ACCEPT, REJECT, TEMPFAIL, REPLYCODE = b"c", b"a", b"r", b"t", b"y"
ADDHEADER, INSHEADER, CHGHEADER, QUARANTINE, PROGRESS = b"h", b"i", b"m", b"q", b"p"

# Actions we may take (SMFIF_*); SETSYMLIST: the option negotiation reply may say which
# macros the milter wants at each stage
ACT_ADDHDRS, ACT_CHGHDRS, ACT_QUARANTINE, ACT_SETSYMLIST = 0x01, 0x10, 0x20, 0x100
# Protocol steps we skip, or take without replying (SMFIP_*, libmilter's mfdef.h)
P_NORCPT, P_NOEOH, P_NOUNKNOWN, P_NODATA = 0x08, 0x40, 0x100, 0x200
P_NR_CONN, P_NR_HELO, P_NR_MAIL, P_NR_RCPT, P_NR_DATA = 0x1000, 0x2000, 0x4000, 0x8000, 0x10000
P_NR_HDR, P_NR_UNKN, P_NR_EOH, P_NR_BODY = 0x80, 0x20000, 0x40000, 0x80000
P_HDR_LEADSPC = 0x100000
NO_REPLY = {
    CONNECT: P_NR_CONN,
    HELO: P_NR_HELO,
    MAIL: P_NR_MAIL,
    RCPT: P_NR_RCPT,
    DATA: P_NR_DATA,
    HEADER: P_NR_HDR,
    EOH: P_NR_EOH,
    BODY: P_NR_BODY,
    UNKNOWN: P_NR_UNKN,
}
# The stages a macro list is asked for (SMFIM_*): after the three numbers of the option
# negotiation reply, pairs of a stage (uint32) and its macro names (space-separated, NUL).
M_CONNECT, M_HELO, M_ENVFROM, M_ENVRCPT, M_DATA, M_EOM, M_EOH = range(7)

SOCKET_FAMILIES = {b"4": "inet", b"6": "inet6", b"L": "unix", b"U": "unknown"}


class ProtocolError(MailauthError):
    """A packet that breaks the protocol; the connection is closed."""


@dataclass(frozen=True, slots=True)
class Packet:
    command: bytes
    data: bytes


_LENGTH = struct.Struct(">I")
_COMMANDS = [bytes([c]) for c in range(256)]  # (one bytes object per command octet)


def encode(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + command + data


def decode_header(prefix: bytes) -> int:
    """The length announced by a packet's first 4 octets; checks the bounds."""
    (length,) = struct.unpack(">I", prefix)
    if length < 1:
        raise ProtocolError("empty milter packet")
    if length > MAX_PACKET:
        raise ProtocolError(f"milter packet of {length} octets exceeds {MAX_PACKET}")
    return int(length)


def take_packets(buffer: bytearray) -> Iterator[tuple[bytes, bytes]]:
    """The complete packets at the start of ``buffer``, as (command, data); the octets they
    took are removed from ``buffer`` when the iteration ends. A length over MAX_PACKET is a
    ProtocolError as soon as its 4 octets are there, before any of its data."""
    offset, size = 0, len(buffer)
    try:
        while size - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if not 1 <= length <= MAX_PACKET:
                decode_header(bytes(buffer[offset : offset + 4]))  # (raises, with the reason)
            end = offset + 4 + length
            if end > size:
                return
            packet = _COMMANDS[buffer[offset + 4]], bytes(buffer[offset + 5 : end])
            offset = end
            yield packet
    finally:
        del buffer[:offset]  # (once: removing packet by packet would be quadratic)


def strings(data: bytes, count: int | None = None) -> list[bytes]:
    """NUL-terminated strings; ``count`` checks how many there must be."""
    if data and not data.endswith(b"\0"):
        raise ProtocolError("string not NUL-terminated")
    parts = data[:-1].split(b"\0") if data else []
    if count is not None and len(parts) != count:
        raise ProtocolError(f"expected {count} strings, got {len(parts)}")
    return parts


@dataclass(frozen=True, slots=True)
class Connect:
    hostname: str
    family: str
    port: int
    address: str


def parse_connect(data: bytes) -> Connect:
    end = data.find(b"\0")
    if end < 0 or end + 2 > len(data):
        raise ProtocolError("malformed connect")
    hostname, family_code = data[:end], data[end + 1 : end + 2]
    family = SOCKET_FAMILIES.get(family_code)
    if family is None:
        raise ProtocolError(f"unknown address family {family_code!r}")
    if family in ("unknown",):
        return Connect(hostname.decode("utf-8", "replace"), family, 0, "")
    if len(data) < end + 4:
        raise ProtocolError("malformed connect")
    (port,) = struct.unpack(">H", data[end + 2 : end + 4])
    (raw,) = strings(data[end + 4 :], 1)
    address = raw.decode("ascii", "replace")
    if family in ("inet", "inet6"):  # Sendmail writes IPv6 as "IPv6:...", some use brackets
        try:
            address = str(ipaddress.ip_address(address.strip("[]").removeprefix("IPv6:")))
        except ValueError:
            raise ProtocolError(f"connect: {address[:60]!r} is not an IP address") from None
    return Connect(hostname.decode("utf-8", "replace"), family, port, address)


def parse_macros(data: bytes) -> tuple[bytes, dict[str, str]]:
    """(the command they belong to, name -> value); names lose their braces."""
    if not data:
        raise ProtocolError("empty macro packet")
    parts = strings(data[1:])
    if len(parts) % 2:
        raise ProtocolError("odd number of macro strings")
    macros = {}
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        macros[name.decode("ascii", "replace").strip("{}")] = value.decode("utf-8", "replace")
    return data[:1], macros


def parse_optneg(data: bytes) -> tuple[int, int, int]:
    if len(data) < 12:
        raise ProtocolError("short option negotiation")
    version, actions, protocol = struct.unpack(">III", data[:12])
    return int(version), int(actions), int(protocol)


def optneg_reply(
    version: int, actions: int, protocol: int, macros: Mapping[int, str] | None = None
) -> bytes:
    """The option negotiation reply; ``macros``: stage (M_*) -> the macro names wanted then
    (protocol 6, with ACT_SETSYMLIST)."""
    lists = b"".join(
        struct.pack(">I", stage) + names.encode("ascii") + b"\0"
        for stage, names in sorted((macros or {}).items())
    )
    return encode(OPTNEG, struct.pack(">III", version, actions, protocol) + lists)


def header_reply(command: bytes, index: int | None, name: str, value: str) -> bytes:
    """add (h: name, value), insert (i: index, name, value), change (m: index, name, value)."""
    body = f"{name}\0{value}\0".encode()
    if index is not None:
        body = struct.pack(">I", index) + body
    return encode(command, body)


def replycode(code: str) -> bytes:
    """A custom SMTP reply (``550 5.7.1 ...``) for a reject or tempfail."""
    return encode(REPLYCODE, code.encode() + b"\0")
