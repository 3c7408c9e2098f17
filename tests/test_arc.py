"""ARC (RFC 8617): the ValiMail validation and signing suites, Stalwart's real chains, dkimpy
in both directions, bad input, trusted sealers in DMARC."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mailauth.arc import verify_arc
from mailauth.arc.chain import aar_payload
from mailauth.arc.seal import Sealer, merge_authentication_results, results_payload
from mailauth.dkim import public_key_record
from mailauth.dkim.canon import Canonicalization, canonicalize_header_bytes
from mailauth.dkim.keys import PrivateKey, private_key_pem
from mailauth.dns import RRType, ZoneResolver
from mailauth.errors import MessageParseError, SigningError
from mailauth.message import HeaderField, Message
from mailauth.pipeline import Authenticator
from mailauth.plan import run_plan
from mailauth.results import ArcOutcome, ArcResult, DmarcResult, Policy
from tests.conftest import record_conformance
from tests.dkim_helpers import ED_KEY, MESSAGE, NOW, RSA_KEY, dkimpy_dns

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SUITE = FIXTURES / "arc-valimail"


class _KeepDuplicates(yaml.SafeLoader):  # type: ignore[misc]
    """The suite defines 4 test ids twice (SOURCE.md); keep both instead of the last one."""


def _mapping(loader: _KeepDuplicates, node: yaml.MappingNode) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        while key in result:
            key = f"{key}#2"
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_KeepDuplicates.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _load(name: str) -> list[dict[str, Any]]:
    with (SUITE / name).open(encoding="utf-8") as handle:
        return list(yaml.load_all(handle, Loader=_KeepDuplicates))


def _zone(records: dict[str, str]) -> ZoneResolver:
    return ZoneResolver({(n, RRType.TXT): (300, (v.encode(),)) for n, v in records.items()})


def _cases(name: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(k, t, doc) for doc in _load(name) for k, t in doc["tests"].items()]


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def _verify(raw: bytes, resolver: ZoneResolver) -> ArcOutcome:
    return run_plan(verify_arc(Message.parse(raw)), resolver)


VALIDATION = _cases("arc-draft-validation-tests.yml")


@pytest.mark.parametrize(("name", "case", "doc"), VALIDATION, ids=[c[0] for c in VALIDATION])
def test_valimail_validation(name: str, case: dict[str, Any], doc: dict[str, Any]) -> None:
    # An empty expected cv: the newest seal already says cv=fail, which RFC 8617 5.2 step 2
    # makes a fail (SOURCE.md).
    expected = (case["cv"] or "").strip().lower() or "fail"
    raw = _crlf(case["message"])
    try:
        got = str(_verify(raw, _zone(doc["txt-records"])).result)
    except MessageParseError:
        got = "none"  # cv_empty: not a message, so no ARC set either
    record_conformance(
        "ValiMail ARC validation suite (175 cases incl. 4 duplicate ids)", got == expected
    )
    assert got == expected


def test_valimail_cv_no_headers_through_mailauth_verify_and_a_dns_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message with an empty header section, as a user would check it: `mailauth verify`
    with DNS from a server on loopback. It was "not a message" (exit 2); it is evaluated:
    arc=none, the other methods none, exit 0."""
    import json

    from mailauth.cli import main
    from tests.dnsserver import LoopbackDnsServer, txt_zone

    (_, case, doc) = next(c for c in VALIDATION if c[0] == "cv_no_headers")
    path = tmp_path / "no-headers.eml"
    path.write_bytes(_crlf(case["message"]))
    with LoopbackDnsServer(txt_zone(doc["txt-records"])) as server:
        argv = ["verify", str(path), "--ip", "192.0.2.1", "--mail-from", "jqd@d1.example.org"]
        assert main([*argv, "--nameserver", server.address, "--dns-timeout", "2", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["arc"]["result"] == "none"
    assert verdict["dkim"] == [] and verdict["dmarc"]["result"] == "none"
    assert "arc=none" in verdict["authentication_results"]
    assert verdict["spf"]["result"] in ("none", "permerror", "neutral")


def test_sealing_a_message_with_no_header_fields_keeps_its_body() -> None:
    """The new ARC set goes on top with the empty line the message lacked: its first line
    (not a field) must stay the body's, not become a continuation of the AAR."""
    key = ED_KEY
    zone = _zone({"s._domainkey.example.org": public_key_record(key)})
    for raw in (b" i=continued?\r\nbody\r\n", b"\r\nbody\r\n", b"no colon\nbody\n"):
        sealed = Sealer("example.org", "s", key).seal(
            raw, authentication_results="mx.example.org; none", chain=ArcOutcome(ArcResult.NONE)
        )
        assert bytes(Message.parse(sealed).body) == bytes(Message.parse(raw).body)
        assert _verify(sealed, zone).result is ArcResult.PASS


SIGNING = _cases("arc-draft-sign-tests.yml")


def _tag_set(value: str) -> set[str]:
    return {t for t in re.sub(r"\s+", "", value or "").split(";") if t}


@pytest.mark.parametrize(("name", "case", "doc"), SIGNING, ids=[c[0] for c in SIGNING])
def test_valimail_signing(name: str, case: dict[str, Any], doc: dict[str, Any]) -> None:
    """The sealed fields equal the expected ones tag for tag, b= included (byte-exact
    signatures: our layout is the suite's "standardized" one); the result validates."""
    raw = _crlf(case["message"])
    resolver = _zone(doc["txt-records"])
    message = Message.parse(raw)
    chain = run_plan(verify_arc(message), resolver)
    sealer = Sealer(
        doc["domain"],
        doc["sel"],
        doc["privatekey"].encode(),
        headers=case["sig-headers"].split(":"),
    )
    payload = merge_authentication_results(message, case["srv-id"])
    sealed = sealer.seal(raw, authentication_results=payload, chain=chain, now=case["t"])
    added = Message.parse(sealed).headers[:3] if sealed != raw else ()
    got = {f.name: f.value.decode() for f in added}
    same = all(
        _tag_set(got.get(field, "")) == _tag_set(case[key])
        for field, key in (
            ("ARC-Seal", "AS"),
            ("ARC-Message-Signature", "AMS"),
            ("ARC-Authentication-Results", "AAR"),
        )
    )
    record_conformance("ValiMail ARC signing suite (AS, AMS, AAR byte-exact)", same)
    assert same, got
    expected_chain = "fail" if chain.result is ArcResult.FAIL else "pass"
    assert str(_verify(sealed, resolver).result) == expected_chain


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "arc-stalwart" / "arc").glob("*.txt")), ids=lambda p: p.name
)
def test_stalwart_chains(path: Path) -> None:
    dns_block, _, message = path.read_bytes().partition(b"\n\n")
    records = dict(line.split(" ", 1) for line in dns_block.decode().splitlines())
    outcome = _verify(message.replace(b"\n", b"\r\n"), _zone(records))
    record_conformance("Stalwart mail-auth ARC chains", outcome.result is ArcResult.PASS)
    assert outcome.result is ArcResult.PASS, outcome.reason


