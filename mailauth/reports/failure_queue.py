"""The queue of RFC 9991 failure reports in the report store (tables ``failure_reports`` and
``failure_rate``, schema version 4): queued with the rate limit, the queue's cap and each
organisation's share of it.

:func:`enqueue_failures` writes a batch in one transaction: each report's ruf addresses
(mailto: only, as :func:`~mailauth.reports.uri.parse_report_uris` keeps them) each take one
unit of their destination's rate window (``failure_rate``: reports per address and policy
domain per ``period``, windows starting at multiples of it, UTC) -- an address whose window
is full is left out of that report, a report left with none is not queued (RFC 9991 2:
reports beyond the limit are discarded) -- and a report is queued only while fewer than
``max_queued`` wait, fewer than ``max_per_org`` of them for its policy domain's
organisation (one sender's wildcard record, every subdomain a policy domain with its own
rate windows, cannot fill the queue for everyone else) and fewer than ``window_limit``
were queued in its window (``failure_rate``'s ``*`` row: what all destinations together
get through our relay).
The transaction holds the store's lock for queueing (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
a transaction-level advisory lock), so that the limits and caps hold exactly for every
process writing to one store.

The claims, leases and conclusions of the sender are :mod:`.failure_claims`'s.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from mailauth.dmarc.discovery import psl_organizational_domain
from mailauth.reports.failure import DkimFailure, FailureFacts
from mailauth.reports.store import Store
from mailauth.reports.uri import parse_report_uris

_QUEUE_LOCK = 0x6D61696C72756600  # "mailruf": the advisory lock of enqueueing (PostgreSQL)
WAITING = ("pending", "claimed")


@dataclass(frozen=True, slots=True)
class QueuedFailure:
    """One failure report to queue: about one message, for one Auth-Failure type
    (``dmarc``, ``signature``, ``bodyhash``, ``spf``), to the ``ruf`` URIs as published;
    ``original``: the header section (and the body when ``has_body``)."""

    policy_domain: str
    auth_failure: str
    ruf: tuple[str, ...]
    facts: FailureFacts
    original: bytes
    has_body: bool
    created: float


@dataclass
class EnqueueOutcome:
    """What one batch became: reports queued, refused by the rate limit (every address's
    window full, or the window already forgotten), dropped (the queue held ``max_queued``),
    refused because their organisation held its share of the queue (``over_share``) or
    their window its cap (``over_window``), and the (policy domain, ruf list, window)s
    every one of whose addresses was full (the collector stops copying their messages for
    the window)."""

    queued: int = 0
    rate_limited: int = 0
    dropped: int = 0
    over_share: int = 0
    over_window: int = 0
    full: list[tuple[str, tuple[str, ...], int]] = dataclasses.field(default_factory=list)


def facts_to_json(facts: FailureFacts) -> str:
    return json.dumps(dataclasses.asdict(facts), separators=(",", ":"), ensure_ascii=False)


_FACTS = frozenset(f.name for f in dataclasses.fields(FailureFacts)) - {"dkim_failures"}
_DKIM = frozenset(f.name for f in dataclasses.fields(DkimFailure))


def facts_from_json(text: str) -> FailureFacts:
    """The facts a queued report was written with (keys this version does not know are
    left out, those it lacks take their defaults). ValueError when they are unreadable."""
    try:
        data = json.loads(text)
        failures = tuple(
            DkimFailure(**{k: v for k, v in d.items() if k in _DKIM})
            for d in data.get("dkim_failures", ())
        )
        known = {k: v for k, v in data.items() if k in _FACTS}
        known["rcpt_to"] = tuple(known.get("rcpt_to", ()))
        facts = FailureFacts(**known, dkim_failures=failures)
    except (TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable facts of a queued failure report: {exc}") from None
    _check_types(facts)
    for failure in facts.dkim_failures:
        _check_types(failure)
    return facts


def _check_types(facts: FailureFacts | DkimFailure) -> None:
    """ValueError unless every field has its declared type (a row written by hand or by
    another version: a wrong type would fail later, in the middle of a send run)."""
    for f in dataclasses.fields(facts):
        value = getattr(facts, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "str":
            ok = isinstance(value, str)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and 0 <= value < 253402300800  # (before the year 10000)
        elif kind == "tuple[str, ...]":
            ok = all(isinstance(v, str) for v in value)
        else:  # (dkim_failures: checked one by one)
            continue
        if not ok:
            raise ValueError(f"unreadable facts of a queued failure report: {f.name} {value!r:.40}")


def window_of(now: float, period: int) -> int:
    return int(now) - int(now) % period


_WINDOW_TOTAL = "*"  # failure_rate's destination counting every report of a window


@functools.lru_cache(maxsize=65536)
def queue_owner(policy_domain: str) -> str:
    """Whose share of the queue a policy domain's reports take: its organisational domain
    by the Public Suffix List bundled with mailauth (RFC 7489 3.2), not by the DNS Tree
    Walk, whose answer the sender's own records decide (a ``psd=y`` under its domain would
    make every subdomain an organisation of its own)."""
    return psl_organizational_domain(policy_domain.lower().rstrip("."))


def enqueue_failures(
    store: Store,
    reports: Sequence[QueuedFailure],
    *,
    limit: int,
    period: int,
    max_queued: int,
    max_per_org: int,
    window_limit: int,
    now: float,
) -> EnqueueOutcome:
    """Queue ``reports`` in one transaction, within the rate limit (``limit`` reports per
    destination address and policy domain per ``period`` seconds, in the window of each
    report's arrival), the window's cap (``window_limit`` reports per window, all
    destinations together), the queue's cap (``max_queued`` waiting) and each
    organisation's share of it (``max_per_org`` waiting whose policy domain is under one
    organisational domain, :func:`queue_owner`). Windows ended before ``now`` are
    forgotten, and a report whose window is one of them (it waited in memory through a
    store outage) is refused as rate-limited: its window's counts are gone."""
    with store.write():
        return enqueue_within(
            store,
            reports,
            limit=limit,
            period=period,
            max_queued=max_queued,
            max_per_org=max_per_org,
            window_limit=window_limit,
            now=now,
        )


