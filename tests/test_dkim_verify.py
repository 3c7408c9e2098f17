"""DKIM verification (RFC 6376 6): tag checks, key records, results and reasons, limits."""

from __future__ import annotations

import asyncio

import authres
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import mailauth.dkim.signature
import mailauth.dkim.verify
from mailauth.authresults import render_authentication_results
from mailauth.dkim import DkimPolicy, DkimVerification, Signer, public_key_record, sign_dkim
from mailauth.dkim.signature import Signature
from mailauth.dns import DnsResolver, Record, RRType, ZoneResolver
from mailauth.message import HeaderField, Message
from mailauth.pipeline import Authenticator
from mailauth.plan import run_plan
from mailauth.results import DkimOutcome, DkimResult
from tests.dkim_helpers import (
    ED_KEY,
    MESSAGE,
    NOW,
    RSA_KEY,
    dkimpy_sign,
    key_records,
    verify,
    zone,
)

RSA_RECORD = public_key_record(RSA_KEY)
RSA_P = RSA_RECORD.split("p=")[1]
ED_P = public_key_record(ED_KEY).split("p=")[1]
TS = int(NOW)
KEY_512 = (
    "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBALgSoqXVSEmfcIsOzw7oRuCCOwsmtX/SJnTWxYyj2leFxfS/AVJ+dYfY"
    "+hXqMsT7l+MZvvh/R1WzN4MO/kI/7XsCAwEAAQ=="
)
PASS, FAIL, NEUTRAL = DkimResult.PASS, DkimResult.FAIL, DkimResult.NEUTRAL
PERMERROR, TEMPERROR, POLICY = DkimResult.PERMERROR, DkimResult.TEMPERROR, DkimResult.POLICY


def _signed(identity: str | None = None, message: bytes = MESSAGE) -> bytes:
    return Signer("example.com", "rsa1", RSA_KEY, identity=identity).sign(message, now=NOW)


def _one(
    raw: bytes,
    resolver: DnsResolver | None = None,
    *,
    now: float = NOW,
    policy: DkimPolicy | None = None,
) -> DkimOutcome:
    (outcome,) = verify(raw, resolver, now=now, policy=policy)
    return outcome


def _tamper(raw: bytes, old: str, new: str) -> bytes:
    field_end = raw.index(b"\r\nFrom:")
    field = raw[:field_end].decode()
    assert old in field, (old, field)
    return field.replace(old, new, 1).encode() + raw[field_end:]


def test_a_good_signature_passes_with_details() -> None:
    outcome = _one(_signed())
    assert outcome.result is PASS
    assert (outcome.domain, outcome.selector, outcome.algorithm) == (
        "example.com",
        "rsa1",
        "rsa-sha256",
    )
    assert outcome.key_bits == 2048
    assert outcome.identity == ""  # no i=: RFC 8601 header.i is then left out
    assert len(outcome.signature_prefix) == 12


def test_no_signature_gives_no_outcomes() -> None:
    assert verify(MESSAGE) == ()


