"""RFC 9991 failure reports from the milter (driven over its socket) and the command line
(``verify --record``, ``reports show --failure``, ``reports send --only failure --dry-run``)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.config_failure import FailureConfig
from mailauth.config_inbound import InboundOptions
from mailauth.dkim.keys import private_key_pem
from mailauth.milter import Milter, MilterSettings
from mailauth.pipeline import Authenticator
from mailauth.reports import open_store
from mailauth.reports.failure_collect import FailureCollector
from mailauth.reports.failure_queue import facts_from_json
from tests.dkim_helpers import RSA_KEY
from tests.failure_helpers import (
    ARRIVAL,
    BAD,
    DEMO_MESSAGE,
    GOOD,
    RUF,
    SPOOF,
    resolver,
    zone_text,
)
from tests.milterclient import MilterClient, split_message


def _through_milter(
    collector: FailureCollector,
    messages: list[tuple[bytes, dict[str, str]]],
    inbound: InboundOptions | None = None,
) -> list[list[tuple[bytes, bytes]]]:
    async def go() -> list[list[tuple[bytes, bytes]]]:
        authenticator = Authenticator("mx.example.org", resolver())
        settings = MilterSettings(
            reject_dmarc=True, failure_reports=collector, inbound=inbound or InboundOptions()
        )
        milter = Milter(authenticator, settings)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = []
        for raw, envelope in messages:
            headers, body = split_message(raw)
            replies.append(await client.message(**envelope, headers=headers, body=body,
                                                recipients=("bob@example.org",)))  # fmt: skip
        await client.close()
        server.close()
        return replies

    return asyncio.run(go())


def _rows(url: str) -> list[tuple[str, str, bytes, int, str]]:
    store = open_store(url)
    try:
        rows = store.fetchall(
            "SELECT auth_failure, ruf, original, has_body, facts FROM failure_reports"
        )
        return [(a, r, bytes(o), int(b), f) for a, r, o, b, f in rows]
    finally:
        store.close()


def test_a_failing_message_queues_one_report_a_passing_one_none(tmp_path: Path) -> None:
    url = str(tmp_path / "r.sqlite")
    open_store(url).close()
    collector = FailureCollector(url, FailureConfig(enabled=True), flush_seconds=0.05).start()
    replies = _through_milter(collector, [(DEMO_MESSAGE, GOOD), (SPOOF, BAD), (DEMO_MESSAGE, GOOD)])
    collector.close()
    assert [r[-1][0] for r in replies] == [b"c", b"y", b"c"]  # continue, 550 (reject), continue
    assert (collector.offered, collector.queued, collector.dropped) == (1, 1, 0)
    ((kind, ruf, original, has_body, facts),) = _rows(url)
    assert (kind, ruf, has_body) == ("dmarc", RUF, 0)
    # the header section exactly as the MTA passed it (our Authentication-Results not in it)
    assert original == SPOOF.split(b"\r\n\r\n")[0] + b"\r\n"
    read = facts_from_json(facts)
    assert (read.source_ip, read.mail_from, read.delivery_result) == (
        BAD["ip"],
        BAD["mail_from"],
        "reject",
    )
    assert read.rcpt_to == ()  # (recipients: only on opt-in)
    assert read.authentication_results.startswith("mx.example.org;")


def test_a_relayed_message_is_reported_for_its_real_client(tmp_path: Path) -> None:
    """From one of our relays, the report's Source-IP is the client the border's Received
    field names (the one SPF, the log line and the aggregate report are about), not the
    relay's address."""
    url = str(tmp_path / "r.sqlite")
    open_store(url).close()
    collector = FailureCollector(url, FailureConfig(enabled=True), flush_seconds=0.05).start()
    border = (
        b"Received: from mail.evil.example (unknown [198.51.100.66])\r\n"
        b"\tby border.example.org (Postfix) with ESMTP id 4QB0RD\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 10:00:01 +0000 (UTC)\r\n"
    )
    tiers = InboundOptions(
        relay_networks=(ipaddress.ip_network("10.1.0.0/24"),),
        relay_received_by=("border.example.org",),
    )
    relay = {**BAD, "ip": "10.1.0.25", "helo": "border.example.org"}
    _through_milter(collector, [(border + SPOOF, relay)], tiers)
    collector.close()
    ((_, _, _, _, facts),) = _rows(url)
    assert facts_from_json(facts).source_ip == BAD["ip"]


def test_the_body_and_recipients_only_on_opt_in(tmp_path: Path) -> None:
    url = str(tmp_path / "r.sqlite")
    config = FailureConfig(enabled=True, include_body=True, include_recipients=True)
    collector = FailureCollector(url, config, flush_seconds=0.05).start()
    big = SPOOF + b"x" * 200_000 + b"\r\n"  # past failure_max_size: header only
    _through_milter(collector, [(SPOOF, BAD), (big, BAD)])
    collector.close()
    rows = _rows(url)
    assert [(r[2], r[3]) for r in rows] == [
        (SPOOF, 1),
        (SPOOF.split(b"\r\n\r\n")[0] + b"\r\n", 0),
    ]
    assert facts_from_json(rows[0][4]).rcpt_to == ("bob@example.org",)
    assert collector._held_bodies == 0  # every body copy given back


