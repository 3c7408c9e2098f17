"""The milter's stderr never blocks its event loop (issue 14): a journal stream or a pipe
that stops reading fills, and a write on the loop would then stop every message."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mailauth.cli import logs
from mailauth.cli.logs import QueuedStderr
from mailauth.dkim.keys import private_key_pem
from tests.dkim_helpers import ED_KEY
from tests.milterclient import MilterClient, split_message
from tests.test_milter import DEMO, SENDER

MESSAGES = 400  # log lines of ~300 octets: twice what a pipe (64 KiB) holds


class _Gate:
    """A stream that cannot be written until opened (a wedged stderr)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.open.wait()
        self.lines.append(text.removesuffix("\n"))
        return len(text)

    def flush(self) -> None:
        self.open.wait()


def test_a_wedged_stderr_costs_the_records_past_the_queue_not_a_blocked_caller() -> None:
    gate = _Gate()
    handler = QueuedStderr(gate, size=100)
    log = logging.Logger("t")
    log.addHandler(handler)
    started = time.monotonic()
    for n in range(5_000):
        log.info("line %d", n)
    assert time.monotonic() - started < 2  # (the writer waits; the caller never does)
    assert 4_899 <= handler.dropped <= 4_900  # (one taken by the writer, 100 queued)
    log.info("one more")  # (while the queue is full: dropped, and no note yet)
    gate.open.set()
    while handler.queue.qsize():  # type: ignore[attr-defined]  # (the queued lines go out)
        time.sleep(0.01)
    log.info("after")  # (the count of the dropped ones first)
    handler.close()
    assert gate.lines[-2:] == [f"{handler.dropped} log lines dropped: stderr did not take "
                               "them in time", "after"]  # fmt: skip
    assert gate.lines[0] == "line 0"
    assert len(gate.lines) in (102, 103)  # (the 100 queued, perhaps the writer's, the note,
    # "after")


def test_close_gives_up_on_a_stderr_that_never_takes_a_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "STDERR_CLOSE_TIMEOUT", 0.2)
    gate = _Gate()
    handler = QueuedStderr(gate, size=2)
    for n in range(5):
        handler.handle(logging.LogRecord("t", logging.INFO, __file__, 0, "x %d", (n,), None))
    started = time.monotonic()
    handler.close()  # (no room for the end mark, the writer stuck: the milter still stops)
    assert time.monotonic() - started < 0.5  # (STDERR_CLOSE_TIMEOUT in all)
    gate.open.set()  # (the writer thread ends)


