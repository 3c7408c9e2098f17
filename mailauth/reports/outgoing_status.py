"""What ``mailauth reports show`` lists of the aggregate reports (:mod:`.outgoing`): those
the next ``reports send`` would send, with their claim state when one exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailauth.reports.outgoing import ReportSettings
from mailauth.reports.store import Store


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """What ``mailauth reports show`` lists: a report the next run would send (``state``
    ``new``: never claimed), or one being sent."""

    policy_domain: str
    begin: int
    end: int
    rua: tuple[str, ...]
    records: int
    messages: int
    state: str
    attempts: int
    file_name: str
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_domain": self.policy_domain,
            "begin": self.begin,
            "end": self.end,
            "rua": list(self.rua),
            "records": self.records,
            "messages": self.messages,
            "state": self.state,
            "attempts": self.attempts,
            "file_name": self.file_name,
            "last_error": self.last_error,
        }


def report_status(store: Store, settings: ReportSettings, now: float) -> list[ReportStatus]:
    """What the next run would send: closed periods with ``rua=`` not yet sent (with their
    claim state when one exists), oldest first."""
    rows = store.fetchall(
        """SELECT p.policy_domain, p.period_begin, p.period_end, p.rua,
            (SELECT COUNT(*) FROM report_counts c
             WHERE c.policy_domain = p.policy_domain AND c.period_begin = p.period_begin),
            (SELECT COALESCE(SUM(c.messages), 0) FROM report_counts c
             WHERE c.policy_domain = p.policy_domain AND c.period_begin = p.period_begin),
            COALESCE(o.state, 'new'), COALESCE(o.attempts, 0), COALESCE(o.file_name, ''),
            COALESCE(o.last_error, '')
        FROM report_policies p LEFT JOIN outgoing_reports o
            ON o.policy_domain = p.policy_domain AND o.period_begin = p.period_begin
        WHERE p.period_end + ? <= ? AND p.rua <> ''
            AND COALESCE(o.state, 'new') NOT IN ('sent', 'abandoned')
        ORDER BY p.period_begin, p.policy_domain""",
        (settings.grace, int(now)),
    )
    return [
        ReportStatus(d, b, e, tuple(rua.split()), int(r), int(m), s, int(a), f, err)
        for d, b, e, rua, r, m, s, a, f, err in rows
    ]
