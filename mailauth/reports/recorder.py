"""Recording verdicts into the report store, off the mail path.

:class:`BackgroundRecorder` is what the milter (and a library caller, through
``Authenticator(..., recorder=...)``) hands each verdict to. :meth:`~BackgroundRecorder.record`
only counts the observation into an in-memory :class:`Batch` (a dict update under a lock:
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
from mailauth.reports.observe import Enforcement, Observation, observe, row_key
from mailauth.reports.outgoing import GRACE
from mailauth.reports.store import Store, StoreError
from mailauth.results import PublishedPolicy, Verdict

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
        known = self.policies.get(key)
        if known is None or known[2] <= value[2]:
            self.policies[key] = value

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
            self._policy(where, value)

    def messages(self) -> int:
        return sum(self.counts.values())

    def rows(self) -> int:
        """Its rows in the store: counts and policies (what the store may refuse alone)."""
        return len(self.counts) + len(self.policies)

    def halves(self) -> tuple[Batch, Batch]:
        """Its rows in two batches, in key order (a policy beside its period's counts)."""
        keys: list[tuple[str, int, int, tuple[str, ...]]] = [
            (domain, begin, 0, ()) for domain, begin in self.policies
        ]
        keys += [(domain, begin, 1, key) for domain, begin, key in self.counts]
        keys.sort()
        middle = len(keys) // 2
        return self._subset(keys[:middle]), self._subset(keys[middle:])

    def _subset(self, keys: list[tuple[str, int, int, tuple[str, ...]]]) -> Batch:
        part = Batch()
        for domain, begin, kind, key in keys:
            if kind:
                row = (domain, begin, key)
                part.counts[row] = self.counts[row]
                part.size += _row_size(row)
            else:
                part.policies[domain, begin] = self.policies[domain, begin]
        return part


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
    """One transaction: every count added, every policy replaced by a newer one (the
    store locks the rows in key order, so that concurrent writers never deadlock)."""
    counts = [
        (domain, begin, row_key(domain, key), *key, messages)
        for (domain, begin, key), messages in batch.counts.items()
    ]
    policies = [
        (domain, begin, end, *_policy_columns(policy), seen)
        for (domain, begin), (end, policy, seen) in batch.policies.items()
    ]
    with store.write():
        store.upsert("report_counts", _COUNT_COLUMNS, _COUNT_KEY, _COUNT_ADD, counts)
        store.upsert("report_policies", _POLICY_COLUMNS, _POLICY_KEY, _POLICY_NEWER, policies)


# The URIs of rua=/ruf= kept per policy (reports go to at most 10 destinations,
# reports.uri.MAX_DESTINATIONS; a record may list thousands), and the longest kept (RFC
# 5321 4.5.3.1.3: a path is at most 256 octets, percent-encoded up to three times that).
MAX_STORED_URIS = 32
MAX_URI = 1000


def _policy_columns(policy: PublishedPolicy) -> tuple[str, ...]:
    return (
        str(policy.p), str(policy.sp or ""), str(policy.np or ""), policy.adkim, policy.aspf,
        "y" if policy.testing else "n", policy.psd, policy.fo, policy.discovery,
        _uri_column(policy.rua), _uri_column(policy.ruf),
    )  # fmt: skip


def _uri_column(uris: tuple[str, ...]) -> str:
    """The URIs as the store keeps them: separated by spaces, so none may hold one."""
    kept = (u for u in uris if len(u) <= MAX_URI and not any(c.isspace() for c in u))
    return " ".join(itertools.islice(kept, MAX_STORED_URIS))


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


def late_messages(batch: Batch, now: float) -> int:
    """The messages of ``batch`` in periods whose report may have gone out already: ended
    more than :data:`~.outgoing.GRACE` seconds before ``now`` (a report is built once, so
    they are kept in the store and never reported)."""
    closed = {key for key, (end, policy, _) in batch.policies.items()
              if policy.rua and end + GRACE <= now}  # fmt: skip
    if not closed:
        return 0
    return sum(
        messages
        for (domain, begin, _), messages in batch.counts.items()
        if (domain, begin) in closed
    )
