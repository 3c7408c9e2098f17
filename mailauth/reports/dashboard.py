"""The HTML dashboard of one domain's received reports (``mailauth reports html``): ONE
self-contained file that needs nothing when opened -- no network, no server: the styles and
the one small script (the table's sorting) are inline, the charts inline SVG.

Charts: two, drawn here as SVG elements from numbers (a line of the daily DMARC pass rate,
bars of volume by source). A plotting library was weighed: matplotlib brings numpy and ~40
MB for two charts; pygal's hover labels need its JavaScript from a CDN (off-line, not
there). Two charts of lines and rectangles are a few dozen lines of geometry, and the
template then controls every byte: the whole page goes through jinja2 with autoescape on.

Hostile input: every text from a report (reporter names, domains, IPs, reverse names,
failure samples) is attacker-controlled. It only ever reaches the page through jinja2's
autoescape (text and attribute values), never as markup or script; and the page's Content
Security Policy allows only its own inline script and style (by their SHA-256), no other
source at all: a script that slipped through anyway would not run, nor fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
import markupsafe

from mailauth.domains import normalize_domain
from mailauth.reports.store import Store
from mailauth.reports.summary import Summary, daily_pass_rate

MAX_TABLE_SOURCES = 2000  # table rows (the most messages first)
MAX_BARS = 15  # sources in the volume chart
MAX_SAMPLES = 50  # failure reports shown (the latest)
MAX_SAMPLE_CHARS = 8192  # of each sample's original headers
CHART_WIDTH, CHART_HEIGHT = 900, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 40, 12, 28  # the plot area's margins


@dataclass(frozen=True, slots=True)
class FailureSample:
    arrival: str  # UTC date and time
    reporter: str
    source_ip: str
    auth_failure: str
    header_from: str
    subject: str
    delivery_result: str
    headers: str


def failure_samples(store: Store, domain: str, since: int, until: int) -> list[FailureSample]:
    """The latest ``MAX_SAMPLES`` failure reports about ``domain`` (its subdomains too) that
    arrived in [since, until)."""
    name = normalize_domain(domain)
    rows = store.fetchall(
        "SELECT arrival_date, reporter, source_ip, auth_failure, header_from, subject, "
        "delivery_result, original_headers FROM received_failures "
        "WHERE (reported_domain = ? OR reported_domain LIKE ?) "
        "AND arrival_date >= ? AND arrival_date < ? "
        "ORDER BY arrival_date DESC, report_key LIMIT ?",
        (name, "%." + name, since, until, MAX_SAMPLES),
    )
    return [
        FailureSample(
            _when(int(arrival)),
            reporter,
            ip,
            failure,
            header_from,
            subject,
            delivery,
            headers[:MAX_SAMPLE_CHARS] + ("\n[...]" if len(headers) > MAX_SAMPLE_CHARS else ""),
        )
        for arrival, reporter, ip, failure, header_from, subject, delivery, headers in rows
    ]


def _when(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M") if stamp else "?"


def _day(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")


def _pass_rate_chart(days: list[tuple[int, int, int]]) -> dict[str, Any]:
    """The line's points (x, y, tooltip), y grid lines and x labels of the daily pass rate."""
    width = CHART_WIDTH - _LEFT - _RIGHT
    height = CHART_HEIGHT - _TOP - _BOTTOM
    span = max(1, days[-1][0] - days[0][0]) if days else 1
    points = []
    for day, total, passed in days:
        x = _LEFT + (width * (day - days[0][0]) / span if len(days) > 1 else width / 2)
        rate = passed / total if total else 0.0
        y = _TOP + height * (1 - rate)
        points.append((round(x, 1), round(y, 1), f"{_day(day)}: {100 * rate:.1f} % of {total}"))
    grid = [(_TOP + height * (1 - p / 100), f"{p} %") for p in (0, 25, 50, 75, 100)]
    step = max(1, len(days) // 6)
    labels = [(x, _day(day)) for (x, _, _), (day, _, _) in zip(points, days, strict=True)][::step]
    return {
        "points": points,
        "line": " ".join(f"{x},{y}" for x, y, _ in points),
        "grid": grid,
        "labels": labels,
        "left": _LEFT,
        "right": CHART_WIDTH - _RIGHT,
        "bottom": CHART_HEIGHT - _BOTTOM,
    }


def _volume_chart(summary: Summary) -> dict[str, Any]:
    """Horizontal bars: the largest sources, DMARC pass and fail side by side."""
    top = summary.sources[:MAX_BARS]
    most = max((s.messages for s in top), default=1) or 1
    label_width, bar_area, row = 330, CHART_WIDTH - 330 - 90, 22
    bars = []
    for index, source in enumerate(top):
        passed = bar_area * source.dmarc_pass / most
        failed = bar_area * source.dmarc_fail / most
        bars.append({
            "y": index * row,
            "label": f"{source.ip} ({source.organisation})",
            "pass_width": round(passed, 1),
            "fail_x": round(label_width + passed, 1),
            "fail_width": round(failed, 1),
            "end_x": round(label_width + passed + failed + 6, 1),
            "messages": source.messages,
            "title": f"{source.ip} ({source.organisation}): {source.messages} messages, "
            f"{source.dmarc_pass} pass, {source.dmarc_fail} fail",
        })  # fmt: skip
    return {"bars": bars, "label_width": label_width, "height": max(row, len(bars) * row)}


def _asset(name: str) -> str:
    return (importlib.resources.files("mailauth.reports") / "templates" / name).read_text("utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_dashboard(store: Store, summary: Summary, *, generated: int) -> str:
    """The page, as text (UTF-8 when written)."""
    days = daily_pass_rate(store, summary.domain, summary.since, summary.until,
                           include_unauthenticated=summary.unauthenticated.included)  # fmt: skip
    samples = failure_samples(store, summary.domain, summary.since, summary.until)
    script, style = _asset("dashboard.js"), _asset("dashboard.css")
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mailauth.reports", "templates"),
        autoescape=True,  # (every report text is attacker-controlled)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template("dashboard.html")
    return template.render(
        summary=summary,
        since=_day(summary.since),
        until=_day(summary.until - 1),
        generated=_when(generated),
        sources=summary.sources[:MAX_TABLE_SOURCES],
        more_sources=max(0, len(summary.sources) - MAX_TABLE_SOURCES),
        pass_chart=_pass_rate_chart(days),
        volume=_volume_chart(summary),
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        samples=samples,
        script=markupsafe.Markup(script),  # noqa: S704 - our own file, not report data
        style=markupsafe.Markup(style),  # noqa: S704 - likewise
        csp=f"default-src 'none'; script-src {_csp_hash(script)}; "
        f"style-src {_csp_hash(style)}; img-src data:; base-uri 'none'; form-action 'none'",
    )
