"""The human report of ``mailauth check``: a table per area, colour only for terminals."""

from __future__ import annotations

from typing import Any

from mailauth.check.report import Area, DomainReport, Status

_COLOURS = {Status.PASS: "\033[32m", Status.WARN: "\033[33m", Status.FAIL: "\033[31m"}
_RESET = "\033[0m"


def _tree(node: dict[str, Any], depth: int) -> list[str]:
    """The include/redirect tree, one record per line, with each record's lookup cost."""
    lines = []
    for child in node.get("children", []):
        indent = "  " * depth
        lines.append(
            f"  {indent}{child['via']} {child['domain']}: {child['record']}"
            f"  [{child['dns_lookups']}]"
        )
        lines.extend(_tree(child, depth + 1))
    return lines


def render_report(report: DomainReport, *, colour: bool = False, verbose: bool = True) -> str:
    """Findings grouped by area; ``verbose`` False keeps only warnings and failures."""

    def paint(status: Status) -> str:
        word = f"{status:<4}"
        return f"{_COLOURS[status]}{word}{_RESET}" if colour else word

    fails = sum(f.status is Status.FAIL for f in report.findings)
    warns = sum(f.status is Status.WARN for f in report.findings)
    lines = [f"{report.domain}: {paint(report.status)} ({fails} fail, {warns} warn)"]
    spf = report.details.get("spf") or {}
    if spf.get("record"):
        lines.append(
            f"  SPF record: {spf['record']}  [{spf['dns_lookups']}/10 lookups,"
            f" {spf['void_lookups']}/2 void]"
        )
        lines.extend(_tree(spf.get("tree") or {}, 2))
    dmarc = report.details.get("dmarc") or {}
    if dmarc.get("record"):
        lines.append(f"  DMARC record (_dmarc.{dmarc['record_domain']}): {dmarc['record']}")
    for area in Area:
        findings = [f for f in report.findings if f.area is area]
        if not verbose:
            findings = [f for f in findings if f.status is not Status.PASS]
        for finding in findings:
            lines.append(f"  {area!s:<8} {paint(finding.status)}  {finding.id}: {finding.message}")
            if finding.fix and finding.status is not Status.PASS:
                lines.append(f"  {'':<8} {'':<4}  fix: {finding.fix}")
    return "\n".join(lines)


def render_totals(reports: list[DomainReport]) -> str:
    """The last line of a run over several domains."""
    failing = sum(r.status is Status.FAIL for r in reports)
    warning = sum(r.status is Status.WARN for r in reports)
    errors = sum(r.dns_errors for r in reports)
    return (
        f"{len(reports)} domains checked: {failing} failing, {warning} with warnings only, "
        f"{len(reports) - failing - warning} passing; {errors} with DNS errors"
    )
