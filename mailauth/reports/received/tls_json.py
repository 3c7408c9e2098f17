"""SMTP TLS reports (RFC 8460 section 4): the JSON report, once decompressed.

Required (section 4.4): ``organization-name``, ``date-range`` (``start-datetime``,
``end-datetime``: RFC 3339 date-times), ``report-id``, ``policies``, each with its
``policy`` (``policy-type``, ``policy-domain``) and ``summary`` (the two session counts).
Optional fields left out read as "" or 0. At most ``max_records`` policies, and failure
details per policy; strings cut at ``max_text`` characters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mailauth.reports.received.limits import DEFAULT_LIMITS, ReadLimits, ReportReadError, clip
from mailauth.reports.received.model import TlsFailure, TlsPolicy, TlsReport

_MAX_STRINGS = 100  # policy-string lines and mx-host entries kept per policy


def read_tls(data: bytes, limits: ReadLimits = DEFAULT_LIMITS) -> TlsReport:
    """The TLS report in ``data`` (JSON, UTF-8); ReportReadError when it cannot be read."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ReportReadError("a TLS report that is not UTF-8") from None
    except RecursionError:
        raise ReportReadError("refused: JSON nested too deeply") from None
    except ValueError as exc:
        raise ReportReadError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ReportReadError("not an SMTP TLS report: the JSON is not an object")
    reader = _Reader(limits)
    dates = reader.object(document, "date-range")
    policies = reader.array(document, "policies")
    if len(policies) > limits.max_records:
        raise ReportReadError(f"refused: more than {limits.max_records:,} policies")
    report_id = reader.string(document, "report-id")
    if not report_id:
        raise ReportReadError("no report-id in the TLS report")
    return TlsReport(
        org_name=reader.string(document, "organization-name"),
        email=reader.string(document, "contact-info"),
        report_id=report_id,
        begin=_datetime(reader.string(dates, "start-datetime"), "start-datetime"),
        end=_datetime(reader.string(dates, "end-datetime"), "end-datetime"),
        policies=tuple(reader.policy(p, n) for n, p in enumerate(policies, 1)),
    )


class _Reader:
    def __init__(self, limits: ReadLimits) -> None:
        self.limits = limits

    def object(self, parent: dict[str, Any], key: str) -> dict[str, Any]:
        value = parent.get(key)
        if not isinstance(value, dict):
            raise ReportReadError(f"no {key} object in the TLS report")
        return value

    def array(self, parent: dict[str, Any], key: str, *, required: bool = True) -> list[Any]:
        value = parent.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise ReportReadError(f"no {key} array in the TLS report")
        return value

    def string(self, parent: dict[str, Any], key: str) -> str:
        value = parent.get(key, "")
        if not isinstance(value, str):
            value = str(value) if isinstance(value, int | float) else ""
        return clip(value.strip(), self.limits.max_text)

    def count(self, parent: dict[str, Any], key: str, what: str) -> int:
        value = parent.get(key, 0)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= self.limits.max_count
        ):
            raise ReportReadError(f"{what}: {key} is not a count: {clip(repr(value), 40)}")
        return value

    def policy(self, item: Any, number: int) -> TlsPolicy:
        what = f"policy {number}"
        if not isinstance(item, dict):
            raise ReportReadError(f"{what} is not an object")
        policy = self.object(item, "policy")
        summary = self.object(item, "summary")
        details = self.array(item, "failure-details", required=False)
        if len(details) > self.limits.max_records:
            raise ReportReadError(f"refused: {what} has more than "
                                  f"{self.limits.max_records:,} failure details")  # fmt: skip
        domain = self.string(policy, "policy-domain").lower().rstrip(".")
        if not domain:
            raise ReportReadError(f"{what} has no policy-domain")
        return TlsPolicy(
            policy_type=self.string(policy, "policy-type").lower(),
            policy_domain=domain,
            success=self.count(summary, "total-successful-session-count", what),
            failure=self.count(summary, "total-failure-session-count", what),
            policy_strings=self.strings(policy, "policy-string"),
            mx_hosts=self.strings(policy, "mx-host"),
            failures=tuple(self.failure(d, what) for d in details),
        )

    def strings(self, parent: dict[str, Any], key: str) -> tuple[str, ...]:
        value = parent.get(key)
        if not isinstance(value, list):
            return ()
        return tuple(clip(s, self.limits.max_text) for s in value[:_MAX_STRINGS]
                     if isinstance(s, str))  # fmt: skip

    def failure(self, item: Any, what: str) -> TlsFailure:
        if not isinstance(item, dict):
            raise ReportReadError(f"{what}: a failure detail is not an object")
        return TlsFailure(
            result_type=self.string(item, "result-type").lower(),
            failed_session_count=self.count(item, "failed-session-count", what),
            sending_mta_ip=self.string(item, "sending-mta-ip"),
            receiving_mx_hostname=self.string(item, "receiving-mx-hostname").lower(),
            receiving_mx_helo=self.string(item, "receiving-mx-helo"),
            receiving_ip=self.string(item, "receiving-ip"),
            additional_information=self.string(item, "additional-information"),
            failure_reason_code=self.string(item, "failure-reason-code"),
        )


def _datetime(text: str, what: str) -> int:
    """An RFC 3339 date-time as a Unix time (``Z`` or an offset; no offset: UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReportReadError(f"date-range {what} is not an RFC 3339 date-time: "
                              f"{clip(text, 40)!r}") from None  # fmt: skip
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
