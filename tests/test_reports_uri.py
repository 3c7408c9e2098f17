"""Report URIs (RFC 9989 4.7, 4.8) and external destination verification (RFC 9990 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from mailauth.dmarc.record import parse_dmarc_record
from mailauth.dns import Query, RRType, ZoneResolver
from mailauth.plan import run_plan, run_plan_async
from mailauth.reports.uri import (
    Destination,
    DestinationStatus,
    ReportAddress,
    parse_report_uris,
    psl_org_domain,
    verify_destinations,
)


def _zone(
    txt: Mapping[str, str | list[str]], faults: Mapping[str, str] | None = None
) -> ZoneResolver:
    records = {
        (name, RRType.TXT): (
            300,
            [v.encode() for v in ([value] if isinstance(value, str) else value)],
        )
        for name, value in txt.items()
    }
    return ZoneResolver(records, faults=faults)


def _addresses(text: str) -> tuple[ReportAddress, ...]:
    return parse_report_uris(text).addresses


# --- parsing -------------------------------------------------------------------------------


def test_mailto_uris_in_order() -> None:
    parsed = parse_report_uris("mailto:dmarc@Example.COM, mailto:agg@reports.example.net")
    assert [(a.address, a.domain) for a in parsed.addresses] == [
        ("dmarc@example.com", "example.com"),
        ("agg@reports.example.net", "reports.example.net"),
    ]
    assert parsed.ignored == ()


def test_rfc9989_4_8_size_suffix_is_ignored_not_enforced() -> None:
    """obs-dmarc-report-size: reporters ignore it (the URI stays, without the limit)."""
    parsed = parse_report_uris("mailto:a@example.com!10m,mailto:b@example.com!500")
    assert [a.address for a in parsed.addresses] == ["a@example.com", "b@example.com"]
    assert [a.uri for a in parsed.addresses] == ["mailto:a@example.com", "mailto:b@example.com"]
    assert len(parsed.notes) == 2
    assert "obsolete" in parsed.notes[0]


def test_a_bang_that_is_no_size_makes_the_uri_malformed() -> None:
    parsed = parse_report_uris("mailto:a@example.com!lots, mailto:b!c@example.com")
    assert parsed.addresses == ()
    assert all("percent-encoded" in i.reason for i in parsed.ignored)


def test_rfc9989_4_7_unsupported_schemes_are_ignored() -> None:
    parsed = parse_report_uris("https://reports.example.com/dmarc, mailto:ok@example.com")
    assert [a.address for a in parsed.addresses] == ["ok@example.com"]
    (ignored,) = parsed.ignored
    assert ignored.uri == "https://reports.example.com/dmarc"
    assert "scheme https" in ignored.reason


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("dmarc@example.com", "not a URI"),
        ("mailto:", "not an address"),
        ("mailto:@example.com", "not an address"),
        ("mailto:nobody", "not an address"),
        ("mailto:a b@example.com", "not a URI"),
        ("mailto:a@exa_mple.com", "not a host name"),
        ("mailto:a@[192.0.2.1]", "literals"),
        ("mailto:a@localhost", "fully qualified"),
        ("mailto:a..b@example.com", "local-part"),
        ("mailto:r%C3%A9@example.com", "non-ASCII"),
        ("mailto:a@example.com\r\nBcc: x@example.org", "control"),
    ],
)
def test_malformed_uris_are_ignored_with_a_reason(uri: str, why: str) -> None:
    parsed = parse_report_uris([uri])
    assert parsed.addresses == ()
    (ignored,) = parsed.ignored
    assert why in ignored.reason, ignored.reason


def test_percent_encoded_commas_and_header_fields() -> None:
    """RFC 9989 4.8: a comma inside a URI is percent-encoded; RFC 6068: several addresses."""
    parsed = parse_report_uris(["mailto:a@example.com%2Cb@example.org?subject=hi"])
    assert [a.address for a in parsed.addresses] == ["a@example.com", "b@example.org"]
    assert parsed.notes == (
        "mailto:a@example.com%2Cb@example.org?subject=hi: mailto header fields ignored",
    )


def test_record_uris_duplicates_and_limit() -> None:
    record = parse_dmarc_record(
        "v=DMARC1; p=none; rua=mailto:a@example.com!1k,mailto:a@example.com"
    )
    assert [a.address for a in parse_report_uris(record.rua).addresses] == ["a@example.com"]
    many = ",".join(f"mailto:r{i}@example.com" for i in range(5))
    parsed = parse_report_uris(many, limit=3)
    assert len(parsed.addresses) == 3
    assert len(parsed.ignored) == 2


def test_internationalised_domain_becomes_an_a_label() -> None:
    (address,) = _addresses("mailto:dmarc@b%C3%BCcher.example")
    assert (address.address, address.domain) == (
        "dmarc@xn--bcher-kva.example",
        "xn--bcher-kva.example",
    )


# --- external destination verification ---------------------------------------------------


def _verify(
    resolver: ZoneResolver, policy: str, uris: str, tag: str = "rua"
) -> tuple[Destination, ...]:
    return run_plan(verify_destinations(policy, _addresses(uris), tag=tag), resolver)


ORGS = {
    "_dmarc.example.com": "v=DMARC1; p=reject; rua=mailto:x@example.net",
    "_dmarc.example.net": "v=DMARC1; p=none",
}


def test_same_organization_needs_no_verification() -> None:
    resolver = _zone(ORGS)
    (dest,) = _verify(resolver, "mail.example.com", "mailto:dmarc@reports.example.com")
    assert dest.status is DestinationStatus.SAME_ORGANIZATION
    assert dest.addresses == (dest.address,)
    assert not any("_report" in q.name for q in resolver.queries)


def test_rfc9990_4_external_destination_authorized() -> None:
    resolver = _zone({**ORGS, "example.com._report._dmarc.example.net": "v=DMARC1"})
    (dest,) = _verify(resolver, "example.com", "mailto:x@example.net")
    assert (dest.status, dest.usable) == (DestinationStatus.AUTHORIZED, True)
    assert [a.address for a in dest.addresses] == ["x@example.net"]
    assert Query("example.com._report._dmarc.example.net", RRType.TXT) in resolver.queries


@pytest.mark.parametrize(
    "records",
    [
        None,  # NXDOMAIN
        ["v=spf1 -all"],  # no record passes basic parsing
        ["p=none; v=DMARC1"],  # v= not first
    ],
)
def test_rfc9990_4_unverified_destination_is_refused(records: list[str] | None) -> None:
    txt: dict[str, str | list[str]] = dict(ORGS)
    if records is not None:
        txt["example.com._report._dmarc.example.net"] = records
    (dest,) = _verify(_zone(txt), "example.com", "mailto:x@example.net")
    assert (dest.status, dest.usable, dest.addresses) == (DestinationStatus.REFUSED, False, ())
    assert "not authorized" in dest.reason


def test_rfc9990_4_step_5_temporary_failure_means_try_later() -> None:
    faults = {"example.com._report._dmarc.example.net": "timeout"}
    (dest,) = _verify(_zone(ORGS, faults), "example.com", "mailto:x@example.net")
    assert (dest.status, dest.usable) == (DestinationStatus.TEMPFAIL, False)
    assert "timeout" in dest.reason


def test_servfail_in_the_tree_walk_is_also_try_later() -> None:
    faults = {"_dmarc.example.org": "servfail"}
    (dest,) = _verify(_zone(ORGS, faults), "example.com", "mailto:x@example.org")
    assert dest.status is DestinationStatus.TEMPFAIL


def test_rfc9990_4_step_9_override_on_the_same_host() -> None:
    txt = {
        **ORGS,
        "example.com._report._dmarc.example.net": "v=DMARC1; rua=mailto:other@example.net!5m",
    }
    (dest,) = _verify(_zone(txt), "example.com", "mailto:x@example.net")
    assert dest.status is DestinationStatus.AUTHORIZED
    assert [a.address for a in dest.addresses] == ["other@example.net"]


def test_rfc9990_4_step_9_override_elsewhere_means_neither() -> None:
    txt = {**ORGS, "example.com._report._dmarc.example.net": "v=DMARC1; rua=mailto:x@example.org"}
    (dest,) = _verify(_zone(txt), "example.com", "mailto:x@example.net")
    assert (dest.status, dest.addresses) == (DestinationStatus.REFUSED, ())
    assert "another host" in dest.reason


def test_rfc9991_5_ruf_uses_the_ruf_override() -> None:
    txt = {
        **ORGS,
        "example.com._report._dmarc.example.net": (
            "v=DMARC1; rua=mailto:a@example.net; ruf=mailto:f@example.net"
        ),
    }
    (dest,) = _verify(_zone(txt), "example.com", "mailto:x@example.net", tag="ruf")
    assert [a.address for a in dest.addresses] == ["f@example.net"]


def test_rfc9990_4_step_4_name_too_long_is_refused() -> None:
    policy = ".".join(["a" * 60] * 3) + ".example"  # 192 octets
    host = ".".join(["b" * 60] * 1) + ".example.net"
    (dest,) = _verify(_zone(ORGS), policy, f"mailto:x@{host}")
    assert dest.status is DestinationStatus.REFUSED
    assert "longer than DNS allows" in dest.reason


def test_psl_mode_and_async_runner_agree() -> None:
    resolver = _zone({"example.com._report._dmarc.example.net": "v=DMARC1"})
    addresses = _addresses("mailto:a@sub.example.com,mailto:x@example.net,mailto:y@example.org")
    plan = verify_destinations("example.com", addresses, org_domain=psl_org_domain)
    blocking = run_plan(plan, resolver)
    plan = verify_destinations("example.com", addresses, org_domain=psl_org_domain)
    asynchronous = asyncio.run(run_plan_async(plan, resolver))
    assert blocking == asynchronous
    assert [d.status for d in blocking] == [
        DestinationStatus.SAME_ORGANIZATION,
        DestinationStatus.AUTHORIZED,
        DestinationStatus.REFUSED,
    ]
