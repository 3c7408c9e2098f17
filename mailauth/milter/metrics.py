"""Prometheus metrics of the milter (prometheus-client, the reference Python client).

Counters of verified messages by method and result, of end-of-message actions, of DNS
temporary errors (any method's temperror), and a histogram of the time the checks took;
counters read at each scrape from the report recorder, the failure-report collector and the
worker processes (mailauth.milter.offload).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from mailauth.results import Verdict

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mailauth.milter.offload import OffloadStats


class RecorderCounters(Protocol):
    """What the report recorder counts (``mailauth.reports.BackgroundRecorder``)."""

    recorded: int
    dropped: int
    written: int
    late: int
    write_errors: int
    refused: int

    @property
    def pending(self) -> int: ...


class FailureCounters(Protocol):
    """What the failure-report collector counts (``mailauth.reports.failure_collect``)."""

    offered: int
    queued: int
    rate_limited: int
    over_share: int
    over_window: int
    dropped: int
    write_errors: int
    refused: int

    @property
    def pending(self) -> int: ...


_KINDS = ("spf", "message")
_OUTCOMES = ("answered", "failed", "timeout", "cancelled")
_BOUNDS = ("max_waiting", "no_worker", "max_bytes", "max_held")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # (Imported here: only a milter with metrics_listen pays for prometheus-client.)
        from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: PLC0415

        self.registry = registry or CollectorRegistry()
        self.results = Counter(
            "mailauth_results",
            "Verified messages by method and result",
            ["method", "result"],
            registry=self.registry,
        )
        self.actions = Counter(
            "mailauth_actions", "End-of-message actions", ["action"], registry=self.registry
        )
        self.dns_errors = Counter(
            "mailauth_dns_temperrors", "Results that were temperror", ["method"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mailauth_check_seconds",
            "Time the checks of one message took",
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def observe(self, verdict: Verdict, action: str, seconds: float) -> None:
        results = []
        if verdict.spf is not None:
            results.append(("spf", str(verdict.spf.mailfrom.result)))
        results.extend(("dkim", str(d.result)) for d in verdict.dkim or ())
        if verdict.arc is not None:
            results.append(("arc", str(verdict.arc.result)))
        if verdict.dmarc is not None:
            results.append(("dmarc", str(verdict.dmarc.result)))
        for method, result in results:
            self.results.labels(method, result).inc()
            if result == "temperror":
                self.dns_errors.labels(method).inc()
        self.actions.labels(action).inc()
        self.latency.observe(seconds)

    def watch_recorder(self, recorder: RecorderCounters) -> None:
        """Export the report recorder's counters, read at each scrape: messages recorded,
        dropped (buffer full: the store down or too slow; or rows the store refused for
        good), written, written late (after their period's report was due: never
        reported), failed writes, rows refused for good, and rows waiting in memory."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        class Collector:
            def collect(self) -> Iterator[Any]:
                for name, text, value in (
                    ("recorded", "Messages counted for DMARC aggregate reports", recorder.recorded),
                    ("dropped", "Messages not recorded: the buffer was full", recorder.dropped),
                    ("written", "Messages written to the report store", recorder.written),
                    ("late", "Messages written after their period's report was due",
                     recorder.late),
                    ("write_errors", "Report store writes that failed", recorder.write_errors),
                    ("refused", "Report rows dropped: the store refused them for good",
                     recorder.refused),
                ):  # fmt: skip
                    yield CounterMetricFamily(f"mailauth_reports_{name}", text, value=value)
                yield GaugeMetricFamily(
                    "mailauth_reports_pending_rows", "Report rows waiting in memory",
                    value=recorder.pending,
                )  # fmt: skip

        self.registry.register(Collector())

    def watch_failure_reports(self, collector: FailureCounters) -> None:
        """Export the failure-report collector's counters (RFC 9991 reports), read at each
        scrape: messages that called for reports, reports queued in the store, refused by
        the rate limit, by an organisation's share of the queue, by the window's limit,
        dropped (the queue or the memory buffer full, or refused by the store for good),
        failed writes, reports refused for good, and messages waiting in memory."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        class Collector:
            def collect(self) -> Iterator[Any]:
                for name, text, value in (
                    ("offered", "Messages whose DMARC result called for failure reports",
                     collector.offered),
                    ("queued", "Failure reports queued in the report store", collector.queued),
                    ("rate_limited", "Failure reports refused by the per-destination limit",
                     collector.rate_limited),
                    ("over_share", "Failure reports refused: their organisation's share "
                     "of the queue was full", collector.over_share),
                    ("over_window", "Failure reports refused: the window's limit for all "
                     "destinations was reached", collector.over_window),
                    ("dropped", "Failure reports lost: the queue or the buffer was full",
                     collector.dropped),
                    ("write_errors", "Failure report writes that failed",
                     collector.write_errors),
                    ("refused", "Failure reports dropped: the store refused them for good",
                     collector.refused),
                ):  # fmt: skip
                    yield CounterMetricFamily(f"mailauth_failure_reports_{name}", text, value=value)
                yield GaugeMetricFamily(
                    "mailauth_failure_reports_pending", "Failure reports waiting in memory",
                    value=collector.pending,
                )  # fmt: skip

        self.registry.register(Collector())

    def watch_workers(self, workers: OffloadStats) -> None:
        """Export what the worker processes did (SPF and heavy messages,
        docs/milter.md "Memory and CPU"), read at each scrape: processes alive, requests
        sent by kind and how they ended, requests no worker could take, workers started
        again, and heavy messages checked on the loop because a bound was reached."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        class Collector:
            def collect(self) -> Iterator[Any]:
                yield GaugeMetricFamily(
                    "mailauth_workers_alive", "Worker processes running", value=workers.alive
                )
                yield CounterMetricFamily(
                    "mailauth_worker_restarts",
                    "Worker processes started in place of one that ended",
                    value=workers.restarts,
                )
                sent = CounterMetricFamily(
                    "mailauth_worker_requests", "Requests sent to a worker process", labels=["kind"]
                )
                unsent = CounterMetricFamily(
                    "mailauth_worker_requests_unsent",
                    "Requests no worker process could take (SPF then checked on the loop)",
                    labels=["kind"],
                )
                for kind in _KINDS:
                    sent.add_metric([kind], workers.sent.get(kind, 0))
                    unsent.add_metric([kind], workers.unsent.get(kind, 0))
                outcomes = CounterMetricFamily(
                    "mailauth_worker_replies",
                    "Requests sent to a worker process, by how they ended",
                    labels=["kind", "outcome"],
                )
                for kind in _KINDS:
                    for outcome in _OUTCOMES:
                        value = workers.outcomes.get((kind, outcome), 0)
                        outcomes.add_metric([kind, outcome], value)
                on_loop = CounterMetricFamily(
                    "mailauth_heavy_on_loop",
                    "Heavy messages checked on the event loop because a bound was reached",
                    labels=["reason"],
                )
                for reason in _BOUNDS:
                    on_loop.add_metric([reason], workers.on_loop.get(reason, 0))
                yield from (sent, outcomes, unsent, on_loop)

        self.registry.register(Collector())

    def serve(self, host: str, port: int) -> None:
        """The /metrics endpoint, in a background thread."""
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(port, addr=host, registry=self.registry)
