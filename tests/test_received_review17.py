"""Hostile received reports found in the review of issue 17: counts an attacker inflates past
what the store (64-bit integers) can add up, refused with one line and never a traceback;
the rest of the import goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.reports import open_store
from mailauth.reports.received import received_reports
from mailauth.reports.received.limits import DEFAULT_LIMITS
from tests.received_helpers import TLS_REPORT, aggregate_xml

HUGE = 1 << 62  # each count alone was accepted; three of them overflow SQLite's INTEGER


def _import(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    code = main(["reports", "import", "--store", str(tmp_path / "store.sqlite"), str(inputs)])
    return code, capsys.readouterr().err.splitlines()


def _stored(tmp_path: Path, domain: str = "example.com") -> list[str]:
    store = open_store(str(tmp_path / "store.sqlite"))
    try:
        return [r.report_id for r in received_reports(store, domain)]
    finally:
        store.close()


def test_an_aggregate_count_beyond_the_bound_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    xml = aggregate_xml(3, report_id="huge")
    for n in (1, 2, 3):
        xml = xml.replace(f"<count>{n}</count>", f"<count>{HUGE}</count>")
    (inputs / "huge.xml").write_text(xml)
    (inputs / "good.xml").write_text(aggregate_xml(report_id="good"))
    code, err = _import(tmp_path, inputs, capsys)
    assert code == 1
    assert err == [
        f"mailauth reports import: {inputs / 'huge.xml'}: record 1: count "
        f"{HUGE:,} is more than {DEFAULT_LIMITS.max_count:,} messages (forged?)"
    ]
    assert _stored(tmp_path) == ["good"]


def test_the_largest_count_allowed_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    xml = aggregate_xml(1, report_id="big").replace(
        "<count>1</count>", f"<count>{DEFAULT_LIMITS.max_count}</count>"
    )
    (inputs / "big.xml").write_text(xml)
    code, err = _import(tmp_path, inputs, capsys)
    assert (code, err) == (0, [])
    assert _stored(tmp_path) == ["big"]


def test_a_tls_session_count_beyond_the_bound_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    report = json.loads(json.dumps(TLS_REPORT))
    report["policies"][0]["summary"]["total-successful-session-count"] = HUGE - 1
    report["policies"] *= 3
    (inputs / "huge.json").write_text(json.dumps(report))
    (inputs / "good.xml").write_text(aggregate_xml(report_id="good"))
    code, err = _import(tmp_path, inputs, capsys)
    assert code == 1
    assert err == [
        f"mailauth reports import: {inputs / 'huge.json'}: policy 1: "
        f"total-successful-session-count is not a count: {HUGE - 1}"
    ]
    assert _stored(tmp_path) == ["good"]