# --- our seals and dkimpy's ------------------------------------------------------------------

KEYS: dict[str, PrivateKey] = {"arc1": RSA_KEY, "arc2": ED_KEY}
ARC_ZONE = {f"{s}._domainkey.example.org": public_key_record(k) for s, k in KEYS.items()}


def _seal(raw: bytes, selector: str, authserv_id: str, resolver: ZoneResolver) -> bytes:
    chain = run_plan(verify_arc(Message.parse(raw)), resolver)
    sealer = Sealer("example.org", selector, KEYS[selector])
    return sealer.seal(
        raw, authentication_results=f"{authserv_id}; arc={chain.result}", chain=chain, now=NOW
    )


def test_two_hops_sealed_by_mailauth_pass_with_mailauth_and_dkimpy() -> None:
    resolver = _zone(ARC_ZONE)
    other_rsa = _other_rsa_key()
    zone = {**ARC_ZONE, "arc3._domainkey.example.org": public_key_record(other_rsa)}
    KEYS["arc3"] = other_rsa
    hop1 = _seal(MESSAGE, "arc1", "lists.example.org", _zone(zone))
    hop2 = _seal(hop1, "arc3", "fwd.example.org", _zone(zone))
    assert _verify(hop2, _zone(zone)).result is ArcResult.PASS
    # dkimpy's ARC verifier knows rsa-sha256 only: both hops are RSA here.
    assert dkimpy.arc_verify(hop2, dnsfunc=dkimpy_dns(zone))[0] == b"pass"
    changed = hop2.replace(b"Alice\r\n", b"Alicia\r\n")
    assert _verify(changed, _zone(zone)).result is ArcResult.FAIL
    assert dkimpy.arc_verify(changed, dnsfunc=dkimpy_dns(zone))[0] == b"fail"
    # An Ed25519 seal on top still passes with mailauth (dkimpy cannot check it).
    hop3 = _seal(hop2, "arc2", "mx.example.org", _zone(zone))
    outcome = _verify(hop3, _zone(zone))
    assert (outcome.result, outcome.oldest_pass) == (ArcResult.PASS, 0)
    assert [s.instance for s in outcome.sets] == [1, 2, 3]
    assert resolver is not None