@pytest.mark.parametrize(
    ("old", "new", "result", "reason"),
    [
        ("v=1;", "v=2;", PERMERROR, "incompatible version v=2"),  # RFC 6376 6.1.1
        ("v=1; ", "", NEUTRAL, "missing required tag v="),  # RFC 6376 6.1.1
        ("a=rsa-sha256", "a=rsa-sha1", PERMERROR, "RFC 8301 3.1"),
        ("a=rsa-sha256", "a=rsa-md5", PERMERROR, "unsupported algorithm a=rsa-md5"),
        ("c=relaxed/relaxed", "c=relaxed/fancy", PERMERROR, "unknown canonicalization"),
        ("c=relaxed/relaxed", "c=/relaxed", PERMERROR, "unknown canonicalization"),
        ("c=relaxed/relaxed", "c=relaxed/", PERMERROR, "unknown canonicalization"),
        ("d=example.com", "d=exa mple.com", NEUTRAL, "d= is not a valid domain"),
        ("d=example.com;", "d=example.com; d=example.net;", NEUTRAL, "duplicate tag d="),
        ("h=from:from:", "h=", PERMERROR, "h= does not include From"),  # RFC 6376 5.4
        ("h=from:", "h=from::", NEUTRAL, "h= has an empty"),
        (f"t={TS}", f"t={TS}; x={TS - 1}", PERMERROR, "x= is earlier than t="),
        (f"t={TS}", f"t={TS}; x={TS}", PERMERROR, "signature expired"),
        (f"t={TS}", f"t={TS + 3600}", PERMERROR, "in the future"),
        (f"t={TS}", "t=soon", NEUTRAL, "t= is not a number"),
        ("s=rsa1;", "s=rsa1; q=http;", PERMERROR, "unsupported query method"),
        ("s=rsa1;", "s=rsa1; i=user@evil.example;", PERMERROR, "is not d= example.com"),
        ("s=rsa1;", "s=rsa1; i=nobody;", NEUTRAL, "i= has no @"),
        ("s=rsa1;", "s=rsa1; l=many;", NEUTRAL, "l= is not a number"),
        ("bh=", "bh=!", NEUTRAL, "bh= is not valid base64"),
        ("b=", "b=*", NEUTRAL, "b= is not valid base64"),
        ("s=rsa1;", "s=rsa1\x01;", NEUTRAL, "control character"),
        ("s=rsa1;", "s=rsa1; =x;", NEUTRAL, "malformed tag"),
        ("s=rsa1;", "s=rsa1;;", NEUTRAL, "empty tag-spec"),  # RFC 6376 3.2 tag-list
    ],
)
def test_signature_tag_checks(old: str, new: str, result: DkimResult, reason: str) -> None:
    outcome = _one(_tamper(_signed(), old, new), now=NOW + 600)
    assert outcome.result is result
    assert reason in outcome.reason


@pytest.mark.parametrize(
    ("tag", "header", "body"),
    [
        ("", "simple", "simple"),  # RFC 6376 3.5: c= absent is simple/simple
        ("c=relaxed;", "relaxed", "simple"),  # one algorithm: the header's; body simple
        ("c=simple/relaxed;", "simple", "relaxed"),
        ("c=RELAXED/Relaxed;", "relaxed", "relaxed"),
    ],
)
def test_rfc6376_3_5_canonicalization_defaults(tag: str, header: str, body: str) -> None:
    raw = f"DKIM-Signature: v=1; a=rsa-sha256; {tag} d=example.com; s=s; h=from; bh=AA==; b=AA=="
    sig = mailauth.dkim.signature.parse_signature(HeaderField("DKIM-Signature", raw.encode()))
    assert (sig.header_canon, sig.body_canon) == (header, body)


def test_rfc6376_3_5_t_within_the_clock_skew_is_accepted() -> None:
    assert _one(_signed(), now=NOW - 200).result is PASS
    policy = DkimPolicy(clock_skew=0)
    assert _one(_signed(), now=NOW - 200, policy=policy).result is PERMERROR


def test_unknown_tags_are_ignored_but_signed() -> None:
    # RFC 6376 3.2: unknown tags are ignored; the field is hashed, so adding one breaks b=.
    outcome = _one(_tamper(_signed(), "s=rsa1;", "s=rsa1; zz=1;"))
    assert (outcome.result, outcome.reason) == (FAIL, "signature did not verify")


def test_quoted_printable_identity_under_d() -> None:
    signed = _signed(identity="b=3Fb@mail.example.com")
    outcome = _one(signed)
    assert outcome.result is PASS
    assert outcome.identity == "b?b@mail.example.com"


def test_body_and_header_changes_fail() -> None:
    signed = _signed()
    body = _one(signed.replace(b"Alice\r\n", b"Alicia\r\n"))
    assert (body.result, body.reason) == (FAIL, "body hash did not verify")
    header = _one(signed.replace(b"Quarterly", b"Quarterlx"))
    assert (header.result, header.reason) == (FAIL, "signature did not verify")


def test_relaxed_survives_whitespace_and_case_changes() -> None:
    signed = _signed()
    changed = signed.replace(b"Subject:  Quarterly", b"SUBJECT:\tQuarterly").replace(
        b"Hello Bob,  \r\n", b"Hello   Bob,\r\n"
    )
    assert _one(changed).result is PASS


