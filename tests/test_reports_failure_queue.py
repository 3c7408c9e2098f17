"""RFC 9991 failure reports, queued and sent: the [reports] settings, which evaluations call
for a report (fo=, ruf=, psd=y, none/temperror), the header only unless the body is opted
in, the queue in the store (SQLite and a real PostgreSQL): the per-destination rate limit
(across processes), the queue's cap, claims, retries, never twice; the collector's buffer
while the store is away; delivery with external destinations, SPF-DNS and a DKIM
signature that verifies."""

from __future__ import annotations

import dataclasses
import email
import logging
import multiprocessing
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import pytest

from mailauth.config import load_milter_config
from mailauth.config_failure import FailureConfig
from mailauth.dkim import Signer, public_key_record
from mailauth.errors import ConfigError
from mailauth.pipeline import Authenticator
from mailauth.reports import open_store
from mailauth.reports.delivery import ReportState
from mailauth.reports.failure import failure_facts
from mailauth.reports.failure_capture import original_message, report_types
from mailauth.reports.failure_claims import (
    FIRST_RETRY,
    claim_failures,
    failure_status,
    mark_failure_sent,
    new_claim_token,
)
from mailauth.reports.failure_collect import FailureCollector, queue_now
from mailauth.reports.failure_queue import (
    QueuedFailure,
    enqueue_failures,
    window_of,
)
from mailauth.reports.failure_send import send_failures
from mailauth.reports.message import Submitter
from mailauth.reports.smtp import RecipientOutcome, RecipientStatus
from mailauth.reports.store import Store, StoreError
from mailauth.results import DmarcResult
from tests.dkim_helpers import RSA_KEY, dkimpy_dns, zone
from tests.failure_helpers import (
    AGREES,
    ARRIVAL,
    BAD,
    BAD_ALIGNED_SPF,
    DEMO_MESSAGE,
    EXTERNAL,
    GOOD,
    RUF,
    SPOOF,
    dmarc_record,
    resolver,
    verdict_of,
)
from tests.lease_helpers import LeaseClock
from tests.test_reports_failure import _fields

SUBMITTER = Submitter("Example Receiver", "dmarc-noreply@example.org", "example.org")
SIGNER = Signer("example.org", "ruf2026", RSA_KEY)
REPORTER = {  # what a report's reader finds: the submitter's key and policy
    "ruf2026._domainkey.example.org": public_key_record(RSA_KEY),
    "_dmarc.example.org": "v=DMARC1; p=reject; adkim=s; aspf=s",
}
CONFIG = FailureConfig(enabled=True)
SHARED = {"max_per_org": 10**6, "window_limit": 10**6}  # (the shared limits: not tested here)


# -- configuration ------------------------------------------------------------------------


def test_failure_reports_are_off_by_default_and_configurable(tmp_path: Path) -> None:
    path = tmp_path / "milter.toml"
    path.write_text('[reports]\nstore = "r.sqlite"\n')
    failure = load_milter_config(path).reports.failure
    assert failure == FailureConfig()
    assert (failure.enabled, failure.include_body, failure.include_recipients) == (
        False,
        False,
        False,
    )
    path.write_text(
        '[reports]\nstore = "r.sqlite"\nfailure_reports = true\nfailure_include_body = true\n'
        "failure_include_recipients = true\nfailure_rate_limit = 3\nfailure_rate_period = 600\n"
        "failure_max_size = 65536\nfailure_max_queued = 500\n"
    )
    failure = load_milter_config(path).reports.failure
    assert failure == FailureConfig(True, True, True, 3, 600, 65536, 500)