def _other_rsa_key() -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_chains_sealed_by_dkimpy_pass_with_mailauth() -> None:
    pem = private_key_pem(RSA_KEY)
    raw = MESSAGE
    hops = ((b"lists.example.org", b"none"), (b"fwd.example.org", b"pass"))
    for hop, (srv, status) in enumerate(hops):
        raw = b"Authentication-Results: " + srv + b"; arc=" + status + b"\r\n" + raw
        fields = dkimpy.arc_sign(raw, b"arc1", b"example.org", pem, srv, timestamp=int(NOW) + hop)
        assert len(fields) == 3
        raw = b"".join(fields) + raw
    outcome = _verify(raw, _zone(ARC_ZONE))
    assert outcome.result is ArcResult.PASS, outcome.reason
    assert outcome.domains == ("example.org", "example.org")
    assert (
        _verify(raw.replace(b"Alice\r\n", b"Alicia\r\n"), _zone(ARC_ZONE)).result is ArcResult.FAIL
    )


# --- bad input ---------------------------------------------------------------------------------


def _one_set(seal_value: str) -> bytes:
    return (
        f"ARC-Seal: {seal_value}\r\n"
        "ARC-Message-Signature: i=1; a=rsa-sha256; d=example.org; s=arc1; h=from;"
        " bh=AAAA; b=AAAA\r\n"
        "ARC-Authentication-Results: i=1; mx.example.org; spf=pass\r\n"
    ).encode() + MESSAGE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_one_set("i=0; a=rsa-sha256; cv=none; d=example.org; s=arc1; b=AAAA"), "invalid instance"),
        (
            _one_set("i=51; a=rsa-sha256; cv=none; d=example.org; s=arc1; b=AAAA"),
            "invalid instance",
        ),
        (
            _one_set("i=1; a=rsa-sha256; cv=maybe; d=example.org; s=arc1; b=AAAA"),
            "invalid cv=maybe",
        ),
        (
            _one_set("i=1; a=rsa-sha256; cv=pass; d=example.org; s=arc1; b=AAAA"),
            "cv=pass, not none",
        ),
        (
            _one_set("i=1; a=rsa-sha256; cv=none; d=example.org; s=arc1; b=AAAA").replace(
                b"ARC-Authentication-Results", b"X-Old", 1
            ),
            "has 0 arc-authentication-results",
        ),
        (_one_set("i=1; a=rsa-sha256; cv=none; d=example.org; s=arc1; b=AAAA"), "body hash"),
        (  # found by fuzzing: the seal's selector names the key record, as the AMS's does
            _one_set("i=1; a=rsa-sha256; cv=none; d=example.org; s=\\; b=AAAA"),
            "ARC-Seal s= is not a domain name",
        ),
        (
            _one_set("i=1; a=rsa-sha256; cv=none; d=example.org; s=a..b; b=AAAA"),
            "ARC-Seal s= is not a domain name",
        ),
        (
            b"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=example.org; s=arc1; b=AAAA\r\n"
            + _one_set("i=1; a=rsa-sha256; cv=none; d=example.org; s=arc1; b=AAAA"),
            "has 0",
        ),
        (
            b"ARC-Seal: i=3; a=rsa-sha256; cv=pass; d=e.org; s=a; b=AAAA\r\n"
            + _one_set("i=1; a=rsa-sha256; cv=none; d=example.org; s=arc1; b=AAAA"),
            "not 1..3",
        ),
    ],
)
def test_bad_chains_fail_with_a_reason(raw: bytes, reason: str) -> None:
    outcome = _verify(raw, _zone({}))
    assert outcome.result is ArcResult.FAIL
    assert reason in outcome.reason, outcome.reason


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        ("relaxed/relaxed", ("relaxed", "relaxed")),
        ("Relaxed/Simple", None),  # ARC values are lower case (docs/arc.md)
        ("relaxed", ("relaxed", "simple")),
        ("relaxed/", None),  # no algorithm after "/": DKIM's reading of c= (RFC 6376 3.5)
        ("fancy/relaxed", None),
    ],
)
def test_ams_c_is_read_as_dkim_reads_it_in_lower_case(
    c: str, expected: tuple[str, str] | None
) -> None:
    from mailauth.arc.chain import ArcError, parse_message_signature

    raw = f"ARC-Message-Signature: i=1; a=rsa-sha256; c={c}; d=example.org; s=s; h=from; "
    raw += "bh=AA==; b=AA=="
    field = HeaderField("ARC-Message-Signature", raw.encode())
    if expected is None:
        with pytest.raises(ArcError, match="invalid c="):
            parse_message_signature(field)
    else:
        sig = parse_message_signature(field)
        assert (sig.header_canon, sig.body_canon) == expected


