from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailauth.cli import main

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
ARGS = [
    "--ip",
    "192.0.2.10",
    "--helo",
    "mail.example.com",
    "--mail-from",
    "alice@example.com",
    "--dns-zone",
    str(DEMO / "example.com.zone"),
]


def test_verify_prints_the_authentication_results_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["verify", str(DEMO / "message.eml"), "--authserv-id", "mx.example.org", *ARGS]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("Authentication-Results: mx.example.org;")
    assert "\r" not in out


def test_verify_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(DEMO / "message.eml"), "--json", *ARGS]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"spf", "dkim", "dmarc", "arc", "authentication_results"} <= data.keys()
    assert data["authentication_results"].startswith("Authentication-Results: localhost;")


def test_verify_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    raw = (DEMO / "message.eml").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    assert main(["verify", "-", *ARGS]) == 0
    assert capsys.readouterr().out.startswith("Authentication-Results:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "/nonexistent/file.eml", *ARGS], "cannot read"),
        (["verify", str(DEMO / "example.com.zone"), *ARGS], "not a message"),
        (
            [
                "verify",
                str(DEMO / "message.eml"),
                *ARGS[:0],
                "--ip",
                "nonsense",
                "--dns-zone",
                str(DEMO / "example.com.zone"),
            ],
            "not an IP address",
        ),
        (
            [
                "verify",
                str(DEMO / "message.eml"),
                "--ip",
                "192.0.2.1",
                "--dns-zone",
                "/nonexistent.zone",
            ],
            "cannot read zone file",
        ),
        (
            [
                "verify",
                str(DEMO / "message.eml"),
                "--ip",
                "192.0.2.1",
                "--nameserver",
                "dns.example",
            ],
            "not an IP address",
        ),
        (
            [
                "verify",
                str(DEMO / "message.eml"),
                "--ip",
                "192.0.2.1",
                "--authserv-id",
                "a;b",
                "--dns-zone",
                str(DEMO / "example.com.zone"),
            ],
            "authserv-id",
        ),
        (["verify", "--bogus"], "required"),
        ([], ""),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err


def test_empty_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    assert main(["verify", str(empty), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty message" in err


def test_unreachable_dns_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.dnsserver import LoopbackDnsServer

    with LoopbackDnsServer("$ORIGIN example.test.\n@ 60 IN A 127.0.0.1\n", mode="silent") as silent:
        code = main(
            [
                "verify",
                str(DEMO / "message.eml"),
                "--ip",
                "192.0.2.1",
                "--nameserver",
                silent.address,
                "--dns-timeout",
                "0.5",
            ]
        )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("mailauth: error: DNS unreachable") and err.count("\n") == 1


def test_version_and_module_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mailauth", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("mailauth ")
    helped = subprocess.run(
        [sys.executable, "-m", "mailauth", "verify", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "example:" in helped.stdout
