"""Received reports for the summary and dashboard tests: a small hand-built set (its expected
numbers are written in tests/test_reports_summary.py) and a realistic generated one (the
dashboard's screenshot, benchmarks/bench_summary.py), stored through
mailauth.reports.received.save_report as ``reports import`` stores them."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

from mailauth.reports.received import (
    AggregateRecord,
    AggregateReport,
    DkimAuth,
    FailureReport,
    ReportedPolicy,
    SpfAuth,
    save_report,
)
from mailauth.reports.received.model import AuthResult, ReportAuth
from mailauth.reports.store import Store


def day(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


def _record(  # noqa: PLR0917 - the columns of a record, in order
    ip: str, count: int, disposition: str, dkim: str, spf: str,
            auth_dkim: tuple[tuple[str, str], ...] = (),
            auth_spf: tuple[tuple[str, str], ...] = ()) -> AggregateRecord:  # fmt: skip
    return AggregateRecord(
        ip, count, disposition, dkim, spf, header_from="example.com",
        auth_dkim=tuple(DkimAuth(d, "s1", r) for d, r in auth_dkim),
        auth_spf=tuple(SpfAuth(d, "mfrom", r) for d, r in auth_spf),
    )  # fmt: skip


def _report(org: str, report_id: str, begin: str, domain: str,
            *records: AggregateRecord) -> AggregateReport:  # fmt: skip
    start = day(begin)
    return AggregateReport(
        org, f"dmarc@{org.lower()}", report_id, start, start + 86_399,
        ReportedPolicy(domain, p="none"), records,
    )  # fmt: skip


def hand_built_reports() -> list[AggregateReport]:
    """Two reports about example.com in January 2026, plus one about another domain and one
    from before the period (both must be left out)."""
    return [
        _report("google.com", "g-1", "2026-01-10", "example.com",
                _record("192.0.2.1", 100, "none", "pass", "pass",
                        (("example.com", "pass"),), (("example.com", "pass"),)),
                _record("198.51.100.7", 40, "none", "pass", "fail",
                        (("example.com", "pass"), ("sendgrid.net", "pass")),
                        (("sendgrid.net", "pass"),)),
                _record("203.0.113.9", 10, "none", "fail", "fail", (),
                        (("spammer.example", "fail"),))),
        _report("Yahoo", "y-1", "2026-01-11", "example.com",
                _record("192.0.2.1", 50, "none", "pass", "fail", (("example.com", "pass"),)),
                _record("203.0.113.9", 5, "reject", "fail", "fail"),
                _record("198.51.100.7", 10, "none", "fail", "pass", (),
                        (("bounces.example.com", "pass"),))),
        _report("google.com", "g-2", "2026-01-10", "example.org",
                _record("192.0.2.1", 1000, "none", "fail", "fail")),
        _report("google.com", "g-0", "2025-12-01", "example.com",
                _record("192.0.2.1", 7, "none", "fail", "fail")),
    ]  # fmt: skip


def store_reports(store: Store, reports: list[AggregateReport] | list[FailureReport],
                  *, authenticated: bool = True) -> None:  # fmt: skip
    """Store ``reports`` as imported from e-mails that their reporters signed (or, not
    ``authenticated``, as bare files)."""
    for report in reports:
        domain = report.email.rpartition("@")[2]
        signed = ReportAuth(AuthResult.PASS, domain, domain, from_address=report.email.lower())
        stored = replace(report, auth=signed) if authenticated else report
        save_report(store, stored, source="test", now=day("2026-02-01"))


def failure_sample(reporter: str, subject: str, headers: str, when: str) -> FailureReport:
    return FailureReport(
        reporter, f"abuse@{reporter}", f"<{reporter}-{when}@example>", feedback_type="auth-failure",
        auth_failure="dmarc", arrival_date=day(when) + 3600, source_ip="203.0.113.9",
        reported_domain="example.com", header_from="example.com", subject=subject,
        delivery_result="reject", original_headers=headers,
    )  # fmt: skip


# -- a realistic year --------------------------------------------------------------------
_SENDERS = (  # (address prefix, sources, d= signing, SPF domain, DKIM aligned, SPF aligned)
    ("209.85.220.", 40, "example.com", "example.com", 0.995, 0.99),  # Google Workspace
    ("40.107.22.", 25, "example.com", "example.com", 0.99, 0.98),  # Microsoft 365
    ("167.89.115.", 12, "sendgrid.net", "sendgrid.net", 0.0, 0.0),  # an ESP, unaligned
    ("198.2.180.", 8, "example.com", "mcsv.net", 0.97, 0.0),  # an ESP with the owner's key
    ("192.0.2.", 6, "", "example.com", 0.0, 0.95),  # the owner's own server, SPF only
    ("203.0.113.", 60, "", "", 0.0, 0.0),  # forgeries
    ("2001:db8:40::", 10, "example.com", "example.com", 0.6, 0.0),  # a mailing list
)
_REPORTERS = ("google.com", "Outlook.com", "Yahoo", "Mail.Ru", "fastmail.com",
              "comcast.net", "web.de", "Zoho", "protonmail.ch", "gmx.net")  # fmt: skip


def generated_year(
    first_day: str, days: int, *, reports_per_day: int = 10, records_per_report: int = 40,
    seed: int = 17,
) -> list[AggregateReport]:  # fmt: skip
    """``days`` days of aggregate reports about example.com from ten reporters: sources of
    seven kinds (a mail provider, an ESP, forgeries ...), with alignment rates that improve
    over the year (the owner fixing SPF and DKIM as a domain owner would)."""
    rng = random.Random(seed)
    start = day(first_day)
    reports: list[AggregateReport] = []
    for d in range(days):
        progress = d / max(1, days - 1)
        for r in range(reports_per_day):
            org = _REPORTERS[r % len(_REPORTERS)]
            records = []
            for _ in range(records_per_report):
                prefix, count, signer, spf_domain, dkim_rate, spf_rate = rng.choice(_SENDERS)
                ip = f"{prefix}{rng.randrange(1, count + 1)}"
                fixed = 0.6 + 0.4 * progress  # how much of it the owner has fixed by now
                dkim = "pass" if rng.random() < dkim_rate * fixed else "fail"
                spf = "pass" if rng.random() < spf_rate * fixed else "fail"
                auth_dkim = ((signer, "pass"),) if signer else ()
                auth_spf = ((spf_domain, "pass" if spf == "pass" or not spf_rate else "fail"),)
                if not spf_domain:
                    auth_spf = ((f"forged{rng.randrange(9)}.example", "fail"),)
                disposition = (
                    "none" if "pass" in (dkim, spf) else rng.choice(("none", "none", "quarantine"))
                )
                records.append(_record(ip, rng.randrange(1, 400), disposition, dkim, spf,
                                       auth_dkim, auth_spf))  # fmt: skip
            begin = start + d * 86_400
            reports.append(AggregateReport(
                org, f"dmarc@{org.lower()}", f"{org}-{begin}-{r}", begin, begin + 86_399,
                ReportedPolicy("example.com", p="none"), tuple(records),
            ))  # fmt: skip
    return reports
