"""DNS Tree Walk and Organizational Domains (RFC 9989 4.10; RFC 7489 3.2 with the PSL)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from publicsuffixlist import PublicSuffixList

from mailauth.dmarc import (
    organizational_domain,
    psl_organizational_domain,
    tree_walk,
    walk_names,
)
from mailauth.dns import RRType, ZoneResolver
from mailauth.domains import normalize_domain
from mailauth.plan import run_plan
from tests.conftest import record_conformance

PSL_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "dmarc-psl-orgdomain"


def dmarc_zone(
    records: Mapping[str, str | list[str]], faults: Mapping[str, str] | None = None
) -> ZoneResolver:
    data = {
        (f"_dmarc.{name}", RRType.TXT): (
            300,
            tuple(v.encode() for v in ([value] if isinstance(value, str) else value)),
        )
        for name, value in records.items()
    }
    return ZoneResolver(data, faults=faults or {})


def test_rfc9989_4_10_walk_names_example() -> None:
    assert walk_names("a.b.c.d.e.f.g.h.i.j.mail.example.com") == [
        "a.b.c.d.e.f.g.h.i.j.mail.example.com",
        "g.h.i.j.mail.example.com",
        "h.i.j.mail.example.com",
        "i.j.mail.example.com",
        "j.mail.example.com",
        "mail.example.com",
        "example.com",
        "com",
    ]
    assert walk_names("a.mail.example.com") == [
        "a.mail.example.com",
        "mail.example.com",
        "example.com",
        "com",
    ]


def test_a_twelve_label_name_costs_at_most_eight_queries() -> None:
    resolver = dmarc_zone({})
    walk = run_plan(tree_walk("a.b.c.d.e.f.g.h.i.j.k.example"), resolver)
    assert len(resolver.queries) == 8
    assert walk.records == ()
    assert organizational_domain(walk) == "a.b.c.d.e.f.g.h.i.j.k.example"


def test_rfc9989_4_10_2_examples() -> None:
    # Records at mail.example.com and example.com: the fewest labels wins.
    both = dmarc_zone({"mail.example.com": "v=DMARC1; p=none", "example.com": "v=DMARC1; p=none"})
    assert organizational_domain(run_plan(tree_walk("a.mail.example.com"), both)) == "example.com"
    # psd=n at mail.example.com: it is the Organizational Domain; the walk stops there.
    psd_n = dmarc_zone({"mail.example.com": "v=DMARC1; p=none; psd=n", "example.com": "v=DMARC1"})
    walk = run_plan(tree_walk("a.mail.example.com"), psd_n)
    assert organizational_domain(walk) == "mail.example.com"
    assert [f.domain for f in walk.records] == ["mail.example.com"]
    # Only _dmarc.com with psd=y: the Organizational Domain is one label below it.
    psd_y = dmarc_zone({"com": "v=DMARC1; p=reject; psd=y"})
    assert organizational_domain(run_plan(tree_walk("a.mail.example.com"), psd_y)) == "example.com"


def test_psd_y_at_the_start_does_not_move_the_organizational_domain() -> None:
    resolver = dmarc_zone({"example": "v=DMARC1; p=reject; psd=y"})
    walk = run_plan(tree_walk("example"), resolver)
    assert organizational_domain(walk) == "example"


def test_rfc9989_4_10_step_2_foreign_and_multiple_records_are_discarded() -> None:
    resolver = dmarc_zone(
        {
            "a.example.com": ["v=spf1 -all", "v=DMARC1; p=reject"],  # one DMARC record
            "example.com": ["v=DMARC1; p=none", "v=DMARC1; p=reject"],  # two: both discarded
        }
    )
    walk = run_plan(tree_walk("a.example.com"), resolver)
    assert [f.domain for f in walk.records] == ["a.example.com"]
    assert walk.notes == ("2 DMARC records at _dmarc.example.com: all discarded",)


def test_a_temporary_failure_is_reported() -> None:
    resolver = dmarc_zone({}, faults={"_dmarc.example.com": "servfail"})
    walk = run_plan(tree_walk("a.example.com"), resolver)
    assert walk.tempfail.startswith("_dmarc.example.com:")


def _psl_cases() -> list[tuple[str, str | None]]:
    cases = []
    for line in (PSL_DIR / "tests.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("//"):
            continue
        given, expected = line.split()
        cases.append((given, None if expected == "null" else expected))
    return cases


@pytest.fixture(scope="module")
def snapshot_psl() -> PublicSuffixList:
    with (PSL_DIR / "public_suffix_list.dat").open("rb") as handle:
        return PublicSuffixList(handle)


@pytest.mark.parametrize(("given", "expected"), _psl_cases())
def test_rfc7489_organizational_domain_psl_vectors(
    given: str, expected: str | None, snapshot_psl: PublicSuffixList
) -> None:
    """The PSL's own vectors (78 cases) through the RFC 7489 org-domain function.

    A registrable domain of null (the input is a public suffix) is, for DMARC, the domain
    itself (RFC 7489 3.2 leaves it open; see docs/dmarc.md). Inputs that are no domain names
    (null, a leading dot) are refused before DMARC sees them.
    """
    try:
        domain = normalize_domain(given)
    except ValueError:
        record_conformance("PSL tests.txt: RFC 7489 Organizational Domain", expected is None)
        assert expected is None
        return
    got = psl_organizational_domain(domain, snapshot_psl)
    want = normalize_domain(expected) if expected else domain
    record_conformance("PSL tests.txt: RFC 7489 Organizational Domain", got == want)
    assert got == want


@pytest.mark.parametrize(
    ("name", "org"),
    [
        ("mail.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("a.b.example.com.au", "example.com.au"),
        ("news.bbc.co.uk", "bbc.co.uk"),
        ("x.y.city.kawasaki.jp", "city.kawasaki.jp"),
        ("user.github.io", "user.github.io"),
        ("deep.sub.example.org", "example.org"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("co.uk", "co.uk"),
    ],
)
def test_bundled_psl_on_real_world_shaped_names(name: str, org: str) -> None:
    assert psl_organizational_domain(name) == org
    assert psl_organizational_domain(name) == (PublicSuffixList().privatesuffix(name) or name)
