"""``mailauth reports send``: bad input (one line, exit 2), --dry-run --out, a real run
through a relay on loopback, with a stand-in for the report store."""

from __future__ import annotations

import email
import gzip
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

import pytest

from mailauth.cli import _build_parser, main
from mailauth.cli.report_send import cmd_reports_send
from mailauth.dkim.keys import private_key_pem
from mailauth.reports.delivery import PendingReport, ReportSource
from tests.dkim_helpers import RSA_KEY
from tests.test_reports_delivery import Due
from tests.test_reports_smtp import Server, server  # noqa: F401 (the fixture)

BASE = [
    "reports", "send", "--store", "reports.db", "--org-name", "Example Receiver",
    "--email", "dmarc-noreply@example.org", "--submitter", "example.org",
    "--sign-selector", "rep2026", "--now", "1795090000",
]  # fmt: skip


@dataclass
class FakeSource:
    reports: list[Due]
    marked: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False

    def pending(self, now: float) -> Iterable[PendingReport]:
        return list(self.reports)

    def reached(self, report: PendingReport, delivered: tuple[str, ...]) -> bool:
        return True

    def sent(self, report: PendingReport, *, now: float) -> bool:
        self.marked.append(("sent", report.report_id))
        return True

    def failed(
        self,
        report: PendingReport,
        error: str,
        *,
        now: float,
        delivered: tuple[str, ...],
        give_up: bool,
    ) -> bool:
        self.marked.append(("given up" if give_up else "retry", error))
        return True

    def release(self, report: PendingReport, *, now: float) -> None:
        self.marked.append(("released", report.report_id))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "rep2026.private"
    path.write_bytes(private_key_pem(RSA_KEY))
    path.chmod(0o600)
    return path


