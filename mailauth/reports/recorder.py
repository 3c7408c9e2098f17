"""Recording verdicts into the report store, off the mail path.

:class:`BackgroundRecorder` is what the milter (and a library caller, through
``Authenticator(..., recorder=...)``) hands each verdict to. :meth:`~BackgroundRecorder.record`
only counts the observation into an in-memory :class:`~.batch.Batch` (a dict update under a lock:
microseconds, on the event loop); a writer thread takes the batch every ``flush_seconds``
(or as soon as it holds ``batch_rows`` rows) and writes it in transactions of upserts of
at most ``batch_rows`` rows (fewer after a write timed out: ``_chunk_rows``).
A store that is down or slow never holds mail up: the batch waits in memory, bounded by
``max_rows`` distinct rows and ``max_bytes`` (their text, estimated: a row's key can be a
few KB, and an attacker chooses it); what does not fit is dropped, counted (``dropped``, exported by
the milter's metrics) and logged once per interval, never silently.

The most a crash can lose: what was recorded since the last flush (``flush_seconds``, 5 s
by default), plus, while the store is unreachable, everything still buffered (at most
``max_rows`` rows). SIGTERM and SIGHUP flush (docs/reports.md). What a write could not
store waits apart from what is recorded since (:mod:`.background`); the rows the store
refuses for good are isolated and dropped, alone (the counts of a period whose policy row
is refused with it, unless the store has one of that period). Messages written for a
period that closed before (its end plus the sender's grace: its report may have gone out)
are counted (``late``) and logged once per interval: no report will count them.

:class:`DirectRecorder` writes each verdict at once (``mailauth verify --record``): the same
observation and the same upsert as the milter's batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailauth.reports.background import (
    BackgroundWriter,
    Held,
    open_writer_store,
    reasons,
    shown_list,
)
from mailauth.reports.batch import Batch, late_messages, upsert_batch, write_batch
from mailauth.reports.observe import Enforcement, Observation, observe
from mailauth.reports.outgoing import GRACE
from mailauth.reports.store import Store, StoreError
from mailauth.results import Verdict

log = logging.getLogger("mailauth.reports")
DAY = 86400
MIN_CHUNK_ROWS = 100  # the fewest rows per transaction, however often writes time out
REGROW_SECONDS = 60.0  # without a write timing out, the rows per transaction double back


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
        self._halvings = 0  # rows per transaction: batch_rows halved this many times
        self._slowed_at = 0.0  # (monotonic) when a write last timed out, or they doubled
        self._refused_policies: set[tuple[str, int]] = set()  # (their periods)
        self._orphaned: list[Batch] = []  # counts dropped with their policy row, to log

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

    def _chunk_rows(self) -> int:
        """The most rows a transaction takes: ``batch_rows``, halved after each write that
        timed out, down to :data:`MIN_CHUNK_ROWS` (a store too slow for a whole batch
        within its statement bound still takes smaller ones; nothing is dropped for it)."""
        top = self.settings.batch_rows
        return max(min(top, MIN_CHUNK_ROWS), top >> self._halvings)

    def _write_once(self) -> bool:
        """Write what is held, then the live buffer, in transactions of at most
        :meth:`_chunk_rows` rows, in order (rows refused for good isolated:
        :mod:`.background`); what could not be written stays held, apart from what is
        recorded meanwhile. True when all of it was written."""
        with self._lock:
            live, self._batch = self._batch, Batch()
            self._held_rows += len(live)
            self._held_bytes += live.size
        if self._halvings and time.monotonic() - self._slowed_at >= REGROW_SECONDS:
            self._halvings -= 1  # (a minute without a write timing out: twice the rows)
            self._slowed_at = time.monotonic()
        size = self._chunk_rows()
        todo = [part for held in self._held for part in _cut(held, size)]
        todo += [Held(part) for part in live.chunks(size)] if live.counts else []
        if not todo:
            return True
        started = time.monotonic()
        done = self._write_pieces(todo, self._write_piece, self._refused_row)
        kept = _coalesced(done.kept, size)
        with self._lock:
            self._held = kept
            self._held_rows = sum(len(h.piece) for h in kept)
            self._held_bytes = sum(h.piece.size for h in kept)
        if not kept:
            self._refused_policies.clear()  # (no count waits that could be theirs)
        complete = not kept and not done.refused and not self._orphaned
        if done.refused or self._orphaned:
            self._refused(done.refused)
        if done.error is not None:
            slower = ""
            if done.timed_out and size > min(self.settings.batch_rows, MIN_CHUNK_ROWS):
                self._halvings += 1
                self._slowed_at = time.monotonic()
                slower = f"; at most {self._chunk_rows()} rows per transaction from now on"
            rows = self._held_rows
            self._log(f"report store not written ({done.error}); {rows} rows kept to retry"
                      f"{slower}", force=bool(slower))  # fmt: skip
            return False
        seconds = time.monotonic() - started
        if seconds > self.settings.flush_seconds:
            rows = sum(len(h.piece) for h in todo)
            log.warning("report store slow: %d rows took %.1f s to write", rows, seconds)
        return complete

    def _write_piece(self, store: Store, batch: Batch) -> Callable[[], None]:
        """(Within the writer's transaction, under a savepoint: counted once committed.)
        The counts of a period whose policy row the store refused, with none of its own
        in the store, are left out: never reported nor pruned without it, they are
        dropped with it."""
        orphans = self._orphans(store, batch)
        lost: Batch | None = None
        if orphans:
            batch, lost = batch.without(orphans)
        upsert_batch(store, batch)

        def count() -> None:
            self.written += batch.messages()
            self.late += late_messages(batch, self._clock())
            if lost is not None:
                self._orphaned.append(lost)

        return count

    def _refused_row(self, batch: Batch) -> None:
        """(A single row refused for good: a policy row's period remembered, its counts
        to be left out of what follows unless the store has a policy row of it.)"""
        if len(self._refused_policies) >= self.settings.max_rows:
            self._refused_policies.clear()  # (bounded; those periods' counts are written)
        self._refused_policies.update(batch.policies)

    def _orphans(self, store: Store, batch: Batch) -> set[tuple[str, int]]:
        """The periods of ``batch``'s counts whose policy row was refused, not in
        ``batch`` nor in the store."""
        refused = self._refused_policies
        if not refused:
            return set()
        periods = {(d, b) for d, b, _ in batch.counts if (d, b) in refused}
        periods = {p for p in periods if p not in batch.policies}
        domains = sorted({d for d, _ in periods})
        for first in range(0, len(domains), 500):  # (bound parameters per statement)
            some = domains[first : first + 500]
            marks = ", ".join("?" * len(some))
            stored = store.fetchall(
                "SELECT policy_domain, period_begin FROM report_policies "  # noqa: S608 - marks
                f"WHERE policy_domain IN ({marks})",
                some,
            )
            periods -= {(d, int(b)) for d, b in stored}
        return periods

    def _refused(self, refused: list[tuple[Batch, StoreError]]) -> None:
        """The rows the store refused for good (and the counts dropped with their policy
        row): dropped, counted, one line saying why."""
        orphaned, self._orphaned = self._orphaned, []
        pieces = [batch for batch, _ in refused] + orphaned
        rows = sum(batch.rows() for batch in pieces)
        messages = sum(batch.messages() for batch in pieces)
        with self._lock:
            self.refused += rows
            self.dropped += messages
        self._logged_drops += messages  # (said here, not again by _after_write)
        domains = [d for batch in pieces for d, _ in batch.periods]
        also = sum(len(b) for b in orphaned)
        self._log(
            f"report store refused {rows} rows for good ({reasons(refused) or 'their policy'}):"
            f" dropped, {messages} messages not recorded (policy domains {shown_list(domains)})"
            + (f"; {also} of them counts whose period's policy row was refused, never "
               "reported without it" if also else "")
            + "; the other rows are written",
            force=True,
        )  # fmt: skip

    def _left_at_stop(self) -> tuple[int, str]:
        with self._lock:
            held, self._held = self._held, []
            self._held_rows = self._held_bytes = 0
            rows = sum(len(h.piece) for h in held)
            messages = sum(h.piece.messages() for h in held)
            self.dropped += messages
        self._logged_drops += messages  # (said by _stopped, not again by _after_write)
        return rows, f"{rows} rows ({messages} messages) held for the report store"

    def _after_write(self) -> None:
        dropped, late = self.dropped, self.late
        if dropped > self._logged_drops:
            self._log(
                f"report recording: {dropped - self._logged_drops} messages not recorded "
                f"(buffer full: {self.settings.max_rows} rows or "
                f"{self.settings.buffer_bytes // 1024} KiB; {dropped} in all)",
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


def _cut(held: Held[Batch], rows: int) -> list[Held[Batch]]:
    """A held piece in pieces of at most ``rows`` rows (fewer per transaction since it was
    held: a write timed out)."""
    if held.piece.rows() <= rows:
        return [held]
    return [Held(part) for part in held.piece.chunks(rows)]


def _coalesced(kept: list[Held[Batch]], rows: int) -> list[Held[Batch]]:
    """``kept`` with consecutive plain pieces merged while they fit in ``rows`` rows (the
    live buffer of each flush of an outage added to the last: not one piece per flush)."""
    out: list[Held[Batch]] = []
    for held in kept:
        last = out[-1] if out else None
        if (
            last is not None
            and last.plain
            and held.plain
            and (last.piece.rows() + held.piece.rows() <= rows)
        ):
            last.piece.merge(held.piece)
        else:
            out.append(held)
    return out
