"""Which messages are *heavy*, checked whole in a worker process (:mod:`.offload`) rather
than on the milter's event loop: told by the header section alone, counted field by field
as the fields arrive, so that the end of the header section costs the loop nothing per
field. Real mail stays far below every bound (a few KiB, a few dozen fields, one to three
signatures, an ARC set or two from forwarders and mailing lists)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HEAVY_HEADER_BYTES = 64 * 1024
HEAVY_DKIM_SIGNATURES = 5  # more than this many DKIM-Signature fields
HEAVY_ARC_SETS = 3  # more than this many ARC-Seal fields
# More than this many header fields (real mail has a few dozen; a list's copy with a long
# trail of Received fields, perhaps a hundred): each costs the end of the header section some
# 5 us of the loop on the loop's path (1,000 tiny fields: 5 ms in one piece).
HEAVY_HEADER_FIELDS = 300


@dataclass
class HeaderTally:
    """What makes a header section heavy, counted field by field as the fields arrive (so
    that the end of the header section costs the loop nothing per field)."""

    size: int = 0
    fields: int = 0
    signatures: int = 0
    seals: int = 0

    def add(self, name: str, value: bytes) -> None:
        self.size += len(name) + len(value) + 3
        self.fields += 1
        name = name.rstrip(" \t")  # (as the verifiers read "ARC-Seal :")
        if len(name) == 14:
            self.signatures += name.lower() == "dkim-signature"
        elif len(name) == 8:
            self.seals += name.lower() == "arc-seal"

    def heavy(self) -> bool:
        return (
            self.size >= HEAVY_HEADER_BYTES
            or self.signatures > HEAVY_DKIM_SIGNATURES
            or self.seals > HEAVY_ARC_SETS
            or self.fields > HEAVY_HEADER_FIELDS
        )


def heavy(headers: Sequence[tuple[str, bytes]]) -> bool:
    """Whether a message with these header fields (name, value as the MTA sent them) is
    checked in a worker."""
    tally = HeaderTally()
    for name, value in headers:
        tally.add(name, value)
    return tally.heavy()
