"""The failure-report settings of ``[reports]`` (RFC 9991; docs/reports.md, "Failure
reports"): their keys and types, their values read from the table, and their checks, one
problem per line as :mod:`mailauth.config` reports them.

Off by default (privacy: a report carries one message's header to whoever the domain owner
names). The keys sit in ``[reports]`` beside the aggregate ones:

- ``failure_reports`` (false): queue a report when a DMARC evaluation calls for one;
- ``failure_include_body`` (false): the whole message, not only its header section;
- ``failure_include_recipients`` (false): ``Original-Rcpt-To`` fields (your users);
- ``failure_rate_limit`` / ``failure_rate_period`` (10 per 3600 s): reports per
  destination address per window, counted in the store (all processes together);
- ``failure_max_size`` (128 KiB): the most octets of the original message a report keeps;
- ``failure_max_queued`` (10,000): reports waiting in the store at most;
- ``failure_max_queued_per_org`` (0: ``failure_max_queued`` / 100, at least 1): of them,
  at most this many for the policy domains under one organisational domain (Public Suffix
  List), so that one sender's wildcard DMARC record cannot fill the queue;
- ``failure_window_limit`` (1,000): reports queued per rate window (``failure_rate_period``)
  for all destinations together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAILURE_KEYS: dict[str, type | tuple[type, ...]] = {
    "failure_reports": bool,
    "failure_include_body": bool,
    "failure_include_recipients": bool,
    "failure_rate_limit": int,
    "failure_rate_period": int,
    "failure_max_size": int,
    "failure_max_queued": int,
    "failure_max_queued_per_org": int,
    "failure_window_limit": int,
}

_RANGES = {  # key: (lowest, highest)
    "failure_rate_limit": (1, 1_000_000),
    "failure_rate_period": (60, 7 * 86400),
    "failure_max_size": (4096, 16 << 20),
    "failure_max_queued": (10, 10_000_000),
    "failure_max_queued_per_org": (0, 10_000_000),
    "failure_window_limit": (1, 10_000_000),
}


@dataclass(frozen=True, slots=True)
class FailureConfig:
    """The failure-report keys of ``[reports]`` (see the module)."""

    enabled: bool = False
    include_body: bool = False
    include_recipients: bool = False
    rate_limit: int = 10
    rate_period: int = 3600
    max_size: int = 128 << 10
    max_queued: int = 10_000
    max_queued_per_org: int = 0  # (0: max_queued / 100, see org_share)
    window_limit: int = 1_000

    @property
    def org_share(self) -> int:
        """The most reports waiting for one organisation's policy domains."""
        return self.max_queued_per_org or max(1, self.max_queued // 100)


def failure_config(table: Any) -> FailureConfig:
    """The values of ``[reports]`` (those of a wrong type: the defaults, their problem
    reported by the type check)."""
    defaults = FailureConfig()
    if not isinstance(table, dict):
        return defaults

    def get(key: str, default: Any) -> Any:
        value = table.get(key, default)
        ok = isinstance(value, type(default)) and (
            isinstance(default, bool) or not isinstance(value, bool)
        )
        return value if ok else default

    return FailureConfig(
        enabled=get("failure_reports", defaults.enabled),
        include_body=get("failure_include_body", defaults.include_body),
        include_recipients=get("failure_include_recipients", defaults.include_recipients),
        rate_limit=get("failure_rate_limit", defaults.rate_limit),
        rate_period=get("failure_rate_period", defaults.rate_period),
        max_size=get("failure_max_size", defaults.max_size),
        max_queued=get("failure_max_queued", defaults.max_queued),
        max_queued_per_org=get("failure_max_queued_per_org", defaults.max_queued_per_org),
        window_limit=get("failure_window_limit", defaults.window_limit),
    )


def failure_problems(config: FailureConfig, store: str) -> list[str]:
    """What is wrong with the values, one line each (``reports.KEY: problem``)."""
    problems = []
    for key, value in (
        ("failure_rate_limit", config.rate_limit),
        ("failure_rate_period", config.rate_period),
        ("failure_max_size", config.max_size),
        ("failure_max_queued", config.max_queued),
        ("failure_max_queued_per_org", config.max_queued_per_org),
        ("failure_window_limit", config.window_limit),
    ):
        low, high = _RANGES[key]
        if not low <= value <= high:
            problems.append(f"reports.{key}: must be from {low} to {high}, not {value}")
    if config.enabled and not store:
        problems.append("reports.failure_reports: needs reports.store (the queue is there)")
    return problems
