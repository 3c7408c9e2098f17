"""DMARC Policy Record parsing (RFC 9989 4.7, 4.8)."""

from __future__ import annotations

import pytest

from mailauth.dmarc import NotDmarcRecord, ReportUri, parse_dmarc_record
from mailauth.results import Policy


def test_a_full_record() -> None:
    record = parse_dmarc_record(
        b"v=DMARC1; p=reject; sp=quarantine; np=none; adkim=s; aspf=s; t=y; psd=n; "
        b"pct=50; rua=mailto:agg@example.com!10m, https://r.example.com/d; "
        b"ruf=mailto:ruf@example.com; fo=1:d:s; rf=afrf; ri=3600"
    )
    assert (record.policy, record.subdomain_policy, record.nonexistent_policy) == (
        Policy.REJECT,
        Policy.QUARANTINE,
        Policy.NONE,
    )
    assert (record.adkim, record.aspf, record.testing, record.psd) == ("s", "s", True, "n")
    assert (record.pct, record.fo, record.ri) == (50, ("1", "d", "s"), 3600)
    assert record.rua == (
        ReportUri("mailto:agg@example.com", 10 * 1024 * 1024),
        ReportUri("https://r.example.com/d"),
    )
    assert record.policy_valid and record.subdomain_policies_valid
    assert record.warnings == ()


def test_defaults() -> None:
    record = parse_dmarc_record("v=DMARC1; p=none")
    assert (record.adkim, record.aspf, record.psd, record.pct, record.testing) == (
        "r",
        "r",
        "u",
        100,
        False,
    )
    assert record.rua == record.ruf == ()


@pytest.mark.parametrize(
    "text",
    [
        "p=reject; v=DMARC1",  # RFC 9989 4.7: v= MUST be first
        "v=DMARC2; p=reject",
        "v=dmarc1; p=reject",  # the value is case-sensitive
        "v=spf1 -all",
        "",
        "DMARC1",
    ],
)
def test_rfc9989_4_7_not_a_dmarc_record(text: str) -> None:
    with pytest.raises(NotDmarcRecord):
        parse_dmarc_record(text)


def test_case_and_whitespace_variants() -> None:
    record = parse_dmarc_record("V = DMARC1 ;P = Reject ;  SP=QUARANTINE ; adkim = S ;")
    assert record.policy is Policy.REJECT
    assert record.subdomain_policy is Policy.QUARANTINE
    assert record.adkim == "s"


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("v=DMARC1; p=reject; p=none", "duplicate tag p="),
        ("v=DMARC1; p=reject; adkim=x", "adkim=x is not one of r/s"),
        ("v=DMARC1; p=reject; pct=150", "pct=150"),
        ("v=DMARC1; p=reject; fo=0:1", "fo=0:1"),
        ("v=DMARC1; p=reject; rua=nope", "is not a URI"),
        ("v=DMARC1; p=reject; rua=mailto:x@y!12q", "bad size"),
        # 5,000 digits: int() refuses more than 4,300, and the whole verification failed
        ("v=DMARC1; p=reject; rua=mailto:x@y!" + "9" * 5000, "bad size"),
        ("v=DMARC1; p=reject; rua=mailto:nobody", "has no address"),
        ("v=DMARC1; p=reject; zz=1", "unknown tag zz="),
        ("v=DMARC1; p=reject; t=", "malformed tag"),
        ("v=DMARC1; p=reject; =x", "malformed tag"),
    ],
)
def test_rfc9989_4_8_syntax_errors_fall_back_to_defaults(text: str, warning: str) -> None:
    record = parse_dmarc_record(text)
    assert record.policy is Policy.REJECT  # the rest of the record still counts
    assert any(warning in w for w in record.warnings), record.warnings


def test_rfc9989_4_10_1_invalid_policies_are_flagged() -> None:
    missing = parse_dmarc_record("v=DMARC1; rua=mailto:a@example.com")
    assert missing.policy is None and not missing.policy_valid
    bad = parse_dmarc_record("v=DMARC1; p=block")
    assert not bad.policy_valid and any("p=block" in w for w in bad.warnings)
    bad_sp = parse_dmarc_record("v=DMARC1; p=reject; sp=maybe")
    assert bad_sp.policy_valid and not bad_sp.subdomain_policies_valid


def test_policy_for_each_kind_of_domain() -> None:
    record = parse_dmarc_record("v=DMARC1; p=reject; sp=quarantine; np=none")
    assert record.policy_for(subdomain=False, exists=True) == (Policy.REJECT, "p")
    assert record.policy_for(subdomain=True, exists=True) == (Policy.QUARANTINE, "sp")
    assert record.policy_for(subdomain=True, exists=False) == (Policy.NONE, "np")
    only_p = parse_dmarc_record("v=DMARC1; p=quarantine")
    assert only_p.policy_for(subdomain=True, exists=False) == (Policy.QUARANTINE, "p")
    p_and_sp = parse_dmarc_record("v=DMARC1; p=quarantine; sp=reject")
    assert p_and_sp.policy_for(subdomain=True, exists=False) == (Policy.REJECT, "sp")
