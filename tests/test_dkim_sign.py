"""DKIM signing, and interoperation with dkimpy in both directions (the independent oracle)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from mailauth.dkim import InsecureKeyFileWarning, Signer, public_key_record, sign_dkim
from mailauth.dkim.keys import private_key_pem
from mailauth.errors import SigningError
from mailauth.message import Message
from mailauth.results import DkimResult
from tests.dkim_helpers import (
    CANONICALIZATIONS,
    ED_KEY,
    KEYS,
    MESSAGE,
    NOW,
    RSA_KEY,
    SELECTORS,
    dkimpy_sign,
    dkimpy_verify,
    key_records,
    verify,
    zone,
)

ALGORITHMS = list(KEYS)
BODY_CHANGE = (b"Alice\r\n", b"Alicf\r\n")
HEADER_CHANGE = (b"Quarterly", b"Quarterlz")


def _sign(algorithm: str, canonicalization: str, message: bytes = MESSAGE) -> bytes:
    signer = Signer(
        "example.com", SELECTORS[algorithm], KEYS[algorithm], canonicalization=canonicalization
    )
    return signer.sign(message, now=NOW)


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mailauth_signs_dkimpy_verifies(algorithm: str, canonicalization: str) -> None:
    signed = _sign(algorithm, canonicalization)
    assert dkimpy_verify(signed)
    assert not dkimpy_verify(signed.replace(*BODY_CHANGE))
    assert not dkimpy_verify(signed.replace(*HEADER_CHANGE))


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_dkimpy_signs_mailauth_verifies(algorithm: str, canonicalization: str) -> None:
    signed = dkimpy_sign(MESSAGE, algorithm, canonicalization) + MESSAGE
    now = float(re.search(rb"t=(\d+)", signed).group(1))  # type: ignore[union-attr]
    ((outcome),) = verify(signed, now=now)
    assert outcome.result is DkimResult.PASS, outcome.reason
    (body,) = verify(signed.replace(*BODY_CHANGE), now=now)
    assert (body.result, body.reason) == (DkimResult.FAIL, "body hash did not verify")
    (header,) = verify(signed.replace(*HEADER_CHANGE), now=now)
    assert (header.result, header.reason) == (DkimResult.FAIL, "signature did not verify")


def test_output_is_the_field_then_the_original_bytes() -> None:
    signed = _sign("rsa-sha256", "relaxed/relaxed")
    field, _, rest = signed.partition(b"\r\nFrom:")
    assert b"From:" + rest == MESSAGE
    assert field.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert b"l=" not in field  # RFC 6376 8.2: no body length by default


def test_folded_lines_stay_under_78_columns() -> None:
    many = b"".join(b"To: r%d@example.org\r\n" % i for i in range(30)) + MESSAGE
    signed = Signer("example.com", "a-rather-long-selector-name", RSA_KEY).sign(many, now=NOW)
    field = Message.parse(signed).headers[0].raw.decode()
    lines = field.split("\r\n")[:-1]
    assert len(lines) > 5
    assert all(len(line) < 78 for line in lines), max(lines, key=len)
    record = {"a-rather-long-selector-name._domainkey.example.com": public_key_record(RSA_KEY)}
    assert verify(signed, zone(key_records(record)))[0].result is DkimResult.PASS


def test_default_header_list_oversigns() -> None:
    signed = _sign("ed25519-sha256", "relaxed/relaxed")
    sig = Message.parse(signed).headers[0].text()
    h = re.search(r"h=([^;]+);", sig).group(1)  # type: ignore[union-attr]
    names = [n.strip() for n in h.split(":")]
    # present once + one over-signed instance; absent ones listed once (cannot be added)
    assert names.count("from") == 2
    assert names.count("subject") == 2
    assert names.count("reply-to") == 1
    assert names.count("cc") == 1
    assert "references" not in names  # not present, not over-signed


def test_custom_header_list_and_expiry() -> None:
    signer = Signer("example.com", "ed1", ED_KEY, headers=["From", "Subject"], expire=3600)
    signed = signer.sign(MESSAGE, now=NOW)
    sig = Message.parse(signed).headers[0].text()
    assert "h=from:from:subject:subject;" in sig.replace(" ", "").replace("\t", "")
    assert f"x={int(NOW) + 3600}" in sig
    assert verify(signed)[0].result is DkimResult.PASS
    assert verify(signed, now=NOW + 7200)[0].result is DkimResult.PERMERROR


def test_dual_signing_in_one_pass() -> None:
    signers = [Signer("example.com", "rsa1", RSA_KEY), Signer("example.com", "ed1", ED_KEY)]
    signed = sign_dkim(MESSAGE, signers, now=NOW)
    outcomes = verify(signed)
    assert [(o.algorithm, o.result) for o in outcomes] == [
        ("rsa-sha256", DkimResult.PASS),
        ("ed25519-sha256", DkimResult.PASS),
    ]
    assert signed.endswith(MESSAGE)
    assert dkimpy_verify(signed)


def test_signing_is_deterministic() -> None:
    for algorithm in ALGORITHMS:
        assert _sign(algorithm, "relaxed/relaxed") == _sign(algorithm, "relaxed/relaxed")


def test_lf_messages_get_an_lf_field_and_mbox_lines_stay_first() -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    signed = Signer("example.com", "ed1", ED_KEY).sign(lf, now=NOW)
    assert b"\r" not in signed
    assert signed.endswith(lf)
    assert verify(signed)[0].result is DkimResult.PASS
    mbox = b"From alice@example.com Sun Nov 29 10:00:00 2026\n" + lf
    signed = Signer("example.com", "ed1", ED_KEY).sign(mbox, now=NOW)
    assert signed.startswith(b"From alice@example.com Sun")
    assert signed.split(b"\n")[1].startswith(b"DKIM-Signature:")


def test_key_file_path_with_loose_mode_warns(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(private_key_pem(ED_KEY))
    path.chmod(0o644)
    with pytest.warns(InsecureKeyFileWarning, match="chmod 600"):
        Signer("example.com", "ed1", str(path))
    path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Signer("example.com", "ed1", path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "ed25519-sha256"}, "does not match the key"),
        ({"canonicalization": "fancy/relaxed"}, "unknown canonicalization"),
        ({"headers": ["To", "Subject"]}, "must include From"),
        ({"headers": ["From", "X Y"]}, "header names"),
        ({"canonicalization": "relaxed/"}, "unknown canonicalization"),  # (relaxed: fine)
        ({"headers": ["From", "Tö"]}, "header names"),  # RFC 5322 ftext is ASCII
        ({"expire": 0}, "positive"),
        ({"expire": 10**12}, "12 digits"),
        ({"domain": "exa mple..com"}, "bad signing domain 'exa mple..com'"),
        ({"domain": "exa mple.com"}, "bad signing domain"),  # DNS allows it; d= does not
        ({"selector": "s s"}, "bad selector 's s'"),
        ({"selector": "../x"}, "bad selector"),
    ],
)
def test_signer_misuse(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"domain": "example.com", "selector": "s", "private_key": RSA_KEY}
    args.update(kwargs)
    with pytest.raises(SigningError, match=message):
        Signer(**args)  # type: ignore[arg-type]


def test_x_never_has_more_than_12_digits() -> None:
    # RFC 6376 3.5: x= is 1*12DIGIT. --now 999999999999 --expire 10 wrote x=1000000000009.
    signer = Signer("example.com", "ed1", ED_KEY, expire=10)
    assert b"x=999999999999;" in signer.sign(MESSAGE, now=999999999989)
    with pytest.raises(SigningError, match="x=1000000000009 would have more than 12 digits"):
        signer.sign(MESSAGE, now=999999999999)
    relaxed_alone = Signer("example.com", "ed1", ED_KEY, canonicalization="relaxed")
    assert relaxed_alone.canonicalization == "relaxed/simple"


def test_messages_without_from_cannot_be_signed() -> None:
    with pytest.raises(SigningError, match="no From"):
        Signer("example.com", "ed1", ED_KEY).sign(b"To: x@example.org\r\n\r\nbody\r\n")
    with pytest.raises(SigningError, match="no signer"):
        sign_dkim(MESSAGE, [])
