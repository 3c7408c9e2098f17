"""Key records (RFC 6376 3.6.1, RFC 8463 4), private key files, keygen output."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailauth.dkim.keys import (
    MAX_KEY_RECORD,
    KeyRecordError,
    generate_private_key,
    key_file_warning,
    load_private_key,
    parse_key_record,
    private_key_pem,
    public_key_record,
    zone_txt_line,
)
from mailauth.dns import RRType, ZoneResolver
from mailauth.errors import SigningError
from tests.dkim_helpers import ED_KEY, RSA_KEY

RFC = Path(__file__).resolve().parent.parent / "fixtures" / "dkim-rfc"
RSA_P = public_key_record(RSA_KEY).split("p=")[1]
ED_P = public_key_record(ED_KEY).split("p=")[1]


def test_rsa_record() -> None:
    record = parse_key_record(f"v=DKIM1; k=rsa; p={RSA_P}".encode())
    assert record.key_type == "rsa"
    assert record.bits == 2048
    assert not record.testing
    assert record.services == ("*",)


def test_ed25519_record_is_the_raw_key() -> None:
    record = parse_key_record(f"v=DKIM1; k=ed25519; p={ED_P}".encode())
    assert record.bits == 256
    assert isinstance(record.key, ed25519.Ed25519PublicKey)


def test_rfc8463_4_spki_wrapped_ed25519_key_is_refused() -> None:
    spki = ED_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = f"v=DKIM1; k=ed25519; p={base64.b64encode(spki).decode()}"
    with pytest.raises(KeyRecordError, match="not 32"):
        parse_key_record(text.encode())


def test_pkcs1_rsa_public_key_is_accepted() -> None:
    der = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    record = parse_key_record(b"p=" + base64.b64encode(der))
    assert record.bits == 2048


def test_rfc6376_3_6_1_empty_p_means_revoked() -> None:
    assert parse_key_record(b"v=DKIM1; p=").key is None


def test_rfc6376_3_6_1_flags_services_hashes_and_unknown_tags() -> None:
    text = f"v=DKIM1; t=y:s; s=email; h=sha1:sha256; g=*; zz=1; n=note; p={RSA_P}"
    record = parse_key_record(text.encode())
    assert record.testing and record.strict_identity
    assert record.services == ("email",)
    assert record.hash_algorithms == ("sha1", "sha256")
    assert record.notes == "note"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("v=DKIM2; p=AAAA", "v="),
        ("k=rsa; v=DKIM1; p=AAAA", "leading v=DKIM1"),
        ("v=DKIM1; k=rsa", "no p="),
        ("v=DKIM1; k=dsa; p=AAAA", "unknown key type"),
        ("v=DKIM1; p=not*base64", "base64"),
        ("v=DKIM1; p=AAAA", "not a valid RSA public key"),
        ("v=DKIM1; k=rsa; t; p=AAAA", "syntax"),
        ("v=DKIM1; p=A; p=B", "duplicate"),
        ("", "no p="),
    ],
)
def test_unusable_records(text: str, reason: str) -> None:
    with pytest.raises(KeyRecordError, match=reason):
        parse_key_record(text.encode())


def test_ec_key_published_as_rsa_is_refused() -> None:
    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyRecordError, match="not RSA"):
        parse_key_record(b"k=rsa; p=" + base64.b64encode(der))


def _rsa_record_with_exponent(exponent: int, bits: int = 2048) -> bytes:
    modulus = RSA_KEY.public_key().public_numbers().n if bits == 2048 else _big_modulus()
    public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _big_modulus() -> int:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return key.public_key().public_numbers().n


@pytest.mark.parametrize("exponent", [3, 17, 65537, (1 << 32) - 1])
def test_rsa_exponents_signers_use_are_accepted(exponent: int) -> None:
    assert parse_key_record(_rsa_record_with_exponent(exponent)).bits == 2048


@pytest.mark.parametrize(
    ("exponent", "bits", "shown"),
    [
        ((1 << 32) + 1, 2048, "4294967297"),
        ((1 << 2000) + 1, 2048, "a 2001-bit number"),
        ((1 << 4000) + 1, 4096, "a 4001-bit number"),
    ],
)
def test_huge_rsa_exponent_is_an_unusable_key(exponent: int, bits: int, shown: str) -> None:
    # One verification with a 4000-bit exponent costs as much as a private-key operation:
    # decoy keys like these made one message hold the milter's event loop for seconds.
    with pytest.raises(KeyRecordError, match=f"RSA public exponent {shown} is not one"):
        parse_key_record(_rsa_record_with_exponent(exponent, bits))


def test_a_key_record_over_4_kib_is_refused_unparsed() -> None:
    # An 8192-bit RSA key (the largest accepted) fits in about 1.4 KB; a record padded with
    # 6,500 junk tags took about 10 ms to parse, per selector, 50 selectors per message.
    modulus = (1 << 8191) | 1
    big = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = big.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    largest = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    assert len(largest) < 1500
    assert parse_key_record(largest).bits == 8192
    at_the_limit = largest + b"; n=" + b"x" * (MAX_KEY_RECORD - len(largest) - 4)
    assert len(at_the_limit) == MAX_KEY_RECORD
    assert parse_key_record(at_the_limit).bits == 8192
    junk = b"; ".join(b"x%d=y" % i for i in range(6500))
    for text in (at_the_limit + b"x", b"v=DKIM1; " + junk + b"; p=" + RSA_P.encode()):
        with pytest.raises(
            KeyRecordError, match=r"^key record too large \(\d+ octets, over 4096\)"
        ):
            parse_key_record(text)


def test_private_key_forms() -> None:
    pkcs1 = RFC / "rfc8463" / "test.rsa.private.pem"
    seed = RFC / "rfc8463" / "brisbane.ed25519.seed.b64"
    assert isinstance(load_private_key(pkcs1.read_bytes()), rsa.RSAPrivateKey)
    assert isinstance(load_private_key(private_key_pem(RSA_KEY)), rsa.RSAPrivateKey)
    assert isinstance(load_private_key(private_key_pem(ED_KEY).decode()), ed25519.Ed25519PrivateKey)
    from_seed = load_private_key(seed.read_bytes())
    assert isinstance(from_seed, ed25519.Ed25519PrivateKey)
    assert public_key_record(from_seed).endswith("p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    raw = ED_KEY.private_bytes_raw()
    assert public_key_record(load_private_key(raw)) == public_key_record(ED_KEY)
    assert load_private_key(RSA_KEY) is RSA_KEY
    assert isinstance(load_private_key(str(pkcs1)), rsa.RSAPrivateKey)
    assert isinstance(load_private_key(seed), ed25519.Ed25519PrivateKey)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"garbage", "neither a PEM key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a usable"),
        ("/nonexistent/key.pem", "cannot read key file"),
    ],
)
def test_bad_private_keys(source: bytes | str, message: str) -> None:
    with pytest.raises(SigningError, match=message):
        load_private_key(source)


def test_encrypted_and_ec_private_keys_are_refused() -> None:
    encrypted = RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(SigningError, match="encrypted"):
        load_private_key(encrypted)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningError, match="only RSA and Ed25519"):
        load_private_key(ec_pem)


def test_key_file_readable_by_others_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(private_key_pem(ED_KEY))
    os.chmod(path, 0o600)
    assert key_file_warning(path) is None
    os.chmod(path, 0o640)
    assert "group or others" in (key_file_warning(path) or "")


def test_generated_keys() -> None:
    assert generate_private_key("ed25519") is not None
    with pytest.raises(SigningError, match="1024-4096"):
        generate_private_key("rsa", 512)
    with pytest.raises(SigningError, match="unknown key algorithm"):
        generate_private_key("dsa")


def test_zone_line_splits_into_255_octet_strings_that_load_back() -> None:
    big = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    record = public_key_record(big)
    line = zone_txt_line("s._domainkey.example.com", record)
    strings = [part.split('"')[0] for part in line.split('"')[1::2]]
    assert all(len(s) <= 255 for s in strings)
    assert len(strings) > 2
    lookup = ZoneResolver.from_text(line).lookup("s._domainkey.example.com", RRType.TXT)
    assert lookup.texts == (record.encode(),)
    assert parse_key_record(lookup.texts[0]).bits == 4096