def test_oversigned_fields_cannot_be_added() -> None:
    signed = _signed()
    extra = signed.replace(b"\r\nFrom: Alice", b"\r\nReply-To: evil@example.net\r\nFrom: Alice", 1)
    assert _one(extra).result is FAIL


@pytest.mark.parametrize(
    ("record", "result", "reason"),
    [
        ("v=DKIM1; p=", PERMERROR, "key revoked"),
        (f"v=DKIM1; k=ed25519; p={ED_P}", PERMERROR, "k=ed25519 does not match"),
        (f"v=DKIM1; h=sha1; p={RSA_P}", PERMERROR, "h= does not allow sha256"),
        (f"v=DKIM1; s=chat; p={RSA_P}", PERMERROR, "s= does not allow email"),
        (f"v=DKIM1; p={KEY_512}", PERMERROR, "512 bits is too small"),  # RFC 8301 3.2
        ("v=DKIM1; p=AAAA", PERMERROR, "not a valid RSA public key"),
        ("v=spf1 -all", PERMERROR, "not a leading v=DKIM1"),
        (f"v=DKIM1; s=email:*; h=sha256:sha1; p={RSA_P}", PASS, ""),
    ],
)
def test_key_record_checks(record: str, result: DkimResult, reason: str) -> None:
    outcome = _one(_signed(), zone({"rsa1._domainkey.example.com": record}))
    assert outcome.result is result
    assert reason in outcome.reason


def test_rfc6376_3_6_1_testing_flag_is_reported() -> None:
    resolver = zone({"rsa1._domainkey.example.com": f"v=DKIM1; t=y; p={RSA_P}"})
    outcome = _one(_signed(), resolver)
    assert outcome.result is PASS
    assert outcome.testing


def test_rfc6376_3_6_1_strict_flag_requires_i_domain_equal_to_d() -> None:
    resolver = zone({"rsa1._domainkey.example.com": f"v=DKIM1; t=s; p={RSA_P}"})
    assert _one(_signed(identity="a@example.com"), resolver).result is PASS
    outcome = _one(_signed(identity="a@sub.example.com"), resolver)
    assert (outcome.result, outcome.reason) == (
        PERMERROR,
        "key t=s requires the i= domain to equal d=",
    )


def test_rfc6376_6_1_2_missing_key_and_dns_failure() -> None:
    missing = _one(_signed(), zone({}))
    assert missing.result is PERMERROR
    assert "no key for signature" in missing.reason
    failing = _one(_signed(), zone({}, faults={"rsa1._domainkey.example.com": "timeout"}))
    assert failing.result is TEMPERROR
    assert "DNS timeout" in failing.reason


def test_rfc6376_6_1_2_a_key_cname_to_a_failing_name_is_temperror() -> None:
    """Keys are often CNAMEs to a provider's name: when the chain ends at a name whose
    lookup fails, the key is unavailable (TEMPFAIL), not absent (PERMFAIL)."""
    records: dict[tuple[str, RRType], tuple[int, tuple[Record, ...]]] = {
        ("rsa1._domainkey.example.com", RRType.CNAME): (300, ("rsa1.keys.provider.example",)),
        ("rsa1.keys.provider.example", RRType.TXT): (300, (RSA_RECORD.encode(),)),
    }
    assert _one(_signed(), ZoneResolver(records)).result is PASS
    del records[("rsa1.keys.provider.example", RRType.TXT)]
    assert _one(_signed(), ZoneResolver(records)).result is PERMERROR  # NXDOMAIN at the end
    failing = ZoneResolver(records, faults={"rsa1.keys.provider.example": "servfail"})
    outcome = _one(_signed(), failing)
    assert (outcome.result, outcome.reason) == (
        TEMPERROR,
        "key lookup failed: no nameserver answered: SERVFAIL",
    )


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        (name, fault)
        for name in ("rsa1._domainkey.example.com", "rsa1.keys.provider.example")
        for fault in ("silent", "servfail", "truncate_tcp_refused", "wrong_type", "referral")
    ],
)
def test_rfc6376_6_1_2_key_lookup_failures_on_the_wire(name: str, fault: str) -> None:
    """Through dnspython and a server, at the key's name or at the end of its CNAME: a
    timeout, SERVFAIL, a truncated answer whose TCP retry is refused, a broken server's
    answer of another type, a referral: the key is unavailable (temperror), never absent
    (permerror, which DMARC takes as a failure)."""
    from tests.dnsserver import LoopbackDnsServer, txt_zone

    zone = txt_zone({"rsa1.keys.provider.example": RSA_RECORD})
    zone += "rsa1._domainkey.example.com. 300 IN CNAME rsa1.keys.provider.example.\n"
    with LoopbackDnsServer(zone) as server:
        assert _one(_signed(), server.resolver()).result is PASS
    with LoopbackDnsServer(zone, faults={name: fault}) as server:
        outcome = _one(_signed(), server.resolver())
    assert outcome.result is TEMPERROR, outcome.reason
    assert outcome.reason.startswith("key lookup failed: ")


