"""Recording from the command line (verify --record), the milter (over its socket, with a
buffered recorder) and the configuration's [reports]; ``mailauth reports migrate|show``."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mailauth.cli import main
from mailauth.config import load_milter_config
from mailauth.dkim.keys import private_key_pem
from mailauth.errors import ConfigError
from mailauth.milter import Milter, MilterSettings
from mailauth.pipeline import Authenticator
from mailauth.reports import (
    BackgroundRecorder,
    Enforcement,
    RecordingSettings,
    ReportSettings,
    closed_reports,
    open_store,
)
from mailauth.reports.schema import SCHEMA_VERSION
from tests.dkim_helpers import RSA_KEY
from tests.milterclient import MilterClient, split_message
from tests.test_milter import DEMO, DMARC, NOW_DMARC, RESOLVER, SENDER
from tests.test_reports_aggregate import SCHEMA

ZONE = str(DEMO / "example.com.zone")
VERIFY = ["verify", str(DEMO / "message.eml"), "--ip", "192.0.2.10", "--helo",
          "mail.example.com", "--mail-from", "alice@example.com", "--dns-zone", ZONE]  # fmt: skip
NOW = 1_767_225_600  # 2026-01-01 00:00:00 UTC


def test_verify_record_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "r.sqlite"
    for offset in (10, 20):
        args = [*VERIFY, "--now", str(NOW + offset), "--record", str(store)]
        assert main(args) == 0
    capsys.readouterr()
    assert main(["reports", "show", "--store", str(store), "--now", str(NOW + 86400 + 600),
                 "--json"]) == 0  # fmt: skip
    (report,) = json.loads(capsys.readouterr().out)
    assert report["policy_domain"] == "example.com"
    assert (report["begin"], report["end"], report["records"], report["messages"]) == (
        NOW,
        NOW + 86399,
        1,
        2,
    )
    assert report["rua"] == ["mailto:dmarc-reports@example.com"]
    assert main(["reports", "show", "--store", str(store), "--now", str(NOW + 100)]) == 0
    assert capsys.readouterr().out.strip() == "no reports to send"


def test_verify_record_from_the_config_file(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    config = tmp_path / "milter.toml"
    config.write_text(f'[inbound]\nreject_dmarc = true\n[reports]\nstore = "{store}"\n'
                      "record_envelope_to = true\n")  # fmt: skip
    args = [*VERIFY, "--now", str(NOW), "--record", "--config", str(config),
            "--rcpt-to", "bob@Example.NET"]  # fmt: skip
    assert main(args) == 0
    opened = open_store(store)
    try:
        assert opened.fetchall("SELECT envelope_to, messages FROM report_counts") == [
            ("example.net", 1)
        ]
    finally:
        opened.close()


def test_reports_migrate_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "r.sqlite"
    assert main(["reports", "migrate", "--store", str(store)]) == 0
    assert f"schema version 0 -> {SCHEMA_VERSION}" in capsys.readouterr().out
    assert main(["reports", "migrate", "--store", str(store)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["reports", "show"]) == 2
    assert main(["reports", "migrate", "--store", str(tmp_path / "no" / "r.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "report store" in err  # (one line each)
    assert main([*VERIFY, "--record"]) == 2  # no store anywhere


def test_reports_config_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "milter.toml"
    path.write_text('[reports]\nstore = "x.sqlite"\norg_name = "Example"\nemail = "d@example.net"'
                    '\nsubmitter = "example.net"\ninterval = 3600\n')  # fmt: skip
    reports = load_milter_config(path).reports
    assert (reports.store, reports.interval, reports.submitter) == ("x.sqlite", 3600, "example.net")
    path.write_text('[reports]\ninterval = 7\nsubmitter = "not a domain"\nemail = "x"\n'
                    "record_envelope_to = 1\nunknown = 2\n")  # fmt: skip
    with pytest.raises(ConfigError) as problems:
        load_milter_config(path)
    text = str(problems.value)
    for expected in (
        "milter.toml:2: reports.interval: must be",
        "reports.submitter",
        "reports.email",
        "reports.record_envelope_to: must be a bool",
        "reports.unknown: unknown key",
    ):
        assert expected in text, text  # fmt: skip


def test_the_milter_records_through_its_socket(tmp_path: Path) -> None:
    url = str(tmp_path / "r.sqlite")
    settings = RecordingSettings(record_envelope_to=True, enforcement=Enforcement(reject=True),
                                 flush_seconds=0.05)  # fmt: skip
    recorder = BackgroundRecorder(url, settings).start()
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    spoof_headers, spoof_body = split_message((DMARC / "unauthenticated.eml").read_bytes())
    spoofer: dict[str, Any] = {"ip": "198.51.100.7", "helo": "x.example",
                               "mail_from": "alice@example.net"}  # fmt: skip

    async def go() -> None:
        authenticator = Authenticator("mx.example.org", RESOLVER, recorder=recorder)
        milter = Milter(authenticator, MilterSettings(reject_dmarc=True, record_recipients=True))
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        for _ in range(3):
            await client.message(**SENDER, headers=headers, body=body,
                                 recipients=("bob@example.net", "eve@example.org"))  # fmt: skip
        await client.message(**spoofer, headers=spoof_headers, body=spoof_body)
        await client.close()
        server.close()

    asyncio.run(go())
    recorder.close()
    assert (recorder.recorded, recorder.written, recorder.dropped) == (4, 4, 0)
    store = open_store(url)
    try:
        rows = store.fetchall("SELECT policy_domain, source_ip, envelope_to, disposition, "
                              "messages FROM report_counts ORDER BY policy_domain")  # fmt: skip
        assert rows == [
            ("example.com", "192.0.2.10", "example.net", "pass", 3),
            ("example.net", "198.51.100.7", "example.net", "reject", 1),
        ]
        settings_ = ReportSettings("Org", "d@example.org", "example.org")
        later = max(NOW_DMARC, 4_000_000_000)
        for report in closed_reports(store, settings_, now=later):
            SCHEMA.validate(gzip.decompress(report.xml_gz).decode())
    finally:
        store.close()


def _rows_written(url: str) -> int:
    store = open_store(url)
    try:
        return int(store.fetchall("SELECT COALESCE(SUM(messages), 0) FROM report_counts")[0][0])
    finally:
        store.close()


def test_the_milter_process_writes_its_buffer_on_sighup_and_sigterm(tmp_path: Path) -> None:

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = str(tmp_path / "r.sqlite")
    config = tmp_path / "milter.toml"
    config.write_text(
        f'listen = "inet:{port}@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
        f'[dns]\nzone_files = ["{ZONE}"]\n'
        f'[reports]\nstore = "{url}"\nflush_seconds = 3600\n'  # (only the signals write)
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailauth", "milter", "--config", str(config)],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    headers, body = split_message((DEMO / "message.eml").read_bytes())

    async def send(count: int) -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        for _ in range(count):
            await client.message(**SENDER, headers=headers, body=body)
        await client.close()

    try:
        assert b"listening" in process.stderr.readline()
        asyncio.run(send(3))
        assert _rows_written(url) == 0  # (buffered)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while _rows_written(url) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _rows_written(url) == 3
        asyncio.run(send(2))
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert _rows_written(url) == 5
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()


def test_show_and_send_do_not_create_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --store made `reports send` (the daily timer) create an empty store,
    send nothing and exit 0, every day; `show` said "no reports to send". Neither creates
    one now: one error line, exit 2 (the milter, verify --record and migrate create it)."""
    typo = tmp_path / "repotrs.sqlite"
    assert main(["reports", "show", "--store", str(typo)]) == 2
    key = tmp_path / "k.pem"
    key.write_bytes(private_key_pem(RSA_KEY))
    key.chmod(0o600)
    argv = ["reports", "send", "--store", str(typo), "--org-name", "X", "--email",
            "r@example.org", "--submitter", "example.org", "--sign-key", str(key),
            "--sign-selector", "s", "--dry-run", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    assert not typo.exists()
    err = capsys.readouterr().err
    assert err.count("no such file") == 2 and err.count("\n") == 2
