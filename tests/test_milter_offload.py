"""Heavy messages checked in a worker process (mailauth.milter.offload), over the milter's
socket: the same verdict as on the event loop, ordinary mail left on the loop, the bounds
(places, size), a worker that dies, and the deadline."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailauth import plan
from mailauth.dns import Lookup, RRType, ZoneResolver
from mailauth.milter import Milter, MilterSettings, offload, verifying
from mailauth.milter import protocol as p
from mailauth.milter.heavy import heavy
from mailauth.milter.offload import Offloader
from mailauth.pipeline import Authenticator, MessageIntake
from tests import hostile
from tests.milterclient import MilterClient, split_message
from tests.test_milter import DEMO, DMARC, RESOLVER, SENDER, inserted_fields

ZONES = [DEMO / "example.com.zone", DMARC / "dmarc.zone"]


class _Trapped(ZoneResolver):
    """Names under crash.test end the worker process; under slow.test, never answer."""

    async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
        if name.rstrip(".").endswith("crash.test"):
            os._exit(3)
        if name.rstrip(".").endswith("slow.test"):
            await asyncio.sleep(60)
        return await super().lookup_async(name, rdtype)


def worker_authenticator() -> Authenticator:
    """What a worker builds (pickled by reference: a module-level function)."""
    resolver = _Trapped.from_files(ZONES)
    return Authenticator("mx.example.org", resolver)


def _decoys(count: int, domain: str = "example.org") -> list[tuple[str, str]]:
    return [
        ("DKIM-Signature", f" v=1; a=rsa-sha256; d={domain}; s=s{i}; h=from; bh=AAAA; b=AAAA")
        for i in range(count)
    ]


def _demo(extra: list[tuple[str, str]] = ()) -> tuple[list[tuple[str, str]], bytes]:  # type: ignore[assignment]
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    return [*extra, *headers], body


def test_heavy_by_signatures_arc_sets_and_size() -> None:
    field = [("Subject", b" x")]
    assert not heavy(field * 3)
    assert not heavy([("DKIM-Signature", b" x")] * 5)
    assert heavy([("dkim-signature", b" x")] * 6)
    assert not heavy([("ARC-Seal", b" x")] * 3)
    assert heavy([("ARC-Seal", b" x")] * 4)
    assert heavy([("X-Big", b"y" * 70_000)])
    assert heavy([("ARC-Seal \t", b" x")] * 4)  # (as the verifiers read it)
    assert heavy([("X", b"")] * 301) and not heavy([("X", b"")] * 300)


def _run(offloader: Offloader | None, *messages: tuple[list[tuple[str, str]], bytes],
         settings: MilterSettings | None = None,
         ready: bool = False) -> list[list[tuple[bytes, bytes]]]:  # fmt: skip
    """``ready``: each message waits for a worker to be ready (the milter never does:
    until one is, the loop checks heavy mail)."""

    async def go() -> list[list[tuple[bytes, bytes]]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings, offloader=offloader)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = []
        for headers, body in messages:
            if ready:
                assert offloader is not None and await offloader.wait_ready(60)
            replies.append(await client.message(**SENDER, headers=headers, body=body))
        await client.close()
        server.close()
        return replies

    return asyncio.run(go())


@pytest.fixture
def offloader() -> Iterator[Offloader]:
    """(One per test: a worker's connection belongs to the event loop that made it.)"""
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()
    yield pool
    pool.close()


def test_heavy_message_gets_the_loops_verdict_from_a_worker(offloader: Offloader) -> None:
    heavy = _demo(_decoys(6))
    before = offloader.offloaded
    (in_worker,) = _run(offloader, heavy)
    (on_loop,) = _run(None, heavy)
    assert offloader.offloaded == before + 1
    assert offloader.waiting == 0 and offloader.held == 0
    fields = inserted_fields(in_worker)
    assert fields == inserted_fields(on_loop)
    (results,) = fields
    assert b"dkim=pass" in results and b"header.d=example.com" in results
    assert b"dmarc=pass" in results
    assert b"spf=pass" in results


def test_ordinary_mail_stays_on_the_loop_but_its_spf_goes_to_a_worker(
    offloader: Offloader,
) -> None:
    (replies,) = _run(offloader, _demo())
    assert offloader.offloaded == 0 and offloader.spf_checks == 1
    assert inserted_fields(replies) == inserted_fields(_run(None, _demo())[0])
    assert b"spf=pass" in inserted_fields(replies)[0]


def test_no_place_left_the_loop_checks_it() -> None:
    full = Offloader(worker_authenticator, workers=1, max_waiting=0)  # (never started)
    (replies,) = _run(full, _demo(_decoys(6)))
    assert full.offloaded == 0 and full.waiting == 0
    assert b"dkim=pass" in inserted_fields(replies)[0]
    full.close()


@pytest.mark.parametrize("bounds", [{"max_bytes": 500}, {"max_held": 10}])
def test_too_large_to_gather_is_checked_on_the_loop(bounds: dict[str, Any]) -> None:
    """Past the size of one message, or of all gathered ones, the loop checks it (it had
    been on_error: six junk DKIM-Signature fields and a body past max_bytes, or other heavy
    messages holding max_held, let a spoof through unchecked): the loop's verdict, every
    place and octet given back, no worker started."""
    small = Offloader(worker_authenticator, workers=1, **bounds)
    settings = MilterSettings(on_error="tempfail")
    (replies,) = _run(small, _demo(_decoys(6)), settings=settings)
    assert (small.waiting, small.held, small.offloaded) == (0, 0, 0)
    assert inserted_fields(replies) == inserted_fields(_run(None, _demo(_decoys(6)))[0])
    assert b"dkim=pass" in inserted_fields(replies)[0]
    assert b"spf=pass" in inserted_fields(replies)[0]
    small.close()


def test_a_worker_that_dies_fails_its_message_and_the_next_gets_a_new_one() -> None:
    fresh = Offloader(worker_authenticator, workers=1, respawn_delay=0)
    fresh.start()
    try:
        crash = _demo(_decoys(6, domain="crash.test"))
        settings = MilterSettings(on_error="tempfail")
        first, second = _run(fresh, crash, _demo(_decoys(6)), settings=settings, ready=True)
        assert first[-1][0] == p.TEMPFAIL  # not checked: on_error
        assert b"dkim=pass" in inserted_fields(second)[0]
        assert fresh.waiting == 0 and fresh.offloaded == 1
    finally:
        fresh.close()


def test_the_deadline_holds_for_a_worker(offloader: Offloader) -> None:
    settings = MilterSettings(on_error="tempfail", deadline=1.0)
    loop_time = asyncio.new_event_loop()
    started = loop_time.time()
    (replies,) = _run(offloader, _demo(_decoys(6, domain="slow.test")), settings=settings)
    elapsed = loop_time.time() - started
    loop_time.close()
    assert replies[-1][0] == p.TEMPFAIL
    assert elapsed < 5
    assert offloader.waiting == 0
    # The worker gave up too: the next heavy message is not stuck behind it.
    (after,) = _run(offloader, _demo(_decoys(6)))
    assert b"dkim=pass" in inserted_fields(after)[0]


def test_zones_exist() -> None:
    assert all(Path(zone).exists() for zone in ZONES)


def test_a_worker_process_imports_no_command_line() -> None:
    """A worker builds its Authenticator from the pickled ``AuthenticatorSpec.build``
    (mailauth.milter.worker_spec): neither its module nor unpickling the factory imports
    mailauth.cli (every command's code, argparse), which the worker has no use for."""
    import pickle

    from mailauth.milter.worker_spec import AuthenticatorSpec

    zones = tuple(str(zone) for zone in ZONES)
    spec = AuthenticatorSpec("mx.example.org", None, zones, 5.0, (), (), 10, False, 30.0)
    code = (
        "import pickle, sys; import mailauth.milter.offload_worker; "
        "authenticator = pickle.loads(sys.stdin.buffer.read())(); "
        "assert authenticator.authserv_id == 'mx.example.org'; "
        "sys.exit(','.join(m for m in sys.modules if m.startswith('mailauth.cli')) or None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(spec.build),
        capture_output=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"")


def test_the_milter_command_checks_heavy_mail_and_spf_in_its_worker(tmp_path: Path) -> None:
    """``mailauth milter`` with ``inbound.offload_workers = 1``: a heavy message is checked
    in the worker (the stop line counts it, and so do the metrics), with the verdict the
    loop would give; a bad value is one configuration problem."""
    import socket

    import httpx

    socket_path = tmp_path / "m.sock"
    config = tmp_path / "milter.toml"
    zones = ", ".join(f'"{zone}"' for zone in ZONES)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(
        f'listen = "unix:{socket_path}"\nauthserv_id = "mx.example.org"\n'
        f'metrics_listen = "127.0.0.1:{port}"\n'
        f"[dns]\nzone_files = [{zones}]\n[inbound]\noffload_workers = 1\n"
    )
    command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        assert "listening on" in process.stderr.readline()

        async def send() -> list[tuple[bytes, bytes]]:
            client = await MilterClient.connect_unix(str(socket_path))
            await client.negotiate()
            headers, body = _demo(_decoys(6))
            replies = await client.message(**SENDER, headers=headers, body=body)
            await client.close()
            return replies

        replies = asyncio.run(send())
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert 'mailauth_worker_requests_total{kind="message"} 1.0' in scraped
    assert 'mailauth_worker_replies_total{kind="message",outcome="answered"} 1.0' in scraped
    assert "mailauth_workers_alive 1.0" in scraped
    assert inserted_fields(replies) == inserted_fields(_run(None, _demo(_decoys(6)))[0])
    assert "1 heavy message(s) checked in worker processes" in process.stderr.read()
    config.write_text(config.read_text().replace("offload_workers = 1", "offload_workers = 99"))
    checked = subprocess.run([*command, "--check-config"], capture_output=True, text=True)
    assert checked.returncode == 2
    assert "inbound.offload_workers: must be from 0 to 16, not 99" in checked.stderr


def test_a_worker_runs_at_nice_10_once_started(offloader: Offloader) -> None:
    """Below the loop, yet not starved by other programs (at 19 every SPF request it held
    timed out beside busy programs); it started at the milter's own (imports not starved)."""
    from mailauth.milter.offload_wire import WORKER_NICE

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    worker = os.getpriority(os.PRIO_PROCESS, offloader._workers[0].process.pid)
    assert WORKER_NICE == 10 and worker == min(19, ours + WORKER_NICE)


@pytest.mark.parametrize("bound", ["max_bytes", "max_bytes_late", "no_worker"])
def test_a_large_gathered_body_checked_on_the_loop_is_fed_in_steps_and_turns(
    bound: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heavy message checked on the loop after all -- past max_bytes in the middle of its
    body (early or near its end), or whole at its end when the worker that was to take it
    has ended -- is given to its intake BACKLOG_STEP octets at a time, the others' turn
    between two (here plan.SLICE is 0: a turn each), at once rather than when more body
    comes (held outside max_held meanwhile), not in one piece (10 MB took 51 ms of the
    loop); its verdict is the loop's."""
    case = hostile.many_l_bodies(body_size=1_500_000)  # (ten signatures: heavy)
    headers, body = split_message(case.message)
    monkeypatch.setattr(plan, "SLICE", 0.0)
    turns, fed = [0], []
    add_body = MessageIntake.add_body

    def counted(intake: MessageIntake, chunk: bytes | memoryview) -> None:
        fed.append((len(chunk), turns[0]))
        add_body(intake, chunk)

    monkeypatch.setattr(MessageIntake, "add_body", counted)
    authenticator = Authenticator("mx.example.org", ZoneResolver.from_text(case.zone))
    max_bytes = {"max_bytes": 600_000, "max_bytes_late": len(body) - 100_000}.get(
        bound, offload.MAX_BYTES
    )
    pool = Offloader(worker_authenticator, workers=1, respawn_delay=600, max_bytes=max_bytes)
    pool.start()
    hold = pool.hold

    def hold_then_end_the_worker(octets: int) -> bool:
        if bound == "no_worker" and pool._workers[0].alive:  # (at the end of the headers)
            pool._kill(pool._workers[0])
        return hold(octets)

    monkeypatch.setattr(pool, "hold", hold_then_end_the_worker)

    async def go() -> list[tuple[bytes, bytes]]:
        async def others() -> None:
            while True:
                turns[0] += 1
                await asyncio.sleep(0)

        assert await pool.wait_ready(60)
        ticking = asyncio.ensure_future(others())
        milter = Milter(authenticator, offloader=pool)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = await client.message(
            ip=case.ip, helo=case.helo, mail_from=case.mail_from, headers=headers, body=body
        )
        await client.close()
        server.close()
        ticking.cancel()
        return replies

    try:
        replies = asyncio.run(go())
    finally:
        pool.close()
    assert pool.stats.on_loop == {bound.removesuffix("_late"): 1} and pool.offloaded == 0
    assert sum(size for size, _ in fed) == len(body)
    assert max(size for size, _ in fed) <= verifying.BACKLOG_STEP < len(body) // 4
    steps = [turn for size, turn in fed if size == verifying.BACKLOG_STEP]  # (the backlog's)
    assert len(steps) >= 2 and all(b > a for a, b in itertools.pairwise(steps)), fed
    if bound == "max_bytes":  # (caught up at once: the chunks after it go straight in)
        last = max(k for k, (size, _) in enumerate(fed) if size == verifying.BACKLOG_STEP)
        assert any(size == 65535 for size, _ in fed[last + 1 :]), fed
    (field,) = inserted_fields(replies)
    direct = authenticator.verify(
        case.message, ip=case.ip, helo=case.helo, mail_from=case.mail_from
    )
    assert field.count(b"dkim=pass") == direct.authentication_results.count("dkim=pass") > 0
