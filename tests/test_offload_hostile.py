"""The worker processes of the milter (mailauth.milter.offload) under an attacker who can
make the milter's deadline cut a message's write, hang a worker, or send a message past the
size bounds: the stream to a worker is never read out of step, a worker that stops
answering is replaced, and no message passes unchecked because it was made heavy."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mailauth.dns import ZoneResolver
from mailauth.message import Message
from mailauth.milter import Milter, offload
from mailauth.milter import protocol as p
from mailauth.milter.offload import SLICE, Offloader, OffloadError
from mailauth.milter.offload_pool import Worker
from mailauth.milter.offload_wire import frame, request_frame
from mailauth.pipeline import Authenticator
from mailauth.results import Verdict
from tests import hostile
from tests.milterclient import MilterClient
from tests.test_milter import RESOLVER, SENDER, inserted_fields
from tests.test_milter_offload import _decoys, _demo, _run, worker_authenticator

ENVELOPE = {"ip": "192.0.2.1", "helo": "x", "mail_from": "a@example.com"}


class _Touch:
    """Unpickled, it creates a file: what an attacker's frame would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _ended(process: subprocess.Popen[bytes], within: float = 10.0) -> bool:
    """Whether a killed worker has ended and been reaped (returncode set) within ``within``
    seconds: the Offloader reaps it without waiting for it (``offload_pool._reap``)."""
    deadline = time.monotonic() + within
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.returncode is not None


class _SlowToEnd(subprocess.Popen[bytes]):
    """A process that takes its time to end when killed (as a killed worker can under
    load): kill() asks it to end (SIGTERM), and its handler sleeps 2 s first."""

    def kill(self) -> None:
        self.terminate()