def test_a_flood_of_arc_fields_is_refused_without_work() -> None:
    flood = b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=e%d.example; s=s; b=AAAA\r\n" % (i % 50 + 1, i)
        for i in range(10_000)
    )
    resolver = _zone({})
    outcome = _verify(flood + MESSAGE, resolver)
    assert outcome.result is ArcResult.FAIL
    assert "more than 50 sets" in outcome.reason
    assert resolver.queries == []


def test_a_dns_failure_is_temperror_and_is_not_sealed() -> None:
    hop1 = _seal(MESSAGE, "arc1", "lists.example.org", _zone(ARC_ZONE))
    failing = ZoneResolver({}, faults={"arc1._domainkey.example.org": "timeout"})
    outcome = _verify(hop1, failing)
    # Not RFC 8617 5.2.1's permanent fail: the chain was not found broken (docs/arc.md).
    assert outcome.result is ArcResult.TEMPERROR
    assert outcome.reason == (
        "ARC-Message-Signature i=1: key lookup failed: DNS timeout; "
        "ARC-Seal i=1: key lookup failed: DNS timeout"
    )
    sealer = Sealer("example.org", "arc2", KEYS["arc2"])
    with pytest.raises(SigningError, match="temporary failure"):
        sealer.seal(hop1, authentication_results="mx.example.org; arc=temperror", chain=outcome)


def test_a_dns_failure_beside_a_broken_chain_is_a_fail() -> None:
    hop1 = _seal(MESSAGE, "arc1", "lists.example.org", _zone(ARC_ZONE))
    broken = hop1.replace(b"Alice\r\n", b"Alicia\r\n")  # the body hash no longer verifies
    failing = ZoneResolver({}, faults={"arc1._domainkey.example.org": "timeout"})
    outcome = _verify(broken, failing)
    assert (outcome.result, outcome.reason) == (
        ArcResult.FAIL,
        "ARC-Message-Signature i=1: body hash did not verify",
    )
    zone = {**ARC_ZONE}
    del zone["arc2._domainkey.example.org"]
    hop2 = _seal(hop1, "arc2", "fwd.example.org", _zone(ARC_ZONE))
    newest_key_missing = _verify(hop2, _zone(zone))
    assert newest_key_missing.result is ArcResult.FAIL


def test_a_timeout_at_an_older_seal_only_is_temperror() -> None:
    hop1 = _seal(MESSAGE, "arc1", "lists.example.org", _zone(ARC_ZONE))
    hop2 = _seal(hop1, "arc2", "fwd.example.org", _zone(ARC_ZONE))
    records = {(n, RRType.TXT): (300, (v.encode(),)) for n, v in ARC_ZONE.items()}
    del records[("arc1._domainkey.example.org", RRType.TXT)]
    resolver = ZoneResolver(records, faults={"arc1._domainkey.example.org": "servfail"})
    outcome = _verify(hop2, resolver)
    assert outcome.result is ArcResult.TEMPERROR
    assert outcome.reason.startswith("ARC-Seal i=1: key lookup failed")


def test_sealing_a_failed_chain_adds_cv_fail_then_nothing() -> None:
    hop1 = _seal(MESSAGE, "arc1", "lists.example.org", _zone(ARC_ZONE))
    broken = hop1.replace(b"Alice\r\n", b"Alicia\r\n")
    hop2 = _seal(broken, "arc2", "fwd.example.org", _zone(ARC_ZONE))
    assert b"cv=fail" in Message.parse(hop2).headers[0].raw
    assert _seal(hop2, "arc1", "mx.example.org", _zone(ARC_ZONE)) == hop2  # RFC 8617 5.1 step 2


def test_results_payload_unfolds_the_verdict_field() -> None:
    field = "Authentication-Results: mx.example.org; spf=pass\r\n smtp.mailfrom=a@example.com"
    assert results_payload(field) == "mx.example.org; spf=pass smtp.mailfrom=a@example.com"