def test_several_txt_records_at_the_selector() -> None:
    other = public_key_record(Signer("example.com", "x", ED_KEY).key)
    garbage_first = zone({"rsa1._domainkey.example.com": ["v=spf1 -all", RSA_RECORD]})
    assert _one(_signed(), garbage_first).result is PASS
    two_keys = zone({"rsa1._domainkey.example.com": [RSA_RECORD.replace("k=rsa", "k=rsa "), other]})
    assert _one(_signed(), two_keys).result is PASS
    wrong = public_key_record(Signer("example.com", "x", _other_rsa()).key)
    assert (
        _one(_signed(), zone({"rsa1._domainkey.example.com": [wrong, wrong + " "]})).result is FAIL
    )


def test_rfc6376_3_6_2_2_one_key_is_checked_of_several_at_the_selector() -> None:
    # Several records at one selector give undefined results (RFC 6376 3.6.2.2); the first
    # usable one in sorted order is used, so decoy keys cost one public-key operation.
    wrong = public_key_record(Signer("example.com", "x", _other_rsa()).key)
    first, second = sorted([wrong.encode(), RSA_RECORD.encode()])
    records = [first.decode(), second.decode()]
    outcome = _one(_signed(), zone({"rsa1._domainkey.example.com": records}))
    assert outcome.result is (PASS if first == RSA_RECORD.encode() else FAIL)
    decoys = [f"v=DKIM1; k=rsa; n={i}; p={wrong.split('p=')[1]}" for i in range(4)]
    outcome = _one(_signed(), zone({"rsa1._domainkey.example.com": [*decoys, RSA_RECORD]}))
    assert (outcome.result, outcome.reason) == (FAIL, "signature did not verify")


def test_a_key_record_too_large_is_passed_over_for_the_next() -> None:
    # Over 4 KiB: refused unparsed, as a record that does not parse; the next one is used.
    padded = "v=DKIM1; " + "; ".join(f"x{i}=y" for i in range(600)) + "; p=" + RSA_P
    alone = _one(_signed(), zone({"rsa1._domainkey.example.com": padded}))
    assert (alone.result, alone.reason) == (
        DkimResult.PERMERROR,
        f"key record too large ({len(padded)} octets, over 4096)",
    )
    beside = _one(_signed(), zone({"rsa1._domainkey.example.com": [padded, RSA_RECORD]}))
    assert beside.result is PASS


def _other_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def test_key_through_cname_and_split_strings() -> None:
    half = len(RSA_RECORD) // 2
    text = (
        "rsa1._domainkey.example.com. 300 IN CNAME keys.example.net.\n"
        f'keys.example.net. 300 IN TXT "{RSA_RECORD[:half]}" "{RSA_RECORD[half:]}"\n'
    )
    assert _one(_signed(), ZoneResolver.from_text(text)).result is PASS


