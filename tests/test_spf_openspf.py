"""The OpenSPF RFC 7208 (and historic RFC 4408) suites, through mailauth's SPF entry point.

Each scenario's zonedata becomes a ZoneResolver (the project's own resolver interface), with
the suite's conventions (fixtures/spf-openspf/SOURCE.md): SPF records also served as TXT
unless the name lists TXT; ``TXT: NONE`` blocks that; ``TIMEOUT`` makes queries for types
without records fail temporarily. Where a case lists several results, any of them passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mailauth.dns import MxRecord, Record, RRType, ZoneResolver
from mailauth.errors import InvalidDomainError
from mailauth.spf import check_spf_identity
from tests.conftest import record_conformance

SUITES = Path(__file__).resolve().parent.parent / "fixtures" / "spf-openspf"


def _text(value: Any) -> bytes:
    if isinstance(value, list):
        return "".join(value).encode("utf-8")
    return str(value).encode("utf-8")


def zone_data(
    zonedata: dict[str, list[Any]],
) -> tuple[dict[tuple[str, RRType], list[Record]], dict[str, str]]:
    """A scenario's records and faults, as a ZoneResolver takes them."""
    records: dict[tuple[str, RRType], list[Record]] = {}
    faults: dict[str, str] = {}
    for raw_name, entries in (zonedata or {}).items():
        name = raw_name.rstrip(".").lower()
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        for entry in entries:
            if entry == "TIMEOUT":
                faults[name] = "timeout"
                continue
            ((rtype, value),) = entry.items()
            if rtype == "TXT" and value == "NONE":
                continue
            if rtype == "SPF":
                if has_txt:
                    continue
                rtype = "TXT"
            record: Record
            if rtype == "TXT":
                record = _text(value)
            elif rtype == "MX":
                record = MxRecord(int(value[0]), str(value[1]).rstrip(".").lower())
            else:
                record = str(value).rstrip(".")
            records.setdefault((name, RRType(rtype)), []).append(record)
    valid = {}
    for key, values in records.items():
        try:
            ZoneResolver({key: (300, values)})
        except InvalidDomainError:
            continue  # a name DNS cannot carry (e.g. a 64-octet label) is never asked
        valid[key] = values
    return valid, {n: f for n, f in faults.items() if len(n) < 254}


def build_resolver(zonedata: dict[str, list[Any]]) -> ZoneResolver:
    records, faults = zone_data(zonedata)
    return ZoneResolver({key: (300, values) for key, values in records.items()}, faults=faults)


def _cases(filename: str) -> list[Any]:
    cases = []
    for scenario in yaml.safe_load_all((SUITES / filename).read_text(encoding="utf-8")):
        if not scenario:
            continue
        for test_id, test in scenario["tests"].items():
            cases.append(pytest.param(scenario.get("zonedata") or {}, test, id=test_id))
    return cases


def _run(suite: str, zonedata: dict[str, list[Any]], test: dict[str, Any]) -> None:
    resolver = build_resolver(zonedata)
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    outcome = check_spf_identity(
        resolver,
        ip=test["host"],
        sender=test["mailfrom"],
        helo=test["helo"],
        default_explanation="DEFAULT",
    )
    ok = str(outcome.result) in expected
    if ok and "explanation" in test:
        ok = outcome.explanation == test["explanation"]
    record_conformance(suite, ok)
    assert str(outcome.result) in expected, (outcome, test.get("description"))
    if "explanation" in test:
        assert outcome.explanation == test["explanation"]


@pytest.mark.parametrize(("zonedata", "test"), _cases("rfc7208-tests.yml"))
def test_rfc7208(zonedata: dict[str, list[Any]], test: dict[str, Any]) -> None:
    _run("OpenSPF rfc7208-tests.yml", zonedata, test)


@pytest.mark.parametrize(("zonedata", "test"), _cases("rfc4408-tests.yml"))
def test_rfc4408(zonedata: dict[str, list[Any]], test: dict[str, Any]) -> None:
    _run("OpenSPF rfc4408-tests.yml", zonedata, test)
