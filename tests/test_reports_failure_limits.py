"""The RFC 9991 failure-report queue's shared limits (SQLite and a real PostgreSQL): one
organisation's share of the queue (a wildcard DMARC record, every subdomain a policy domain
with rate windows of its own, cannot fill it for everyone else), the window's limit for all
destinations together, and captures whose rate window is already forgotten (a long store
outage); the collector counts and logs what they refuse."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailauth.config import load_milter_config
from mailauth.config_failure import FailureConfig
from mailauth.reports import open_store
from mailauth.reports.failure import failure_facts
from mailauth.reports.failure_collect import FailureCollector
from mailauth.reports.failure_queue import (
    EnqueueOutcome,
    QueuedFailure,
    enqueue_failures,
    queue_owner,
    window_of,
)
from mailauth.reports.store import Store
from tests.failure_helpers import ARRIVAL, BAD, SPOOF, verdict_of

HOUR = 3600
FACTS = failure_facts(verdict_of(SPOOF, BAD), ip=BAD["ip"], arrival=ARRIVAL)


def _report(domain: str, created: float = ARRIVAL) -> QueuedFailure:
    """A report of ``domain`` to an address of that domain's own organisation (no external
    verification needed: what an attacker's wildcard record asks for)."""
    org = queue_owner(domain)
    ruf = tuple(f"mailto:ruf{i}@{org}" for i in range(3))
    return QueuedFailure(domain, "dmarc", ruf, FACTS, SPOOF[:200], False, created)


def _enqueue(
    store: Store,
    reports: list[QueuedFailure],
    *,
    now: float = ARRIVAL,
    max_queued: int = 1000,
    max_per_org: int = 10,
    window_limit: int = 10_000,
) -> EnqueueOutcome:
    return enqueue_failures(
        store, reports, limit=10, period=HOUR, max_queued=max_queued,
        max_per_org=max_per_org, window_limit=window_limit, now=now,
    )  # fmt: skip


def test_the_queue_owner_is_the_organisational_domain_by_the_public_suffix_list() -> None:
    assert queue_owner("x1.y.attacker.example") == "attacker.example"
    assert queue_owner("Mail.Bank.CO.UK.") == "bank.co.uk"
    assert queue_owner("co.uk") == "co.uk"  # (a public suffix: its own)


def test_one_organisation_cannot_fill_the_queue(store_url: str) -> None:
    store = open_store(store_url)
    try:
        # *.attacker.example: 200 policy domains, each with rate windows of its own
        flood = [_report(f"x{i}.attacker.example") for i in range(200)]
        outcome = _enqueue(store, flood)
        assert (outcome.queued, outcome.over_share, outcome.dropped) == (10, 190, 0)
        # ... in a later batch too (the share counts what waits in the store)
        assert _enqueue(store, flood[:5]).over_share == 5
        # every other organisation still gets its reports queued
        victims = [_report("example.com"), _report("mail.bank.example")]
        assert _enqueue(store, victims).queued == 2
        waiting = store.fetchall(
            "SELECT COUNT(*) FROM failure_reports WHERE policy_domain LIKE '%attacker.example'"
        )
        assert waiting == [(10,)]
    finally:
        store.close()


def test_the_share_counts_what_already_waits_in_small_batches(store_url: str) -> None:
    store = open_store(store_url)
    try:
        flood = [_report(f"x{i}.attacker.example") for i in range(13)]
        assert _enqueue(store, flood[:5]).queued == 5
        outcome = _enqueue(store, flood[5:])
        assert (outcome.queued, outcome.over_share) == (5, 3)
    finally:
        store.close()


def test_the_window_limit_holds_for_all_destinations_together(store_url: str) -> None:
    store = open_store(store_url)
    try:
        many = [_report(f"d{i}.example") for i in range(8)]  # eight organisations
        outcome = _enqueue(store, many, window_limit=5)
        assert (outcome.queued, outcome.over_window) == (5, 3)
        assert _enqueue(store, many[:1], window_limit=5).over_window == 1  # next batch too
        # the next window has its own count
        later = [_report(f"d{i}.example", ARRIVAL + HOUR) for i in range(3)]
        assert _enqueue(store, later, now=ARRIVAL + HOUR, window_limit=5).queued == 3
        rows = store.fetchall("SELECT window_begin, reports FROM failure_rate "
                              "WHERE destination = '*' ORDER BY 1")  # fmt: skip
        assert rows == [(window_of(ARRIVAL, HOUR), 5), (window_of(ARRIVAL + HOUR, HOUR), 3)]
    finally:
        store.close()


