"""What parsing a DNS answer would cost dnspython, told from its octets in one linear pass.

dnspython parses an answer in one piece, and its cost depends on the answer's shape far more
than on its size (measured on the benchmark machine): about 150 us per record, 15 us per TXT
character-string, and, for every name, time growing with the square of its labels (hashing a
record rebuilds each suffix of its names). A 1,232-octet UDP answer of MX records whose names
each point at a long shared suffix took 0.48 s; a 16 KiB one 7.8 s. :func:`parse_cost` walks
the message once (names decompressed by counting, never built) and estimates that cost, so
that :mod:`mailauth.dns.udp` can parse a cheap answer at once, a dearer one in a thread, and
refuse one past its budget without ever handing it to dnspython.
"""

from __future__ import annotations

import struct

# Estimated microseconds of dnspython's parse on the benchmark machine (2 GHz, shared).
RECORD_COST = 150
STRING_COST = 15
LABEL_SQUARE_COST = 0.9  # per square of a name's label count

_HEADER = struct.Struct("!6H")
_RR = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
_MAX_LABELS = 128  # a name of 255 octets has at most 127 labels
# Record types whose RDATA starts with a name (offset in the RDATA), and SOA's two names.
_NAME_AT = {2: 0, 5: 0, 12: 0, 39: 0, 15: 2, 33: 6}  # NS CNAME PTR DNAME MX SRV
_SOA, _TXT = 6, 16


def parse_cost(wire: bytes, limit: float) -> float:
    """The estimated cost (microseconds on the benchmark machine) of ``dns.message.from_wire``
    on ``wire``, or as soon as it is past ``limit`` a figure past it (so that this walk costs
    little whatever the answer); ValueError when the octets are not a DNS message
    (dnspython would refuse it too)."""
    if len(wire) < _HEADER.size:
        raise ValueError("shorter than a DNS header")
    _, _, questions, *sections = _HEADER.unpack_from(wire)
    position = _HEADER.size
    cost = 0.0
    for _ in range(questions):
        labels, position = _name(wire, position)
        cost += labels * labels * LABEL_SQUARE_COST
        position += 4
    for _ in range(sum(sections)):
        if cost > limit:
            break
        labels, position = _name(wire, position)
        if position + _RR.size > len(wire):
            raise ValueError("a record cut short")
        rdtype, _, _, length = _RR.unpack_from(wire, position)
        start = position + _RR.size
        position = start + length
        if position > len(wire):
            raise ValueError("a record's data cut short")
        squares = labels * labels
        if rdtype in _NAME_AT:
            more, _ = _name(wire, start + _NAME_AT[rdtype])
            squares += more * more
        elif rdtype == _SOA:
            first, after = _name(wire, start)
            second, _ = _name(wire, after)
            squares += first * first + second * second
        elif rdtype == _TXT:
            cost += _strings(wire, start, position, int(limit / STRING_COST) + 1) * STRING_COST
        cost += RECORD_COST + squares * LABEL_SQUARE_COST
    return cost


def _name(wire: bytes, position: int) -> tuple[int, int]:
    """The labels of the (possibly compressed) name at ``position``, and where the octets
    after it begin; at most _MAX_LABELS labels and as many pointers followed."""
    labels = jumps = 0
    after = -1
    while True:
        if position >= len(wire):
            raise ValueError("a name cut short")
        length = wire[position]
        if length >= 0xC0:
            if position + 1 >= len(wire):
                raise ValueError("a pointer cut short")
            if after < 0:
                after = position + 2
            jumps += 1
            if jumps > _MAX_LABELS:
                raise ValueError("a loop of pointers")
            position = ((length & 0x3F) << 8) | wire[position + 1]
            continue
        if length >= 0x40:
            raise ValueError("an unknown label type")
        if length == 0:
            return labels, after if after >= 0 else position + 1
        labels += 1
        if labels > _MAX_LABELS:
            raise ValueError("a name of too many labels")
        position += 1 + length


def _strings(wire: bytes, start: int, end: int, most: int) -> int:
    """The character-strings of a TXT record's data (each at least its length octet), or
    ``most`` when there are that many."""
    count = 0
    while start < end and count < most:
        start += 1 + wire[start]
        count += 1
    return count