def enqueue_within(
    store: Store,
    reports: Sequence[QueuedFailure],
    *,
    limit: int,
    period: int,
    max_queued: int,
    max_per_org: int,
    window_limit: int,
    now: float,
) -> EnqueueOutcome:
    """:func:`enqueue_failures` within the caller's write transaction (the failure
    collector's, which writes each piece under a savepoint)."""
    outcome = EnqueueOutcome()
    if store.engine == "postgresql":
        store.execute("SELECT pg_advisory_xact_lock(?)", (_QUEUE_LOCK,))
    oldest = window_of(now, period) - period
    store.execute("DELETE FROM failure_rate WHERE window_begin < ?", (oldest,))
    waiting, owners = _waiting(store, reports, max_per_org - len(reports))
    totals: dict[int, int] = {}  # reports queued per window, all destinations
    for report in reports:
        window = window_of(report.created, period)
        owner = queue_owner(report.policy_domain)
        if window < oldest:
            outcome.rate_limited += 1
            continue
        if waiting >= max_queued:
            outcome.dropped += 1
            continue
        if owners[owner] >= max_per_org:
            outcome.over_share += 1
            continue
        if window not in totals:
            totals[window] = _window_total(store, window)
        if totals[window] >= window_limit:
            outcome.over_window += 1
            continue
        allowed = [
            a.uri
            for a in parse_report_uris(report.ruf).addresses
            if _take(store, report.policy_domain, a.address, window, limit)
        ]
        if not allowed:
            outcome.rate_limited += 1
            outcome.full.append((report.policy_domain, report.ruf, window))
            continue
        _insert(store, report, tuple(dict.fromkeys(allowed)))
        waiting += 1
        owners[owner] += 1
        totals[window] += 1
        outcome.queued += 1
    store.executemany(
        """INSERT INTO failure_rate (destination, window_begin, reports) VALUES (?, ?, ?)
        ON CONFLICT (destination, window_begin) DO UPDATE SET reports = excluded.reports""",
        [(_WINDOW_TOTAL, window, total) for window, total in sorted(totals.items())],
    )
    return outcome


