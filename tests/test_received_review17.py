"""Hostile received reports found in the review of issue 17: counts an attacker inflates past
what the store (64-bit integers) can add up, refused with one line and never a traceback;
the rest of the import goes on."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.reports import open_store
from mailauth.reports.received import received_reports
from mailauth.reports.received.limits import DEFAULT_LIMITS
from mailauth.reports.received.reader import read_reports
from tests.received_helpers import TLS_REPORT, aggregate_xml, report_mail
from tests.report_auth_helpers import NO_KEYS

HUGE = 1 << 62  # each count alone was accepted; three of them overflow SQLite's INTEGER


def _import(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    code = main(["reports", "import", "--store", str(tmp_path / "store.sqlite"), str(inputs),
                 "--dns-zone", str(NO_KEYS)])  # fmt: skip
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


def _with_filler(filler: str) -> bytes:
    """A good report with ``filler`` inside its first record."""
    xml = aggregate_xml(1, report_id="filler")
    at = xml.index("<record>") + len("<record>")
    return (xml[:at] + filler + xml[at:]).encode()


@pytest.mark.parametrize(
    ("filler", "error"),
    [
        # 2 million empty elements in one record (8 MiB) took 35 s and 256 MiB: all kept
        # until the record ends, and the work grew faster than the input.
        ("<x/>" * 10_001, "refused: more than 10,000 elements in one top-level element"),
        ("<x>" * 40 + "</x>" * 40, "refused: XML nested more than 32 elements deep"),
        # A start tag with a million attributes (8 MiB) took 95 s: expat 2.5 reparses a
        # token that spans its input chunks from its start each time (quadratic).
        ("<x " + " ".join(f"a{n}='1'" for n in range(1000)) + "/>",
         "refused: a tag longer than 4,096 octets (a DMARC report has none)"),
        ("<x " + " ".join(f"xmlns:a{n}='u{n}'" for n in range(500)) + "/>",
         "refused: a tag longer than 4,096 octets (a DMARC report has none)"),
    ],
)  # fmt: skip
def test_markup_floods_are_refused_before_they_cost(filler: str, error: str) -> None:
    [outcome] = read_reports(_with_filler(filler))
    assert outcome.error == error


def test_bounds_leave_a_real_report_alone() -> None:
    filler = "<x a='1'>" + "<y/>" * 9_000 + "</x>" + "<z>" * 25 + "</z>" * 25
    [outcome] = read_reports(_with_filler(filler))
    assert outcome.error == ""
    assert outcome.report is not None


def test_a_flood_of_top_level_elements_is_refused() -> None:
    # 15 million empty elements beside the records (60 MiB) took 227 s of CPU.
    xml = aggregate_xml(1, report_id="flood").replace(
        "</feedback>", "<x/>" * 100_101 + "</feedback>"
    )
    [outcome] = read_reports(xml.encode())
    assert outcome.error == "refused: more than 100,000 elements in <feedback>"
    xml = aggregate_xml(1, report_id="flood").replace(
        "</feedback>", "<x/>" * 100_090 + "</feedback>"
    )
    [outcome] = read_reports(xml.encode())
    assert outcome.error == ""


_HEAD = b"From: a@receiver.example\r\nTo: dmarc@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"


def test_a_mime_part_flood_is_refused_before_it_is_parsed() -> None:
    # 200,000 empty parts (6 MiB) took 23 s and 193 MiB before max_parts was counted.
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(20_000))
    data = _HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n"
    tracemalloc.start()
    try:
        [outcome] = read_reports(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.error == "refused: an e-mail of more than 200 MIME parts"
    assert peak < 2 * len(data)  # (parsed first, it was 25 times the input)


def test_a_header_flood_is_refused_before_it_is_parsed() -> None:
    # 1,000,000 header lines (13 MiB) took 16 s and 319 MiB.
    data = _HEAD + b"".join(b"X-H%d: v\r\n" % n for n in range(10_001)) + b"\r\nbody\r\n"
    [outcome] = read_reports(data)
    assert outcome.error == "refused: more than 10,000 header lines"


def test_a_report_mail_with_many_received_fields_is_read() -> None:
    xml = aggregate_xml(1, report_id="mail").encode()
    data = report_mail([("r.xml", "text/xml", xml)])
    at = data.index(b"\n") + 1
    data = (
        data[:at] + b"Received: from x by y; Sat, 5 Dec 2026 10:00:00 +0000\r\n" * 300 + data[at:]
    )
    [outcome] = read_reports(data)
    assert outcome.error == ""


def test_a_gzip_of_many_members_is_refused() -> None:
    # 100,000 one-octet members (2 MiB) took 55 s: each member copied the rest of the input.
    [outcome] = read_reports(gzip.compress(b" ", mtime=0) * 101)
    assert outcome.error == "refused: gzip data of more than 100 members"
