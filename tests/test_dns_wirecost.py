"""mailauth.dns.wirecost: the estimate of dnspython's parse cost, from the octets alone."""

from __future__ import annotations

import struct
import time

import dns.exception
import dns.message
import dns.rrset
import pytest

from mailauth.dns.wirecost import parse_cost


def _answer(name: str, rdtype: str, values: list[str]) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=4096)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text_list(name, 600, "IN", rdtype, values))
    return response.to_wire(max_size=65535)


SHAPES = {
    "a DKIM key": _answer("s._domainkey.example.com.", "TXT", ['"v=DKIM1; p=' + "A" * 240 + '"']),
    "70 addresses": _answer("pool.example.com.", "A", [f"10.0.0.{n}" for n in range(70)]),
    "2,000 empty strings": _answer("t.example.com.", "TXT", [" ".join(['""'] * 2000)]),
    "deep MX names": _answer(
        "m.example.com.", "MX", [f"10 {'a.' * 60}x{n}.example.com." for n in range(8)]
    ),
}


def _measured(wire: bytes) -> float:
    """dnspython's parse time of ``wire``, microseconds of this thread's CPU (best of 3)."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        dns.message.from_wire(wire)
        best = min(best, time.thread_time() - started)
    return best * 1e6


@pytest.mark.parametrize("shape", SHAPES)
def test_the_estimate_follows_what_dnspython_takes(shape: str) -> None:
    """Each costly shape -- records, TXT strings, long names -- weighs in the estimate as it
    does in dnspython's parse: the ratio of estimate to measure stays within a factor of 5
    of the cheapest shape's (the machine's speed cancels out)."""
    wire = SHAPES[shape]
    reference = SHAPES["a DKIM key"]
    ratio = parse_cost(wire, 1e9) / _measured(wire)
    reference_ratio = parse_cost(reference, 1e9) / _measured(reference)
    assert reference_ratio / 5 < ratio < reference_ratio * 5, (ratio, reference_ratio)


def test_the_walk_stops_past_its_limit() -> None:
    """Past the limit the walk ends: a figure over it, whatever the rest."""
    wire = _answer("t.example.com.", "TXT", [" ".join(['""'] * 30_000)])
    started = time.thread_time()
    assert parse_cost(wire, 1_000) > 1_000
    assert time.thread_time() - started < 0.05


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (b"\0" * 11, "shorter than a DNS header"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1", "a loop of pointers"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x05abc", "a name cut short"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x41", "an unknown label type"),
        (struct.pack("!6H", 1, 0, 0, 1, 0, 0) + b"\0" + b"\0\1\0\1\0\0\0\1\0\x09", "cut short"),
    ],
)
def test_octets_that_are_not_a_message_are_refused(wire: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_cost(wire, 1e9)
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(wire)
