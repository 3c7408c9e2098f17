"""Failure reports (RFC 9991, RFC 6591 ARF): when fo= asks, the report's structure parsed
back with ``email``, the header only by default, the rate limit."""

from __future__ import annotations

import dataclasses
import email
from email import policy
from email.message import EmailMessage, Message

import dkim as dkimpy
import pytest

from mailauth.dkim import Signer, public_key_record
from mailauth.dmarc.record import parse_dmarc_record
from mailauth.pipeline import Authenticator
from mailauth.reports.failure import (
    DkimFailure,
    FailureFacts,
    RateLimiter,
    build_failure_report,
    failure_facts,
    failure_types,
)
from mailauth.reports.message import Submitter
from tests.dkim_helpers import RSA_KEY, dkimpy_dns, zone

ORIGINAL = (
    b"Received: from mail.evil.example ([192.0.2.66])\r\n"
    b"From: CEO <ceo@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: urgent wire transfer\r\n"
    b"Message-ID: <fake-1@evil.example>\r\n"
    b"\r\n"
    b"Please send the money to account 1234.\r\n"
)
SUBMITTER = Submitter("Example Receiver", "dmarc-noreply@example.org", "example.org")
SIGNER = Signer("example.org", "ruf2026", RSA_KEY)
NOW = 1_795_000_100.0
FACTS = FailureFacts(
    reported_domain="example.com",
    source_ip="192.0.2.66",
    arrival=1_795_000_000.0,
    authentication_results="mx.example.org; spf=fail smtp.mailfrom=evil.example; "
    "dkim=fail header.d=example.com; dmarc=fail header.from=example.com",
    mail_from="x@evil.example",
    rcpt_to=("bob@example.org",),
    spf_result="fail",
    spf_domain="evil.example",
    spf_record='v=spf1 ip4:198.51.100.0/24 -all\r\nInjected: "x"',
    dkim_failures=(DkimFailure("example.com", "s2026", aligned=True),),
    delivery_result="reject",
)


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _inner(part: Message) -> Message:
    """The message the email package reads inside a message/* part."""
    payload = part.get_payload()
    assert isinstance(payload, list)
    (inner,) = payload
    assert isinstance(inner, Message)
    return inner


def _fields(part: Message) -> list[tuple[str, str]]:
    """The feedback report's fields (the email package reads the part as a message)."""
    inner = _inner(part)
    return [(name, " ".join(str(value).split())) for name, value in inner.items()]


def _report(*, include_body: bool = False, include_recipients: bool = True) -> bytes:
    return build_failure_report(
        FACTS,
        ORIGINAL,
        SUBMITTER,
        ["ruf@example.com"],
        now=NOW,
        signer=SIGNER,
        include_body=include_body,
        include_recipients=include_recipients,
    )


def test_rfc6591_arf_structure_and_rfc9991_fields() -> None:
    parsed = _parse(_report())
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "feedback-report"
    assert parsed["MIME-Version"] == "1.0"
    text, feedback, _original = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert "192.0.2.66" in text.get_content()
    assert feedback.get_content_type() == "message/feedback-report"
    fields = dict(_fields(feedback))
    assert fields["Feedback-Type"] == "auth-failure"
    assert fields["Version"] == "1"
    assert fields["Auth-Failure"] == "dmarc"
    assert fields["Identity-Alignment"] == "dkim, spf"
    assert fields["Delivery-Result"] == "reject"
    assert (fields["DKIM-Domain"], fields["DKIM-Selector"]) == ("example.com", "s2026")
    assert fields["DKIM-Identity"] == "@example.com"
    assert fields["Source-IP"] == "192.0.2.66"
    assert fields["Reported-Domain"] == "example.com"
    assert fields["Original-Mail-From"] == "<x@evil.example>"
    assert fields["Original-Rcpt-To"] == "<bob@example.org>"
    assert fields["Arrival-Date"].endswith("+0000")
    assert fields["Authentication-Results"].startswith("mx.example.org; spf=fail")
    # SPF-DNS: RFC 6591 "txt : domain : quoted record"; the CR LF from DNS cannot inject
    assert fields["SPF-DNS"] == (
        'txt : evil.example : "v=spf1 ip4:198.51.100.0/24 -all Injected: \\"x\\""'
    )
    assert "Injected" not in fields


def test_rfc9991_header_only_by_default() -> None:
    raw = _report()
    *_, original = _parse(raw).iter_parts()
    assert original.get_content_type() == "text/rfc822-headers"
    assert b"Subject: urgent wire transfer" in raw
    assert b"account 1234" not in raw


def test_rfc9991_body_only_on_opt_in() -> None:
    raw = _report(include_body=True)
    *_, original = _parse(raw).iter_parts()
    assert original.get_content_type() == "message/rfc822"
    inner = _inner(original)
    assert inner["Subject"] == "urgent wire transfer"
    assert b"account 1234" in raw


def test_recipients_can_be_left_out() -> None:
    raw = _report(include_recipients=False)
    assert b"Original-Rcpt-To" not in raw


def test_the_report_is_signed_aligned_for_dkimpy() -> None:
    records = {"ruf2026._domainkey.example.org": public_key_record(RSA_KEY)}
    assert dkimpy.verify(_report(), dnsfunc=dkimpy_dns(records))