def test_killing_a_worker_does_not_wait_for_it_to_end() -> None:
    """_kill (here through close()) returns at once however long the process takes to end
    (it waited up to 1 s, on the event loop when a worker dies or is replaced), and the
    process is reaped all the same once it ends: no zombie."""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()
    worker = pool._workers[0]
    code = (
        "import signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(2), sys.exit(0))); "
        "print(flush=True); time.sleep(60)"
    )
    slow = _SlowToEnd([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert slow.stdout is not None
    slow.stdout.readline()  # (its handler is in place)
    real, worker.process = worker.process, slow
    try:
        started = time.monotonic()
        pool.close()
        assert time.monotonic() - started < 0.5
        assert slow.returncode is None  # (still ending)
        assert _ended(slow, within=30)  # (reaped by then: no zombie left)
        assert slow.returncode == 0
    finally:
        slow.stdout.close()
        real.kill()
        real.wait()


def _message(size: int, body: bytes = b"") -> bytearray:
    head = b"From: a@example.com\r\n\r\n"
    return bytearray(head + body + b"x" * (size - len(head) - len(body)))


def test_a_write_cut_by_the_deadline_ends_the_worker_and_no_octet_is_unpickled(
    tmp_path: Path,
) -> None:
    """The worker is stopped (busy), a heavy message's write is cut by the deadline; the
    next message carries a pickle at every place the worker's stream could resume."""
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Touch(marker))
    evil_frame = struct.pack(">I", len(evil)) + evil
    size = 4 << 20
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        first = pool._workers[0].process
        os.kill(first.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(0.5):
                await pool.verdict(bytes(_message(size)), **ENVELOPE, seconds=0.5)
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):  # (before the fix: it lives on)
            os.kill(first.pid, signal.SIGCONT)
        assert await pool.wait_ready(60)  # (a new worker: requests never wait for one)
        until = time.time() + 3
        head = len(frame((pool._ids + 1, size, "verify", *ENVELOPE.values(), until)))
        crafted = _message(size)
        for k in range(1, size // SLICE + 1):
            at = k * SLICE - head
            crafted[at : at + len(evil_frame)] = evil_frame
        async with asyncio.timeout(60):
            await pool.verdict(bytes(crafted), **ENVELOPE, seconds=50)
            spf, _ = await pool.spf(**ENVELOPE, seconds=10)
        assert spf.mailfrom.result.value == "pass"
        assert _ended(first)  # (the worker whose stream was cut is gone)

    try:
        asyncio.run(go())
    finally:
        pool.close()
    assert not marker.exists()


def test_a_worker_that_stops_answering_is_replaced() -> None:
    """A worker that never answers (stopped, stuck) fails its requests shortly after their
    deadline and is replaced; before, it lived on and every later SPF request of ordinary
    mail waited for the milter's deadline (on_error for all mail, for ever)."""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        stuck = pool._workers[0].process
        os.kill(stuck.pid, signal.SIGSTOP)
        started = time.monotonic()
        async with asyncio.timeout(10):
            with pytest.raises(OffloadError):
                await pool.spf(**ENVELOPE, seconds=0.5)
        assert time.monotonic() - started < 0.5 + 4
        assert _ended(stuck)
        with pytest.raises(OffloadError, match="still starting"):
            await pool.spf(**ENVELOPE, seconds=30)  # (to the loop, not waiting for it)
        assert await pool.wait_ready(60)
        async with asyncio.timeout(60):
            spf, _ = await pool.spf(**ENVELOPE, seconds=30)
        assert spf.mailfrom.result.value == "pass"

    try:
        asyncio.run(go())
    finally:
        pool.close()


def failing_authenticator() -> Authenticator:
    """A worker that cannot build its Authenticator (a nameserver unreachable right then:
    make_resolver's probe raises)."""
    raise OSError("DNS unreachable: no answer from 192.0.2.53 within 5s")


def test_a_worker_that_cannot_start_is_not_respawned_for_every_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Started by a request (after a reload, or to replace one that died): when it cannot
    start, the next requests go to the loop for a while instead of each starting another
    Python process (hundreds a second under load)."""
    pool = Offloader(failing_authenticator, workers=1)  # (not started: as after a reload)
    spawned = []
    spawn = pool._spawn

    def counting(*, wait: bool) -> Any:
        spawned.append(wait)
        return spawn(wait=wait)

    pool._spawn = counting  # type: ignore[method-assign]

    async def go() -> None:
        with pytest.raises(OffloadError, match="still starting"):
            await pool.spf(**ENVELOPE, seconds=5)  # (started; this one on the loop)
        async with asyncio.timeout(60):
            while pool._workers[0].alive:  # (until it says why it could not start)
                await asyncio.sleep(0.05)
        for _ in range(10):
            with pytest.raises(OffloadError):
                async with asyncio.timeout(30):
                    await pool.spf(**ENVELOPE, seconds=5)
        assert not pool.reserve()  # (a heavy message stays on the loop meanwhile)

    try:
        asyncio.run(go())
    finally:
        pool.close()
    assert len(spawned) == 1
    assert "a worker process could not start: OSError: DNS unreachable" in caplog.text


def slow_authenticator() -> Authenticator:
    """A worker that takes 4 s to build its Authenticator (a busy machine: a Python process
    took 30 s to start under load in CI)."""
    time.sleep(4)
    return worker_authenticator()


def test_no_message_waits_for_a_worker_that_is_starting() -> None:
    """A reload's new workers start with the first request: until one is ready, SPF and
    heavy messages are checked on the loop at once. Before, each request waited for the
    process to start, and under load the deadline came first: on_error for every message
    of those seconds, and the worker killed as "not answering" before it was ever ready."""
    pool = Offloader(slow_authenticator, workers=1)  # (not started: as after a reload)
    try:
        started = time.monotonic()
        ordinary, heavy = _run(pool, _demo(), _demo(_decoys(6)))
        assert time.monotonic() - started < 3  # (not the worker's 4 s)
        assert b"spf=pass" in inserted_fields(ordinary)[0]
        assert b"dkim=pass" in inserted_fields(heavy)[0]
        assert b"spf=pass" in inserted_fields(heavy)[0]
        assert pool.offloaded == 0 and pool.stats.on_loop == {"no_worker": 1}
        assert pool.stats.sent == {} and pool.stats.unsent == {"spf": 2}
        (later,) = _run(pool, _demo(_decoys(6)), ready=True)  # (once it is ready: there)
        assert pool.offloaded == 1 and b"dkim=pass" in inserted_fields(later)[0]
    finally:
        pool.close()


def stuck_authenticator() -> Authenticator:
    time.sleep(600)
    return worker_authenticator()


def test_a_worker_never_ready_is_ended(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One that never says ready (stuck at start) is ended START_TIMEOUT after it began and
    replaced after respawn_delay; meanwhile the loop does the work."""
    from mailauth.milter import offload_pool

    monkeypatch.setattr(offload_pool, "START_TIMEOUT", 1.0)
    pool = Offloader(stuck_authenticator, workers=1, respawn_delay=60)

    async def go() -> None:
        assert not pool.has_ready_worker()  # (started now)
        stuck = pool._workers[0].process
        await asyncio.sleep(1.2)
        assert not pool.has_ready_worker()
        assert _ended(stuck) and pool.stats.alive == 0
        assert not pool.reserve() and len(pool._workers) == 1  # (none again for 60 s)

    try:
        asyncio.run(go())
    finally:
        pool.close()
    assert "not ready after 1 s: ended" in caplog.text


def test_a_closed_offloader_starts_no_worker() -> None:
    """A reload closes the old workers after the deadline; a heavy message that took its
    place before (a slow body) and ends after that must not start workers nobody closes."""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()
    pool.close()

    async def go() -> None:
        with pytest.raises(OffloadError):
            await pool.verdict(b"From: a@example.com\r\n\r\nx", **ENVELOPE, seconds=5)

    try:
        asyncio.run(go())
        assert not pool._workers
    finally:
        pool.close()


@pytest.mark.parametrize("ready", [True, False])
def test_a_heavy_message_across_a_reload_goes_to_the_new_workers(ready: bool) -> None:
    """Its place taken on the old workers, which the reload stopped before its end: the
    new ones check it (it had been on_error); the loop does when none of them is ready yet
    (a reload's workers start with their first request: REVIEW24 2, it was on_error)."""
    old = Offloader(worker_authenticator, workers=1)
    old.start()
    new = Offloader(worker_authenticator, workers=1)
    if ready:
        new.start()
    headers, body = _demo(_decoys(6))

    async def go() -> list[tuple[bytes, bytes]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), offloader=old)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        connect = b"client.example\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.10\0"
        await client.step(p.CONNECT, connect)
        await client.step(p.HELO, SENDER["helo"].encode() + b"\0")
        await client.step(p.MAIL, f"<{SENDER['mail_from']}>".encode() + b"\0")
        for name, value in headers:
            await client.step(p.HEADER, f"{name}\0{value}\0".encode())
        await client.step(p.EOH)
        for _ in range(100):  # (no replies before the end of message: wait for the milter)
            if old.waiting:
                break
            await asyncio.sleep(0.05)
        assert old.waiting == 1
        milter.offloader = new  # (the reload) ...
        old.close()  # ... and, the deadline later, the old workers stopped
        await client.step(p.BODY, body)
        await client.send(p.EOM)
        replies: list[tuple[bytes, bytes]] = []
        while not replies or replies[-1][0] != p.CONTINUE:
            replies.append(await client.read())
        await client.close()
        server.close()
        return replies

    try:
        replies = asyncio.run(go())
    finally:
        new.close()
    assert b"dkim=pass" in inserted_fields(replies)[0]
    assert b"spf=pass" in inserted_fields(replies)[0]
    assert (old.waiting, old.held, new.offloaded) == (0, 0, 1 if ready else 0)
    assert new.stats.on_loop == ({} if ready else {"no_worker": 1})


def zone_authenticator() -> Authenticator:
    """A worker's Authenticator over the zone file named by MAILAUTH_TEST_ZONE."""
    text = Path(os.environ["MAILAUTH_TEST_ZONE"]).read_text()
    return Authenticator("mx.example.org", ZoneResolver.from_text(text))


def test_a_worker_gives_the_loops_verdict_on_the_hostile_cases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Differential: tests/hostile.py's messages (smaller than the benchmark's) checked in
    a worker and on the loop: the same Authentication-Results, field for field."""
    cases = [
        hostile.ordinary(),
        hostile.decoy_exponent_arc(sets=8),
        hostile.many_l_bodies(body_size=300_000, signatures=4),
        hostile.big_aar_chain(sets=6, aar_size=4096),
        hostile.spf_tree(),
        hostile.many_signatures(count=200),
    ]
    zone = tmp_path / "hostile.zone"
    zone.write_text("".join(case.zone for case in cases))
    monkeypatch.setenv("MAILAUTH_TEST_ZONE", str(zone))
    pool = Offloader(zone_authenticator, workers=1)
    pool.start()

    async def go() -> list[str]:
        results = []
        for case in cases:
            envelope = {"ip": case.ip, "helo": case.helo, "mail_from": case.mail_from}
            verdict = await pool.verdict(case.message, **envelope, seconds=60)
            results.append(verdict.authentication_results)
        return results

    try:
        in_worker = asyncio.run(go())
    finally:
        pool.close()
    on_loop = zone_authenticator()
    for case, results in zip(cases, in_worker, strict=True):
        verdict = on_loop.verify(case.message, ip=case.ip, helo=case.helo, mail_from=case.mail_from)
        assert results == verdict.authentication_results


class _Buggy(Authenticator):
    """A check that fails with an exception no check should raise (a parser bug)."""

    async def verify_async(self, message: bytes | Message, **kwargs: Any) -> Verdict:
        if isinstance(message, bytes) and b"boom" in message:
            raise KeyError("a bug")
        return await super().verify_async(message, **kwargs)


def buggy_authenticator() -> Authenticator:
    return _Buggy("mx.example.org", ZoneResolver.from_files([]))


def test_an_unexpected_error_in_a_check_fails_that_message_only() -> None:
    """Answered at once as a failure (on_error for that message); the worker stays, with
    whatever else it holds. It had sent nothing: the message waited for its deadline, and
    then the worker was taken for stuck and ended with every other request in it."""
    pool = Offloader(buggy_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        worker = pool._workers[0].process
        started = time.monotonic()
        with pytest.raises(OffloadError, match="KeyError"):
            await pool.verdict(b"From: a@example.com\r\n\r\nboom\r\n", **ENVELOPE, seconds=20)
        assert time.monotonic() - started < 10
        assert pool._workers[0].process is worker and worker.poll() is None

    try:
        asyncio.run(go())
    finally:
        pool.close()


def test_a_request_queued_behind_a_cut_write_fails_at_once() -> None:
    """Waiting to write behind a message whose write the deadline cut (the worker ended
    meanwhile): it fails at once (SPF to the loop) rather than writing to a closed socket
    and waiting for a reply that cannot come."""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        first = pool._workers[0].process
        os.kill(first.pid, signal.SIGSTOP)

        async def heavy() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await pool.verdict(bytes(_message(4 << 20)), **ENVELOPE, seconds=0.5)

        cut = asyncio.ensure_future(heavy())
        await asyncio.sleep(0.1)  # (the heavy message holds the socket)
        started = time.monotonic()
        with pytest.raises(OffloadError):
            await pool.spf(**ENVELOPE, seconds=10)
        assert time.monotonic() - started < 3
        await cut

    try:
        asyncio.run(go())
    finally:
        pool.close()


@pytest.mark.parametrize("bounds", [{}, {"max_bytes": 500}])
def test_an_offloaded_message_is_sealed_and_the_seal_verifies(bounds: dict[str, Any]) -> None:
    """ARC sealing of a heavy message checked in a worker (and of one sent back to the loop
    past max_bytes): the set verifies with mailauth and dkimpy (the oracle), over the
    message as delivered."""
    import dkim as dkimpy

    from mailauth.arc import Sealer, verify_arc
    from mailauth.dkim import public_key_record
    from mailauth.dns import RRType
    from mailauth.milter import MilterSettings
    from mailauth.plan import run_plan
    from mailauth.results import ArcResult
    from tests.dkim_helpers import RSA_KEY, dkimpy_dns

    pool = Offloader(worker_authenticator, workers=1, **bounds)
    pool.start()
    headers, body = _demo(_decoys(6))
    settings = MilterSettings(sealer=Sealer("example.org", "arc1", RSA_KEY))

    async def go() -> list[tuple[bytes, bytes]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings, offloader=pool)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = await client.message(**SENDER, headers=headers, body=body)
        await client.close()
        server.close()
        return replies

    try:
        replies = asyncio.run(go())
    finally:
        pool.close()
    assert pool.offloaded == (0 if bounds else 1)
    delivered = inserted_fields(replies)
    assert [f.split(b":")[0] for f in delivered][:3] == [
        b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results",
    ]  # fmt: skip
    original = b"".join(f"{n}:{v}\r\n".encode() for n, v in headers) + b"\r\n" + body
    sealed = b"".join(delivered) + original
    record = public_key_record(RSA_KEY)
    zone = ZoneResolver({("arc1._domainkey.example.org", RRType.TXT): (300, (record.encode(),))})
    outcome = run_plan(verify_arc(Message.parse(sealed)), zone)
    assert outcome.result is ArcResult.PASS, outcome.reason
    records = {"arc1._domainkey.example.org": record}
    assert dkimpy.arc_verify(sealed, dnsfunc=dkimpy_dns(records))[0] == b"pass"


def test_a_deadline_after_the_last_octet_was_queued_keeps_the_worker() -> None:
    """Cancelled while the whole request waits in the transport (nothing cut): the worker
    stays and answers the next request."""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        first = pool._workers[0].process
        os.kill(first.pid, signal.SIGSTOP)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):  # (the last slice written, waiting to go)
                await pool.verdict(bytes(_message(SLICE + 100_000)), **ENVELOPE, seconds=0.5)
        os.kill(first.pid, signal.SIGCONT)
        async with asyncio.timeout(30):
            spf, _ = await pool.spf(**ENVELOPE, seconds=20)
        assert spf.mailfrom.result.value == "pass"
        assert pool._workers[0].process is first and first.poll() is None

    try:
        asyncio.run(go())
    finally:
        pool.close()


async def _connected(pool: Offloader) -> Worker:
    """The pool's one worker, connected (an SPF request sent and answered)."""
    async with asyncio.timeout(30):
        await pool.spf(**ENVELOPE, seconds=20)
    return pool._workers[0]