def _reference_payload(value: bytes) -> str:
    """aar_payload as it was: one regular expression over the decoded value."""
    match = re.match(rb"[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]+)[ \t\r\n]*;", value)
    rest = value[match.end() :] if match else value
    return re.sub(r"[ \t\r\n]+", " ", rest.decode("utf-8", "replace")).strip()


@given(
    st.lists(
        st.sampled_from(
            [b" ", b"\t", b"\r\n ", b"\n\t", b"\x0b", b"\x0c", b"\xc3", b"\xa9", b"\xa0",
             b"\xc2\x85", b"a", b"=", b";", b"i=1;", b"mx.example"]
        ),
        max_size=40,
    )
)  # fmt: skip
def test_results_payload_is_the_regular_expressions(parts: list[bytes]) -> None:
    value = b"".join(parts)
    field = HeaderField("ARC-Authentication-Results", b"ARC-Authentication-Results:" + value)
    assert aar_payload(field) == _reference_payload(value)


def test_a_folded_results_payload_is_unfolded_without_a_match_per_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aar_payload runs for every set before any check: ten 98 KB payloads folded every
    few octets cost 180 ms in one step with a regex substitution per run of white space."""
    import mailauth.arc.chain as arc_chain

    class _NoRegex:
        def sub(self, *args: Any) -> str:
            raise AssertionError("the regular expression was used")

    monkeypatch.setattr(arc_chain, "_FWS", _NoRegex())
    raw = b"ARC-Authentication-Results: i=1; mx.example;" + b"\r\n a" * 24_000 + b"\r\n"
    field = HeaderField("ARC-Authentication-Results", raw)
    assert aar_payload(field) == "mx.example;" + " a" * 24_000


# --- the pipeline and trusted sealers --------------------------------------------------------


def _list_message() -> tuple[bytes, dict[str, str]]:
    """A message from example.com that a list (example.org) sealed after recording a DMARC
    pass, then broke the DKIM signature of (footer) -- the case ARC exists for."""
    zone = {**ARC_ZONE, "_dmarc.example.com": "v=DMARC1; p=reject"}
    payload = (
        "lists.example.org; spf=pass smtp.mailfrom=a@example.com;"
        " dmarc=pass header.from=example.com"
    )
    chain = run_plan(verify_arc(Message.parse(MESSAGE)), _zone(zone))
    modified = MESSAGE + b"-- \r\nlist footer\r\n"
    sealed = Sealer("example.org", "arc1", RSA_KEY).seal(
        modified, authentication_results=payload, chain=chain, now=NOW
    )
    return sealed, zone


def test_pipeline_reports_arc_and_trusted_sealers_override_dmarc() -> None:
    sealed, zone = _list_message()
    plain = Authenticator("mx.example.net", _zone(zone)).verify(
        sealed, ip="198.51.100.9", mail_from="l@example.org", now=NOW
    )
    assert plain.arc is not None and plain.arc.result is ArcResult.PASS
    assert plain.dmarc is not None
    assert (plain.dmarc.result, plain.dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)
    header = plain.authentication_results.replace("\r\n ", " ")
    assert (
        "arc=pass (as[1].d=example.org) smtp.remote-ip=198.51.100.9 header.oldest-pass=0" in header
    )
    trusting = Authenticator("mx.example.net", _zone(zone), trusted_arc_sealers=["example.org"])
    verdict = trusting.verify(sealed, ip="198.51.100.9", mail_from="l@example.org", now=NOW)
    assert verdict.dmarc is not None
    assert (verdict.dmarc.result, verdict.dmarc.disposition) == (DmarcResult.FAIL, Policy.NONE)
    assert verdict.dmarc.override == "local_policy"
    assert verdict.dmarc.override_comment == "arc=pass as[1].d=example.org as[1].s=arc1"
    other = Authenticator("mx.example.net", _zone(zone), trusted_arc_sealers=["example.net"])
    untrusted = other.verify(sealed, ip="198.51.100.9", mail_from="l@example.org", now=NOW)
    assert untrusted.dmarc is not None and untrusted.dmarc.disposition is Policy.REJECT


def test_trusted_sealer_chain_unvalidated_for_dns_makes_dmarc_temperror_not_reject() -> None:
    # The chain's key lookup timed out: the trusted list's DMARC pass cannot be relied on,
    # nor ruled out. A reject here would refuse mail that the override lets through.
    sealed, zone = _list_message()
    records = {(n, RRType.TXT): (300, (v.encode(),)) for n, v in zone.items()}
    del records[("arc1._domainkey.example.org", RRType.TXT)]
    resolver = ZoneResolver(records, faults={"arc1._domainkey.example.org": "timeout"})
    trusting = Authenticator("mx.example.net", resolver, trusted_arc_sealers=["example.org"])
    verdict = trusting.verify(sealed, ip="198.51.100.9", mail_from="l@example.org", now=NOW)
    assert verdict.arc is not None and verdict.arc.result is ArcResult.TEMPERROR
    assert verdict.dmarc is not None
    assert (verdict.dmarc.result, verdict.dmarc.disposition) == (
        DmarcResult.TEMPERROR,
        Policy.NONE,
    )
    assert verdict.dmarc.reason.startswith(
        "ARC chain sealed by trusted example.org not validated: ARC-Message-Signature i=1"
    )
    header = verdict.authentication_results.replace("\r\n ", " ")
    assert "arc=temperror" in header and "dmarc=temperror" in header
    # Without a trusted sealer, the temporary failure cannot change the outcome.
    plain = Authenticator("mx.example.net", resolver)
    verdict = plain.verify(sealed, ip="198.51.100.9", mail_from="l@example.org", now=NOW)
    assert verdict.dmarc is not None
    assert (verdict.dmarc.result, verdict.dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)


def test_seal_validation_canonicalizes_each_field_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seal i signs sets 1..i: hashed afresh for every seal, 50 sets with 64 KB
    ARC-Authentication-Results cost 0.74 s (quadratic); one running hash makes it linear."""
    import mailauth.arc.verify as arc_verify

    zone = _zone({**ARC_ZONE, "ed1._domainkey.example.org": public_key_record(ED_KEY)})
    sealer = Sealer("example.org", "ed1", ED_KEY)
    raw = MESSAGE
    for hop in range(20):
        chain = _verify(raw, zone)
        assert chain.result in (ArcResult.NONE, ArcResult.PASS), chain.reason
        results = f"mx{hop}.example.org; spf=pass (padding {'x' * 3000})"
        raw = sealer.seal(raw, authentication_results=results, chain=chain, now=NOW)
    canonicalized: list[int] = []
    original = canonicalize_header_bytes

    def counting(data: bytes, method: Canonicalization) -> bytes:
        canonicalized.append(len(data))
        return original(data, method)

    monkeypatch.setattr(arc_verify, "canonicalize_header_bytes", counting)
    outcome = _verify(raw, zone)
    assert (outcome.result, len(outcome.sets)) == (ArcResult.PASS, 20)
    arc_octets = sum(len(f.raw) for f in Message.parse(raw).headers if f.lname.startswith("arc-"))
    assert arc_octets < sum(canonicalized) < 1.2 * arc_octets  # each field once, seals twice