def test_bad_failure_settings_are_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "milter.toml"
    path.write_text(
        "[reports]\nfailure_reports = true\nfailure_include_body = 1\n"
        "failure_rate_limit = 0\nfailure_rate_period = 5\nfailure_max_size = true\n"
        "failure_max_queued = 99999999999\n"
    )
    with pytest.raises(ConfigError) as problems:
        load_milter_config(path)
    lines = str(problems.value).splitlines()
    for expected in (
        "milter.toml:3: reports.failure_include_body: must be a bool",
        "milter.toml:4: reports.failure_rate_limit: must be from 1 to 1000000, not 0",
        "milter.toml:5: reports.failure_rate_period: must be from 60 to 604800, not 5",
        "milter.toml:6: reports.failure_max_size: must be a number",
        "milter.toml:7: reports.failure_max_queued: must be from 10 to 10000000",
        "reports.failure_reports: needs reports.store",
    ):
        assert sum(expected in line for line in lines) == 1, (expected, lines)
    assert len(lines) == 6


# -- which evaluations call for a report -------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "raw", "envelope", "types"),
    [
        (f"ruf={RUF}", SPOOF, BAD, ("dmarc",)),  # fo=0 (default): nothing aligned passed
        (f"ruf={RUF}", DEMO_MESSAGE, GOOD, ()),  # a pass
        (f"ruf={RUF}; fo=0", DEMO_MESSAGE, BAD, ()),  # DKIM aligned pass: fo=0 is content
        (f"ruf={RUF}; fo=1", DEMO_MESSAGE, BAD, ("dmarc",)),  # SPF unaligned: fo=1 reports
        (f"ruf={RUF}; fo=1", DEMO_MESSAGE, GOOD, ()),  # both aligned and passing
        (f"ruf={RUF}; fo=s", SPOOF, BAD_ALIGNED_SPF, ("spf",)),  # SPF failed
        (f"ruf={RUF}; fo=s", SPOOF, BAD, ()),  # no SPF failure (evil.example has no SPF)
        (f"ruf={RUF}; fo=d", SPOOF, BAD, ()),  # no signature at all: none failed
        (f"ruf={RUF}; fo=0:s", SPOOF, BAD_ALIGNED_SPF, ("dmarc", "spf")),
        ("", SPOOF, BAD, ()),  # no ruf=
        (f"ruf={RUF}; psd=y", SPOOF, BAD, ()),  # RFC 9991 2: never for a PSD's record
        ("ruf=https://example.com/r; fo=1", SPOOF, BAD, ("dmarc",)),  # (the sender ignores)
    ],
)
def test_rfc9989_fo_selects_the_reports(
    tags: str, raw: bytes, envelope: dict[str, str], types: tuple[str, ...]
) -> None:
    verdict = verdict_of(raw, envelope, dmarc_record(tags))
    assert report_types(verdict) == types


def test_fo_d_reports_a_failed_signature() -> None:
    tampered = DEMO_MESSAGE.replace(b"Subject: ", b"Subject: changed ")
    assert tampered != DEMO_MESSAGE
    verdict = verdict_of(tampered, GOOD, dmarc_record(f"ruf={RUF}; fo=d"))
    assert report_types(verdict) == ("signature",)


def test_never_for_dmarc_none_or_temperror() -> None:
    failing = verdict_of(SPOOF, BAD)
    assert failing.dmarc is not None and report_types(failing) == ("dmarc",)
    for result in (DmarcResult.NONE, DmarcResult.TEMPERROR):
        dmarc = dataclasses.replace(failing.dmarc, result=result)
        assert report_types(dataclasses.replace(failing, dmarc=dmarc)) == ()
    assert report_types(dataclasses.replace(failing, dmarc=None)) == ()


# -- what a report keeps of the message ---------------------------------------------------


def _queued(store: Store) -> list[tuple[str, str, bytes, int, str]]:
    rows = store.fetchall(
        "SELECT auth_failure, ruf, original, has_body, facts FROM failure_reports ORDER BY id"
    )
    return [(a, r, bytes(o), int(b), f) for a, r, o, b, f in rows]