def test_the_process_exits_with_its_stderr_wedged() -> None:
    """The writer thread, stuck in a write, holds no lock of logging's: the interpreter's
    exit (logging.shutdown) goes on after close() has waited its bound."""
    code = (
        "import logging, threading\n"
        "from mailauth.cli.logs import QueuedStderr\n"
        "class Wedged:\n"
        "    def write(self, text): threading.Event().wait()\n"
        "    def flush(self): pass\n"
        "root = logging.getLogger()\n"
        "root.addHandler(QueuedStderr(Wedged(), size=10))\n"
        "for n in range(100): root.warning('line %d', n)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], timeout=30, check=False)
    assert done.returncode == 0
    assert time.monotonic() - started < 20  # (STDERR_CLOSE_TIMEOUT, 5 s, and the start)


def test_drops_at_the_end_are_said_at_close() -> None:
    gate = _Gate()
    handler = QueuedStderr(gate, size=10)
    for n in range(50):
        handler.handle(logging.LogRecord("t", logging.INFO, __file__, 0, "x %d", (n,), None))
    dropped = handler.dropped
    assert dropped >= 39
    threading.Timer(0.2, gate.open.set).start()  # (stderr takes lines again)
    handler.close()
    assert gate.lines[-1] == f"{dropped} log lines dropped: stderr did not take them in time"


def test_the_milter_answers_while_nobody_reads_its_stderr(tmp_path: Path) -> None:
    """Before, the milter wrote each message's log line to stderr from its event loop:
    with a pipe nobody read, it stopped answering after about 200 messages. Now every
    message is answered, across a reload that warns too, and the lines come out once the
    pipe is read again, none lost."""
    socket_path = tmp_path / "m.sock"
    key = tmp_path / "arc.pem"
    key.write_bytes(private_key_pem(ED_KEY))
    key.chmod(0o600)
    config = tmp_path / "m.toml"
    config.write_text(
        f'listen = "unix:{socket_path}"\nauthserv_id = "mx.example.org"\n'
        f'[dns]\nzone_files = ["{DEMO / "example.com.zone"}"]\n[inbound]\noffload_workers = 0\n'
        f'[inbound.arc_seal]\ndomain = "example.org"\nselector = "s"\nkey = "{key}"\n'
    )
    command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    headers, body = split_message((DEMO / "message.eml").read_bytes())

    async def send_all(first: int, count: int) -> int:
        client = await MilterClient.connect_unix(str(socket_path))
        await asyncio.wait_for(client.negotiate(), 20)
        answered = 0
        for n in range(first, first + count):
            replies = await asyncio.wait_for(
                client.message(**SENDER, headers=headers, body=body, queue_id=f"Q{n}"), 20
            )
            answered += any(b"dkim=pass" in data for _, data in replies)
        await client.close()
        return answered

    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith(b"mailauth milter: listening on unix:")
        answered = asyncio.run(send_all(0, MESSAGES))  # (stderr is not read meanwhile)
        # A reload that has something to say (the key readable by others): said through
        # the log's queue too (before, printed from the loop: it stopped there for good).
        key.chmod(0o644)
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(1)
        answered += asyncio.run(send_all(MESSAGES, 20))
        os.kill(process.pid, signal.SIGTERM)
        err = process.stderr.read().decode()  # (read now: the queued lines come out)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert answered == MESSAGES + 20
    assert len(err.encode()) > 65_536  # (more than the pipe held: the writes had to wait)
    assert sum(f'{{"queue_id":"Q{n}",' in err for n in range(MESSAGES + 20)) == MESSAGES + 20
    assert f"mailauth milter: warning: private key {key} is accessible by group" in err
    assert "stopped on SIGTERM" in err


class _Counting:
    """A stream that counts the lines it is asked to write."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.writes = inner, 0

    def write(self, text: str) -> int:
        self.writes += 1
        return int(self.inner.write(text))

    def flush(self) -> None:
        self.inner.flush()


@pytest.mark.parametrize("how", ["reader gone", "closed"])
def test_a_stderr_gone_for_good_is_given_up_after_its_first_error(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """REVIEW25B 10: journald restarted or the pipe's reader gone (EPIPE), or the stream
    closed: every write failed, each failure was counted, so each record brought a drops
    note that failed in turn -- two items queued and two writes per record for the rest
    of the process's life. Now the first such error ends stderr's writes (said once,
    through the other handlers); records are counted, never queued again."""
    read, write = os.pipe()
    os.close(read)
    inner = os.fdopen(write, "w", buffering=1)  # (line-buffered: each write is sent)
    if how == "closed":
        inner.close()
    stream = _Counting(inner)
    handler = QueuedStderr(stream, size=100)
    log = logging.Logger("t")
    log.addHandler(handler)
    with caplog.at_level(logging.WARNING, "mailauth.milter"):
        for n in range(10_000):
            log.info("line %d", n)
        deadline = time.monotonic() + 10
        while handler.queue.qsize() and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        for n in range(10_000):
            log.info("more %d", n)
        assert handler.queue.qsize() == 0  # type: ignore[attr-defined]  # (nothing queued)
        started = time.monotonic()
        handler.close()
    assert time.monotonic() - started < 1
    assert stream.writes == 1  # (the first line; nothing after it, no notes)
    assert handler.dropped == 20_000  # (every record, counted once)
    assert handler.gone
    gone = [r for r in caplog.records if "stderr is gone for good" in r.getMessage()]
    assert len(gone) == 1
    with contextlib.suppress(OSError, ValueError):
        inner.close()


class _Flaky:
    """A stream that fails every write (ENOSPC: a full disk, say) until ``ok`` is set."""

    def __init__(self) -> None:
        self.ok, self.attempts, self.lines = False, 0, list[str]()

    def write(self, text: str) -> int:
        self.attempts += 1
        if not self.ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines.append(text.removesuffix("\n"))
        return len(text)

    def flush(self) -> None:
        pass


def test_a_failing_stderr_gets_no_note_per_record_and_one_once_it_takes_lines() -> None:
    stream = _Flaky()
    handler = QueuedStderr(stream, size=100)
    log = logging.Logger("t")
    log.addHandler(handler)
    for n in range(200):
        log.info("line %d", n)
        time.sleep(0.0005)  # (the writer keeps up: most records reach the stream)
    deadline = time.monotonic() + 10
    while handler.dropped < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.dropped == 200 and not handler.gone  # (a full disk may empty)
    assert stream.attempts <= 200  # (records only: no note tried while it fails)
    stream.ok = True
    log.info("back")  # (taken: the stream works again ...)
    deadline = time.monotonic() + 10
    while not stream.lines and time.monotonic() < deadline:
        time.sleep(0.01)
    log.info("again")  # (... so the count comes first)
    handler.close()
    assert stream.lines == [
        "back",
        "200 log lines dropped: stderr did not take them in time",
        "again",
    ]


class _Alternating:
    """Fails every other write; keeps the records written and the drops said."""

    def __init__(self) -> None:
        self.calls, self.records, self.said = 0, 0, 0

    def write(self, text: str) -> int:
        self.calls += 1
        if self.calls % 2:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        if text.endswith("stderr did not take them in time\n"):
            self.said += int(text.split(maxsplit=1)[0])
        else:
            self.records += 1
        return len(text)

    def flush(self) -> None:
        pass


def test_drops_counted_by_the_loggers_and_the_writer_at_once_are_all_counted() -> None:
    """REVIEW25B 10: ``dropped += 1`` by the threads that log (under the handler's lock)
    and by the writer thread (not under it) lost counts, and a note that failed was
    counted as a record dropped. Now each side has its own counter: every record is
    written or dropped, exactly once."""
    stream = _Alternating()
    handler = QueuedStderr(stream, size=50)
    log = logging.Logger("t")
    log.addHandler(handler)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads switch as often as they can)
    try:

        def emit() -> None:
            for _ in range(5_000):
                log.info("x")

        threads = [threading.Thread(target=emit) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    handler.close()
    assert stream.records + handler.dropped == 40_000
    assert stream.said <= handler.dropped