@pytest.mark.parametrize("budget", [0.0, 1e9])
def test_a_large_message_goes_to_the_worker_in_turns_of_the_loop(
    monkeypatch: pytest.MonkeyPatch, budget: float
) -> None:
    """The worker reads as fast as the milter writes (here: drain() never waits): the
    others still get the loop once a message's slices have taken WRITE_TURN of it (before:
    10 MB in one step). With no budget, a turn per slice; with an endless one, all in one."""
    monkeypatch.setattr(offload, "WRITE_TURN", budget)
    monkeypatch.setattr(offload, "_DRAIN_WAITED", float("inf"))  # (a slow drain: no turn)
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        worker = await _connected(pool)
        assert worker.writer is not None
        turns, at_write = [0], []
        write = worker.writer.write

        def counted(data: bytes | bytearray | memoryview) -> None:
            at_write.append(turns[0])
            write(data)

        async def at_once() -> None:  # (a socket never full)
            return None

        async def others() -> None:
            while True:
                turns[0] += 1
                await asyncio.sleep(0)

        monkeypatch.setattr(worker.writer, "write", counted)
        monkeypatch.setattr(worker.writer, "drain", at_once)
        ticking = asyncio.ensure_future(others())
        await asyncio.sleep(0)  # (ticking)
        try:
            async with asyncio.timeout(30):
                await pool.verdict(bytes(_message(8 * SLICE)), **ENVELOPE, seconds=20)
        finally:
            ticking.cancel()
        slices = at_write[1:]  # (after the request's frame)
        assert len(slices) == 8
        if budget:
            assert len(set(slices)) == 1, slices
        else:
            assert all(later > earlier for earlier, later in itertools.pairwise(slices)), slices

    try:
        asyncio.run(go())
    finally:
        pool.close()


