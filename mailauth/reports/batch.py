"""The counts a recorder holds in memory (:class:`Batch`: messages per report row, the
published policy per policy domain and period) and their upsert into the report store
(:func:`write_batch`), shared by the two recorders of :mod:`.recorder`."""

from __future__ import annotations

import functools
import itertools

from mailauth.reports.observe import Observation, row_key
from mailauth.reports.outgoing import GRACE
from mailauth.reports.store import Store
from mailauth.results import PublishedPolicy


def period_of(now: float, interval: int) -> tuple[int, int]:
    """The reporting period holding ``now``: (begin, end), end inclusive (RFC 9990
    date_range, as its sample: 302832000 to 302918399)."""
    begin = int(now) - int(now) % interval
    return begin, begin + interval - 1


class Batch:
    """Observations counted in memory: messages per (policy domain, period, row key), and
    the published policy per (policy domain, period) last seen."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int, tuple[str, ...]], int] = {}
        self.policies: dict[tuple[str, int], tuple[int, PublishedPolicy, int]] = {}
        # The newest policy known of each period it has rows of, a policy row or counts
        # (accounting only, never written: a piece cut from a batch knows whether its
        # counts are late, wherever its period's policy row went):
        self.periods: dict[tuple[str, int], tuple[int, PublishedPolicy, int]] = {}
        self.size = 0  # the rows' estimated bytes (_row_size)

    def __len__(self) -> int:
        return len(self.counts)

    def add(self, observation: Observation, now: float, interval: int, messages: int = 1) -> None:
        begin, end = period_of(now, interval)
        key = (observation.policy_domain, begin, observation.key())
        known = self.counts.get(key)
        if known is None:
            self.size += _row_size(key)
        self.counts[key] = (known or 0) + messages
        self._policy((observation.policy_domain, begin), (end, observation.policy, int(now)))

    def has(self, observation: Observation, now: float, interval: int) -> bool:
        begin, _ = period_of(now, interval)
        return (observation.policy_domain, begin, observation.key()) in self.counts

    def _policy(self, key: tuple[str, int], value: tuple[int, PublishedPolicy, int]) -> None:
        _newest(self.policies, key, value)
        _newest(self.periods, key, value)

    def full(self, max_rows: int, max_bytes: int) -> bool:
        return len(self.counts) >= max_rows or self.size >= max_bytes

    def merge(self, other: Batch) -> None:
        """Add ``other``'s counts and policies (rows held: they were within the caps)."""
        for key, messages in other.counts.items():
            known = self.counts.get(key)
            if known is None:
                self.size += _row_size(key)
            self.counts[key] = (known or 0) + messages
        for where, value in other.policies.items():
            _newest(self.policies, where, value)
        for where, value in other.periods.items():
            _newest(self.periods, where, value)

    def messages(self) -> int:
        return sum(self.counts.values())

    def rows(self) -> int:
        """Its rows in the store: counts and policies (what the store may refuse alone)."""
        return len(self.counts) + len(self.policies)

    def halves(self) -> tuple[Batch, Batch]:
        """Its rows in two batches, in key order (a policy beside its period's counts)."""
        keys = self._keys()
        middle = len(keys) // 2
        return self._subset(keys[:middle]), self._subset(keys[middle:])

    def chunks(self, rows: int) -> list[Batch]:
        """Its rows in batches of at most ``rows`` rows, in key order (a period's policy
        row before its counts); itself when it has no more (not copied)."""
        if self.rows() <= rows:
            return [self]
        keys = self._keys()
        return [self._subset(keys[i : i + rows]) for i in range(0, len(keys), max(1, rows))]

    def without(self, periods: set[tuple[str, int]]) -> tuple[Batch, Batch]:
        """Its rows but the counts of ``periods``, and those counts."""
        keys = self._keys()
        out = [k for k in keys if k[2] and k[:2] in periods]
        left = set(out)
        return self._subset([k for k in keys if k not in left]), self._subset(out)

    def _keys(self) -> list[tuple[str, int, int, tuple[str, ...]]]:
        keys: list[tuple[str, int, int, tuple[str, ...]]] = [
            (domain, begin, 0, ()) for domain, begin in self.policies
        ]
        keys += [(domain, begin, 1, key) for domain, begin, key in self.counts]
        keys.sort()
        return keys

    def _subset(self, keys: list[tuple[str, int, int, tuple[str, ...]]]) -> Batch:
        part = Batch()
        for domain, begin, kind, key in keys:
            if kind:
                row = (domain, begin, key)
                part.counts[row] = self.counts[row]
                part.size += _row_size(row)
            else:
                part.policies[domain, begin] = self.policies[domain, begin]
            part.periods[domain, begin] = self.periods[domain, begin]
        return part