@pytest.mark.parametrize(
    ("record", "spf", "dkim", "expected"),
    [
        ("v=DMARC1; p=reject", False, False, ()),  # no ruf=: never (fo= ignored)
        ("v=DMARC1; p=reject; ruf=mailto:f@example.com", False, False, ("dmarc",)),
        ("v=DMARC1; p=reject; ruf=mailto:f@example.com", True, False, ()),  # fo=0: DMARC passed
        ("v=DMARC1; p=reject; ruf=mailto:f@example.com; fo=1", True, False, ("dmarc",)),
        ("v=DMARC1; p=reject; ruf=mailto:f@example.com; fo=1", True, True, ()),
        ("v=DMARC1; p=reject; ruf=mailto:f@example.com; fo=d", True, True, ("signature",)),
        ("v=DMARC1; p=reject; ruf=mailto:f@example.com; fo=s", True, True, ("spf",)),
        (
            "v=DMARC1; p=reject; ruf=mailto:f@example.com; fo=0:d:s",
            False,
            False,
            ("dmarc", "signature", "spf"),
        ),
        ("v=DMARC1; p=reject; psd=y; ruf=mailto:f@example.com", False, False, ()),  # RFC 9991 2
    ],
)
def test_rfc9989_4_7_fo(record: str, spf: bool, dkim: bool, expected: tuple[str, ...]) -> None:
    facts = FailureFacts(
        "example.com",
        "192.0.2.1",
        0,
        "",
        spf_aligned=spf,
        dkim_aligned=dkim,
        spf_result="fail",
        dkim_failures=(DkimFailure("other.example", "s1"),),
    )
    assert failure_types(parse_dmarc_record(record), facts) == expected


def test_facts_from_a_verdict() -> None:
    raw = (
        b"From: ceo@example.com\r\nTo: bob@example.org\r\nSubject: s\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=gone; h=from; bh=AAAA; b=AAAA\r\n"
        b"\r\nbody\r\n"
    )
    resolver = zone(
        {
            "_dmarc.example.com": "v=DMARC1; p=reject; ruf=mailto:f@example.com",
            "evil.example": "v=spf1 -all",
        }
    )
    verdict = Authenticator(authserv_id="mx.example.org", resolver=resolver).verify(
        raw, ip="192.0.2.66", helo="evil.example", mail_from="x@evil.example", now=NOW
    )
    facts = failure_facts(
        verdict,
        ip="192.0.2.66",
        arrival=NOW,
        mail_from="x@evil.example",
        rcpt_to=["bob@example.org"],
        delivery_result="reject",
    )
    assert (facts.reported_domain, facts.spf_result, facts.spf_domain) == (
        "example.com",
        "fail",
        "evil.example",
    )
    assert (facts.spf_aligned, facts.dkim_aligned) == (False, False)
    assert [(f.domain, f.selector, f.aligned) for f in facts.dkim_failures] == [
        ("example.com", "gone", True)
    ]
    assert facts.authentication_results.startswith("mx.example.org;")
    assert facts.identity_alignment == "dkim, spf"


def test_rate_limit_per_destination() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 3600, clock=lambda: now[0], max_destinations=2)
    assert [limiter.allow("a@example.com") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b@example.com")  # another destination has its own allowance
    now[0] = 1200.0  # a third of the period: one report's worth back
    assert [limiter.allow("A@example.com") for _ in range(2)] == [True, False]
    assert limiter.refused == 2
    limiter.allow("c@example.com")  # a third destination: the least recently used forgotten
    assert len(limiter._buckets) == 2
    with pytest.raises(ValueError, match="at least one"):
        RateLimiter(0)


@pytest.mark.parametrize(
    "original",
    [
        b"From: a@example.com\r\nSubject: x\r\n\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n",
        b"From: a@example.com\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nhi\r\n",
        b"From: a@example.com\r\nSubject: \xff\xfe raw octets\r\n\r\n\xff\r\n",
    ],
)
def test_an_8bit_original_is_carried_verbatim_with_the_body_opted_in(original: bytes) -> None:
    raw = build_failure_report(
        FACTS, original, SUBMITTER, ["ruf@example.com"], now=NOW, include_body=True
    )
    assert original in raw  # (CRLF already): as received, not re-encoded
    *_, part = _parse(raw).iter_parts()
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "8bit"


@pytest.mark.parametrize(
    "changes",
    [
        {"reported_domain": "example.com\r\nBcc: victim@example.net"},
        {"reported_domain": "example.com\u2028Bcc: victim@example.net"},
        {"reported_domain": "b\u00fccher.example"},
        {"mail_from": "\u00fc@b\u00fccher.example"},  # (an SMTPUTF8 envelope)
        {"dkim_failures": (DkimFailure("b\u00fccher.example", "s\u00e9", aligned=True),)},
        {"spf_domain": "b\u00fccher.example"},
    ],
)
def test_hostile_or_utf8_facts_never_break_the_report(changes: dict[str, object]) -> None:
    facts = dataclasses.replace(FACTS, **changes)  # type: ignore[arg-type]
    raw = build_failure_report(facts, ORIGINAL, SUBMITTER, ["ruf@example.com"], now=NOW)
    parsed = _parse(raw)
    assert "Bcc" not in parsed
    assert "\n" not in str(parsed["Subject"]) and "\u2028" not in str(parsed["Subject"])
    assert len(list(parsed.iter_parts())) == 3
    assert raw.decode("utf-8")  # the 8-bit fields are UTF-8


def test_long_feedback_fields_are_folded() -> None:
    """A long Authentication-Results (many signatures) stays within 998 octets a line."""
    many = "; ".join(f"dkim=fail header.d=d{i}.example header.s=s{i}" for i in range(60))
    facts = dataclasses.replace(FACTS, authentication_results=f"mx.example.org; {many}")
    raw = build_failure_report(facts, ORIGINAL, SUBMITTER, ["ruf@example.com"], now=NOW)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    _, feedback, _ = _parse(raw).iter_parts()
    fields = dict(_fields(feedback))
    assert fields["Authentication-Results"] == f"mx.example.org; {many}"
