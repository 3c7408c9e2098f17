"""The milter's stop (SIGTERM, SIGINT), past its connections: the report writers -- the
aggregate recorder and the failure-report collector (:mod:`mailauth.reports.background`)
-- write what they hold and stop side by side, under one deadline.

Each writer's ``close`` waits up to :data:`~mailauth.reports.background.CLOSE_TIMEOUT`
(40 s: one statement's bound and the client's margin past it) for its last write. One
after the other, a store that hangs at stop took twice that; with the wait for the
connections in progress (``deadline``, 30 s) and stderr's drain (5 s) before and after,
115 s, past systemd's default ``TimeoutStopSec`` of 90 s: the milter was killed before its
last rows and its "stopped" line were out. Side by side, the worst case is the deadline
+ 41 s (40 s and :data:`_MARGIN`) + 5 s: 76 s with the defaults (docs/milter.md, SIGTERM).

Each close runs in a daemon thread of its own: a close still running at the deadline (a
store that never answers) is left to finish or die with the process, never waited for at
the interpreter's exit, as a thread of asyncio's executor would be.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from mailauth.milter import Milter
from mailauth.reports import BackgroundRecorder
from mailauth.reports.background import CLOSE_TIMEOUT, BackgroundWriter
from mailauth.reports.store import shown_url

log = logging.getLogger("mailauth.milter")
WRITERS_STOP = CLOSE_TIMEOUT  # seconds the writers have, together, at a stop
_MARGIN = 1.0  # seconds past it for a close to come back (its store's connection closed)


def close_writers(writers: Sequence[BackgroundWriter], timeout: float | None = None) -> None:
    """Close ``writers`` side by side, each given ``timeout`` seconds (:data:`WRITERS_STOP`)
    from the same moment; back within that and a moment, whatever their stores do."""
    seconds = WRITERS_STOP if timeout is None else timeout
    ends = time.monotonic() + seconds + _MARGIN
    threads = [
        threading.Thread(
            target=writer.close, args=(seconds,), name=f"{writer.thread_name}-stop", daemon=True
        )
        for writer in writers
    ]
    for thread in threads:
        thread.start()
    for writer, thread in zip(writers, threads, strict=True):
        thread.join(max(0.0, ends - time.monotonic()))
        if thread.is_alive():
            log.warning("%s: still closing after %g s: left", shown_url(writer.url), seconds)


def writers_of(milter: Milter) -> list[BackgroundWriter]:
    """The report writers ``milter`` runs: its recorder, its failure-report collector."""
    recorder = milter.authenticator.recorder
    found: list[BackgroundWriter] = [recorder] if isinstance(recorder, BackgroundRecorder) else []
    if milter.settings.failure_reports is not None:
        found.append(milter.settings.failure_reports)
    return found
