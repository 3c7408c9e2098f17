"""DKIM keys: the public key record (RFC 6376 3.6.1, RFC 8463 4), private keys, key pairs.

:func:`parse_key_record` is pure: TXT text in, :class:`KeyRecord` out (or KeyRecordError with
the RFC 6376 6.1.2 reason). Private keys load from PEM (PKCS#1 or PKCS#8, RSA or Ed25519) or
from the raw base64 Ed25519 form that dkimpy and OpenDKIM use (RFC 8463 A.1). All key
operations are OpenSSL's, through ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import stat
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailauth.dkim.tags import TagSyntaxError, decode_base64, parse_tag_list, split_list
from mailauth.errors import RecordSyntaxError, SigningError
from mailauth.files import KEY_LIMIT, read_limited

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

MAX_RSA_BITS = 8192  # beyond RFC 8301's 4096, refused to bound the work per signature
# The RSA public exponent bounds the work of one verification as the modulus does (one
# modular multiplication per exponent bit). Signers use 65537 (every key generator's
# default; RFC 8017 and FIPS 186-5 want an odd e > 2^16), rarely 3; a 4096-bit exponent
# makes one verification cost as much as a private-key operation. Accepted: odd, 3 to
# 2^32 - 1 -- the range Windows CryptoAPI keys can hold (a 32-bit pubexp) and beyond what
# Go's crypto/rsa accepts (2^31 - 1), so no key a real signer publishes is refused.
MAX_RSA_EXPONENT = (1 << 32) - 1
TXT_STRING_MAX = 255  # RFC 1035 3.3: one character-string
# The largest key record parsed. An 8192-bit RSA key (MAX_RSA_BITS) takes about 1.4 KB in
# p=, an Ed25519 key 44 octets (RFC 6376 3.3.3 already worries that a 4096-bit key may not
# fit a 512-octet UDP answer). Larger records are padding: 6,500 junk tags cost about 10 ms
# of parsing per selector name, and an ARC chain names 50.
MAX_KEY_RECORD = 4096


class KeyRecordError(RecordSyntaxError):
    """A key record that cannot be used; the message is the RFC 6376 6.1.2 reason."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A parsed ``selector._domainkey.domain`` TXT record.

    ``key`` is None when ``p=`` is empty (the key is revoked, RFC 6376 3.6.1).
    """

    key_type: str
    key: PublicKey | None
    hash_algorithms: tuple[str, ...] | None  # h=, None when absent (all allowed)
    services: tuple[str, ...]  # s=
    flags: tuple[str, ...]  # t=
    notes: str = ""
    bits: int | None = None  # key size; None when revoked

    @property
    def testing(self) -> bool:
        return "y" in self.flags

    @property
    def strict_identity(self) -> bool:
        """t=s: the i= domain must equal d= exactly (RFC 6376 3.6.1)."""
        return "s" in self.flags


@functools.lru_cache(maxsize=1024)
def parse_key_record(text: bytes) -> KeyRecord:
    """Parse a DKIM key record; raises :class:`KeyRecordError` with a reason.

    Memoised (a pure function of the record text): the same keys verify mail all day.
    A record over :data:`MAX_KEY_RECORD` octets is refused without being read.
    """
    if len(text) > MAX_KEY_RECORD:
        raise KeyRecordError(f"key record too large ({len(text)} octets, over {MAX_KEY_RECORD})")
    try:
        tags = parse_tag_list(text)
    except TagSyntaxError as exc:
        raise KeyRecordError(f"key record syntax error: {exc}") from None
    # 3.6.1 v=: if present it MUST be first and be "DKIM1".
    version = tags.get("v")
    if version is not None and (version.value != "DKIM1" or next(iter(tags)) != "v"):
        raise KeyRecordError(f"key record has v={version.value!r}, not a leading v=DKIM1")
    if "p" not in tags:
        raise KeyRecordError("key record has no p= tag")
    key_type = tags["k"].value if "k" in tags else "rsa"
    if key_type not in ("rsa", "ed25519"):
        raise KeyRecordError(f"unknown key type k={key_type}")
    hashes = split_list(tags["h"].value) if "h" in tags else None
    services = split_list(tags["s"].value) if "s" in tags else ("*",)
    flags = split_list(tags["t"].value) if "t" in tags else ()
    notes = tags["n"].value if "n" in tags else ""
    try:
        material = decode_base64(tags["p"].value, "p")
    except TagSyntaxError:
        raise KeyRecordError("key record p= is not valid base64") from None
    key = load_public_key(key_type, material) if material else None
    bits = key.key_size if isinstance(key, rsa.RSAPublicKey) else 256 if key else None
    return KeyRecord(key_type, key, hashes, services, flags, notes, bits)


@functools.lru_cache(maxsize=4096)
def load_public_key(key_type: str, material: bytes) -> PublicKey:
    """Decode ``p=`` (memoised: key records repeat, decoding a DER key is not free)."""
    if key_type == "ed25519":
        # RFC 8463 4: the raw 32-octet key, not a SubjectPublicKeyInfo.
        if len(material) != 32:
            raise KeyRecordError(f"ed25519 key is {len(material)} octets, not 32 (RFC 8463 4)")
        return ed25519.Ed25519PublicKey.from_public_bytes(material)
    try:
        # RFC 6376 3.6.1: an RSA key is a DER SubjectPublicKeyInfo; a bare RSAPublicKey
        # (PKCS#1), which some publishers use, is accepted too.
        loaded = serialization.load_der_public_key(material)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRecordError("key record p= is not a valid RSA public key") from None
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise KeyRecordError("key record k=rsa holds a key that is not RSA")
    if loaded.key_size > MAX_RSA_BITS:
        raise KeyRecordError(f"RSA key of {loaded.key_size} bits exceeds {MAX_RSA_BITS}")
    exponent = loaded.public_numbers().e
    if not 3 <= exponent <= MAX_RSA_EXPONENT or exponent % 2 == 0:
        shown = (
            str(exponent)
            if exponent.bit_length() <= 64
            else f"a {exponent.bit_length()}-bit number"
        )
        raise KeyRecordError(
            f"RSA public exponent {shown} is not one signers use (odd, 3 to 2^32-1)"
        )
    return loaded


def load_private_key(source: bytes | str | os.PathLike[str] | PrivateKey) -> PrivateKey:
    """A signing key from PEM bytes, raw Ed25519 bytes/base64, a key object or a file path.

    A ``str`` that does not start with ``-----BEGIN`` and any ``PathLike`` are file paths.
    Raises :class:`SigningError` with a one-line reason.
    """
    if isinstance(source, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        source = source.encode()
    if isinstance(source, str | os.PathLike):
        try:
            data = read_limited(source, KEY_LIMIT)
        except OSError as exc:
            raise SigningError(f"cannot read key file {source}: {exc.strerror}") from None
        return _parse_private_key(data, str(source))
    return _parse_private_key(bytes(source), "key")


def _parse_private_key(data: bytes, where: str) -> PrivateKey:
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise SigningError(f"{where}: encrypted private keys are not supported") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningError(f"{where}: not a usable PEM private key ({exc})") from None
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise SigningError(f"{where}: only RSA and Ed25519 keys can sign DKIM")
        return key
    raw = data if len(data) in (32, 64) else _b64_or_empty(data)
    if len(raw) in (32, 64):  # RFC 8463 A.1: the 32-octet seed (64: seed + public key)
        return ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    raise SigningError(f"{where}: neither a PEM key nor a base64 Ed25519 private key")


def _b64_or_empty(data: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return b""


def key_file_warning(path: str | os.PathLike[str]) -> str | None:
    """A warning when a private key file is readable by group or others, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"private key {os.fspath(path)} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    return None


def generate_private_key(algorithm: str, bits: int = 2048) -> PrivateKey:
    """A new key: ``algorithm`` "rsa" (``bits`` 1024-4096) or "ed25519"."""
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm != "rsa":
        raise SigningError(f"unknown key algorithm {algorithm!r} (rsa or ed25519)")
    if not 1024 <= bits <= 4096:
        raise SigningError(f"RSA key size must be 1024-4096 bits, not {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the file is protected by its mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_record(key: PrivateKey | PublicKey) -> str:
    """The TXT record text (``v=DKIM1; k=...; p=...``) that publishes a key's public half."""
    public = (
        key.public_key() if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) else key
    )
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def zone_txt_line(name: str, record: str, ttl: int = 3600) -> str:
    """A master-file line for the record, in strings of at most 255 octets (RFC 1035 3.3)."""
    strings = [record[i : i + TXT_STRING_MAX] for i in range(0, len(record), TXT_STRING_MAX)]
    if len(strings) == 1:
        return f'{name}. {ttl} IN TXT "{strings[0]}"'
    quoted = "\n\t".join(f'"{s}"' for s in strings)
    return f"{name}. {ttl} IN TXT (\n\t{quoted} )"