COUNT_WAITING = "SELECT COUNT(*) FROM failure_reports WHERE state IN (?, ?)"
_OWNERS_AT_ONCE = 500  # organisations counted per statement (bound parameters)


def count_owners(owners: int) -> str:
    """The statement counting the reports waiting of ``owners`` organisations: an index
    range per organisation (``failure_reports_owner``: queue_owner, state; SQLite reads
    the index alone), so that its cost is that of their own reports (each at most its
    share), not of the whole queue's."""
    marks = ", ".join("?" * owners)
    return (
        "SELECT queue_owner, COUNT(*) FROM failure_reports WHERE queue_owner IN "  # noqa: S608 - marks only
        f"({marks}) AND state IN (?, ?) GROUP BY queue_owner"
    )


def _waiting(
    store: Store, reports: Sequence[QueuedFailure], room: int
) -> tuple[int, collections.Counter[str]]:
    """The reports waiting, and those of each organisation of ``reports`` unless fewer
    than ``room`` wait in all (a share less the batch: then no organisation can fill its
    share with this batch, and one count is read)."""
    waiting = int(store.fetchall(COUNT_WAITING, WAITING)[0][0])
    owners: collections.Counter[str] = collections.Counter()
    if waiting < room:
        return waiting, owners
    _own_unowned(store)
    mine = sorted({queue_owner(r.policy_domain) for r in reports})
    for first in range(0, len(mine), _OWNERS_AT_ONCE):
        some = mine[first : first + _OWNERS_AT_ONCE]
        for owner, count in store.fetchall(count_owners(len(some)), (*some, *WAITING)):
            owners[owner] = int(count)
    return waiting, owners


def _own_unowned(store: Store) -> None:
    """Reports queued before schema version 7 (no ``queue_owner``) given theirs."""
    rows = store.fetchall(
        "SELECT id, policy_domain FROM failure_reports WHERE queue_owner = '' AND state IN (?, ?)",
        WAITING,
    )
    store.executemany(
        "UPDATE failure_reports SET queue_owner = ? WHERE id = ?",
        [(queue_owner(domain), id_) for id_, domain in rows],
    )


def _window_total(store: Store, window: int) -> int:
    rows = store.fetchall(
        "SELECT reports FROM failure_rate WHERE destination = ? AND window_begin = ?",
        (_WINDOW_TOTAL, window),
    )
    return int(rows[0][0]) if rows else 0


def _take(store: Store, policy_domain: str, address: str, window: int, limit: int) -> bool:
    """One unit of ``address``'s window for ``policy_domain``'s reports, if it has one left
    (one atomic upsert). Counted per policy domain and address: another domain's record
    naming the same address (unverified: its reports are never sent) cannot use up the
    address owner's own reports."""
    changed = store.execute(
        """INSERT INTO failure_rate (destination, window_begin, reports) VALUES (?, ?, 1)
        ON CONFLICT (destination, window_begin) DO UPDATE
        SET reports = failure_rate.reports + 1 WHERE failure_rate.reports < ?""",
        (f"{address.lower()} {policy_domain.lower()}", window, limit),
    )
    return changed == 1


def _insert(store: Store, report: QueuedFailure, ruf: tuple[str, ...]) -> None:
    store.execute(
        """INSERT INTO failure_reports (id, policy_domain, queue_owner, auth_failure, ruf,
        facts, original, has_body, state, attempts, next_try, claimed_by, claimed_until,
        delivered, last_error, created, sent_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, '', 0, '', '', ?, 0)""",
        (
            uuid.uuid4().hex,
            report.policy_domain,
            queue_owner(report.policy_domain),
            report.auth_failure,
            " ".join(ruf),
            facts_to_json(report.facts),
            report.original,
            1 if report.has_body else 0,
            int(report.created),
        ),
    )
