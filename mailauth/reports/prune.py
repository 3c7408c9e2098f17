"""Deleting old reporting periods from the store (``mailauth reports prune``).

The store keeps every period after its report is sent (docs/reports.md, "Privacy"): what
it says of who sent mail to this host is kept only as long as the operator wants.
:func:`prune_periods` deletes, in one write transaction, the counts, the published
policies and the send state of every period that ended before a time, whatever became of
its report, except a report that a ``reports send`` run holds claimed at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailauth.reports.store import Store

# A period of a policy domain whose report a send run holds (table alias t).
_CLAIMED = """EXISTS (SELECT 1 FROM outgoing_reports o WHERE o.policy_domain = t.policy_domain
    AND o.period_begin = t.period_begin AND o.state = 'claimed')"""


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows went: report rows (counts), policies (one a domain and period), send
    states (outgoing reports)."""

    counts: int
    policies: int
    outgoing: int


def prune_periods(store: Store, before: int) -> Pruned:
    """Delete every period that ended before ``before`` (its end < ``before``)."""
    with store.write():
        counts = store.execute(
            f"""DELETE FROM report_counts AS t WHERE EXISTS (SELECT 1 FROM report_policies p
                WHERE p.policy_domain = t.policy_domain AND p.period_begin = t.period_begin
                AND p.period_end < ?) AND NOT {_CLAIMED}""",  # noqa: S608 - constant text
            (before,),
        )
        policies = store.execute(
            f"DELETE FROM report_policies AS t WHERE t.period_end < ? AND NOT {_CLAIMED}",  # noqa: S608
            (before,),
        )
        outgoing = store.execute(
            "DELETE FROM outgoing_reports WHERE period_end < ? AND state <> 'claimed'",
            (before,),
        )
    return Pruned(counts, policies, outgoing)
