"""Collecting RFC 9991 failure reports off the mail path: what the milter (or ``mailauth
verify --record``) hands over when a DMARC evaluation calls for a report, written to the
store's queue (:mod:`.failure_queue`) by a thread of its own.

On the event loop, :meth:`FailureCollector.offer` only decides (:func:`report_types`: a
DMARC ``pass`` or ``fail`` -- never ``none`` or ``temperror`` -- whose policy has ``ruf=``
and no ``psd=y``, and whose ``fo=`` asks for a report of what happened, RFC 9989 4.7,
RFC 9991 2) and keeps references to the header section the milter already holds (and the
body copy, when the body is opted in); the facts, the cut to ``max_size``, the rate limit
and the store's transaction happen in the writer thread. A store that is down or slow never
holds mail up: captures wait in memory (at most :data:`MAX_BUFFERED` reports and
:data:`MAX_BUFFERED_BYTES` octets), and what does not fit is dropped, counted (``dropped``,
exported by the milter's metrics) and logged at most once a minute. Once a destination's
rate window is full the collector stops copying reports for it until the window ends
(``rate_limited``); reports refused by an organisation's share of the queue
(``over_share``) or the window's limit (``over_window``) are counted and logged at most
once a minute. A capture that waited in memory past its rate window and the one after
(a long store outage) is refused as ``rate_limited``: its window's counts are gone. The
writer thread, and what becomes of captures a write could not store (held apart from those
offered since; those the store refuses for good isolated and dropped alone), are
:mod:`.background`'s.

The most a crash can lose: the reports collected since the last write (``flush_seconds``),
or all those buffered while the store is away. SIGTERM and SIGHUP write them
(docs/reports.md, "Failure reports").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from mailauth.config_failure import FailureConfig
from mailauth.message import Message
from mailauth.reports.background import (
    BackgroundWriter,
    Held,
    open_writer_store,
    reasons,
    shown_list,
)
from mailauth.reports.failure import verdict_failure_types
from mailauth.reports.failure_capture import (
    MAX_RECIPIENTS,
    Capture,
    Captures,
    may_report,
    queued_reports,
    report_types,
)
from mailauth.reports.failure_queue import (
    EnqueueOutcome,
    QueuedFailure,
    enqueue_failures,
    enqueue_within,
    window_of,
)
from mailauth.reports.store import Store
from mailauth.results import Verdict

__all__ = [  # (MAX_RECIPIENTS: failure_capture's, for the milter too)
    "MAX_BUFFERED",
    "MAX_BUFFERED_BYTES",
    "MAX_HELD_BODIES",
    "MAX_RECIPIENTS",
    "BodyCopy",
    "FailureCollector",
    "enqueue",
    "queue_now",
]

MAX_BUFFERED = 1000  # reports held in memory at most (the store away)
MAX_BUFFERED_BYTES = 64 << 20  # ... and octets of their messages
MAX_HELD_BODIES = 64 << 20  # octets of message bodies copied for reports, all messages
_DELIVERY = {"continue": "delivered", "quarantine": "policy", "reject": "reject"}  # RFC 6591


class BodyCopy:
    """A message body copied as it streams in, for a report that may carry it (opted in):
    at most ``limit`` octets, within the collector's :data:`MAX_HELD_BODIES`; a larger body
    is not kept (its report carries the header only)."""

    __slots__ = ("_collector", "data", "limit")

    def __init__(self, collector: FailureCollector, limit: int) -> None:
        self._collector, self.limit = collector, limit
        self.data: bytearray | None = bytearray()

    def add(self, chunk: bytes) -> None:
        data = self.data
        if data is None:
            return
        if len(data) + len(chunk) > self.limit or not self._collector.hold(len(chunk)):
            self.release()
            return
        data += chunk

    def release(self) -> None:
        if self.data is not None:
            self._collector.hold(-len(self.data))
            self.data = None


class FailureCollector(BackgroundWriter):
    """Takes captures on the event loop, queues them from a thread (see the module).
    ``clock``: the time the queue's windows are judged by (a capture's own window is that
    of its arrival, the ``now`` given to :meth:`offer`)."""

    thread_name = "mailauth-ruf"

    def __init__(
        self,
        url: str,
        config: FailureConfig,
        *,
        flush_seconds: float = 5.0,
        max_buffered: int = MAX_BUFFERED,
        opener: Callable[[str], Store] = open_writer_store,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(url, opener)
        self.config, self.flush_seconds = config, flush_seconds
        self.max_buffered = max_buffered
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: deque[Capture] = deque()  # the live buffer: what offer() adds to
        self._held: list[Held[Captures]] = []  # what a write could not store (the thread's)
        self._held_count = 0  # ... and the captures being written (the caps count them)
        self._buffered_bytes = 0  # the octets of all of them
        self._held_bodies = 0
        # (policy domain, ruf list)s whose window is full:
        self._full: dict[tuple[str, tuple[str, ...]], int] = {}
        # Counters (the milter's metrics; write_errors and refused: BackgroundWriter):
        self.offered = 0  # messages whose verdict called for a report
        self.queued = 0  # reports written to the store's queue
        self.rate_limited = 0  # reports refused by the rate limit (or their window gone)
        self.over_share = 0  # ... because their organisation held its share of the queue
        self.over_window = 0  # ... because their window held failure_window_limit
        self.dropped = 0  # reports lost: memory buffer or store queue full, or refused
        self._logged = (0, 0, 0)  # (dropped, over_share, over_window) when last logged

    @property
    def pending(self) -> int:
        """Captures waiting in memory (offered, held, being written)."""
        return len(self._buffer) + self._held_count

    def _flush_seconds(self) -> float:
        return self.flush_seconds

    # -- on the event loop -----------------------------------------------------------
    def new_body(self) -> BodyCopy | None:
        """A body copy for the next message, when bodies are opted in."""
        return BodyCopy(self, self.config.max_size) if self.config.include_body else None

    def hold(self, octets: int) -> bool:
        """Count ``octets`` more (or fewer) of body copies; False when past the cap."""
        if octets > 0 and self._held_bodies + octets > MAX_HELD_BODIES:
            return False
        self._held_bodies += octets
        return True

    def offer(
        self,
        verdict: Verdict,
        *,
        header: bytes,
        body: BodyCopy | bytes | None = None,
        ip: str,
        mail_from: str,
        recipients: tuple[str, ...] = (),
        action: str = "continue",
        now: float,
    ) -> int:
        """Hand over one message: the number of reports taken (0 when none is due, the rate
        window is known full, or the buffer is full). Never blocks on the store."""
        if action not in _DELIVERY or not may_report(verdict):
            return 0  # (cheap first: most verdicts stop here; tempfail: it comes back)
        dmarc = verdict.dmarc
        assert dmarc is not None and dmarc.published is not None
        window = window_of(now, self.config.rate_period)
        key = (dmarc.policy_domain or dmarc.domain, dmarc.published.ruf)
        if self._full.get(key) == window:
            self.rate_limited += 1
            return 0
        types = verdict_failure_types(verdict)
        if not types:
            return 0
        data = body.data if isinstance(body, BodyCopy) else body
        self.offered += 1
        size = len(header) + (len(data) if data is not None else 0)
        with self._lock:
            full = (
                len(self._buffer) + self._held_count >= self.max_buffered
                or self._buffered_bytes + size > MAX_BUFFERED_BYTES
            )
            if not full:
                self._buffer.append(
                    Capture(verdict, types, header, data, now, ip, mail_from,
                            recipients[:MAX_RECIPIENTS], _DELIVERY[action])
                )  # fmt: skip
                self._buffered_bytes += size
            else:
                self.dropped += len(types)  # (under the lock: the writer counts too)
        if isinstance(body, BodyCopy):
            body.data = None  # (now the buffer's; its octets leave the body count)
            self.hold(-len(data or b""))
        if full:
            return 0
        if len(self._buffer) >= 100 and not self._wake.is_set():
            self._wake.set()
        return len(types)

    # -- the writer thread -----------------------------------------------------------
    def _write_once(self) -> bool:
        """Write what is held, then what was offered since, each in its own transaction
        (captures refused for good isolated: :mod:`.background`); what could not be
        written stays held. True when all of it was written."""
        with self._lock:
            live = Captures(tuple(self._buffer))
            self._buffer.clear()
            self._held_count += live.rows()
        todo = [*self._held, Held(live)] if live.items else list(self._held)
        if not todo:
            return True
        done = self._write_pieces(todo, self._write_piece)
        kept = [h for h in done.kept if not h.plain]  # (what isolating them has learnt)
        clean = tuple(c for h in done.kept if h.plain for c in h.piece.items)
        if clean:
            kept.append(Held(Captures(clean)))
        gone = sum(piece.size() for piece, _ in done.refused)
        with self._lock:
            self._held = kept
            self._held_count = sum(h.piece.rows() for h in kept)
            self._buffered_bytes -= gone
        if done.refused:
            reports = sum(piece.reports() for piece, _ in done.refused)
            with self._lock:
                self.refused += reports
                self.dropped += reports
            self._logged = (self._logged[0] + reports, *self._logged[1:])  # (said here)
            domains = (
                c.verdict.dmarc.policy_domain or c.verdict.dmarc.domain
                for piece, _ in done.refused
                for c in piece.items
                if c.verdict.dmarc is not None
            )
            self._log(
                f"failure reports: {reports} not written, refused by the store for good or "
                f"failing to be written ({reasons(done.refused)}): dropped (policy domains "
                f"{shown_list(domains)}); the others are queued",
                force=True,
            )
        if done.error is not None:
            self._log(
                f"failure reports not queued ({done.error}); {self._held_count} kept to retry"
            )
            return False
        return not done.kept and not done.refused

    def _write_piece(self, store: Store, piece: Captures) -> Callable[[], None]:
        """(Within the writer's transaction, under a savepoint: counted once committed.)"""
        rows = [row for c in piece.items for row in queued_reports(c, self.config)]
        outcome = enqueue_within(store, rows, **_limits(self.config), now=self._clock())
        return lambda: self._account(piece, outcome)

    def _account(self, piece: Captures, outcome: EnqueueOutcome) -> None:
        with self._lock:
            self._buffered_bytes -= piece.size()
            self.dropped += outcome.dropped
        self.queued += outcome.queued
        self.rate_limited += outcome.rate_limited
        self.over_share += outcome.over_share
        self.over_window += outcome.over_window
        for domain, ruf, window in outcome.full:
            self._full[domain, ruf] = window
        if len(self._full) > 10_000:  # (bounded: the oldest windows go first)
            for key in sorted(self._full, key=self._full.__getitem__)[:5_000]:
                del self._full[key]

    def _left_at_stop(self) -> tuple[int, str]:
        with self._lock:
            held, self._held = self._held, []
            self._held_count = 0
            self._buffered_bytes -= sum(h.piece.size() for h in held)
        reports = sum(h.piece.reports() for h in held)
        with self._lock:
            self.dropped += reports
        self._logged = (self._logged[0] + reports, *self._logged[1:])  # (said by _stopped)
        return reports, f"{reports} failure reports held for the report store"

    def _after_write(self) -> None:
        """One line when reports were lost or refused by a cap since the last one: drops
        at once, the caps at most once per interval."""
        dropped, share, window = self.dropped, self.over_share, self.over_window
        before = self._logged
        if dropped > before[0]:
            self._log(
                f"failure reports: {dropped - before[0]} dropped (queue of "
                f"{self.config.max_queued} or memory buffer full; {dropped} in all)",
                force=True,
            )
            self._logged = (dropped, *self._logged[1:])
        if (share > before[1] or window > before[2]) and self._log(
            f"failure reports refused: {share - before[1]} by an organisation's share of "
            f"the queue ({self.config.org_share}), {window - before[2]} by the window's "
            f"limit ({self.config.window_limit} per {self.config.rate_period} s); "
            f"{share} and {window} in all"
        ):
            self._logged = (self._logged[0], share, window)


def enqueue(
    store: Store, reports: list[QueuedFailure], config: FailureConfig, *, now: float
) -> EnqueueOutcome:
    """:func:`~.failure_queue.enqueue_failures` with the limits of ``config``."""
    return enqueue_failures(store, reports, **_limits(config), now=now)


def _limits(config: FailureConfig) -> dict[str, int]:
    return {
        "limit": config.rate_limit,
        "period": config.rate_period,
        "max_queued": config.max_queued,
        "max_per_org": config.org_share,
        "window_limit": config.window_limit,
    }


def queue_now(
    store: Store,
    config: FailureConfig,
    verdict: Verdict,
    raw: bytes,
    *,
    ip: str,
    mail_from: str,
    recipients: tuple[str, ...] = (),
    action: str = "continue",
    now: float,
) -> EnqueueOutcome:
    """Queue the reports of one whole message at once (``mailauth verify --record``): the
    same choice, facts and limits as the milter's collector, one transaction."""
    types = report_types(verdict) if action in _DELIVERY else ()
    if not types:
        return EnqueueOutcome()
    parsed = Message.parse(raw)
    header = b"".join(f.raw for f in parsed.headers)
    header = header.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    body = raw[parsed.body_offset :]
    capture = Capture(verdict, types, header, body, now, ip, mail_from, recipients,
                      _DELIVERY[action])  # fmt: skip
    return enqueue(store, queued_reports(capture, config), config, now=now)
