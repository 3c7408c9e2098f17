"""What reports arrive in: gzip (RFC 1952, one member or several) and zip archives, opened in
memory with a bound on everything they may expand to.

- gzip: decompressed a bounded piece at a time; more than the budget (:class:`Budget`,
  ``max_expanded`` for one input, whatever its nesting) and the input is refused, before
  the excess is ever held (a gzip bomb costs its budget, not its claimed size).
- zip: the member count is read from the archive's end record before its directory is
  parsed (a directory of a million entries is refused, not loaded); each member is read
  with a bound, whatever size its header claims; encrypted members are refused.

Nothing is written to disk: a member's name serves only to tell what it holds (``.xml``,
``.gz``, ``.json``) and to name it in a message, shown with its control characters
replaced, so a name such as ``../../etc/cron.d/x`` is harmless.
"""

from __future__ import annotations

import io
import lzma
import struct
import zipfile
import zlib
from dataclasses import dataclass

from mailauth.reports.received.limits import ReportReadError, clip, describe_size

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_END_RECORD = b"PK\x05\x06"
_END_SEARCH = 22 + 0xFFFF  # the end record and the longest archive comment
_PIECE = 1 << 20  # what one decompression step may produce


@dataclass(slots=True)
class Budget:
    """The octets one input may still expand to, across all its nested containers."""

    remaining: int
    total: int

    def take(self, octets: int, what: str) -> None:
        if octets > self.remaining:
            raise ReportReadError(
                f"refused: {what} expands beyond {describe_size(self.total)} (a decompression "
                "bomb?)"
            )
        self.remaining -= octets


_MAX_GZIP_MEMBERS = 100  # a report is one member; 100,000 one-octet members took 55 s


def gunzip(data: bytes, budget: Budget) -> bytes:
    """The decompressed content of ``data`` (gzip members one after another), decompressed
    a MiB at a time: memory holds what the budget allows and one piece more, never more."""
    pieces: list[bytes] = []
    size = 0
    rest = data
    for _ in range(_MAX_GZIP_MEMBERS):
        decompressor = zlib.decompressobj(31)
        pending = rest
        try:
            while not decompressor.eof:
                piece = decompressor.decompress(pending, _PIECE)
                size += len(piece)
                if size > budget.remaining:
                    budget.take(size, "gzip data")
                pieces.append(piece)
                pending = decompressor.unconsumed_tail
                if not piece and not pending and not decompressor.eof:
                    # (at the member's end nothing more comes out either: a member of a
                    # few octets, or none, ends in the step that produced nothing)
                    raise ReportReadError("gzip data is truncated")
        except zlib.error as exc:
            raise ReportReadError(f"not valid gzip data: {exc}") from None
        rest = decompressor.unused_data
        if not rest.startswith(GZIP_MAGIC):
            break
    else:  # (each member copies the rest of the input: many members cost quadratic time)
        raise ReportReadError(f"refused: gzip data of more than {_MAX_GZIP_MEMBERS} members")
    budget.take(size, "gzip data")
    return b"".join(pieces)


def zip_members(data: bytes, budget: Budget, max_members: int) -> list[tuple[str, bytes]]:
    """The files of a zip archive: (name as shown, content), in archive order."""
    count = _declared_members(data)
    if count > max_members:
        raise ReportReadError(f"refused: a zip archive of {count:,} members (at most "
                              f"{max_members})")  # fmt: skip
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise ReportReadError(f"not a valid zip archive: {exc}") from None
    if len(infos) > max_members:
        raise ReportReadError(f"refused: a zip archive of more than {max_members} members")
    members = []
    for info in infos:
        if info.is_dir():
            continue
        name = shown_name(info.filename)
        if info.flag_bits & 0x1:
            raise ReportReadError(f"zip member {name}: encrypted")
        if info.file_size > budget.remaining:
            budget.take(info.file_size, f"zip member {name}")
        try:
            with archive.open(info) as handle:
                content = handle.read(budget.remaining + 1)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError,
                EOFError, zlib.error, lzma.LZMAError) as exc:  # fmt: skip
            raise ReportReadError(f"zip member {name}: cannot be read: {exc}") from None
        budget.take(len(content), f"zip member {name}")
        members.append((name, content))
    return members


def _declared_members(data: bytes) -> int:
    """The member count of the archive's end record (65535: a ZIP64 archive, which reports
    never need)."""
    at = data.rfind(_END_RECORD, max(0, len(data) - _END_SEARCH))
    if at < 0 or at + 22 > len(data):
        raise ReportReadError("not a valid zip archive: no end of central directory record")
    return int(struct.unpack_from("<H", data, at + 10)[0])


def shown_name(name: str) -> str:
    """A member or attachment name as it may be shown: control characters replaced, at most
    200 characters."""
    cleaned = "".join(c if c.isprintable() else "?" for c in name)
    return clip(cleaned, 200) or "(no name)"
