"""Shared DKIM test material: keys made once per run, zones, dkimpy as the oracle."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping

import dkim as dkimpy
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailauth.dkim import DkimPolicy, public_key_record, verify_dkim
from mailauth.dkim.keys import PrivateKey, private_key_pem
from mailauth.dns import DnsResolver, RRType, ZoneResolver
from mailauth.message import Message
from mailauth.plan import run_plan
from mailauth.results import DkimOutcome

NOW = 1_795_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
KEYS: dict[str, PrivateKey] = {"rsa-sha256": RSA_KEY, "ed25519-sha256": ED_KEY}
SELECTORS = {"rsa-sha256": "rsa1", "ed25519-sha256": "ed1"}
CANONICALIZATIONS = ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]

MESSAGE = (
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject:  Quarterly   report \r\n"
    b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <demo-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n"
    b"\r\n"
    b"the report\tis attached in spirit.\r\n"
    b"\r\n"
    b"Alice\r\n"
    b"\r\n\r\n"
)


def key_records(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    records = {
        f"{SELECTORS[a]}._domainkey.example.com": public_key_record(k) for a, k in KEYS.items()
    }
    records.update(extra or {})
    return records


def zone(
    records: Mapping[str, str | list[str]], faults: Mapping[str, str] | None = None
) -> ZoneResolver:
    data = {
        (name, RRType.TXT): (
            300,
            tuple(v.encode() for v in ([value] if isinstance(value, str) else value)),
        )
        for name, value in records.items()
    }
    return ZoneResolver(data, faults=faults or {})


def verify(
    raw: bytes,
    resolver: DnsResolver | None = None,
    *,
    now: float = NOW,
    policy: DkimPolicy | None = None,
) -> tuple[DkimOutcome, ...]:
    plan = verify_dkim(Message.parse(raw), now=now, policy=policy)
    return run_plan(plan, resolver or zone(key_records()))


def dkimpy_dns(records: Mapping[str, str]) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), "").encode()

    return lookup


def dkimpy_verify(raw: bytes, records: Mapping[str, str] | None = None) -> bool:
    """dkimpy's verdict on the first signature (the oracle)."""
    return bool(dkimpy.verify(raw, dnsfunc=dkimpy_dns(records or key_records()), minkey=1024))


def dkimpy_sign(raw: bytes, algorithm: str, canonicalization: str, **kwargs: object) -> bytes:
    """A DKIM-Signature field made by dkimpy, with the same keys."""
    key = KEYS[algorithm]
    if isinstance(key, rsa.RSAPrivateKey):
        material = private_key_pem(key)
    else:
        material = base64.b64encode(key.private_bytes_raw())
    head, body = canonicalization.split("/")
    return bytes(
        dkimpy.sign(
            raw,
            SELECTORS[algorithm].encode(),
            b"example.com",
            material,
            canonicalize=(head.encode(), body.encode()),
            signature_algorithm=algorithm.encode(),
            **kwargs,
        )
    )