def test_a_worker_ended_while_a_message_is_written_to_it_fails_that_message_cleanly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another request's timeout ends the worker in the middle of a message's slices: that
    message fails with OffloadError (on_error applies), not with an AttributeError from
    inside asyncio that ended the milter's connection task; nothing is logged unread."""
    monkeypatch.setattr(offload, "WRITE_TURN", 0.0)  # (a turn between two slices)
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        worker = await _connected(pool)
        assert worker.writer is not None
        writes = [0]
        write = worker.writer.write

        def counted(data: bytes | bytearray | memoryview) -> None:
            writes[0] += 1
            write(data)

        monkeypatch.setattr(worker.writer, "write", counted)
        big = asyncio.ensure_future(
            pool.verdict(bytes(_message(64 * SLICE)), **ENVELOPE, seconds=20)
        )
        async with asyncio.timeout(30):
            while writes[0] < 4:
                await asyncio.sleep(0)
        pool._kill(worker)  # (as another request's _Unanswered does)
        at_kill = writes[0]
        with pytest.raises(OffloadError):
            await big
        assert writes[0] == at_kill  # (no write to the ended worker's transport)
        await asyncio.sleep(0.1)

    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            asyncio.run(go())
            gc.collect()  # (a future's unread exception is logged when it is collected)
    finally:
        pool.close()
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_spf_does_not_wait_behind_a_message_being_written() -> None:
    """A heavy message half written to the worker (its writer stalled, here: the request
    says 4 MiB and only 64 KiB came): SPF of ordinary mail is still answered by that worker,
    at once, over its other socket (before: it went to the milter's loop)."""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()

    async def go() -> None:
        worker = await _connected(pool)
        assert worker.writer is not None
        async with worker.sending:  # (as Offloader._exchange holds it while writing)
            until = time.time() + 20
            worker.writer.write(request_frame((999, 4 << 20, "verify", *ENVELOPE.values(), until)))
            worker.writer.write(bytes(64 << 10))
            await worker.writer.drain()
            started = time.monotonic()
            spf, _ = await pool.spf(**ENVELOPE, seconds=10)
            assert time.monotonic() - started < 2
            assert spf.mailfrom.result.value == "pass"
            assert pool.spf_checks == 2 and worker.alive

    try:
        asyncio.run(go())
    finally:
        pool.close()


