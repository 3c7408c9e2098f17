"""Hostile messages (issue 14, part 2) and the DNS data they need, for
benchmarks/bench_hostile.py and for tests; and one ordinary message to compare them with.

Each builder returns a :class:`Case`: the message, its SMTP envelope (client address, HELO,
MAIL FROM), the zone text it needs and a one-line description. Zone texts use absolute owner
names and no ``$ORIGIN``, so that each loads alone (``ZoneResolver.from_text``) and any of them
join into one file for a DNS server (:func:`zone_file`).

The cases:

- ``ordinary``: a 3 KB RSA-2048 DKIM-signed message from ordinary.test (SPF passing for the
  envelope, DMARC p=reject).
- ``decoy_exponent_arc``: a 50-set ARC chain (and one DKIM signature) whose selectors each hold
  three decoy RSA keys (3072-bit modulus, ~3070-bit public exponent), sorted before the real
  key, so that a verifier trying every record (up to ``MAX_KEY_RECORDS`` = 4) exponentiates
  three times per signature before the real key passes, for every seal and message signature.
  The real key is RSA-3072 too: OpenSSL tries a key only on a signature of its modulus's
  length, so decoys beside a 2048-bit key would cost nothing.
- ``many_l_bodies``: ten DKIM signatures with ten ``l=`` values and one ARC set over a 10 MB
  body: twelve body hashers.
- ``big_aar_chain``: 50 ARC sets, each with a 64 KB ARC-Authentication-Results field.
- ``spf_tree``: a MAIL FROM domain (also the HELO name) whose SPF record has ten ``mx:`` terms,
  each naming a domain with ten MX hosts whose A records do not match: about 111 queries per
  identity, 222 for both.
- ``many_signatures``: 5,000 DKIM-Signature fields (the first ten real).

Deterministic: the keys are in fixtures/hostile/, signatures are made at :data:`NOW` (RSA
PKCS#1 v1.5 signing has no randomness), decoy keys come from a seeded generator. Each case is
built once per process (the large ones take up to a second or two).

DNS: ordinary.test's records have a TTL of 3600 (a resolver caches them after the first
message); every record under hostile.test has a TTL of 0, so that no cache spares a hostile
message its lookups (an attacker sets the TTLs of its own zone, or uses fresh names).
Negative answers are cached for an hour (:func:`zone_file`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailauth.arc import Sealer
from mailauth.dkim import Signer, load_private_key, public_key_record, sign_dkim, zone_txt_line
from mailauth.dkim.body import BodyHasher
from mailauth.dkim.canon import Canonicalization, hash_input
from mailauth.dkim.keys import PrivateKey
from mailauth.dkim.sign import sign_data
from mailauth.message import Message
from mailauth.results import ArcOutcome, ArcResult

NOW = 1_795_000_000.0  # 2026-11-18: signatures have t= this, and no x=
KEYS = Path(__file__).resolve().parent.parent / "fixtures" / "hostile"
HOSTILE_SUFFIX = "hostile.test"
HOSTILE_IP = "203.0.113.25"
ORDINARY_IP = "192.0.2.10"
ORDINARY_DOMAIN = "ordinary.test"
# OpenSSL refuses public exponents over 64 bits with moduli over 3072 bits (its
# OPENSSL_RSA_SMALL_MODULUS_BITS), at no cost: 3072 bits is the largest modulus with which a
# huge exponent is really exponentiated (about 15 ms per verification, measured).
DECOY_MODULUS_BITS = 3072
RELAXED = Canonicalization.RELAXED
_SIGNED = ("from", "to", "subject", "date", "message-id")


@dataclass(frozen=True, slots=True)
class Case:
    """One message with its envelope and the DNS data it needs."""

    name: str
    message: bytes
    ip: str
    helo: str
    mail_from: str
    zone: str
    description: str


@functools.cache
def _key(name: str) -> PrivateKey:
    return load_private_key((KEYS / f"{name}.key.pem").read_bytes())


def _letter(sender: str, subject: str, body: bytes, message_id: str) -> bytes:
    domain = sender.rpartition("@")[2]
    head = (
        f"From: {sender}\r\n"
        "To: Bob <bob@mx.example.org>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {formatdate(NOW - 60, usegmt=True)}\r\n"
        f"Message-ID: <{message_id}@{domain}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
    )
    return head.encode() + body


def _txt(name: str, text: str, ttl: int = 0) -> str:
    return zone_txt_line(name, text, ttl) + "\n"


def _hostile_domain_zone(domain: str) -> str:
    """SPF passing for the hostile client, DMARC p=none: the plain parts of a hostile sender."""
    return _txt(domain, "v=spf1 ip4:203.0.113.0/24 -all") + _txt(
        f"_dmarc.{domain}", "v=DMARC1; p=none"
    )


def _key_zone(name: str, key: PrivateKey, decoys: tuple[str, ...] = ()) -> str:
    """The key record at ``name``, written ``v=DKIM1; p=...`` so that it sorts after the
    decoys (``v=DKIM1; k=rsa; p=...``): verifiers try records in sorted order."""
    real = public_key_record(key).replace("k=rsa; ", "")
    return "".join(_txt(name, text) for text in (*decoys, real))


@functools.cache
def decoy_key_records(count: int = 3) -> tuple[str, ...]:
    """Key records of RSA public keys with a 3072-bit modulus and a ~3070-bit odd exponent."""
    chooser = random.Random(14)  # (fixed decoys, not secrets)
    records = []
    for _ in range(count):
        modulus = chooser.getrandbits(DECOY_MODULUS_BITS) | 1 << (DECOY_MODULUS_BITS - 1) | 1
        exponent = chooser.getrandbits(DECOY_MODULUS_BITS - 2) | 1 << (DECOY_MODULUS_BITS - 3) | 1
        public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        records.append(f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")
    return tuple(records)


def _seal(
    message: bytes, domain: str, selector: str, instance: int, results: str, *, key: str = "hostile"
) -> bytes:
    """One ARC set on top, as a forwarder that found the chain passing would add it."""
    sealer = Sealer(domain, selector, _key(key))
    chain = ArcOutcome(ArcResult.NONE if instance == 1 else ArcResult.PASS)
    return sealer.seal(message, authentication_results=results, chain=chain, now=NOW)


@functools.cache
def ordinary() -> Case:
    domain = ORDINARY_DOMAIN
    paragraph = (
        b"Here are the minutes of this week's meeting. We went through the open items,\r\n"
        b"agreed on the dates for the next release and on who writes the notes for it.\r\n"
        b"Please send corrections before Friday; the final version goes to the list.\r\n"
        b"\r\n"
    )
    body = b"Hello Bob,\r\n\r\n" + paragraph * 9 + b"Regards,\r\nAlice\r\n"
    letter = _letter(f"Alice Example <alice@{domain}>", "Weekly minutes", body, "minutes-1")
    message = Signer(domain, "s2048", _key("ordinary")).sign(letter, now=NOW)
    zone = (
        _txt(domain, "v=spf1 ip4:192.0.2.0/24 -all", 3600)
        + f"mail.{domain}. 3600 IN A {ORDINARY_IP}\n"
        + _txt(f"mail.{domain}", "v=spf1 a -all", 3600)
        + _txt(f"_dmarc.{domain}", "v=DMARC1; p=reject", 3600)
        + _txt(f"s2048._domainkey.{domain}", public_key_record(_key("ordinary")), 3600)
    )
    return Case(
        "ordinary", message, ORDINARY_IP, f"mail.{domain}", f"alice@{domain}", zone,
        f"{len(message)} octets, RSA-2048 DKIM, SPF pass, DMARC p=reject",
    )  # fmt: skip


@functools.cache
def decoy_exponent_arc(sets: int = 50, decoys: int = 3) -> Case:
    domain = f"arc.{HOSTILE_SUFFIX}"
    body = b"Forwarded many times.\r\n"
    letter = _letter(f"mallory@{domain}", "Decoy keys", body, "decoy-1")
    message = Signer(domain, "s1", _key("decoy")).sign(letter, now=NOW)
    for i in range(1, sets + 1):
        results = f"mx{i}.{domain}; dkim=pass header.d={domain}; arc={'none' if i == 1 else 'pass'}"
        message = _seal(message, domain, f"s{i}", i, results, key="decoy")
    decoy_texts = decoy_key_records(decoys) if decoys else ()
    zone = _hostile_domain_zone(domain) + "".join(
        _key_zone(f"s{i}._domainkey.{domain}", _key("decoy"), decoy_texts)
        for i in range(1, sets + 1)
    )
    return Case(
        "decoy_exponent_arc", message, HOSTILE_IP, domain, f"mallory@{domain}", zone,
        f"{sets} ARC sets and 1 DKIM signature, {decoys} decoy keys with a "
        f"{DECOY_MODULUS_BITS - 2}-bit exponent before the real key at each of {sets} selectors",
    )  # fmt: skip


def _signature_with_length(message: bytes, domain: str, selector: str, length: int) -> bytes:
    """A DKIM-Signature field with ``l=`` (Signer never writes one), made by hand."""
    parsed = Message.parse(message)
    hasher = BodyHasher(RELAXED, limit=length)
    hasher.update(parsed.body)
    body_hash = base64.b64encode(hasher.digest()).decode()
    unsigned = (
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s={selector};\r\n"
        f"\tt={int(NOW)}; l={length}; h={':'.join(_SIGNED)};\r\n\tbh={body_hash};\r\n\tb="
    ).encode()
    data = hash_input(parsed.headers, _SIGNED, unsigned, RELAXED)
    value = base64.b64encode(sign_data(_key("hostile"), data))
    folded = b"\r\n\t".join(value[i : i + 72] for i in range(0, len(value), 72))
    return unsigned + folded + b"\r\n"


@functools.cache
def _text_body(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog; again, and again, and again.\r\n"
    return line * max(1, size // len(line))


@functools.cache
def many_l_bodies(body_size: int = 10_000_000, signatures: int = 10) -> Case:
    domain = f"lbody.{HOSTILE_SUFFIX}"
    letter = _letter(f"mallory@{domain}", "Partial bodies", _text_body(body_size), "lbody-1")
    length = len(Message.parse(letter).body)  # (the body is already in canonical form)
    fields = [
        _signature_with_length(letter, domain, "s1", length * k // signatures)
        for k in range(1, signatures + 1)
    ]
    message = b"".join(fields) + letter
    results = f"mx1.{domain}; dkim=pass header.d={domain}; arc=none"
    message = _seal(message, domain, "s1", 1, results)
    zone = _hostile_domain_zone(domain) + _key_zone(f"s1._domainkey.{domain}", _key("hostile"))
    return Case(
        "many_l_bodies", message, HOSTILE_IP, domain, f"mallory@{domain}", zone,
        f"{signatures} DKIM signatures with {signatures} l= values and 1 ARC set, "
        f"{length:,}-octet body",
    )  # fmt: skip


def _long_results(authserv_id: str, size: int, domain: str) -> str:
    parts = [f"{authserv_id};"]
    total, n = len(parts[0]), 0
    while total < size:
        part = f"dkim=pass header.d=d{n}.{domain} header.s=s{n} header.b=abcdefgh;"
        parts.append(part)
        total, n = total + len(part) + 1, n + 1
    return " ".join(parts).rstrip(";")


@functools.cache
def big_aar_chain(sets: int = 50, aar_size: int = 64 * 1024) -> Case:
    domain = f"aar.{HOSTILE_SUFFIX}"
    letter = _letter(f"mallory@{domain}", "Long results", b"Forwarded.\r\n", "aar-1")
    message = Signer(domain, "s1", _key("hostile")).sign(letter, now=NOW)
    for i in range(1, sets + 1):
        message = _seal(
            message, domain, "s1", i, _long_results(f"mx{i}.{domain}", aar_size, domain)
        )
    zone = _hostile_domain_zone(domain) + _key_zone(f"s1._domainkey.{domain}", _key("hostile"))
    return Case(
        "big_aar_chain", message, HOSTILE_IP, domain, f"mallory@{domain}", zone,
        f"{sets} ARC sets, each with a {aar_size // 1024} KB ARC-Authentication-Results",
    )  # fmt: skip


@functools.cache
def spf_tree(terms: int = 10, hosts: int = 10) -> Case:
    domain = f"spf.{HOSTILE_SUFFIX}"
    record = "v=spf1 " + " ".join(f"mx:m{i}.{domain}" for i in range(terms)) + " -all"
    lines = [_txt(domain, record), _txt(f"_dmarc.{domain}", "v=DMARC1; p=none")]
    for i in range(terms):
        for j in range(hosts):
            host = f"h{j}.m{i}.{domain}"
            lines.append(f"m{i}.{domain}. 0 IN MX 10 {host}.\n")
            lines.append(f"{host}. 0 IN A 198.51.100.{(i * hosts + j) % 254 + 1}\n")
    letter = _letter(f"mallory@{domain}", "Slow SPF", b"Hello.\r\n", "spf-1")
    queries = 1 + terms * (1 + hosts)
    return Case(
        "spf_tree", letter, HOSTILE_IP, domain, f"mallory@{domain}", "".join(lines),
        f"SPF with {terms} mx: terms of {hosts} non-matching hosts each, for MAIL FROM and "
        f"HELO: {queries} queries per identity",
    )  # fmt: skip


@functools.cache
def many_signatures(count: int = 5000, verified: int = 10) -> Case:
    domain = f"sigs.{HOSTILE_SUFFIX}"
    letter = _letter(f"mallory@{domain}", "Many signatures", b"Hello.\r\n", "sigs-1")
    signers = [Signer(domain, f"k{i}", _key("hostile")) for i in range(verified)]
    signed = sign_dkim(letter, signers, now=NOW)
    body_hash = base64.b64encode(hashlib.sha256(b"Hello.\r\n").digest()).decode()
    extra = []
    for n in range(count - verified):
        junk = base64.b64encode(hashlib.sha256(b"%d" % n).digest() * 8).decode()
        folded = "\r\n\t".join(junk[i : i + 72] for i in range(0, len(junk), 72))
        extra.append(
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=x{n};\r\n"
            f"\tt={int(NOW)}; h={':'.join(_SIGNED)};\r\n\tbh={body_hash};\r\n\tb={folded}\r\n"
        )
    real = signed[: len(signed) - len(letter)]  # (sign_dkim puts its fields on top)
    message = real + "".join(extra).encode() + letter
    zone = _hostile_domain_zone(domain) + "".join(
        _key_zone(f"k{i}._domainkey.{domain}", _key("hostile")) for i in range(verified)
    )
    return Case(
        "many_signatures", message, HOSTILE_IP, domain, f"mallory@{domain}", zone,
        f"{count:,} DKIM-Signature fields, the first {verified} real",
    )  # fmt: skip


HOSTILE = {
    "decoy_exponent_arc": decoy_exponent_arc,
    "many_l_bodies": many_l_bodies,
    "big_aar_chain": big_aar_chain,
    "spf_tree": spf_tree,
    "many_signatures": many_signatures,
}


def zone_file(cases: list[Case]) -> str:
    """One master file for a DNS server: the cases' zones under a root SOA whose negative TTL
    is 3600 (RFC 2308), so that the NXDOMAIN at _dmarc.test, which the DMARC tree walk asks
    for every message, is cached as a resolver would."""
    head = (
        "$ORIGIN .\n$TTL 0\n"
        ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 3600\n"
        ". 0 IN NS ns.test.\n"
        "ns.test. 3600 IN A 127.0.0.1\n"
    )
    return head + "".join(case.zone for case in cases)