class _AmsSelector(Sealer):
    """Signs its ARC-Message-Signature with selector ams1 (the seal keeps its own): so that
    an older AMS's key can fail while every seal's key answers."""

    def _message_signature(self, *args: Any) -> HeaderField:
        seal_selector, self.selector = self.selector, "ams1"
        try:
            return super()._message_signature(*args)
        finally:
            self.selector = seal_selector


def _two_hops_with_ams1() -> tuple[bytes, dict[str, str]]:
    zone = {**ARC_ZONE, "ams1._domainkey.example.org": ARC_ZONE["arc1._domainkey.example.org"]}
    chain = run_plan(verify_arc(Message.parse(MESSAGE)), _zone(zone))
    hop1 = _AmsSelector("example.org", "arc1", KEYS["arc1"]).seal(
        MESSAGE, authentication_results="lists.example.org; arc=none", chain=chain, now=NOW
    )
    return _seal(hop1, "arc2", "fwd.example.org", _zone(zone)), zone


def test_rfc8617_5_2_step_5_oldest_pass_unknown_after_a_dns_failure() -> None:
    """An older AMS whose key lookup failed temporarily is not known not to validate:
    oldest_pass is left unset (no header.oldest-pass), rather than claim set 2."""
    hop2, zone = _two_hops_with_ams1()
    assert (_verify(hop2, _zone(zone)).result, _verify(hop2, _zone(zone)).oldest_pass) == (
        ArcResult.PASS,
        0,
    )
    del zone["ams1._domainkey.example.org"]
    assert _verify(hop2, _zone(zone)).oldest_pass == 2  # no key: that AMS does not validate
    failing = ZoneResolver(
        {(n, RRType.TXT): (300, (v.encode(),)) for n, v in zone.items()},
        faults={"ams1._domainkey.example.org": "timeout"},
    )
    outcome = _verify(hop2, failing)
    assert (outcome.result, outcome.oldest_pass) == (ArcResult.PASS, None)


