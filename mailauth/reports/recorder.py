"""Recording verdicts into the report store, off the mail path.

:class:`BackgroundRecorder` is what the milter (and a library caller, through
``Authenticator(..., recorder=...)``) hands each verdict to. :meth:`~BackgroundRecorder.record`
only counts the observation into an in-memory :class:`~.batch.Batch` (a dict update under a lock:
microseconds, on the event loop); a writer thread takes the batch every ``flush_seconds``
(or as soon as it holds ``batch_rows`` rows) and writes it in one transaction of upserts.
A store that is down or slow never holds mail up: the batch waits in memory, bounded by
``max_rows`` distinct rows and ``max_bytes`` (their text, estimated: a row's key can be a
few KB, and an attacker chooses it); what does not fit is dropped, counted (``dropped``, exported by
the milter's metrics) and logged once per interval, never silently.

The most a crash can lose: what was recorded since the last flush (``flush_seconds``, 5 s
by default), plus, while the store is unreachable, everything still buffered (at most
``max_rows`` rows). SIGTERM and SIGHUP flush (docs/reports.md). What a write could not
store waits apart from what is recorded since (:mod:`.background`); the rows the store
refuses for good are isolated and dropped, alone. Messages written for a
period that closed before (its end plus the sender's grace: its report may have gone out)
are counted (``late``) and logged once per interval: no report will count them.

:class:`DirectRecorder` writes each verdict at once (``mailauth verify --record``): the same
observation and the same upsert as the milter's batches.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailauth.reports.background import BackgroundWriter, Held, open_writer_store
from mailauth.reports.batch import Batch, late_messages, write_batch
from mailauth.reports.observe import Enforcement, Observation, observe
from mailauth.reports.outgoing import GRACE
from mailauth.reports.store import Store, StoreError
from mailauth.results import Verdict

log = logging.getLogger("mailauth.reports")
DAY = 86400


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """``interval``: the reporting period in seconds (periods start at multiples of it,
    UTC; RFC 9990 asks for at most a day); ``record_envelope_to``: report the first
    recipient's domain; ``enforcement``: the dispositions the receiver acts on;
    ``max_rows`` and ``max_bytes`` bound the buffer (``max_bytes`` 0: 1 KiB per row of
    ``max_rows``, about twice what a common row takes)."""

    interval: int = DAY
    record_envelope_to: bool = False
    enforcement: Enforcement = field(default_factory=Enforcement)
    flush_seconds: float = 5.0
    batch_rows: int = 5_000
    max_rows: int = 200_000
    max_bytes: int = 0

    @property
    def buffer_bytes(self) -> int:
        return self.max_bytes or self.max_rows * 1024


class _Observing:
    """What both recorders share: turning a verdict into an observation."""

    def __init__(self, settings: RecordingSettings) -> None:
        self.settings = settings

    def _observe(
        self, verdict: Verdict, ip: str, mail_from: str, recipients: tuple[str, ...]
    ) -> Observation | None:
        return observe(
            verdict,
            ip=ip,
            mail_from=mail_from,
            recipients=recipients if self.settings.record_envelope_to else (),
            enforcement=self.settings.enforcement,
        )


class DirectRecorder(_Observing):
    """Writes each verdict at once, in its own transaction (one message: the CLI)."""

    def __init__(self, store: Store, settings: RecordingSettings | None = None) -> None:
        super().__init__(settings or RecordingSettings())
        self.store = store
        self.recorded = 0

    def record(
        self,
        verdict: Verdict,
        *,
        ip: str,
        mail_from: str,
        recipients: tuple[str, ...] = (),
        now: float,
    ) -> None:
        observation = self._observe(verdict, ip, mail_from, recipients)
        if observation is None:
            return
        batch = Batch()
        batch.add(observation, now, self.settings.interval)
        write_batch(self.store, batch)
        self.recorded += 1


class BackgroundRecorder(BackgroundWriter, _Observing):
    """Counts in memory, writes in batches from a thread of its own (see the module)."""

    thread_name = "mailauth-recorder"

    def __init__(
        self,
        url: str,
        settings: RecordingSettings | None = None,
        *,
        opener: Callable[[str], Store] = open_writer_store,
        clock: Callable[[], float] = time.time,
    ) -> None:
        BackgroundWriter.__init__(self, url, opener)
        _Observing.__init__(self, settings or RecordingSettings())
        self._clock = clock
        self._lock = threading.Lock()
        self._batch = Batch()  # the live buffer: what record() adds to
        self._held: list[Held[Batch]] = []  # what a write could not store (the thread's)
        self._held_rows = 0  # ... and the batch being written: rows and bytes (the caps)
        self._held_bytes = 0
        # Counters (read by the milter's metrics; write_errors and refused: BackgroundWriter):
        self.recorded = 0  # messages counted into the buffer
        self.dropped = 0  # messages lost: buffer full, or rows the store refused for good
        self.written = 0  # messages written to the store
        self.late = 0  # ... of them for a period whose report may have gone out already
        self.skipped = 0  # verdicts no report counts (no policy, temperror)
        self._logged_drops = 0
        self._logged_late = 0

    @property
    def pending(self) -> int:
        """Rows waiting in memory (recorded, held, being written)."""
        return len(self._batch) + self._held_rows

    @property
    def buffered_bytes(self) -> int:
        """Their estimated size."""
        return self._batch.size + self._held_bytes

    def _flush_seconds(self) -> float:
        return self.settings.flush_seconds

    def record(
        self,
        verdict: Verdict,
        *,
        ip: str,
        mail_from: str,
        recipients: tuple[str, ...] = (),
        now: float,
    ) -> None:
        """Count one verdict (never blocks on the store)."""
        observation = self._observe(verdict, ip, mail_from, recipients)
        if observation is None:
            self.skipped += 1
            return
        interval = self.settings.interval
        with self._lock:
            batch = self._batch
            settings = self.settings
            rows = settings.max_rows - self._held_rows  # (the caps hold what waits, in all)
            if batch.full(rows, settings.buffer_bytes - self._held_bytes) and not batch.has(
                observation, now, interval
            ):
                self.dropped += 1
                return
            batch.add(observation, now, interval)
            self.recorded += 1
            due = len(batch) >= settings.batch_rows
        if due:
            self._wake.set()

    def _write_once(self) -> bool:
        """Write what is held, then the live buffer, each in its own transaction (rows
        refused for good isolated: :mod:`.background`); what could not be written stays
        held, apart from what is recorded meanwhile. True when all of it was written."""
        with self._lock:
            live, self._batch = self._batch, Batch()
            self._held_rows += len(live)
            self._held_bytes += live.size
        todo = [*self._held, Held(live)] if live.counts else list(self._held)
        if not todo:
            return True
        started = time.monotonic()
        done = self._write_pieces(todo, self._write_piece)
        suspects = [h for h in done.kept if h.suspect]
        clean = Batch()  # (rows never refused: those of a failed flush and the live buffer's)
        for held in done.kept:
            if not held.suspect:
                clean.merge(held.piece)
        if clean.counts or clean.policies:
            suspects.append(Held(clean))
        with self._lock:
            self._held = suspects
            self._held_rows = sum(len(h.piece) for h in suspects)
            self._held_bytes = sum(h.piece.size for h in suspects)
        if done.refused:
            self._refused(done.refused)
        if done.error is not None:
            rows = self._held_rows
            self._log(f"report store not written ({done.error}); {rows} rows kept to retry")
            return False
        seconds = time.monotonic() - started
        if seconds > self.settings.flush_seconds:
            log.warning("report store slow: %d rows took %.1f s to write", len(live), seconds)
        return not done.kept and not done.refused

    def _write_piece(self, store: Store, batch: Batch) -> None:
        write_batch(store, batch)
        self.written += batch.messages()
        self.late += late_messages(batch, self._clock())

    def _refused(self, refused: list[tuple[Batch, StoreError]]) -> None:
        """The rows the store refused for good: dropped, counted, one line saying why."""
        rows = sum(batch.rows() for batch, _ in refused)
        messages = sum(batch.messages() for batch, _ in refused)
        self.refused += rows
        self.dropped += messages
        domains = dict.fromkeys(d for batch, _ in refused for d, _ in batch.policies)
        domains.update(dict.fromkeys(d for batch, _ in refused for d, _, _ in batch.counts))
        shown = ", ".join(itertools.islice(domains, 5)) + (", ..." if len(domains) > 5 else "")
        self._log(
            f"report store refused {rows} rows for good ({refused[0][1]}): dropped, "
            f"{messages} messages not recorded (policy domains {shown}); the other rows "
            "are written",
            force=True,
        )

    def _left_at_stop(self) -> tuple[int, str]:
        with self._lock:
            held, self._held = self._held, []
            self._held_rows = self._held_bytes = 0
        rows = sum(len(h.piece) for h in held)
        messages = sum(h.piece.messages() for h in held)
        self.dropped += messages
        return rows, f"{rows} rows ({messages} messages) held for the report store"

    def _after_write(self) -> None:
        dropped, late = self.dropped, self.late
        if dropped > self._logged_drops:
            self._log(
                f"report recording: {dropped - self._logged_drops} messages not recorded "
                f"(buffer full: {self.settings.max_rows} rows or "
                f"{self.settings.buffer_bytes // 1024} KiB; or refused by the store; "
                f"{dropped} in all)",
                force=True,
            )
            self._logged_drops = dropped
        if late > self._logged_late:
            logged = self._log(
                f"report recording: {late - self._logged_late} messages written after their "
                f"period's report was due (period end + {GRACE} s): no report will count "
                f"them ({late} in all)"
            )
            if logged:
                self._logged_late = late
