"""DKIM conformance: RFC 6376/8463 vectors, Stalwart's real-mail vectors, the Mail::DKIM corpus.

Data and provenance in fixtures/dkim-rfc, fixtures/dkim-stalwart, fixtures/dkim-mail-dkim
(each with its SOURCE.md and licence). The Mail::DKIM corpus predates RFC 6376 and RFC 8301;
it runs twice, strictly (the default policy) and with the legacy policy that accepts
rsa-sha1 and 512-bit keys, and every verdict that differs from Mail::DKIM's is explained
below by an RFC section.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailauth.dkim import DkimPolicy, Signer, verify_dkim
from mailauth.dkim.body import hash_body
from mailauth.dkim.canon import Canonicalization
from mailauth.dns import Record, RRType, ZoneResolver
from mailauth.message import Message
from mailauth.plan import run_plan
from mailauth.results import DkimOutcome, DkimResult
from tests.conftest import record_conformance

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RFC = FIXTURES / "dkim-rfc"
STALWART = FIXTURES / "dkim-stalwart" / "dkim"
CORPUS = FIXTURES / "dkim-mail-dkim"
NOW = 1_800_000_000.0


def _resolver(names: dict[str, bytes], faults: dict[str, str] | None = None) -> ZoneResolver:
    records: dict[tuple[str, RRType], tuple[int, list[Record]]] = {
        (name, RRType.TXT): (300, [value]) for name, value in names.items()
    }
    return ZoneResolver(
        {k: (ttl, tuple(v)) for k, (ttl, v) in records.items()}, faults=faults or {}
    )


def _verify(
    raw: bytes, resolver: ZoneResolver, now: float = NOW, policy: DkimPolicy | None = None
) -> tuple[DkimOutcome, ...]:
    return run_plan(verify_dkim(Message.parse(raw), now=now, policy=policy), resolver)


# --- RFC 6376 / RFC 8463 -------------------------------------------------------------------

MANIFEST = yaml.safe_load((RFC / "manifest.yaml").read_text())


@pytest.mark.parametrize("case", MANIFEST["verify"], ids=lambda c: c["id"])
def test_rfc_vectors(case: dict[str, Any]) -> None:
    raw = (RFC / case["file"]).read_bytes()
    if case.get("line_endings") == "LF":
        raw = raw.replace(b"\n", b"\r\n")
    dns = {name: "".join(v).encode() for name, v in MANIFEST["dns"][case["dns"]].items()}
    outcomes = _verify(raw, _resolver(dns), case.get("now", NOW))
    results = [str(o.result) for o in outcomes]
    for got, want in zip(results, case["expect"], strict=True):
        record_conformance("DKIM RFC 6376/8463 vectors (signatures)", got == want)
    assert results == case["expect"], [o.reason for o in outcomes]


def test_rfc6376_a2_fails_on_the_body_hash() -> None:
    # The RFC's own example carries the relaxed body hash under c=simple/simple (SOURCE.md).
    raw = (RFC / "rfc6376/A.2-signed.eml").read_bytes()
    dns = MANIFEST["dns"]["rfc6376-as-used-by-signature"]
    (outcome,) = _verify(raw, _resolver({n: "".join(v).encode() for n, v in dns.items()}))
    assert outcome.reason == "body hash did not verify"
    assert outcome.identity == "joe@football.example.com"


def test_rfc8463_body_hashes() -> None:
    body = Message.parse((RFC / "rfc8463/unsigned.eml").read_bytes()).body
    relaxed = base64.b64encode(hash_body(body, Canonicalization.RELAXED)).decode()
    simple = base64.b64encode(hash_body(body, Canonicalization.SIMPLE)).decode()
    assert relaxed == "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
    assert simple == "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ="


@pytest.mark.parametrize("case", MANIFEST["sign"], ids=lambda c: c["id"])
def test_rfc8463_keys_sign_verifiably(case: dict[str, Any]) -> None:
    """Our signer, with the RFC 8463 keys, makes signatures the RFC 8463 records verify."""
    key = MANIFEST["keys"][case["key"]]
    params = case["params"]
    signer = Signer(params["d"], params["s"], (RFC / key["file"]).read_bytes(), params["a"])
    signed = signer.sign((RFC / case["input"]).read_bytes(), now=params["t"])
    dns = {n: "".join(v).encode() for n, v in MANIFEST["dns"]["rfc8463"].items()}
    (outcome,) = _verify(signed, _resolver(dns), params["t"] + 1)
    assert outcome.result is DkimResult.PASS
    assert f"bh={params['bh']}".encode() in signed


# --- Stalwart mail-auth: real list and notification mail -----------------------------------


@pytest.mark.parametrize("path", sorted(STALWART.glob("*.txt")), ids=lambda p: p.name)
def test_stalwart_messages(path: Path) -> None:
    text = path.read_bytes()
    dns_block, _, message = text.partition(b"\n\n")
    names = {}
    for line in dns_block.decode().splitlines():
        name, _, value = line.partition(" ")
        names[name] = value.encode()
    raw = message.replace(b"\n", b"\r\n")
    # Judge each message just after it was signed (some carry a one-day x=).
    signed_at = max((int(t) for t in re.findall(rb"[;\s]t=(\d+)", raw)), default=1_700_000_000)
    outcomes = _verify(raw, _resolver(names), now=signed_at + 60)
    for outcome in outcomes:
        record_conformance(
            "Stalwart mail-auth DKIM messages (signatures)", outcome.result == "pass"
        )
    assert outcomes
    assert all(o.result is DkimResult.PASS for o in outcomes), [o.reason for o in outcomes]


# --- Mail::DKIM corpus ---------------------------------------------------------------------


def _corpus_resolver() -> ZoneResolver:
    names: dict[str, bytes] = {}
    faults: dict[str, str] = {}
    for line in (CORPUS / "FAKE_DNS.dat").read_text().splitlines():
        if not line.strip() or line[0] in "#;":
            continue
        name, _, value = line.partition(" ") if " " in line else line.partition("\t")
        value = value.strip()
        if value == "NXDOMAIN":
            continue
        if value == "~~Query timed out~~":
            faults[name] = "timeout"
        elif value == "~~SERVFAIL~~":
            faults[name] = "servfail"
        else:
            names[name] = b"" if value == '""' else value.encode()
    return _resolver(names, faults)


CORPUS_CASES = yaml.safe_load((CORPUS / "manifest.yaml").read_text())["cases"]
LEGACY = DkimPolicy(allow_rsa_sha1=True, min_rsa_bits=512)
_RANK = ["pass", "fail", "policy", "neutral", "permerror", "temperror", "none"]

# Where mailauth and Mail::DKIM differ, and why. Mail::DKIM implements RFC 4871 and the drafts
# before it; mailauth implements RFC 6376 and RFC 8301.
DIFFERENCES = {
    # RFC 6376 3.5 and 6.1.1: v= is a required tag; the pre-RFC drafts (ietf00, ietf01) had
    # no v=, so their signatures are "signature missing required tag" (RFC 8601: neutral).
    **dict.fromkeys(
        ["bad_1", "bad_ietf01_1", "bad_ietf01_2", "bad_ietf01_3", "multiple_1"]
        + [f"good_ietf00_{n}" for n in range(1, 6)]
        + ["good_ietf01_1", "good_ietf01_2"]
        + [f"mine_ietf01_{n}" for n in range(1, 5)],
        "neutral",
    ),
    # RFC 6376 6.1.1: v=0.5 (draft-ietf-dkim-base-05) is an "incompatible version".
    **dict.fromkeys(["mine_ietf05_1", "no_body_1", "no_body_2", "no_body_3"], "permerror"),
    # RFC 6376 3.6.1: the key record has no g= tag any more (RFC 4871 granularity) and
    # unrecognised tags MUST be ignored, so a g= that does not match i= restricts nothing.
    **dict.fromkeys(["badkey_8", "badkey_9", "badkey_12", "badkey_13"], "pass"),
}
# Strict policy only: RFC 8301 3.1 (rsa-sha1 MUST NOT be considered valid) and RFC 8301 3.2
# (RSA keys under 1024 bits MUST NOT be considered valid). The reason text cites them.


def _agrees(case: dict[str, Any], result: str) -> bool:
    expected = case["mail_dkim_expected"]
    name = case["file"]
    if "badkey_14" in name or "badkey_15" in name:  # DNS timeout, SERVFAIL
        return result == "temperror"
    if expected == "invalid":
        return result in ("permerror", "neutral")
    return bool(result == expected)


def _overall(outcomes: tuple[DkimOutcome, ...]) -> str:
    return min((str(o.result) for o in outcomes), key=_RANK.index) if outcomes else "none"


@pytest.fixture(scope="module")
def corpus_resolver() -> ZoneResolver:
    return _corpus_resolver()


@pytest.mark.parametrize("case", CORPUS_CASES, ids=lambda c: Path(c["file"]).stem)
@pytest.mark.parametrize("mode", ["strict", "legacy"])
def test_mail_dkim_corpus(case: dict[str, Any], mode: str, corpus_resolver: ZoneResolver) -> None:
    raw = (CORPUS / case["file"]).read_bytes()
    outcomes = _verify(raw, corpus_resolver, policy=LEGACY if mode == "legacy" else None)
    result = _overall(outcomes)
    name = Path(case["file"]).stem
    if case["kind"] == "domainkeys":  # RFC 4870 only: no DKIM-Signature, nothing to verify
        if mode == "strict":
            suite = "Mail::DKIM corpus: DomainKeys-only messages give dkim=none"
            record_conformance(suite, not outcomes)
        assert not outcomes
        return
    agrees = _agrees(case, result)
    record_conformance(
        f"Mail::DKIM corpus ({mode}): same verdict as Mail::DKIM",
        agrees,
        differences_explained_in="docs/dkim.md (Conformance) and tests/test_dkim_conformance.py",
    )
    if agrees:
        return
    if name in DIFFERENCES:
        assert result == DIFFERENCES[name], [o.reason for o in outcomes]
    else:
        assert mode == "strict", f"{name}: {result} unexplained: {[o.reason for o in outcomes]}"
        assert any("RFC 8301" in o.reason for o in outcomes), [o.reason for o in outcomes]
    # Never a pass where Mail::DKIM found the signature bad (g= aside, see DIFFERENCES).
    assert result != "pass" or name in DIFFERENCES


def test_mail_dkim_multiple_2_each_signature(corpus_resolver: ZoneResolver) -> None:
    # Mail::DKIM checks the first three: invalid, pass, fail (the 4th has a syntax error).
    raw = (CORPUS / "corpus/multiple_2.txt").read_bytes()
    outcomes = _verify(raw, corpus_resolver, policy=LEGACY)
    assert [str(o.result) for o in outcomes] == ["permerror", "pass", "fail", "neutral"]
