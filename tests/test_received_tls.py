"""Reading SMTP TLS reports (RFC 8460; mailauth.reports.received.tls_json, through .reader):
the RFC's example as JSON, gzip, and in an e-mail with the tlsrpt media types."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from mailauth.reports.received import ReportKind, TlsFailure, TlsReport
from mailauth.reports.received.limits import ReadLimits, ReportReadError
from mailauth.reports.received.reader import read_reports
from mailauth.reports.received.tls_json import read_tls
from tests.received_helpers import TLS_REPORT, gzipped, report_mail, tls_json


def test_the_rfc8460_example() -> None:
    report = read_tls(tls_json())
    assert (report.org_name, report.email, report.report_id) == (
        "Company-X", "sts-reporting@company-x.example", "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    )  # fmt: skip
    assert (report.begin, report.end) == (1459468800, 1459555199)
    [policy] = report.policies
    assert (policy.policy_type, policy.policy_domain, policy.success, policy.failure) == (
        "sts", "company-y.example", 5326, 303
    )  # fmt: skip
    assert policy.mx_hosts == ("*.mail.company-y.example",)
    assert len(policy.policy_strings) == 4
    assert [f.failed_session_count for f in policy.failures] == [100, 200, 3]
    assert policy.failures[2] == TlsFailure(
        "validation-failure", 3, sending_mta_ip="198.51.100.62",
        receiving_mx_hostname="mx-backup.mail.company-y.example", receiving_ip="198.51.100.62",
        failure_reason_code="X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
    )  # fmt: skip
    assert report.domain == "company-y.example"


@pytest.mark.parametrize("media_type", ["application/tlsrpt+gzip", "application/tlsrpt+json"])
def test_a_tls_report_email(media_type: str) -> None:
    content = gzipped(tls_json()) if media_type.endswith("gzip") else tls_json()
    name = "company-x.example!company-y.example!1459468800!1459555199.json"
    mail = report_mail([(name + (".gz" if media_type.endswith("gzip") else ""), media_type,
                         content)], subject="Report Domain: company-y.example")  # fmt: skip
    [outcome] = read_reports(mail)
    assert isinstance(outcome.report, TlsReport) and outcome.kind is ReportKind.TLS
    assert outcome.report.policies[0].success == 5326


def _changed(path: list[str], value: Any) -> bytes:
    document = copy.deepcopy(TLS_REPORT)
    target: Any = document
    for key in path[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (["report-id"], None, "no report-id in the TLS report"),
        (["date-range"], None, "no date-range object in the TLS report"),
        (["date-range", "start-datetime"], "yesterday",
         "date-range start-datetime is not an RFC 3339 date-time: 'yesterday'"),
        (["policies"], {}, "no policies array in the TLS report"),
        (["policies", "0", "summary", "total-failure-session-count"], -1,
         "policy 1: total-failure-session-count is not a count: -1"),
        (["policies", "0", "policy", "policy-domain"], None, "policy 1 has no policy-domain"),
    ],
)  # fmt: skip
def test_what_matters_is_strict(path: list[str], value: Any, error: str) -> None:
    with pytest.raises(ReportReadError) as caught:
        read_tls(_changed(path, value))
    assert str(caught.value) == error


def test_optional_fields_left_out() -> None:
    data = _changed(["policies", "0", "failure-details"], None)
    data = json.dumps({**json.loads(data), "contact-info": None}).encode()
    report = read_tls(data)
    assert (report.email, report.policies[0].failures) == ("", ())


def test_not_json_and_json_bombs() -> None:
    with pytest.raises(ReportReadError, match=r"^not valid JSON: "):
        read_tls(b"{not json")
    with pytest.raises(ReportReadError, match=r"^refused: JSON nested too deeply$"):
        read_tls(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ReportReadError, match=r"^not an SMTP TLS report"):
        read_tls(b"[1, 2]")
    many = json.dumps({**TLS_REPORT, "policies": TLS_REPORT["policies"] * 3}).encode()  # type: ignore[operator]
    with pytest.raises(ReportReadError, match=r"^refused: more than 2 policies$"):
        read_tls(many, ReadLimits(max_records=2))