def test_a_report_whose_window_is_forgotten_is_refused_as_rate_limited(store_url: str) -> None:
    """A capture kept in memory through a store outage longer than a window: its window's
    counts were deleted, so it would count against a fresh one (F7)."""
    store = open_store(store_url)
    try:
        old, previous = ARRIVAL - 2 * HOUR, ARRIVAL - HOUR
        outcome = _enqueue(store, [_report("example.com", old)] * 3)
        assert (outcome.queued, outcome.rate_limited, outcome.full) == (0, 3, [])
        # the window before the current one is still counted: queued
        assert _enqueue(store, [_report("example.com", previous)]).queued == 1
    finally:
        store.close()


def test_the_default_share_is_a_hundredth_of_the_queue(tmp_path: Path) -> None:
    assert FailureConfig().org_share == 100 and FailureConfig().window_limit == 1000
    assert FailureConfig(max_queued=50).org_share == 1
    config_file = tmp_path / "milter.toml"
    config_file.write_text(
        'authserv_id = "mx.example.org"\n[reports]\nstore = "r.sqlite"\n'
        "failure_reports = true\nfailure_max_queued_per_org = 7\nfailure_window_limit = 30\n"
    )
    failure = load_milter_config(config_file).reports.failure
    assert (failure.org_share, failure.window_limit) == (7, 30)


def test_the_collector_counts_and_logs_what_the_limits_refuse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = FailureConfig(enabled=True, rate_limit=100, max_queued_per_org=2)
    clock = [ARRIVAL]
    collector = FailureCollector(str(tmp_path / "r.sqlite"), config, clock=lambda: clock[0])
    failing = verdict_of(SPOOF, BAD)
    header = SPOOF.split(b"\r\n\r\n")[0] + b"\r\n"
    for _ in range(5):
        collector.offer(failing, header=header, ip=BAD["ip"], mail_from="x", now=ARRIVAL)
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert collector.flush()
        collector._after_write()
    assert (collector.queued, collector.over_share, collector.dropped) == (2, 3, 0)
    assert any("3 by an organisation's share" in r.message for r in caplog.records)
    # a capture taken before a store outage longer than its window and the next (F7)
    clock[0] = ARRIVAL + 3 * HOUR
    collector.offer(failing, header=header, ip=BAD["ip"], mail_from="x", now=ARRIVAL)
    assert collector.flush()
    assert (collector.queued, collector.rate_limited) == (2, 1)
    collector.close()


def test_a_share_is_counted_from_the_batchs_own_organisations_by_an_index(
    store_url: str,
) -> None:
    """Every flush counted the reports waiting of every policy domain (a GROUP BY over the
    whole queue, each row read: about 0.1 s at 10,000 waiting): now each report carries
    its organisation (queue_owner), and the count reads an index range of the batch's
    own organisations only."""
    store = open_store(store_url)
    try:
        others = [_report(f"d{i}.other{i % 7}.example") for i in range(40)]
        assert _enqueue(store, others, max_per_org=1000).queued == 40
        flood = [_report(f"x{i}.attacker.example") for i in range(12)]
        outcome = _enqueue(store, flood, max_per_org=10)
        assert (outcome.queued, outcome.over_share) == (10, 2)
        owners = store.fetchall(
            "SELECT queue_owner, COUNT(*) FROM failure_reports GROUP BY queue_owner"
        )
        assert dict(owners) == {"attacker.example": 10,
                                **{f"other{i}.example": 6 - (i > 4) for i in range(7)}}  # fmt: skip
        sql = (
            "SELECT queue_owner, COUNT(*) FROM failure_reports WHERE queue_owner IN (?, ?) "
            "AND state IN (?, ?) GROUP BY queue_owner"
        )
        params = ("attacker.example", "other1.example", "pending", "claimed")
        if store.engine == "sqlite":
            plan = " ".join(str(row) for row in store.fetchall(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "COVERING INDEX failure_reports_owner" in plan
        else:
            store.execute("SET enable_seqscan = off")  # (a small table: the index usable)
            plan = " ".join(str(row) for row in store.fetchall(f"EXPLAIN {sql}", params))
            assert "failure_reports_owner" in plan
    finally:
        store.close()


def test_reports_queued_before_the_owner_column_count_in_their_share(store_url: str) -> None:
    """A store migrated to version 7 with reports waiting: theirs is empty until a batch
    needs the counts, which gives them their organisation first."""
    store = open_store(store_url)
    try:
        old = [_report(f"x{i}.attacker.example") for i in range(8)]
        assert _enqueue(store, old).queued == 8
        store.execute("UPDATE failure_reports SET queue_owner = ''")  # (as version 6 left them)
        outcome = _enqueue(store, [_report(f"y{i}.attacker.example") for i in range(5)])
        assert (outcome.queued, outcome.over_share) == (2, 3)
        assert store.fetchall("SELECT DISTINCT queue_owner FROM failure_reports") == [
            ("attacker.example",)
        ]
    finally:
        store.close()
