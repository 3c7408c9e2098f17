"""A TTL-respecting, size-bounded cache of DNS outcomes, shared by every method.

Positive answers live for their TTL (capped by ``max_ttl``); negative answers (NXDOMAIN and
NODATA) live for their RFC 2308 negative TTL, capped by ``max_negative_ttl`` (RFC 2308 5
recommends a cap of one to three hours; the default here is shorter, since mail
authentication records change while a domain is set up). Temporary failures are never
cached: the next message asks again. When full, the least recently used entry goes.

The cache is safe to share between threads (the sync front end may run in worker threads
while the asyncio front end runs in the event loop).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from mailauth.dns.types import DnsStatus, Lookup, Query

K = TypeVar("K")
V = TypeVar("V")


class ExpiringLru(Generic[K, V]):
    """A bounded map whose entries expire: an entry found past its time is dropped, and when
    full the least recently used entry goes. Thread-safe; counts hits and misses."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> tuple[float, V] | None:
        """(when it expires, the value), or None when absent or expired at ``now``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def holds(self, key: K, now: float) -> bool:
        """Whether a live entry is there (not counted as a hit or a miss, order unchanged)."""
        entry = self._entries.get(key)
        return entry is not None and entry[0] > now

    def put(self, key: K, value: V, expires: float) -> None:
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class DnsCache:
    """An LRU cache of :class:`Lookup` outcomes keyed by :class:`Query`."""

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        max_ttl: int = 86_400,
        max_negative_ttl: int = 900,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: ExpiringLru[Query, Lookup] = ExpiringLru(max_entries)
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hits(self) -> int:
        return self._entries.hits

    @property
    def misses(self) -> int:
        return self._entries.misses

    def now(self) -> float:
        """The cache's clock (what TTLs count down against)."""
        return self._clock()

    def get(self, query: Query) -> Lookup | None:
        """The cached outcome with its remaining TTL, or None when absent or expired."""
        now = self._clock()
        entry = self._entries.get(query, now)
        if entry is None:
            return None
        expires, lookup = entry
        # Built directly: dataclasses.replace costs several times more on this hot path.
        return Lookup(
            lookup.name,
            lookup.rdtype,
            lookup.status,
            lookup.records,
            max(0, int(expires - now)),
            lookup.reason,
            lookup.canonical_name,
        )

    def holds(self, query: Query) -> bool:
        """Whether :meth:`get` would find the query now (not counted as a hit or a miss)."""
        return self._entries.holds(query, self._clock())

    def put(self, lookup: Lookup) -> None:
        """Store an outcome; temporary failures and zero TTLs are not stored."""
        if lookup.status is DnsStatus.TEMPFAIL:
            return
        cap = self.max_ttl if lookup.status is DnsStatus.ANSWER else self.max_negative_ttl
        ttl = min(lookup.ttl, cap)
        if ttl > 0:
            self._entries.put(Query(lookup.name, lookup.rdtype), lookup, self._clock() + ttl)

    def clear(self) -> None:
        self._entries.clear()
