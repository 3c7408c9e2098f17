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

from mailauth.dns.types import DnsStatus, Lookup, Query


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
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self._clock = clock
        self._entries: OrderedDict[Query, tuple[float, Lookup]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def now(self) -> float:
        """The cache's clock (what TTLs count down against)."""
        return self._clock()

    def get(self, query: Query) -> Lookup | None:
        """The cached outcome with its remaining TTL, or None when absent or expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(query)
            if entry is None:
                self.misses += 1
                return None
            expires, lookup = entry
            if expires <= now:
                del self._entries[query]
                self.misses += 1
                return None
            self._entries.move_to_end(query)
            self.hits += 1
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

    def put(self, lookup: Lookup) -> None:
        """Store an outcome; temporary failures and zero TTLs are not stored."""
        if lookup.status is DnsStatus.TEMPFAIL:
            return
        cap = self.max_ttl if lookup.status is DnsStatus.ANSWER else self.max_negative_ttl
        ttl = min(lookup.ttl, cap)
        if ttl <= 0:
            return
        query = Query(lookup.name, lookup.rdtype)
        with self._lock:
            self._entries[query] = (self._clock() + ttl, lookup)
            self._entries.move_to_end(query)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