def test_signatures_beyond_the_cap_are_reported_not_verified() -> None:
    signers = [Signer("example.com", "rsa1", RSA_KEY) for _ in range(12)]
    resolver = zone(key_records())
    outcomes = verify(sign_dkim(MESSAGE, signers, now=NOW), resolver)
    assert [o.result for o in outcomes] == [PASS] * 10 + [POLICY]  # one for the rest
    assert outcomes[-1].reason == "not verified: 2 more signature field(s) than the cap of 10"
    assert len(resolver.queries) == 1  # one key name, asked once
    three = verify(sign_dkim(MESSAGE, signers[:3], now=NOW), policy=DkimPolicy(max_signatures=1))
    assert [o.result for o in three] == [PASS, POLICY]


def test_a_flood_of_signature_fields_costs_no_more_than_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100,000 junk DKIM-Signature fields (8 MB) took 11.6 s when each one beyond the cap was
    parsed and reported (one Authentication-Results clause each: a 4 MB field)."""
    parsed = []
    original = mailauth.dkim.signature.parse_signature

    def counting(field: HeaderField) -> Signature:
        parsed.append(field)
        return original(field)

    monkeypatch.setattr(mailauth.dkim.verify, "parse_signature", counting)
    junk = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=x; h=from; bh=AA; b=AA\r\n"
    outcomes = verify(junk * 100_000 + MESSAGE, zone({}))
    assert len(parsed) == 10  # the cap, nothing more
    assert len(outcomes) == 11 and outcomes[-1].result is POLICY
    assert "99990 more signature field(s)" in outcomes[-1].reason
    header = render_authentication_results("mx.example.org", dkim=outcomes)
    assert len(header) < 4000


def test_rfc6376_l_tag_is_honoured_and_reported() -> None:
    signed = dkimpy_sign(MESSAGE, "rsa-sha256", "relaxed/relaxed", length=True) + MESSAGE
    whole = _one(signed, now=NOW * 2)
    assert (whole.result, whole.body_length) == (PASS, whole.body_length)
    assert whole.body_length and whole.reason == ""
    appended = signed + b"Unsigned postscript\r\n"
    partial = _one(appended, now=NOW * 2)
    assert partial.result is PASS
    assert "octets unsigned" in partial.reason
    strict = _one(appended, now=NOW * 2, policy=DkimPolicy(reject_partial_body=True))
    assert strict.result is POLICY
    truncated = _one(signed.replace(b"Alice\r\n\r\n\r\n", b""), now=NOW * 2)
    assert truncated.result is FAIL
    assert truncated.reason.endswith("exceeds the body length")


def test_streaming_in_tiny_chunks_gives_the_same_outcomes() -> None:
    signed = Signer("example.com", "ed1", ED_KEY).sign(_signed(), now=NOW)
    message = Message.parse(signed)
    verification = DkimVerification(message.headers, now=NOW)
    assert verification.wants_body
    body = bytes(message.body)
    for i in range(len(body)):
        verification.update(body[i : i + 1])
    streamed = run_plan(verification.finish(), zone(key_records()))
    assert streamed == verify(signed)
    assert [o.result for o in streamed] == [PASS, PASS]


def test_sync_and_async_pipelines_agree_on_a_large_message() -> None:
    big = MESSAGE + b"".join(b"line %d of a long body\r\n" % i for i in range(20_000))
    signed = Signer("example.com", "ed1", ED_KEY).sign(big, now=NOW)
    auth = Authenticator("mx.example.org", zone(key_records()))
    sync = auth.verify(signed, ip="192.0.2.1", now=NOW)
    async_ = asyncio.run(auth.verify_async(signed, ip="192.0.2.1", now=NOW))
    assert sync.dkim == async_.dkim
    assert sync.dkim is not None and sync.dkim[0].result is PASS
    assert "dkim=pass" in sync.authentication_results


def test_hostile_tag_values_cannot_inject_header_text() -> None:
    signed = _tamper(_signed(), "s=rsa1;", 's=a"b\\(c)\r\n X-Evil: 1;')
    (outcome,) = verify(signed)
    header = render_authentication_results("mx.example.org", dkim=[outcome])
    unfolded = header.replace("\r\n ", " ")
    assert "\r" not in unfolded and "\n" not in unfolded
    parsed = authres.AuthenticationResultsHeader.parse(unfolded)
    assert len(parsed.results) == 1
