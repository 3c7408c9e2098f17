"""Hostile messages through the whole pipeline (verify, then seal and sign what came in).

Two generators: messages assembled from hostile fields (random tag lists in DKIM and ARC
fields, odd addresses, forged Authentication-Results), and mutations of messages that pass
(a DKIM-signed message, one and three ARC hops): bytes flipped, ranges cut, lines repeated or
swapped, tag values replaced. Whatever arrives, verification returns a verdict (or refuses a
non-message with MessageParseError) whose Authentication-Results field is one well-formed
field, every DKIM outcome short of pass has a reason, and sealing or signing the message
raises nothing but SigningError. Sealing a message whose chain was none or pass gives a chain
that passes.

These found two crashes: an ARC-Seal s= that made no DNS name, and an author domain too long
for _dmarc.<domain>.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailauth import (
    ArcResult,
    Authenticator,
    DkimResult,
    MessageParseError,
    Sealer,
    Signer,
    SigningError,
    Verdict,
)
from mailauth.arc.seal import results_payload
from mailauth.dns import ZoneResolver

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
AUTH = Authenticator("mx.example.org", ZoneResolver.from_files([DEMO / "example.com.zone"]))
KEY = (DEMO / "demo.key.pem").read_bytes()
SEALER = Sealer("example.com", "demo", KEY)
SIGNER = Signer("example.com", "demo", KEY)
NOW = 1_800_000_000.0
CLIENT = {"ip": "192.0.2.10", "helo": "mail.example.com", "mail_from": "alice@example.com"}
LONG_DOMAIN = ".".join(["a" * 61] * 3 + ["a" * 51]) + ".example.com"  # 249 octets
_AR = re.compile(r"Authentication-Results: [^\r\n]*(\r\n[ \t][^\r\n]*)*\Z")
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _verify(raw: bytes, ip: str, helo: str, mail_from: str) -> Verdict | None:
    try:
        verdict = AUTH.verify(raw, ip=ip, helo=helo, mail_from=mail_from, now=NOW)
    except MessageParseError:
        return None
    assert _AR.match(verdict.authentication_results), verdict.authentication_results
    verdict.to_dict()
    unexplained = [
        o for o in verdict.dkim or () if o.result is not DkimResult.PASS and not o.reason
    ]
    assert not unexplained, unexplained
    return verdict


def _sealed(raw: bytes, hops: int) -> bytes:
    for _ in range(hops):
        verdict = AUTH.verify(raw, now=NOW, **CLIENT)
        assert verdict.arc is not None
        payload = results_payload(verdict.authentication_results)
        raw = SEALER.seal(raw, authentication_results=payload, chain=verdict.arc, now=NOW)
    return raw


# --- messages assembled from hostile fields ---------------------------------------------------

_TAG_NAMES = st.sampled_from(["v", "a", "b", "bh", "c", "d", "h", "i", "l", "q", "s", "t", "x"])
_VALUES = st.one_of(
    st.sampled_from([
        "1", "rsa-sha256", "ed25519-sha256", "rsa-sha1", "relaxed/simple", "simple/", "/",
        "example.com", "demo", "from", "From:To", "", "@example.com", "x@sub.example.com", "=2E",
        "9" * 30, "-1", "0", "none", "pass", "fail", "AAAA", "====", "a..b", "xn--", "\\", ";",
        "i=1", "dns/txt", "Z" * 300, "s" * 63, LONG_DOMAIN, "é",
    ]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
)  # fmt: skip
_SPACES = st.sampled_from(["", " ", "\t", "\r\n ", "\n ", "  "])
_ADDRESSES = st.sampled_from([
    "alice@example.com", "<alice@example.com>", "a@b@c", '"q\\"x"@example.com', "@", "",
    "Alice <alice@example.com>, Bob <bob@example.net>", "=?utf-8?q?x?= <a@example.com>",
    "alice@[192.0.2.1]", "alice@example.com.", "ü@bücher.example", "undisclosed-recipients:;",
    "(c) alice@example.com (c)", f"alice@{LONG_DOMAIN}", "alice@" + "a" * 64 + ".com",
    "alice@example..com",
])  # fmt: skip
_RESULTS = st.sampled_from([
    "mx.example.org; spf=pass", "MX.EXAMPLE.ORG ; dkim=pass", "(c) mx.example.org (c); none",
    "mx.example.org", '"mx.example.org"; spf=pass', "; ;", "i=1; mx.example.org; spf=pass",
    "i=50; other.example; arc=pass", "i=x; mx.example.org", "other.example; spf=pass",
])  # fmt: skip
_NAMES = st.sampled_from([
    "DKIM-Signature", "ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results",
    "Authentication-Results", "Sender", "To", "Subject", "Received", "dkim-signature",
])  # fmt: skip


@st.composite
def _tag_list(draw: st.DrawFn) -> str:
    count = draw(st.integers(0, 10))
    specs = [
        f"{draw(_SPACES)}{draw(_TAG_NAMES)}{draw(_SPACES)}={draw(_SPACES)}{draw(_VALUES)}"
        for _ in range(count)
    ]
    return ";".join(specs) + draw(st.sampled_from(["", ";", ";;"]))


@st.composite
def _field(draw: st.DrawFn) -> bytes:
    name = draw(_NAMES)
    lname = name.lower()
    if lname in ("dkim-signature", "arc-seal", "arc-message-signature"):
        value = draw(_tag_list())
    elif lname in ("sender", "to"):
        value = draw(_ADDRESSES)
    elif lname.endswith("authentication-results"):
        value = draw(_RESULTS)
    else:
        value = draw(_VALUES)
    return f"{name}:{draw(_SPACES)}{value}".encode()


@st.composite
def _assembled(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(_field(), max_size=25))
    if draw(st.integers(0, 3)):  # mostly one From field of our own: DMARC gets to work
        fields.insert(draw(st.integers(0, len(fields))), f"From: {draw(_ADDRESSES)}".encode())
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    body = draw(st.sampled_from([b"", b"hello\r\n", b"\r\n\r\n", b" \t \r\n", b"\n.\n", b"\r"]))
    return draw(st.sampled_from([b"", b"From x\n"])) + eol.join(fields) + eol + eol + body


@_SETTINGS
@given(
    _assembled(),
    st.sampled_from(["192.0.2.10", "2001:db8::1", "203.0.113.5"]),
    st.sampled_from(["mail.example.com", "", "[192.0.2.1]", "x" * 300, "ü.example", "a..b"]),
    st.sampled_from(["alice@example.com", "", "<>", "a@b@c", "ü@bücher.example", "x@" + "a" * 300]),
)
def test_assembled_hostile_messages(raw: bytes, ip: str, helo: str, mail_from: str) -> None:
    _verify(raw, ip, helo, mail_from)


# --- mutations of messages that pass ----------------------------------------------------------

_GOOD = (DEMO / "message.eml").read_bytes()
_BASES = [_GOOD, _sealed(_GOOD, 1), _sealed(_GOOD, 3)]
_HOSTILE = [
    b"", b" ", b"\r\n", b"\r\n ", b"=", b";", b"0", b"-1", b"9" * 20, b"\x00", b"\xff", b"\xc3\xa9",
    b"rsa-sha1", b"ed25519-sha256", b"EXAMPLE.COM.", b"sub.example.com", b"x" * 500, b"from",
    b"relaxed", b"simple/relaxed", b"fail", b"pass", b"i=1", b"2", b"51", b"AAAA", b"A===", b'"',
    b"\\", b"(", b"mx.example.org", LONG_DOMAIN.encode(), b"a" * 64,
]  # fmt: skip
_TAG_VALUE = re.compile(rb"(?<=[;\s])[a-z]{1,3}=([^;\r\n]*)")


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.integers(0, 5))
        head = raw.find(b"\r\n\r\n")
        head = len(raw) if head < 0 else head
        lines = bytes(raw).split(b"\r\n")
        if operation == 0 and raw:  # an octet of the header changed
            raw[draw(st.integers(0, max(0, head - 1)))] = draw(st.integers(0, 255))
        elif operation == 1:  # a range cut out
            start = draw(st.integers(0, len(raw)))
            raw[start : start + draw(st.integers(1, 80))] = b""
        elif operation == 2:  # a tag value replaced
            values = list(_TAG_VALUE.finditer(bytes(raw[:head])))
            if values:
                match = draw(st.sampled_from(values))
                raw[match.start(1) : match.end(1)] = draw(st.sampled_from(_HOSTILE))
        elif operation == 3:  # a line repeated elsewhere
            line = lines[draw(st.integers(0, len(lines) - 1))]
            lines.insert(draw(st.integers(0, len(lines))), line)
            raw = bytearray(b"\r\n".join(lines))
        elif operation == 4:  # two lines swapped
            i, j = (draw(st.integers(0, len(lines) - 1)) for _ in range(2))
            lines[i], lines[j] = lines[j], lines[i]
            raw = bytearray(b"\r\n".join(lines))
        else:  # hostile bytes inserted
            start = draw(st.integers(0, len(raw)))
            raw[start:start] = draw(st.sampled_from(_HOSTILE))
    return bytes(raw)


def test_the_mutation_bases_pass() -> None:
    dkim = AUTH.verify(_BASES[0], now=NOW, **CLIENT).dkim
    assert dkim is not None and dkim[0].result is DkimResult.PASS
    chain = AUTH.verify(_BASES[2], now=NOW, **CLIENT).arc
    assert chain is not None and chain.result is ArcResult.PASS


@_SETTINGS
@given(_mutated())
def test_mutated_messages_verify_seal_and_sign(raw: bytes) -> None:
    verdict = _verify(raw, **CLIENT)
    if verdict is None:
        return
    assert verdict.arc is not None
    payload = results_payload(verdict.authentication_results)
    try:
        sealed = SEALER.seal(raw, authentication_results=payload, chain=verdict.arc, now=NOW)
    except SigningError:
        sealed = raw
    try:
        SIGNER.sign(sealed, now=NOW)
    except SigningError:
        pass
    if sealed != raw and verdict.arc.result in (ArcResult.NONE, ArcResult.PASS):
        resealed = AUTH.verify(sealed, now=NOW, **CLIENT).arc
        assert resealed is not None and resealed.result is ArcResult.PASS, resealed
