"""Policy discovery results kept for a few minutes, for Author Domains seen moments ago.

What policy discovery finds for an Author Domain (RFC 9989 4.10.1, the DNS Tree Walk; RFC
7489 6.6.3 in that mode) is a function of the domain and of the DNS answers at ``_dmarc``
names alone. :class:`DiscoveryMemo` keeps it while every one of those answers is still
valid (the shortest TTL the walk saw), and never longer than ``max_age``: reusing it is then
exactly what walking again through the resolver's cache would give, without the questions.
A discovery that met a temporary failure is never kept. Out of scope: alignment's walks for
other identifiers, and the existence check of ``np`` (both asked as before).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailauth.dmarc.record import DmarcRecord
from mailauth.dns.cache import ExpiringLru


@dataclass(frozen=True, slots=True)
class Discovery:
    """The policy record for an Author Domain, where it was found, the Organizational
    Domain (None: unknown, after a temporary DNS failure) and the temporary failure that
    prevents a result ("" when none)."""

    record: DmarcRecord | None
    policy_domain: str = ""
    org_domain: str | None = None
    problem: str = ""


class DiscoveryMemo:
    """Discoveries by (mode, Author Domain), bounded in size (least recently used out
    first) and in age; ``clock`` is the one the DNS cache counts TTLs with."""

    def __init__(
        self, clock: Callable[[], float], *, max_age: int = 300, max_entries: int = 4096
    ) -> None:
        self._clock = clock
        self.max_age = max_age
        self._entries: ExpiringLru[tuple[str, str], Discovery] = ExpiringLru(max_entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, mode: str, domain: str) -> Discovery | None:
        entry = self._entries.get((mode, domain), self._clock())
        return None if entry is None else entry[1]

    def put(self, mode: str, domain: str, found: Discovery, ttl: int) -> None:
        """Keep ``found`` for ``ttl`` seconds (at most ``max_age``); not a temporary failure."""
        if ttl <= 0 or found.problem or found.org_domain is None:
            return
        self._entries.put((mode, domain), found, self._clock() + min(ttl, self.max_age))