def test_a_worker_that_cannot_be_started_is_said_once_and_not_tried_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """REVIEW24 3: a fork or file descriptor failure starting a worker escaped to the MTA
    connection's task (the connection lost), and every heavy message tried again."""
    pool = Offloader(worker_authenticator, workers=1, respawn_delay=60)
    tried = []

    def failing(*, wait: bool) -> Any:
        tried.append(wait)
        raise OSError(24, "Too many open files")

    pool._spawn = failing  # type: ignore[method-assign]
    try:
        for _ in range(5):
            assert not pool.reserve() and not pool.has_ready_worker()
    finally:
        pool.close()
    assert tried == [False]
    assert caplog.text.count("a worker process could not be started") == 1
    assert pool.stats.on_loop == {"no_worker": 5}


def test_close_after_the_loop_that_connected_the_workers_is_closed_ends_them() -> None:
    """(REVIEW24: the closed loop's streams raised in close(), and the processes lived on.)"""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()
    process = pool._workers[0].process

    async def go() -> None:
        spf, _ = await pool.spf(**ENVELOPE, seconds=10)  # (connected on this loop)
        assert spf.mailfrom.result.value == "pass"

    loop = asyncio.new_event_loop()
    loop.run_until_complete(go())
    loop.close()  # (its reading tasks never ended: the worker still counted alive)
    pool.close()
    assert _ended(process)