@pytest.mark.parametrize("fault", ["silent", "servfail", "truncate_tcp_refused"])
def test_arc_key_failures_on_the_wire(fault: str) -> None:
    """Through dnspython and a server: a seal's key that times out, SERVFAILs, or comes
    truncated with TCP refused is arc=temperror (not fail); an older AMS's, an unknown
    oldest-pass."""
    from tests.dnsserver import LoopbackDnsServer, txt_zone

    hop2, zone = _two_hops_with_ams1()
    for name, result, oldest in (
        ("arc1._domainkey.example.org", ArcResult.TEMPERROR, None),
        ("ams1._domainkey.example.org", ArcResult.PASS, None),
    ):
        with LoopbackDnsServer(txt_zone(zone), faults={name: fault}) as server:
            outcome = run_plan(verify_arc(Message.parse(hop2)), server.resolver())
        assert (outcome.result, outcome.oldest_pass) == (result, oldest), outcome.reason


# --- a trusted set replayed onto another message ---------------------------------------------

EVIL_ZONE = {"s._domainkey.evil.example": public_key_record(ED_KEY)}
SPOOF = (
    b"From: CEO <ceo@example.com>\r\nTo: victim@example.net\r\nSubject: wire now\r\n\r\nPay.\r\n"
)


def _replayed(selector: str = "s") -> tuple[bytes, dict[str, str]]:
    """The trusted list's genuine set i=1 (its AAR: dmarc=pass for example.com) lifted from
    _list_message onto a spoof from example.com, which the attacker seals as i=2 with its
    own key (the chain passes: seal 1 covers set 1 only, and AMS 2 signs the spoof)."""
    sealed, zone = _list_message()
    arc_set = b"".join(f.raw for f in Message.parse(sealed).headers if f.lname.startswith("arc-"))
    spoof = Sealer("evil.example", selector, ED_KEY).seal(
        arc_set + SPOOF,
        authentication_results="mx.evil.example; none",
        chain=ArcOutcome(ArcResult.PASS),
        now=NOW,
    )
    return spoof, {**zone, **EVIL_ZONE}


def _trusting(resolver: ZoneResolver, raw: bytes) -> tuple[ArcOutcome, Any]:
    auth = Authenticator("mx.example.net", resolver, trusted_arc_sealers=["example.org"])
    verdict = auth.verify(raw, ip="203.0.113.66", mail_from="a@evil.example", now=NOW)
    assert verdict.arc is not None and verdict.dmarc is not None
    return verdict.arc, verdict.dmarc


def test_a_trusted_set_replayed_under_a_newer_set_does_not_override() -> None:
    """RFC 8617 5.2 step 5: a trusted set k vouches for the message only while the AMSs from
    k on validate (oldest_pass <= k) or when it is the newest; here AMS 1 does not (the
    spoof is not what example.org sealed), so the override does not apply."""
    spoof, zone = _replayed()
    arc, dmarc = _trusting(_zone(zone), spoof)
    assert (arc.result, arc.oldest_pass) == (ArcResult.PASS, 2)
    assert (dmarc.result, dmarc.disposition, dmarc.override) == (
        DmarcResult.FAIL,
        Policy.REJECT,
        "",
    )


def test_a_trusted_set_replayed_under_a_set_whose_key_times_out_is_not_undecided() -> None:
    """The attacker's own key lookup failing must not make the trusted set's testimony
    undecided (DMARC temperror, which the milter's on_error may accept): the temporary
    failure is not at the trusted set's keys, and that set is not the newest."""
    spoof, zone = _replayed("t")
    resolver = ZoneResolver(
        {(n, RRType.TXT): (300, (v.encode(),)) for n, v in zone.items()},
        faults={"t._domainkey.evil.example": "timeout"},
    )
    arc, dmarc = _trusting(resolver, spoof)
    assert (arc.result, arc.temporary) == (ArcResult.TEMPERROR, (2,))
    assert (dmarc.result, dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)