def test_header_only_unless_the_body_is_opted_in(store_url: str) -> None:
    verdict = verdict_of(SPOOF, BAD)
    store = open_store(store_url)
    try:
        queue_now(
            store, CONFIG, verdict, SPOOF, ip=BAD["ip"], mail_from=BAD["mail_from"], now=ARRIVAL
        )
        ((_, ruf, original, has_body, facts),) = _queued(store)
        assert (ruf, has_body) == (RUF, 0)
        assert original == SPOOF.split(b"\r\n\r\n")[0] + b"\r\n"  # exactly as received
        assert b"account 1234" not in original and '"rcpt_to":[]' in facts
        store.execute("DELETE FROM failure_reports")
        store.execute("DELETE FROM failure_rate")
        opted = FailureConfig(enabled=True, include_body=True, include_recipients=True)
        queue_now(store, opted, verdict, SPOOF, ip=BAD["ip"], mail_from=BAD["mail_from"],
                  recipients=("bob@example.org",),
                  now=ARRIVAL)  # fmt: skip
        ((_, _, original, has_body, facts),) = _queued(store)
        assert (original, has_body) == (SPOOF, 1)
        assert '"rcpt_to":["bob@example.org"]' in facts
    finally:
        store.close()


def test_the_original_is_bounded() -> None:
    header = b"".join(b"X-Field-%d: %s\r\n" % (n, b"v" * 50) for n in range(100))
    header += b"Subject: folded\r\n continued\r\n"
    assert original_message(header, b"body\r\n", 1 << 20) == header + b"\r\nbody\r\n"
    assert original_message(header, b"b" * 1000, len(header) + 100) == header  # body too big
    cut = original_message(header, None, 1000)
    assert len(cut) <= 1000 and cut.endswith(b"\r\n") and cut.startswith(b"X-Field-0:")
    assert cut.count(b"\r\n") == cut.count(b"X-Field-")  # whole fields only
    assert original_message(b"X-Long: " + b"v" * 5000 + b"\r\n", None, 4096) == (
        b"X-Long: " + b"v" * 4086 + b"\r\n"
    )  # (one field past the cap: cut)
    folded = original_message(header, None, len(header) - 5)  # inside the folded field
    assert folded.endswith(b"X-Field-99: " + b"v" * 50 + b"\r\n")


# -- the queue: rate limit, cap ---------------------------------------------------------


def _report(ruf: tuple[str, ...] = (RUF,), created: float = ARRIVAL) -> QueuedFailure:
    facts = failure_facts(verdict_of(SPOOF, BAD), ip=BAD["ip"], arrival=created)
    return QueuedFailure("example.com", "dmarc", ruf, facts, SPOOF[:200], False, created)


def test_rate_limit_per_destination_and_window(store_url: str) -> None:
    store = open_store(store_url)
    try:
        both = (RUF, EXTERNAL)
        kw = {
            "limit": 3,
            "period": 3600,
            "max_queued": 1000,
            "max_per_org": 1000,
            "window_limit": 10**6,
        }
        first = enqueue_failures(store, [_report()] * 5, now=ARRIVAL, **kw)
        assert (first.queued, first.rate_limited) == (3, 2)
        assert first.full == [("example.com", (RUF,), window_of(ARRIVAL, 3600))] * 2
        # RUF's window is full: a report to both goes to the external address only
        second = enqueue_failures(store, [_report(both)] * 4, now=ARRIVAL + 1, **kw)
        assert (second.queued, second.rate_limited) == (3, 1)
        rufs = [r for _, r, _, _, _ in _queued(store)]
        assert sorted(rufs) == sorted([RUF] * 3 + [EXTERNAL] * 3)
        # the next window: allowed again (and the old windows pruned)
        hour, hours = ARRIVAL + 3600, ARRIVAL + 3 * 3600
        assert enqueue_failures(store, [_report(created=hour)], now=hour, **kw).queued == 1
        assert enqueue_failures(store, [_report(created=hours)], now=hours, **kw).queued == 1
        windows = store.fetchall("SELECT DISTINCT window_begin FROM failure_rate")
        assert len(windows) <= 2
    finally:
        store.close()