def _newest(
    known: dict[tuple[str, int], tuple[int, PublishedPolicy, int]],
    key: tuple[str, int],
    value: tuple[int, PublishedPolicy, int],
) -> None:
    """``value`` for ``key`` unless ``known`` has one seen later."""
    old = known.get(key)
    if old is None or old[2] <= value[2]:
        known[key] = value


def _row_size(key: tuple[str, int, tuple[str, ...]]) -> int:
    """A row's bytes in memory, estimated: its text and about 300 bytes of objects."""
    return 300 + len(key[0]) + sum(map(len, key[2]))


_COUNT_COLUMNS = (
    "policy_domain", "period_begin", "row_key", "source_ip", "header_from", "envelope_from",
    "envelope_to", "dkim", "spf_domain", "spf_scope", "spf_result", "dmarc_dkim", "dmarc_spf",
    "disposition", "reasons", "messages",
)  # fmt: skip
_COUNT_KEY = ("policy_domain", "period_begin", "row_key")
_COUNT_ADD = "DO UPDATE SET messages = report_counts.messages + excluded.messages"
_POLICY_COLUMNS = (
    "policy_domain", "period_begin", "period_end", "p", "sp", "np", "adkim", "aspf",
    "testing", "psd", "fo", "discovery", "rua", "ruf", "last_seen",
)  # fmt: skip
_POLICY_KEY = ("policy_domain", "period_begin")
_POLICY_NEWER = (
    "DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _POLICY_COLUMNS if c not in _POLICY_KEY)
    + " WHERE excluded.last_seen >= report_policies.last_seen"
)


def write_batch(store: Store, batch: Batch) -> None:
    """One transaction: :func:`upsert_batch`."""
    with store.write():
        upsert_batch(store, batch)


def upsert_batch(store: Store, batch: Batch) -> None:
    """Within a write transaction: every count added, every policy replaced by a newer one
    (the store locks the rows in key order, so that concurrent writers never deadlock)."""
    counts = [
        (domain, begin, row_key(domain, key), *key, messages)
        for (domain, begin, key), messages in batch.counts.items()
    ]
    policies = [
        (domain, begin, end, *_policy_columns(policy), seen)
        for (domain, begin), (end, policy, seen) in batch.policies.items()
    ]
    store.upsert("report_counts", _COUNT_COLUMNS, _COUNT_KEY, _COUNT_ADD, counts)
    store.upsert("report_policies", _POLICY_COLUMNS, _POLICY_KEY, _POLICY_NEWER, policies)


# The URIs of rua=/ruf= kept per policy (reports go to at most 10 destinations,
# reports.uri.MAX_DESTINATIONS; a record may list thousands), and the longest kept (RFC
# 5321 4.5.3.1.3: a path is at most 256 octets, percent-encoded up to three times that).
MAX_STORED_URIS = 32
MAX_URI = 1000


@functools.lru_cache(maxsize=4096)
def _policy_columns(policy: PublishedPolicy) -> tuple[str, ...]:
    """(Memoised: one policy is written again at each try of an isolation, and most
    policy domains publish the same few records.)"""
    return (
        str(policy.p), str(policy.sp or ""), str(policy.np or ""), policy.adkim, policy.aspf,
        "y" if policy.testing else "n", policy.psd, policy.fo, policy.discovery,
        _uri_column(policy.rua), _uri_column(policy.ruf),
    )  # fmt: skip


def _uri_column(uris: tuple[str, ...]) -> str:
    """The URIs as the store keeps them: separated by spaces, so none may hold one."""
    kept = (u for u in uris if len(u) <= MAX_URI and not any(c.isspace() for c in u))
    return " ".join(itertools.islice(kept, MAX_STORED_URIS))


def late_messages(batch: Batch, now: float) -> int:
    """The messages of ``batch`` in periods whose report may have gone out already: ended
    more than :data:`~.outgoing.GRACE` seconds before ``now`` (a report is built once, so
    they are kept in the store and never reported). Judged per period by the newest
    policy the batch knows of it, whether or not its policy row is in ``batch`` (a piece
    cut from a larger batch: :attr:`Batch.periods`)."""
    closed = {key for key, (end, policy, _) in batch.periods.items()
              if policy.rua and end + GRACE <= now}  # fmt: skip
    if not closed:
        return 0
    return sum(
        messages
        for (domain, begin, _), messages in batch.counts.items()
        if (domain, begin) in closed
    )