def test_a_trusted_set_under_an_honest_forwarder_still_overrides() -> None:
    """The list's set i=1, then a forwarder that changed nothing seals i=2: every AMS
    validates (oldest_pass 0), so the list saw this very message."""
    sealed, zone = _list_message()
    zone = {**zone, **EVIL_ZONE}
    chain = run_plan(verify_arc(Message.parse(sealed)), _zone(zone))
    forwarded = Sealer("evil.example", "s", ED_KEY).seal(
        sealed, authentication_results="fwd.example.net; arc=pass", chain=chain, now=NOW
    )
    arc, dmarc = _trusting(_zone(zone), forwarded)
    assert (arc.result, arc.oldest_pass) == (ArcResult.PASS, 0)
    assert (dmarc.result, dmarc.disposition, dmarc.override) == (
        DmarcResult.FAIL,
        Policy.NONE,
        "local_policy",
    )
    # The forwarder's key times out: it is not the trusted set's, which is not the newest.
    records = {(n, RRType.TXT): (300, (v.encode(),)) for n, v in zone.items()}
    evil = records.pop(("s._domainkey.evil.example", RRType.TXT))
    resolver = ZoneResolver(records, faults={"s._domainkey.evil.example": "timeout"})
    arc, dmarc = _trusting(resolver, forwarded)
    assert (arc.result, arc.temporary) == (ArcResult.TEMPERROR, (2,))
    assert (dmarc.result, dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)
    # The list's own key times out: not the newest set, so no override either.
    records[("s._domainkey.evil.example", RRType.TXT)] = evil
    del records[("arc1._domainkey.example.org", RRType.TXT)]
    resolver = ZoneResolver(records, faults={"arc1._domainkey.example.org": "timeout"})
    arc, dmarc = _trusting(resolver, forwarded)
    assert (arc.result, arc.temporary) == (ArcResult.TEMPERROR, (1,))
    assert (dmarc.result, dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)


def test_a_newest_trusted_set_is_undecided_only_for_its_own_keys() -> None:
    """A trusted newest set whose own key lookup fails is undecided (test above); when only an
    older set's key fails, the override is not applied (the DMARC fail stands)."""
    zone = {**ARC_ZONE, **EVIL_ZONE, "_dmarc.example.com": "v=DMARC1; p=reject"}
    first = Sealer("evil.example", "s", ED_KEY).seal(
        MESSAGE,
        authentication_results="mx.evil.example; none",
        chain=ArcOutcome(ArcResult.NONE),
        now=NOW,
    )
    chain = run_plan(verify_arc(Message.parse(first)), _zone(zone))
    payload = "lists.example.org; dmarc=pass header.from=example.com"
    sealed = Sealer("example.org", "arc1", RSA_KEY).seal(
        first + b"-- \r\nfooter\r\n", authentication_results=payload, chain=chain, now=NOW
    )
    assert _trusting(_zone(zone), sealed)[1].override == "local_policy"
    records = {(n, RRType.TXT): (300, (v.encode(),)) for n, v in zone.items()}
    evil = records.pop(("s._domainkey.evil.example", RRType.TXT))
    resolver = ZoneResolver(records, faults={"s._domainkey.evil.example": "timeout"})
    arc, dmarc = _trusting(resolver, sealed)
    assert (arc.result, arc.temporary) == (ArcResult.TEMPERROR, (1,))
    assert (dmarc.result, dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)
    records[("s._domainkey.evil.example", RRType.TXT)] = evil
    del records[("arc1._domainkey.example.org", RRType.TXT)]
    resolver = ZoneResolver(records, faults={"arc1._domainkey.example.org": "timeout"})
    arc, dmarc = _trusting(resolver, sealed)
    assert (arc.result, arc.temporary) == (ArcResult.TEMPERROR, (2,))
    assert (dmarc.result, dmarc.disposition) == (DmarcResult.TEMPERROR, Policy.NONE)


def test_a_trusted_sets_results_over_4_kib_are_not_read() -> None:
    """The hook parses the trusted set's ARC-Authentication-Results (authres: about 20 ms
    per KB, 1.8 s for 99 KB); real ones are under 2 KB. A larger one counts as no pass."""
    zone = {**ARC_ZONE, "_dmarc.example.com": "v=DMARC1; p=reject"}
    chain = run_plan(verify_arc(Message.parse(MESSAGE)), _zone(zone))
    padding = " ".join(f"x{i}=pass header.d=example.com" for i in range(150))
    payload = f"lists.example.org; dmarc=pass header.from=example.com; {padding}"
    assert len(payload) > 4096
    sealed = Sealer("example.org", "arc1", RSA_KEY).seal(
        MESSAGE + b"-- \r\nfooter\r\n", authentication_results=payload, chain=chain, now=NOW
    )
    arc, dmarc = _trusting(_zone(zone), sealed)
    assert arc.result is ArcResult.PASS
    assert (dmarc.result, dmarc.disposition, dmarc.override) == (
        DmarcResult.FAIL,
        Policy.REJECT,
        "",
    )