def test_the_queue_is_capped(store_url: str) -> None:
    store = open_store(store_url)
    try:
        outcome = enqueue_failures(store, [_report()] * 8, limit=100, period=3600,
                                   max_queued=5, **SHARED, now=ARRIVAL)  # fmt: skip
        assert (outcome.queued, outcome.dropped) == (5, 3)
        token = new_claim_token()
        (claimed, *_) = claim_failures(store, ARRIVAL, token)
        assert mark_failure_sent(store, claimed, ARRIVAL)  # one out: room for one
        outcome = enqueue_failures(store, [_report()] * 2, limit=100, period=3600,
                                   max_queued=5, **SHARED, now=ARRIVAL)  # fmt: skip
        assert (outcome.queued, outcome.dropped) == (1, 1)
    finally:
        store.close()


def _enqueuer(url: str, count: int) -> None:
    """One milter's queueing, in a process of its own: one report per transaction."""
    store = open_store(url)
    for _ in range(count):
        enqueue_failures(store, [_report()], limit=7, period=3600, max_queued=1000, **SHARED,
                         now=ARRIVAL)  # fmt: skip
    store.close()


def test_the_rate_limit_holds_across_processes(store_url: str) -> None:
    open_store(store_url).close()
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_enqueuer, args=(store_url, 10)) for _ in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    store = open_store(store_url)
    try:
        assert store.fetchall("SELECT COUNT(*) FROM failure_reports") == [(7,)]
        # (the address's window, and the window's total of all destinations)
        rows = store.fetchall("SELECT destination, reports FROM failure_rate ORDER BY 1")
        assert rows == [("*", 7), ("ruf@example.com example.com", 7)]
    finally:
        store.close()


# -- the collector: off the loop, the store away -----------------------------------------


def test_the_collector_buffers_while_the_store_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = str(tmp_path / "r.sqlite")
    down = [True]

    def opener(target: str) -> Store:
        if down[0]:
            raise StoreError("report store: connection refused")
        return open_store(target)

    collector = FailureCollector(url, CONFIG, max_buffered=3, opener=opener, clock=lambda: ARRIVAL)
    failing, passing = verdict_of(SPOOF, BAD), verdict_of(DEMO_MESSAGE, GOOD)
    header = SPOOF.split(b"\r\n\r\n")[0] + b"\r\n"
    assert collector.offer(passing, header=header, ip=GOOD["ip"], mail_from="a", now=ARRIVAL) == 0
    assert collector.offer(failing, header=header, ip=BAD["ip"], mail_from="x", action="tempfail",
                           now=ARRIVAL) == 0  # fmt: skip
    for _ in range(4):
        collector.offer(failing, header=header, ip=BAD["ip"], mail_from="x", now=ARRIVAL)
    assert (collector.offered, collector.pending, collector.dropped) == (4, 3, 1)
    with caplog.at_level(logging.WARNING, "mailauth.reports"):
        assert not collector.flush()
        collector._after_write()
    assert collector.write_errors == 1 and collector.pending == 3  # kept to retry
    assert sum("failure reports" in r.message for r in caplog.records) == 2
    down[0] = False
    assert collector.flush()
    collector.close()
    assert (collector.queued, collector.pending, collector.dropped) == (3, 0, 1)
    store = open_store(url)
    try:
        assert len(_queued(store)) == 3
    finally:
        store.close()


