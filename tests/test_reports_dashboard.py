"""mailauth.reports.dashboard and ``mailauth reports html``: the page's content on SQLite and a
real PostgreSQL, every report text escaped, and the page opened in a real headless Chromium
(tests/browser.py): no console errors, no network requests, the table sorts, a screenshot."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.reports.dashboard import MAX_SAMPLES, failure_samples, render_dashboard
from mailauth.reports.received import (
    AggregateRecord,
    AggregateReport,
    DkimAuth,
    ReportedPolicy,
)
from mailauth.reports.store import open_store
from mailauth.reports.summary import daily_pass_rate, summarize
from tests.browser import chromium_binary, open_page
from tests.summary_data import (
    day,
    failure_sample,
    generated_year,
    hand_built_reports,
    store_reports,
)

JANUARY = (day("2026-01-01"), day("2026-02-01"))
SCRIPT = "<script>window.__pwned=1</script>"
IMAGE = '<img src=x onerror="window.__pwned=2">'


@pytest.fixture
def chromium() -> None:
    if chromium_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is not installed (.ci/run installs it)")
        pytest.skip("Chromium is not installed (Debian's chromium)")


def _hostile_store(url: str) -> None:
    """Report text with markup everywhere a report can put it: the reporter's name, the
    source IP, a DKIM d= (which becomes the organisation), a failure report's reporter,
    subject, delivery result and headers (one closing the <pre> it is shown in)."""
    record = AggregateRecord(
        f"198.51.100.1{SCRIPT}", 7, "none", "fail", "fail",
        auth_dkim=(DkimAuth(f"{IMAGE}.example", "s", "pass"),),
    )  # fmt: skip
    report = AggregateReport(
        f"Evil {SCRIPT}", "x@evil.example", "r-1", day("2026-01-05"), day("2026-01-06") - 1,
        ReportedPolicy("example.com"), (record,),
    )  # fmt: skip
    sample = failure_sample(
        f"mx{SCRIPT}.example", f"Subject {IMAGE}",
        f"From: a@example.com\n</pre>{SCRIPT}<pre>\nX-Evil: {IMAGE}\n", "2026-01-05",
    )  # fmt: skip
    store = open_store(url)
    try:
        store_reports(store, [*hand_built_reports(), report])
        store_reports(store, [sample])
    finally:
        store.close()


def _render(url: str, domain: str = "example.com") -> str:
    store = open_store(url)
    try:
        found = summarize(store, domain, *JANUARY)
        return render_dashboard(store, found, generated=day("2026-02-01"))
    finally:
        store.close()


def test_dashboard_content(store_url: str) -> None:
    """On both engines: the daily pass rate (10 Jan: 140 of 150; 11 Jan: 60 of 65), the
    sources in the table, the failure samples, the verdict."""
    _hostile_store(store_url)
    store = open_store(store_url)
    try:
        days = daily_pass_rate(store, "example.com", *JANUARY)
        samples = failure_samples(store, "example.com", *JANUARY)
        none_for_org = failure_samples(store, "example.org", *JANUARY)
    finally:
        store.close()
    assert days == [
        (day("2026-01-05"), 7, 0), (day("2026-01-10"), 150, 140), (day("2026-01-11"), 65, 60),
    ]  # fmt: skip
    assert [(s.subject, s.auth_failure, s.delivery_result) for s in samples] == [
        (f"Subject {IMAGE}", "dmarc", "reject")
    ]
    assert none_for_org == []
    page = _render(store_url)
    assert "<title>DMARC reports for example.com</title>" in page
    assert page.count('<tr>\n<td data-sort="') == 4
    assert "22 messages (9.9 %) from 2 sources would be rejected under p=reject" in page
    assert 'id="pass-rate"' in page and 'id="volume"' in page


def test_dashboard_escapes_report_text(tmp_path: Path) -> None:
    """No report text becomes markup: the page's only script element is its own, no img
    element at all, and the Content Security Policy allows that one script (by hash) and
    nothing from anywhere."""
    url = str(tmp_path / "r.sqlite")
    _hostile_store(url)
    page = _render(url)
    assert page.count("<script") == 1 and "<img" not in page
    assert "window.__pwned=1</script>" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "&lt;/pre&gt;" in page
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy is not None
    csp = html.unescape(policy.group(1))  # (an attribute value, escaped like any other)
    assert csp.startswith("default-src 'none'; script-src 'sha256-")
    assert "unsafe-inline" not in csp


@pytest.mark.usefixtures("chromium")
def test_dashboard_hostile_text_inert_in_chromium(tmp_path: Path) -> None:
    url = str(tmp_path / "r.sqlite")
    _hostile_store(url)
    path = tmp_path / "report.html"
    path.write_text(_render(url), encoding="utf-8")
    report = open_page(path, evaluate=(
        "typeof window.__pwned",
        "document.scripts.length + ' ' + document.images.length",
        f"document.body.textContent.includes({SCRIPT!r})",
        "document.querySelectorAll('details.sample pre')[0].textContent.includes('</pre>')",
    ))  # fmt: skip
    assert (report.console_errors, report.exceptions, report.requests) == ([], [], [])
    assert report.values == {"0": "undefined", "1": "1 0", "2": True, "3": True}


@pytest.mark.usefixtures("chromium")
def test_dashboard_in_chromium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A realistic quarter (90 days, 6 reporters a day, 25 records each, failure reports),
    written by the command, opened in Chromium: no console errors (a CSP hash that did not
    match the script would be one), no network request, the table sorted by a click, and a
    screenshot under the test's directory."""
    url = str(tmp_path / "r.sqlite")
    store = open_store(url)
    store_reports(store, generated_year("2025-11-01", 90, reports_per_day=6,
                                        records_per_report=25))  # fmt: skip
    store_reports(store, [
        failure_sample("mx.receiver.example", f"Invoice {n}",
                       f"From: billing@example.com\nSubject: Invoice {n}\n", f"2026-01-{n:02}")
        for n in range(1, 31)
    ])  # fmt: skip
    store.close()
    path = tmp_path / "report.html"
    code = main(["reports", "html", "example.com", "--store", url, "--since", "2025-11-01",
                 "--until", "2026-02-01", "--out", str(path)])  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert re.fullmatch(rf"{re.escape(str(path))}: [\d,]+ messages from \d+ sources\n", out)
    first_cells = (
        "Array.from(document.querySelectorAll('#sources tbody tr')).slice(0, 3)"
        ".map(r => Number(r.cells[3].dataset.sort))"
    )
    click = "document.querySelectorAll('#sources th')[3].click()"
    report = open_page(path, max_height=2400, evaluate=(
        first_cells, click, click, first_cells,
        "document.querySelectorAll('#pass-rate circle').length",
        "document.querySelectorAll('#volume rect').length",
        "document.querySelectorAll('details.sample').length",
        "document.querySelectorAll('#sources th')[3].getAttribute('aria-sort')",
    ))  # fmt: skip
    assert (report.console_errors, report.exceptions, report.requests) == ([], [], [])
    largest, smallest = report.values["0"], report.values["3"]
    assert largest == sorted(largest, reverse=True) and smallest == sorted(smallest)
    assert smallest[0] < largest[-1]
    assert report.values["4"] == 90  # a point per day
    assert report.values["5"] == 2 * 15  # pass and fail bars of the 15 largest sources
    assert report.values["6"] == min(30, MAX_SAMPLES)
    assert report.values["7"] == "ascending"
    shot = tmp_path / "dashboard.png"
    shot.write_bytes(report.screenshot)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 50_000


def test_cli_html_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be written: one line, exit 2, no temporary file left behind (a
    missing directory; a directory where the file would go)."""
    url = str(tmp_path / "r.sqlite")
    (tmp_path / "a-directory").mkdir()
    for out in (tmp_path / "missing" / "r.html", tmp_path / "a-directory"):
        code = main(["reports", "html", "example.com", "--store", url, "--out", str(out)])
        stdout, err = capsys.readouterr()
        assert code == 2 and stdout == ""
        assert err.count("\n") == 1 and f"cannot write {out}" in err
        assert not any(p.name.startswith(".mailauth-") for p in tmp_path.rglob("*"))
    assert list((tmp_path / "a-directory").iterdir()) == []
    assert main(["reports", "html", "example.com", "--store", url]) == 2
    assert "--out" in capsys.readouterr().err
