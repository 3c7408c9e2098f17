"""What the worker processes (mailauth.milter.offload) hold and say: a gathered message's
header section counts in the gathered bound as its body does, and the Prometheus metrics
of the workers (alive, requests by kind and how they ended, restarts, heavy messages
checked on the loop by the bound they met) move as the mail goes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mailauth.milter import Metrics, Milter, MilterSettings
from mailauth.milter import protocol as p
from mailauth.milter.offload import Offloader, OffloadStats
from mailauth.pipeline import Authenticator
from tests.milterclient import MilterClient
from tests.test_milter import RESOLVER, SENDER, inserted_fields
from tests.test_milter_offload import _decoys, _demo, worker_authenticator


class _Peak(Offloader):
    """An Offloader that remembers the most it held at once."""

    peak = 0

    def hold(self, octets: int) -> bool:
        held = super().hold(octets)
        self.peak = max(self.peak, self.held)
        return held


def _run(
    offloader: Offloader | None,
    *messages: tuple[list[tuple[str, str]], bytes],
    settings: MilterSettings | None = None,
    metrics: Metrics | None = None,
    envelope: dict[str, Any] | None = None,
    then: Callable[[], None] | None = None,
    ready: bool = False,
) -> list[list[tuple[bytes, bytes]]]:
    """The replies to ``messages`` over one connection; ``then`` is called after them,
    while the loop (and the workers it talks to) still runs; ``ready``: each message waits
    for a worker to be ready (the milter never does)."""

    async def go() -> list[list[tuple[bytes, bytes]]]:
        authenticator = Authenticator("mx.example.org", RESOLVER)
        milter = Milter(authenticator, settings, metrics, offloader=offloader)
        if metrics is not None:
            metrics.watch_workers(milter.offload_stats)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = []
        for headers, body in messages:
            if ready:
                assert offloader is not None and await offloader.wait_ready(60)
            message = {**SENDER, **(envelope or {}), "headers": headers, "body": body}
            replies.append(await client.message(**message))
        if then is not None:
            then()
        await client.close()
        server.close()
        return replies

    return asyncio.run(go())


def test_the_header_section_of_a_gathered_message_counts_in_max_held() -> None:
    """N1 of the review: only the body was counted, so 16 gathered messages could hold 16
    MiB of header sections beyond max_held. Now a message is gathered when its header
    section and body fit, and goes to the loop one octet short."""
    heavy = _demo(_decoys(6))
    body = len(heavy[1])
    measured = _Peak(worker_authenticator, workers=1)
    measured.start()
    try:
        _run(measured, heavy)
        assert measured.offloaded == 1 and measured.held == 0
        whole = measured.peak  # (the header section as gathered, CRLF, the body)
        assert whole > body + 600  # (six decoy signatures, the demo's fields)
        exact = Offloader(worker_authenticator, workers=1, max_held=whole)
        exact.start()
        short = Offloader(worker_authenticator, workers=1, max_held=whole - 1)
        short.start()
        try:
            (fits,) = _run(exact, heavy)
            (over,) = _run(short, heavy)
            assert (exact.offloaded, short.offloaded) == (1, 0)
            assert exact.held == short.held == 0 and exact.waiting == short.waiting == 0
            assert short.stats.on_loop == {"max_held": 1}
            assert inserted_fields(over) == inserted_fields(fits)  # (the loop's verdict)
            assert b"dkim=pass" in inserted_fields(over)[0]
        finally:
            exact.close()
            short.close()
        # A header section alone past max_held: not gathered, its place given back.
        tiny = Offloader(worker_authenticator, workers=1, max_held=body)
        tiny.start()
        try:
            (replies,) = _run(tiny, heavy)
            assert (tiny.offloaded, tiny.held, tiny.waiting) == (0, 0, 0)
            assert b"dkim=pass" in inserted_fields(replies)[0]
        finally:
            tiny.close()
    finally:
        measured.close()


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def test_the_worker_metrics_move() -> None:
    from prometheus_client import generate_latest

    metrics = Metrics()
    pool = Offloader(worker_authenticator, workers=1, respawn_delay=0)
    pool.start()
    try:
        crash = _demo(_decoys(6, domain="crash.test"))
        settings = MilterSettings(on_error="tempfail")
        alive = []
        ordinary, heavy, crashed, again = _run(
            pool, _demo(), _demo(_decoys(6)), crash, _demo(_decoys(6)),
            settings=settings, metrics=metrics, ready=True,
            then=lambda: alive.append(_sample(metrics, "mailauth_workers_alive")),
        )  # fmt: skip
        assert b"spf=pass" in inserted_fields(ordinary)[0]
        assert crashed[-1][0] == p.TEMPFAIL
        assert b"dkim=pass" in inserted_fields(heavy)[0]
        assert b"dkim=pass" in inserted_fields(again)[0]
        assert alive == [1]
        # The crash ended the worker; the next message started another.
        assert _sample(metrics, "mailauth_worker_restarts_total") == 1
        assert _sample(metrics, "mailauth_worker_requests_total", kind="message") == 3
        replies = "mailauth_worker_replies_total"
        # The ordinary message's SPF (a heavy one's, started at MAIL FROM, is cancelled
        # once its header section shows it heavy: the worker checks SPF with the message).
        assert _sample(metrics, replies, kind="spf", outcome="answered") == 1
        for kind in ("spf", "message"):  # (every request sent ended one way)
            sent = _sample(metrics, "mailauth_worker_requests_total", kind=kind)
            ended = [
                _sample(metrics, replies, kind=kind, outcome=outcome)
                for outcome in ("answered", "failed", "timeout", "cancelled")
            ]
            assert sent == sum(ended)
        assert _sample(metrics, replies, kind="message", outcome="answered") == 2
        assert _sample(metrics, replies, kind="message", outcome="failed") == 1
        assert _sample(metrics, replies, kind="message", outcome="timeout") == 0
        text = generate_latest(metrics.registry).decode()
        assert 'mailauth_heavy_on_loop_total{reason="max_waiting"} 0.0' in text
    finally:
        pool.close()
    assert _sample(metrics, "mailauth_workers_alive") == 0


def test_a_request_past_its_deadline_counts_as_timed_out() -> None:
    """A worker whose DNS never answers gives the SPF request up at its deadline."""
    metrics = Metrics()
    pool = Offloader(worker_authenticator, workers=1)
    pool.start()
    try:
        settings = MilterSettings(deadline=1.0, on_error="tempfail")
        envelope = {"mail_from": "alice@slow.test"}
        _run(pool, _demo(), settings=settings, metrics=metrics, envelope=envelope)
        replies = "mailauth_worker_replies_total"
        assert _sample(metrics, replies, kind="spf", outcome="timeout") == 1
        assert _sample(metrics, replies, kind="spf", outcome="answered") == 0
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("bounds", "reason"),
    [
        ({"max_waiting": 0}, "max_waiting"),
        ({"max_bytes": 500}, "max_bytes"),
        ({"max_held": 10}, "max_held"),
    ],
)
def test_a_heavy_message_checked_on_the_loop_is_counted_by_its_bound(
    bounds: dict[str, Any], reason: str
) -> None:
    metrics = Metrics()
    pool = Offloader(worker_authenticator, workers=1, **bounds)
    try:
        (replies,) = _run(pool, _demo(_decoys(6)), metrics=metrics, ready=True)
        assert b"dkim=pass" in inserted_fields(replies)[0]
        assert _sample(metrics, "mailauth_heavy_on_loop_total", reason=reason) == 1
        others = {"max_waiting", "no_worker", "max_bytes", "max_held"} - {reason}
        for other in others:
            assert _sample(metrics, "mailauth_heavy_on_loop_total", reason=other) == 0
        assert _sample(metrics, "mailauth_worker_requests_total", kind="message") == 0
    finally:
        pool.close()


def test_no_worker_after_one_ended_is_counted_and_the_stats_outlive_a_reload() -> None:
    """The counters are the milter's, shared by the offloader a reload makes (they never go
    back). A reload's workers start with its first request; none is ready (this one never
    will be): SPF goes to the loop unsent, a heavy message is checked on the loop
    ("no_worker"), nothing waits for the process to start."""
    from tests.test_offload_hostile import failing_authenticator

    stats = OffloadStats()
    metrics = Metrics()
    metrics.watch_workers(stats)
    pool = Offloader(worker_authenticator, workers=1, stats=stats)
    pool.start()
    assert _sample(metrics, "mailauth_workers_alive") == 1  # (started: before any loop)
    try:
        _run(pool, _demo())
    finally:
        pool.close()
    assert _sample(metrics, "mailauth_workers_alive") == 0
    reloaded = Offloader(failing_authenticator, workers=1, stats=stats)  # (not started)
    try:
        (ordinary, heavy) = _run(reloaded, _demo(), _demo(_decoys(6)))
    finally:
        reloaded.close()
    assert b"spf=pass" in inserted_fields(ordinary)[0]  # (SPF on the loop)
    assert b"dkim=pass" in inserted_fields(heavy)[0]
    assert stats.on_loop == {"no_worker": 1}
    assert stats.outcomes == {("spf", "answered"): 1}
    assert stats.unsent == {"spf": 2}  # (the ordinary message's, the heavy one's)
    assert _sample(metrics, "mailauth_worker_requests_total", kind="spf") == 1
    assert _sample(metrics, "mailauth_heavy_on_loop_total", reason="no_worker") == 1
    assert _sample(metrics, "mailauth_workers_alive") == 0
