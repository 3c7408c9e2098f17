"""The configuration's inbound options and [logging] (mailauth.config_inbound): their
values, one line per problem, and the milter's logging to a syslog socket."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.cli.common import CliError
from mailauth.cli.logs import configure_logging
from mailauth.config import load_milter_config
from mailauth.config_inbound import InboundOptions, LogOptions
from mailauth.errors import ConfigError

ZONE = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "example.com.zone"
HEAD = (
    'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
    f'[dns]\nzone_files = ["{ZONE}"]\n'
)


def test_every_inbound_option_and_logging(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        HEAD + "[inbound]\n"
        'trusted_authserv_ids = ["Border.Example.ORG.", "border2.example.org"]\n'
        "verify_trusted_networks = true\n"
        'ignore_networks = ["192.0.2.0/24", "2001:db8::/32"]\n'
        'ignore_author_domains = ["Partner.example"]\n'
        'ignore_mail_from_domains = ["bounce.example"]\n'
        "required_headers = true\n"
        'multiple_authors = "reject-domains"\n'
        "authserv_id_with_queue_id = true\n"
        "received_spf = true\n"
        "[inbound.relay]\n"
        'networks = ["10.1.0.25"]\n'
        'received_by = ["border.example.org"]\n'
        'spf = "upstream"\n'
        "[logging]\n"
        "stderr = false\n"
        "syslog = true\n"
        'syslog_socket = "/run/systemd/journal/dev-log"\n'
        'syslog_facility = "LOCAL3"\n'
    )
    config = load_milter_config(path)
    assert config.inbound == InboundOptions(
        trusted_authserv_ids=("border.example.org", "border2.example.org"),
        relay_networks=(ipaddress.ip_network("10.1.0.25/32"),),
        relay_received_by=("border.example.org",),
        relay_spf="upstream",
        verify_trusted_networks=True,
        ignore_networks=(
            ipaddress.ip_network("192.0.2.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
        ),
        ignore_author_domains=("partner.example",),
        ignore_mail_from_domains=("bounce.example",),
        required_headers=True,
        multiple_authors="reject-domains",
        authserv_id_with_queue_id=True,
        received_spf=True,
    )
    assert config.logging == LogOptions(
        stderr=False, syslog=True, syslog_socket="/run/systemd/journal/dev-log",
        syslog_facility="local3",
    )  # fmt: skip
    default = path.with_name("d.toml")
    default.write_text(HEAD)
    assert load_milter_config(default).inbound == InboundOptions()


def test_every_inbound_problem_is_one_line_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        HEAD + "[inbound]\n"  # line 5
        'trusted_authserv_ids = ["bad id", "x/y"]\n'
        'ignore_networks = ["10.0.0.0/33"]\n'
        'ignore_author_domains = ["a b"]\n'
        'multiple_authors = "first"\n'
        "received_spf = 1\n"  # line 10
        "[inbound.relay]\n"
        'received_by = ["border example"]\n'
        'spf = "trust"\n'
        "extra = 1\n"
        "[logging]\n"  # line 15
        'syslog_facility = "kern"\n'
        'syslog_socket = "dev/log"\n'
        "stderr = false\n"
    )
    with pytest.raises(ConfigError) as error:
        load_milter_config(path)
    lines = str(error.value).splitlines()
    expected = [
        (6, "inbound.trusted_authserv_ids: 'bad id' is not an authserv-id"),
        (6, "inbound.trusted_authserv_ids: 'x/y' is not an authserv-id"),
        (7, "inbound.ignore_networks: '10.0.0.0/33' is not a CIDR network"),
        (8, "inbound.ignore_author_domains: 'a b' is not a host name"),
        (9, "inbound.multiple_authors: 'first' must be evaluate or reject-domains or reject"),
        (10, "inbound.received_spf: must be a bool"),
        (11, "inbound.relay.networks: the relays' addresses are needed"),
        (12, "inbound.relay.received_by: 'border example' is not a host name"),
        (13, "inbound.relay.spf: 'trust' must be verify or upstream"),
        (14, "inbound.relay.extra: unknown key"),
        (16, "logging.syslog_facility: 'kern' is not one of mail, daemon"),
        (17, "logging.syslog_socket: 'dev/log' must be an absolute path"),
        (18, "logging.stderr: with syslog off too, nothing would be logged"),
    ]
    for line, fragment in expected:
        prefix = f"{path}:{line}: {fragment}"
        assert sum(text.startswith(prefix) for text in lines) == 1, (prefix, lines)
    assert len(lines) == len(expected), lines


def test_a_relay_needs_what_its_spf_setting_reads(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(HEAD + '[inbound.relay]\nnetworks = ["10.0.0.1"]\nspf = "verify"\n')
    with pytest.raises(ConfigError, match=r":5: inbound.relay.received_by: needed with spf"):
        load_milter_config(path)
    path.write_text(HEAD + '[inbound.relay]\nnetworks = ["10.0.0.1"]\nspf = "upstream"\n')
    with pytest.raises(ConfigError, match=r":7: inbound.relay.spf: \"upstream\" needs inbound"):
        load_milter_config(path)


@pytest.fixture
def syslog(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(20)
        yield path, server


def test_logging_to_a_syslog_socket_with_its_facility(
    syslog: tuple[Path, socket.socket],
) -> None:
    path, server = syslog
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(LogOptions(stderr=False, syslog=True, syslog_socket=str(path)))
        logging.getLogger("mailauth.milter").warning("a warning")
        logging.getLogger("mailauth.milter").info('{"queue_id":"4Q"}')
        warning, info = server.recv(4096), server.recv(4096)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    # <PRI> = facility * 8 + severity: mail (2) warning (4) = 20, mail info (6) = 22
    assert warning == f"<20>mailauth[{os.getpid()}]: milter: a warning\0".encode()
    assert info == f'<22>mailauth[{os.getpid()}]: milter: {{"queue_id":"4Q"}}\0'.encode()


def test_an_unreachable_syslog_socket_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CliError, match=r"^cannot log to syslog at .*missing.sock: "):
        configure_logging(LogOptions(syslog=True, syslog_socket=str(tmp_path / "missing.sock")))
    path = tmp_path / "m.toml"
    path.write_text(HEAD + f'[logging]\nsyslog = true\nsyslog_socket = "{tmp_path}/missing.sock"\n')
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mailauth: error: cannot log to syslog at {tmp_path}/missing.sock")
    assert err.count("\n") == 1


def test_the_start_and_shutdown_lines_reach_syslog(
    tmp_path: Path, syslog: tuple[Path, socket.socket]
) -> None:
    path, server = syslog
    config = tmp_path / "m.toml"
    config.write_text(
        HEAD.replace("inet:8891@127.0.0.1", f"unix:{tmp_path}/m.sock")
        + f'[logging]\nsyslog = true\nsyslog_socket = "{path}"\nsyslog_facility = "daemon"\n'
    )
    command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith("mailauth milter: listening on unix:")
        started = server.recv(4096).decode()
        assert started.startswith("<30>mailauth[") and "]: milter: listening on unix:" in started
        time.sleep(0.2)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        stopped = server.recv(4096).decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert stopped.startswith("<30>mailauth[")
    assert stopped.endswith(
        "]: milter: stopped on SIGTERM: 0 MTA connection(s) open, 0 closed in time, 0 cut off "
        "after the deadline\0"
    )


def test_a_syslog_daemon_that_stops_reading_or_goes_away_never_blocks_the_milter(
    tmp_path: Path, syslog: tuple[Path, socket.socket]
) -> None:
    """The milter logs from its event loop: a daemon that no longer reads (its queue full)
    costs the records it cannot take, not a blocked loop; one that goes away costs nothing
    either, and one started again at the same path gets the next record."""
    import threading

    path, server = syslog
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    done = threading.Event()

    def flood() -> None:
        for i in range(5000):  # (a unix datagram queue takes a few hundred)
            logging.getLogger("mailauth.milter").info("line %d", i)
        done.set()

    try:
        configure_logging(LogOptions(stderr=False, syslog=True, syslog_socket=str(path)))
        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        finished = done.wait(20)
        server.close()  # (which unblocks a blocked sender: the test fails rather than hangs)
        assert finished, "logging blocked on a syslog socket nobody reads"
        path.unlink()
        started = time.monotonic()
        logging.getLogger("mailauth.milter").info("while the daemon is away")
        assert time.monotonic() - started < 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
            again.bind(str(path))
            again.settimeout(20)
            logging.getLogger("mailauth.milter").info("back")
            assert again.recv(4096).endswith(b"milter: back\0")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