def _run(argv: list[str], source: FakeSource) -> int:
    args = _build_parser().parse_args(argv)

    def factory(url: str, settings: dict[str, str], now: float) -> ReportSource:
        assert (url, settings["submitter"], now) == ("reports.db", "example.org", 1795090000.0)
        return source

    return cmd_reports_send(args, factory)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reports", "send"], "--store is required"),
        (BASE, "--sign-key is required"),
        ([*BASE, "--sign-key", "k", "--dry-run"], "--dry-run and --out go together"),
        ([*BASE, "--sign-key", "/nonexistent/key"], "/nonexistent/key"),
        ([*BASE, "--sign-key", "k", "--now", "soon"], "not a Unix time"),
        (["reports", "send", "--config", "/nonexistent.toml"], "cannot read /nonexistent.toml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1], err
    assert err[-1].startswith(("mailauth: error:", "mailauth reports send: error:"))


def test_contact_outside_the_submitter_domain(
    key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*BASE, "--sign-key", str(key)]
    argv[argv.index("dmarc-noreply@example.org")] = "dmarc@example.net"
    assert main(argv) == 2
    assert "not in example.org" in capsys.readouterr().err


def test_help_has_an_example() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mailauth", "reports", "send", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "mailauth reports send --store" in done.stdout
    assert "--dry-run" in done.stdout


def test_dry_run_writes_each_report_and_its_email(
    key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xml = b"<feedback/>"
    source = FakeSource([Due(xml_gz=gzip.compress(xml))])
    out = tmp_path / "out"
    argv = [*BASE, "--sign-key", str(key), "--dry-run", "--out", str(out)]
    assert _run(argv, source) == 0
    name = Due().file_name
    assert sorted(p.name for p in out.iterdir()) == [name, f"{name}.eml"]
    assert gzip.decompress((out / name).read_bytes()) == xml
    parsed = email.message_from_bytes((out / f"{name}.eml").read_bytes(), policy=policy.default)
    assert parsed["DKIM-Signature"] is not None
    assert parsed["To"] == "dmarc@example.com"
    assert source.marked == [("released", Due().report_id)]  # nothing marked sent
    assert source.closed
    assert capsys.readouterr().out.strip() == str(out / name)


def test_a_run_through_a_relay(
    key: Path,
    tmp_path: Path,
    server: Server,  # noqa: F811 (the fixture imported above)
    capsys: pytest.CaptureFixture[str],
) -> None:
    zone = tmp_path / "zone"
    zone.write_text('$ORIGIN example.com.\n@ 300 IN TXT "v=DMARC1; p=none"\n')
    source = FakeSource([Due(), Due(rua=("mailto:temp@example.com",), report_id="f" * 32)])
    argv = [*BASE, "--sign-key", str(key), "--relay", f"127.0.0.1:{server.port}"]
    argv += ["--dns-zone", str(zone)]
    assert _run(argv, source) == 75  # one report to retry: EX_TEMPFAIL
    assert [rcpts for _, rcpts, _ in server.handler.received] == [["dmarc@example.com"]]
    assert source.marked[0] == ("sent", Due().report_id)
    assert source.marked[1][0] == "retry" and "450" in source.marked[1][1]
    out = capsys.readouterr().out
    assert out.startswith(f"sent example.com {Due().file_name} to mailto:dmarc@example.com")


def test_config_file_fills_the_options(key: Path, tmp_path: Path) -> None:
    config = tmp_path / "mailauth.toml"
    config.write_text(
        "[reports]\n"
        'store = "reports.db"\norg_name = "Example Receiver"\n'
        'email = "dmarc-noreply@example.org"\nsubmitter = "example.org"\n'
        f'sign_key = "{key}"\nsign_selector = "rep2026"\n'
    )
    source = FakeSource([])
    argv = ["reports", "send", "--config", str(config), "--now", "1795090000"]
    assert _run([*argv, "--dry-run", "--out", str(tmp_path / "o")], source) == 0
    assert source.closed


def test_a_dry_run_on_a_store_filled_by_verify_record(
    key: Path, tmp_path: Path, monkeypatch: pytest.CaptureFixture[str]
) -> None:
    """Issue 16: ``reports send --dry-run --out DIR`` on a store filled by ``mailauth verify
    --record`` works with nothing but the default SQLite file: each report as its RFC 9990
    file name and its whole e-mail, the XML valid, its counts those recorded; a second dry
    run writes the same report again (a dry run gives its claim back)."""
    from tests.test_reports_aggregate import SCHEMA
    from tests.test_reports_cli import NOW, VERIFY

    store = tmp_path / "reports.sqlite"
    for offset in (10, 20, 30):
        assert main([*VERIFY, "--now", str(NOW + offset), "--record", str(store)]) == 0
    argv = ["reports", "send", "--store", str(store), "--org-name", "Example Receiver",
            "--email", "dmarc-noreply@example.org", "--submitter", "example.org",
            "--sign-selector", "rep2026", "--sign-key", str(key),
            "--now", str(NOW + 86400 + 3600)]  # fmt: skip
    for run in ("first", "second"):
        out = tmp_path / run
        assert main([*argv, "--dry-run", "--out", str(out)]) == 0
        (report,) = sorted(out.glob("*.xml.gz"))
        assert report.name.startswith("example.org!example.com!1767225600!1767311999")
        xml = gzip.decompress(report.read_bytes()).decode()
        SCHEMA.validate(xml)
        assert "<count>3</count>" in xml
        mail = email.message_from_bytes(
            (out / f"{report.name}.eml").read_bytes(), policy=policy.default
        )
        assert mail["Subject"].startswith("Report Domain: example.com Submitter: example.org")
        assert mail["DKIM-Signature"] is not None
    from mailauth.reports import ReportSettings, open_store, report_status

    status = report_status(open_store(str(store)), ReportSettings("x", "a@example.org",
                           "example.org"), NOW + 86400 + 3600)  # fmt: skip
    assert [(s.policy_domain, s.attempts) for s in status] == [("example.com", 0)]


def test_dns_unreachable_is_a_temporary_failure(
    key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        silent = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, never answers
        argv = [*BASE, "--sign-key", str(key), "--nameserver", silent, "--dns-timeout", "0.3"]
        assert _run(argv, FakeSource([])) == 75
    assert "DNS unreachable" in capsys.readouterr().err


def test_dry_run_skips_a_report_that_cannot_be_named(
    key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy domain that is no host name (an attacker's _dmarc.x_y.attacker.example)
    is skipped with a line on stderr; the other reports are written."""
    odd = Due(
        policy_domain="x_y.attacker.example",
        report_id="1" * 32,
        file_name=f"example.org!x_y.attacker.example!{Due().begin}!{Due().end}!x.xml.gz",
    )
    source = FakeSource([odd, Due()])
    out = tmp_path / "out"
    assert _run([*BASE, "--sign-key", str(key), "--dry-run", "--out", str(out)], source) == 0
    name = Due().file_name
    assert sorted(p.name for p in out.iterdir()) == [name, f"{name}.eml"]
    err = capsys.readouterr().err
    assert "x_y.attacker.example" in err and "skipped" in err
    assert source.marked == [("released", "1" * 32), ("released", Due().report_id)]


def test_extra_contact_info_of_the_config_is_in_the_report(key: Path, tmp_path: Path) -> None:
    """``[reports] extra_contact_info`` (docs/reports.md) reaches report_metadata."""
    from tests.test_reports_aggregate import SCHEMA
    from tests.test_reports_cli import NOW, VERIFY

    store = tmp_path / "reports.sqlite"
    assert main([*VERIFY, "--now", str(NOW + 10), "--record", str(store)]) == 0
    config = tmp_path / "milter.toml"
    config.write_text(
        f'[reports]\nstore = "{store}"\norg_name = "Example Receiver"\n'
        'email = "dmarc-noreply@example.org"\nsubmitter = "example.org"\n'
        f'sign_key = "{key}"\nsign_selector = "rep2026"\n'
        'extra_contact_info = "https://example.org/dmarc"\n'
    )
    out = tmp_path / "out"
    argv = ["reports", "send", "--config", str(config), "--now", str(NOW + 86400 + 3600)]
    assert main([*argv, "--dry-run", "--out", str(out)]) == 0
    (report,) = out.glob("*.xml.gz")
    xml = gzip.decompress(report.read_bytes()).decode()
    SCHEMA.validate(xml)
    assert "<extra_contact_info>https://example.org/dmarc</extra_contact_info>" in xml
