"""The milter's stop with a report store that hangs (REVIEW25B 10): the recorder and the
failure-report collector write what they hold side by side, under one deadline. One after
the other, a hung store took both writers' bounds (40 s each) on top of the connections'
deadline and stderr's drain: 115 s, past systemd's default TimeoutStopSec (90 s)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailauth.cli import milter_stop
from mailauth.cli.serve import _serve_milter
from mailauth.config import MilterConfig
from mailauth.config_failure import FailureConfig
from mailauth.milter import Milter, MilterSettings
from mailauth.pipeline import Authenticator
from mailauth.reports import BackgroundRecorder, open_store
from mailauth.reports.failure_collect import FailureCollector
from mailauth.reports.store import Store
from tests.failure_helpers import ARRIVAL
from tests.test_milter import RESOLVER
from tests.test_reports_writers import _offer
from tests.writer_helpers import record


def _stop_with(tmp_path: Path, opener: Callable[[str], Store]) -> float:
    """A milter with both writers on ``opener``'s store, each holding something, sent
    SIGTERM: the seconds from the signal to the end of its stop."""
    url = str(tmp_path / "reports.sqlite")
    open_store(url).close()
    recorder = BackgroundRecorder(url, opener=opener).start()
    collector = FailureCollector(url, FailureConfig(enabled=True), opener=opener,
                                 clock=lambda: ARRIVAL).start()  # fmt: skip
    record(recorder, "example.com")
    assert _offer(collector, "198.51.100.1")
    milter = Milter(Authenticator("mx.example.org", RESOLVER, recorder=recorder),
                    MilterSettings(failure_reports=collector))  # fmt: skip
    socket_path = tmp_path / "m.sock"
    config = MilterConfig(listen=f"unix:{socket_path}")

    async def run() -> float:
        serving = asyncio.create_task(_serve_milter(milter, config, argparse.Namespace()))
        while not socket_path.exists():
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        started = time.monotonic()
        await serving
        return time.monotonic() - started

    return asyncio.run(run())


def test_the_writers_stop_side_by_side(tmp_path: Path) -> None:
    """Each writer's store takes 2 s to open at the stop: 4 s one after the other (before),
    2 s side by side; what they held is written."""

    def slow(url: str) -> Store:
        time.sleep(2)
        return open_store(url)

    seconds = _stop_with(tmp_path, slow)
    assert 2 <= seconds < 3.5
    store = open_store(str(tmp_path / "reports.sqlite"))
    try:
        assert store.fetchall("SELECT SUM(messages) FROM report_counts") == [(1,)]
        assert store.fetchall("SELECT COUNT(*) FROM failure_reports") == [(1,)]
    finally:
        store.close()


def test_a_stop_with_a_hung_store_ends_within_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that never answers: the stop ends after the writers' one deadline (here
    0.5 s; 40 s in production), both left to finish, said."""
    monkeypatch.setattr(milter_stop, "WRITERS_STOP", 0.5)
    released = threading.Event()

    def hung(url: str) -> Store:
        released.wait(60)
        return open_store(url)

    try:
        with caplog.at_level(logging.WARNING):
            seconds = _stop_with(tmp_path, hung)
    finally:
        released.set()
    assert seconds < 2.5  # (0.5 s, the 1 s margin at most, and the rest of the stop)
    assert caplog.text.count("still writing after 0.5 s: left to finish") == 2