def test_the_collector_stops_copying_for_a_full_window(tmp_path: Path) -> None:
    config = FailureConfig(enabled=True, rate_limit=2)
    collector = FailureCollector(str(tmp_path / "r.sqlite"), config, clock=lambda: ARRIVAL)
    failing = verdict_of(SPOOF, BAD)
    for _ in range(3):
        collector.offer(failing, header=SPOOF[:100], ip=BAD["ip"], mail_from="x", now=ARRIVAL)
    collector.flush()
    assert (collector.queued, collector.rate_limited) == (2, 1)
    taken = collector.offer(failing, header=SPOOF[:100], ip=BAD["ip"], mail_from="x",
                            now=ARRIVAL + 1)  # fmt: skip
    assert (taken, collector.pending, collector.rate_limited) == (0, 0, 2)  # not even copied
    collector.close()


# -- sending -----------------------------------------------------------------------------


class Relay:
    """A transport that keeps what it is given and answers as told."""

    def __init__(self, status: RecipientStatus = RecipientStatus.SENT) -> None:
        self.status, self.sent = status, list[tuple[bytes, list[str]]]()

    def __call__(
        self, raw: bytes, mail_from: str, rcpts: Sequence[str]
    ) -> tuple[RecipientOutcome, ...]:
        assert mail_from == SUBMITTER.email
        if self.status is RecipientStatus.SENT:
            self.sent.append((raw, list(rcpts)))
        return tuple(RecipientOutcome(r, self.status, 250 if self.status == "sent" else 451)
                     for r in rcpts)  # fmt: skip


