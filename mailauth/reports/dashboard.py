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
from mailauth.reports.received.model import Trust
from mailauth.reports.store import Store
from mailauth.reports.summary import Summary, daily_pass_rate, reporter_of

MAX_TABLE_SOURCES = 2000  # table rows (the most messages first)
MAX_BARS = 15  # sources in the volume chart
MAX_SAMPLES = 50  # failure reports shown (the latest)
MAX_SAMPLE_CHARS = 8192  # of each sample's original headers
CHART_WIDTH, CHART_HEIGHT = 900, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 40, 12, 28  # the plot area's margins


@dataclass(frozen=True, slots=True)
class FailureSample:
    """``reporter``: the organisational domain that signed the report e-mail when it is
    authenticated, else the reporter the report names (``verified`` false)."""

    arrival: str  # UTC date and time
    reporter: str
    source_ip: str
    auth_failure: str
    header_from: str
    subject: str
    delivery_result: str
    headers: str
    verified: bool = False


# A failure report is authenticated when its e-mail's aligned DKIM signature passed
# (auth_result 'pass', an auth_domain): its address is the e-mail's From address
# (mailauth.reports.received.failure_arf), so the address check of an aggregate report's
# trust holds by construction. The unauthenticated ones (parameter 5 = 1) only when no
# copy of the same report (reporter, address, Report-ID) is stored authenticated.
_SAMPLES = (
    "SELECT f.arrival_date, f.reporter, f.source_ip, f.auth_failure, f.header_from, "
    "f.subject, f.delivery_result, f.original_headers, f.auth_result, f.auth_domain "
    "FROM received_failures f "
    "WHERE (f.reported_domain = ? OR f.reported_domain LIKE ?) "
    "AND f.arrival_date >= ? AND f.arrival_date < ? "
    "AND (f.auth_result = 'pass' AND f.auth_domain <> '' "
    "OR (? = 1 AND NOT EXISTS (SELECT 1 FROM received_failures c "
    "WHERE c.report_id = f.report_id AND c.reporter = f.reporter AND c.email = f.email "
    "AND c.auth_result = 'pass' AND c.auth_domain <> ''))) "
    "ORDER BY f.arrival_date DESC, f.report_key LIMIT ?"
)


def failure_samples(store: Store, domain: str, since: int, until: int, *,
                    include_unauthenticated: bool = False) -> list[FailureSample]:  # fmt: skip
    """The latest ``MAX_SAMPLES`` failure reports about ``domain`` (its subdomains too) that
    arrived in [since, until): the authenticated ones, as a summary counts aggregate
    reports; with ``include_unauthenticated`` the others too, except a copy of a report
    that is stored authenticated as well (the same reporter, address and Report-ID: an
    earlier ``temperror``, a forged copy), shown once."""
    name = normalize_domain(domain)
    rows = store.fetchall(
        _SAMPLES, (name, "%." + name, since, until, int(include_unauthenticated), MAX_SAMPLES)
    )
    samples = []
    for arrival, reporter, ip, failure, header_from, subject, delivery, headers, *auth in rows:
        trust = Trust.AUTHENTICATED if auth[0] == "pass" and auth[1] else Trust.UNAUTHENTICATED
        shown, verified = reporter_of(str(reporter), str(auth[1]), trust)
        cut = headers[:MAX_SAMPLE_CHARS] + ("\n[...]" if len(headers) > MAX_SAMPLE_CHARS else "")
        samples.append(FailureSample(_when(int(arrival)), shown, ip, failure, header_from,
                                     subject, delivery, cut, verified))  # fmt: skip
    return samples


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
    samples = failure_samples(store, summary.domain, summary.since, summary.until,
                              include_unauthenticated=summary.unauthenticated.included)  # fmt: skip
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