def test_verify_record_queues_and_send_previews(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, zone_file, message = tmp_path / "r.sqlite", tmp_path / "z.zone", tmp_path / "m.eml"
    zone_file.write_text(zone_text())
    message.write_bytes(SPOOF)
    config = tmp_path / "milter.toml"
    config.write_text(
        f'[inbound]\nreject_dmarc = true\n[reports]\nstore = "{store}"\nfailure_reports = true\n'
    )
    argv = ["verify", str(message), "--ip", BAD["ip"], "--helo", BAD["helo"],
            "--mail-from", BAD["mail_from"], "--dns-zone", str(zone_file),
            "--now", str(int(ARRIVAL)), "--record", "--config", str(config)]  # fmt: skip
    assert main(argv) == 0
    assert "failure reports: 1 queued" in capsys.readouterr().err
    assert main(["reports", "show", "--store", str(store), "--failure", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert (shown["policy_domain"], shown["auth_failure"], shown["state"]) == (
        "example.com",
        "dmarc",
        "pending",
    )
    assert main(["reports", "show", "--store", str(store), "--failure"]) == 0
    assert "1 failure reports waiting" in capsys.readouterr().out
    key = tmp_path / "k.pem"
    key.write_bytes(private_key_pem(RSA_KEY))
    key.chmod(0o600)
    out = tmp_path / "out"
    send = ["reports", "send", "--store", str(store), "--org-name", "Example Receiver",
            "--email", "dmarc-noreply@example.org", "--submitter", "example.org",
            "--sign-key", str(key), "--sign-selector", "ruf2026", "--only", "failure",
            "--dry-run", "--out", str(out), "--now", str(int(ARRIVAL) + 60)]  # fmt: skip
    assert main(send) == 0
    capsys.readouterr()
    (written,) = out.iterdir()
    assert written.name == f"failure-{shown['id']}.eml"
    raw = written.read_bytes()
    assert b"Auth-Failure: dmarc" in raw and b"Content-Type: text/rfc822-headers" in raw
    assert b"DKIM-Signature:" in raw and b"account 1234" not in raw
    assert main(["reports", "show", "--store", str(store), "--failure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "pending"  # still due
    # failure reports off (the default): nothing queued
    config.write_text(f'[reports]\nstore = "{store}"\n')
    assert main(argv) == 0
    assert "failure reports" not in capsys.readouterr().err


def test_the_collector_counters_are_metrics(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from mailauth.milter import Metrics

    collector = FailureCollector(str(tmp_path / "r.sqlite"), FailureConfig(enabled=True))
    _through_milter(collector, [(SPOOF, BAD), (SPOOF, BAD)])
    metrics = Metrics()
    metrics.watch_failure_reports(collector)
    text = generate_latest(metrics.registry).decode()
    assert "mailauth_failure_reports_offered_total 2.0" in text
    assert "mailauth_failure_reports_pending 2.0" in text
    collector.close()
    text = generate_latest(metrics.registry).decode()
    assert "mailauth_failure_reports_queued_total 2.0" in text
    assert "mailauth_failure_reports_dropped_total 0.0" in text


def ruf_worker_authenticator() -> Authenticator:
    """A worker process's Authenticator (pickled by reference: a module-level function)."""
    return Authenticator("mx.example.org", resolver())


def test_a_heavy_message_checked_in_a_worker_is_reported_too(tmp_path: Path) -> None:
    from mailauth.milter.offload import Offloader

    url = str(tmp_path / "r.sqlite")
    collector = FailureCollector(url, FailureConfig(enabled=True), flush_seconds=0.05).start()
    decoys = b"".join(
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s%d; h=from; bh=AAAA; b=AAAA\r\n" % n
        for n in range(6)
    )
    heavy = decoys + SPOOF
    offloader = Offloader(ruf_worker_authenticator, workers=1)

    async def go() -> None:
        offloader.start()
        settings = MilterSettings(failure_reports=collector)
        milter = Milter(Authenticator("mx.example.org", resolver()), settings, offloader=offloader)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        headers, body = split_message(heavy)
        await client.message(**BAD, headers=headers, body=body, recipients=("bob@example.org",))
        await client.close()
        server.close()

    try:
        asyncio.run(go())
    finally:
        offloader.close()
    collector.close()
    assert offloader.offloaded == 1
    ((kind, _, original, _, _),) = _rows(url)
    assert kind == "dmarc" and original == heavy.split(b"\r\n\r\n")[0] + b"\r\n"


class _Broken(FailureCollector):
    def offer(self, *args: object, **kwargs: object) -> int:
        raise RuntimeError("collector bug")


class _BrokenRecorder:
    def record(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("recorder bug")


def test_a_recorder_or_collector_that_raises_never_fails_the_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """N12: recorder.record() and the collector's offer() run on the mail path; whatever
    they raise is counted and logged (once a minute), and the message is handled as it
    would have been."""
    auth = Authenticator("mx.example.org", resolver(), recorder=_BrokenRecorder())
    verdict = auth.verify(SPOOF, **BAD, now=ARRIVAL)
    assert verdict.dmarc is not None and auth.record_errors == 1
    collector = _Broken(str(tmp_path / "r.sqlite"), FailureConfig(enabled=True))
    replies = _through_milter(collector, [(SPOOF, BAD), (DEMO_MESSAGE, GOOD), (SPOOF, BAD)])
    assert [r[-1][0] for r in replies] == [b"y", b"c", b"y"]  # reject, continue, reject
    lines = [r.message for r in caplog.records if "collector bug" in r.message]
    assert lines == ["failure report not collected (1 in all): RuntimeError: collector bug"]
    assert "verdict not recorded (1 in all): RuntimeError: recorder bug" in caplog.text