def _send(store: Store, relay: Relay, now: float, extra: str = AGREES) -> list[ReportState]:
    outcomes = send_failures(store, submitter=SUBMITTER, signer=SIGNER, resolver=resolver(
        extra=extra), transport=relay, now=now)  # fmt: skip
    return [o.state for o in outcomes]


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_sent_as_signed_arf_with_spf_dns_retried_never_twice(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = dmarc_record(f"ruf={RUF},{EXTERNAL},mailto:x@elsewhere.example; fo=1:s")
    verdict = Authenticator("mx.example.org", resolver(record)).verify(
        SPOOF, **BAD_ALIGNED_SPF, now=ARRIVAL
    )
    store = open_store(store_url)
    try:
        outcome = queue_now(
            store,
            CONFIG,
            verdict,
            SPOOF,
            ip=BAD["ip"],
            mail_from=BAD_ALIGNED_SPF["mail_from"],
            now=ARRIVAL,
        )
        assert outcome.queued == 2  # dmarc and spf
        failing = Relay(RecipientStatus.TEMPORARY)
        assert _send(store, failing, ARRIVAL + 60) == [ReportState.RETRY] * 2
        assert {s.state for s in failure_status(store)} == {"pending"}
        assert _send(store, failing, ARRIVAL + 61) == []  # backoff: not due yet
        relay = Relay()
        assert _send(store, relay, ARRIVAL + 60 + FIRST_RETRY) == [ReportState.SENT] * 2
        assert _send(store, relay, ARRIVAL + 10 * FIRST_RETRY) == []  # never twice
        assert failure_status(store) == []
        assert store.fetchall("SELECT facts, original FROM failure_reports")[0][0] == "{}"
    finally:
        store.close()
    # two reports x two verified destinations (elsewhere.example did not agree)
    assert len(relay.sent) == 4
    kinds = set()
    for raw, rcpts in relay.sent:
        assert len(rcpts) == 1 and rcpts[0] in ("ruf@example.com", "ruf@reports.example.net")
        parsed = _parse(raw)
        assert parsed.get_content_type() == "multipart/report"
        assert parsed.get_param("report-type") == "feedback-report"
        _, feedback, original = parsed.iter_parts()
        fields = dict(_fields(feedback))
        assert fields["Feedback-Type"] == "auth-failure"
        kinds.add(fields["Auth-Failure"])
        assert fields["Reported-Domain"] == "example.com"
        assert fields["SPF-DNS"] == 'txt : example.com : "v=spf1 ip4:192.0.2.0/24 -all"'
        assert original.get_content_type() == "text/rfc822-headers"
        assert b"account 1234" not in raw
        checked = Authenticator("mx.example.net", zone(REPORTER)).verify(
            raw, ip="127.0.0.1", mail_from=SUBMITTER.email, now=ARRIVAL + 1000
        )
        assert checked.dmarc is not None and checked.dmarc.result is DmarcResult.PASS
        assert checked.dmarc.dkim_aligned == ("example.org",)
        with monkeypatch.context() as clock:
            clock.setattr(dkimpy.time, "time", lambda: ARRIVAL + 1000)
            assert dkimpy.verify(raw, dnsfunc=dkimpy_dns(REPORTER))
    assert kinds == {"dmarc", "spf"}


def test_concurrent_claims_are_disjoint(store_url: str) -> None:
    store, other = open_store(store_url), open_store(store_url)
    try:
        enqueue_failures(store, [_report()] * 5, limit=10, period=3600, max_queued=100, **SHARED,
                         now=ARRIVAL)  # fmt: skip
        wall = LeaseClock(store, "failure_reports", ARRIVAL)  # (the clock leases run on)
        first = claim_failures(store, ARRIVAL, new_claim_token(), limit=3, clock=wall)
        second = claim_failures(other, ARRIVAL, new_claim_token(), limit=10, clock=wall)
        assert len(first) == 3 and len(second) == 2
        assert not {r.id for r in first} & {r.id for r in second}
        wall.advance(100)
        assert claim_failures(store, ARRIVAL, new_claim_token(), clock=wall) == []  # leases hold
        wall.advance(3500)
        assert len(claim_failures(store, ARRIVAL, new_claim_token(), clock=wall)) == 5
    finally:
        store.close()
        other.close()


def test_an_unreadable_queued_report_is_abandoned_not_a_crash(store_url: str) -> None:
    store = open_store(store_url)
    try:
        enqueue_failures(store, [_report()] * 2, limit=10, period=3600, max_queued=100, **SHARED,
                         now=ARRIVAL)  # fmt: skip
        (first,) = store.fetchall("SELECT id FROM failure_reports ORDER BY id LIMIT 1")
        store.execute("UPDATE failure_reports SET facts = '[1' WHERE id = ?", first)
        relay = Relay()
        assert sorted(_send(store, relay, ARRIVAL + 60)) == [ReportState.ABANDONED,
                                                             ReportState.SENT]  # fmt: skip
        assert len(relay.sent) == 1
        (error,) = store.fetchall("SELECT last_error FROM failure_reports WHERE id = ?", first)
        assert "unreadable facts" in error[0]
    finally:
        store.close()


def test_a_signer_not_aligned_with_the_submitter_is_refused_up_front(store_url: str) -> None:
    store = open_store(store_url)
    try:
        enqueue_failures(
            store,
            [_report()],
            limit=10,
            period=3600,
            max_queued=100,
            max_per_org=100,
            window_limit=10**6,
            now=ARRIVAL,
        )
        other = Signer("example.com", "s", RSA_KEY)
        with pytest.raises(ConfigError, match="not aligned"):
            send_failures(store, submitter=SUBMITTER, signer=other, resolver=resolver(),
                          transport=Relay(), now=ARRIVAL)  # fmt: skip
        assert [s.state for s in failure_status(store)] == ["pending"]  # nothing claimed
    finally:
        store.close()


def test_a_signature_report_names_the_failed_signature(store_url: str) -> None:
    tampered = DEMO_MESSAGE.replace(b"Subject: ", b"Subject: changed ")
    verdict = verdict_of(tampered, GOOD, dmarc_record(f"ruf={RUF}; fo=d"))
    store = open_store(store_url)
    try:
        queue_now(store, CONFIG, verdict, tampered, ip=GOOD["ip"], mail_from=GOOD["mail_from"],
                  now=ARRIVAL)  # fmt: skip
        relay = Relay()
        assert _send(store, relay, ARRIVAL + 60) == [ReportState.SENT]
    finally:
        store.close()
    ((raw, _),) = relay.sent
    _, feedback, _ = _parse(raw).iter_parts()
    fields = dict(_fields(feedback))
    assert fields["Auth-Failure"] == "signature"
    assert (fields["DKIM-Domain"], fields["DKIM-Selector"]) == ("example.com", "demo")
    assert "SPF-DNS" not in fields  # (SPF passed aligned)


def test_another_domain_naming_the_address_cannot_use_up_its_rate(store_url: str) -> None:
    """An attacker's record names the victim's ruf address (unverified: never sent); the
    victim's own reports about spoofs of itself still get through."""
    store = open_store(store_url)
    try:
        kw = {
            "limit": 3,
            "period": 3600,
            "max_queued": 1000,
            "max_per_org": 1000,
            "window_limit": 10**6,
        }
        burn = dataclasses.replace(_report(), policy_domain="attacker.example")
        assert enqueue_failures(store, [burn] * 5, now=ARRIVAL, **kw).queued == 3
        assert enqueue_failures(store, [_report()] * 4, now=ARRIVAL + 1, **kw).queued == 3
    finally:
        store.close()


def test_a_full_window_of_another_domain_does_not_stop_the_collector(tmp_path: Path) -> None:
    config = FailureConfig(enabled=True, rate_limit=2)
    collector = FailureCollector(str(tmp_path / "r.sqlite"), config, clock=lambda: ARRIVAL)
    failing = verdict_of(SPOOF, BAD)
    assert failing.dmarc is not None
    other = dataclasses.replace(
        failing,
        dmarc=dataclasses.replace(
            failing.dmarc, domain="attacker.example", policy_domain="attacker.example"
        ),
    )
    for _ in range(3):  # attacker.example's record names example.com's ruf address
        collector.offer(other, header=SPOOF[:100], ip=BAD["ip"], mail_from="x", now=ARRIVAL)
    collector.flush()
    assert (collector.queued, collector.rate_limited) == (2, 1)
    taken = collector.offer(failing, header=SPOOF[:100], ip=BAD["ip"], mail_from="x",
                            now=ARRIVAL + 1)  # fmt: skip
    assert taken == 1
    collector.flush()
    assert collector.queued == 3
    collector.close()


@pytest.mark.parametrize(
    "facts",
    [
        '{"reported_domain": 5, "source_ip": "1", "arrival": 1, "authentication_results": ""}',
        '{"reported_domain": "x", "source_ip": "1", "arrival": 1e300, '
        '"authentication_results": ""}',
        '{"reported_domain": "x", "source_ip": "1", "arrival": "soon", '
        '"authentication_results": ""}',
        '{"reported_domain": "x", "source_ip": "1", "arrival": 1, "authentication_results": "",'
        ' "dkim_failures": [{"domain": 5, "selector": "s"}]}',
    ],
)
def test_queued_facts_of_a_wrong_type_are_abandoned_not_a_crash(facts: str, tmp_path: Path) -> None:
    """A row whose facts parse but carry a wrong type (by hand, another version) crashed the
    whole send run (TypeError, OverflowError) before; now it is abandoned with the reason."""
    store = open_store(str(tmp_path / "r.sqlite"))
    try:
        enqueue_failures(store, [_report()] * 2, limit=10, period=3600, max_queued=100, **SHARED,
                         now=ARRIVAL)  # fmt: skip
        (first,) = store.fetchall("SELECT id FROM failure_reports ORDER BY id LIMIT 1")
        store.execute("UPDATE failure_reports SET facts = ? WHERE id = ?", (facts, first[0]))
        states = sorted(_send(store, Relay(), ARRIVAL + 60))
        assert states == [ReportState.ABANDONED, ReportState.SENT]
        (error,) = store.fetchall("SELECT last_error FROM failure_reports WHERE id = ?", first)
        assert "unreadable facts" in error[0]
    finally:
        store.close()
