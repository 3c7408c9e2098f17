"""Event-loop iteration times of a process started with this directory on PYTHONPATH and
MAILAUTH_LOOPSTAT=FILE (bench_hostile.py --loop-stats: the milter only). Each time the loop
enters its selector, the time since it left the previous select (what the iteration's
callbacks took, in wall-clock time, time.monotonic: a turn in which the process was
preempted counts whole) is counted in the current second;
at each new second the previous one's line is appended to FILE:
``SECOND ITERATIONS BUSY_SECONDS OVER_0.5MS OVER_1MS OVER_2MS OVER_4MS MAX_SECONDS``.
A measuring tool for the benchmarks, never imported by mailauth. It shadows any other
sitecustomize (coverage's, a distribution's) in the milter and its workers."""

from __future__ import annotations

import os
import selectors
import time
from typing import Any

_PATH = os.environ.pop("MAILAUTH_LOOPSTAT", None)  # (popped: not the worker processes)
_LIMITS = (0.0005, 0.001, 0.002, 0.004)

if _PATH:
    _clock = time.monotonic
    _left: list[float] = []  # (when the previous select returned)
    _second: list[Any] = [None, 0, 0.0, 0, 0, 0, 0, 0.0]
    _select = selectors.EpollSelector.select

    _out = _PATH

    def _flush() -> None:
        with open(_out, "a", encoding="ascii") as out:
            out.write(" ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in _second))
            out.write("\n")

    def select(self: selectors.EpollSelector, timeout: float | None = None) -> Any:
        entered = _clock()
        if _left:
            busy = entered - _left[0]
            second = int(entered)
            if _second[0] != second:
                if _second[0] is not None:
                    _flush()
                _second[:] = [second, 0, 0.0, 0, 0, 0, 0, 0.0]
            _second[1] += 1
            _second[2] += busy
            for index, limit in enumerate(_LIMITS):
                _second[3 + index] += busy > limit
            _second[7] = max(_second[7], busy)
        try:
            return _select(self, timeout)
        finally:
            _left[:] = [_clock()]

    selectors.EpollSelector.select = select  # type: ignore[method-assign,assignment]
