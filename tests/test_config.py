"""The milter configuration file: validation (one line per problem), --check-config, SIGHUP."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailauth.cli import main
from mailauth.config import load_milter_config
from mailauth.dkim.keys import private_key_pem
from mailauth.dns import RRType
from mailauth.errors import ConfigError
from tests.dkim_helpers import ED_KEY

ZONE = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "example.com.zone"


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "ed.pem"
    path.write_bytes(private_key_pem(ED_KEY))
    path.chmod(0o600)
    return path


GOOD = """
listen = "inet:8891@127.0.0.1"
authserv_id = "mx.example.org"
deadline = 20
idle_timeout = 600
on_error = "tempfail"
socket_mode = "600"
log_format = "text"
max_header_size = 262144
max_header_fields = 2000

[dns]
zone_files = ["{zone}"]

[inbound]
reject_dmarc = true
reject_partial_body = true
max_dkim_signatures = 5
trusted_arc_sealers = ["lists.example.org"]
trusted_mailing_lists = ["lists.example.com"]

[inbound.arc_seal]
domain = "example.org"
selector = "arc2026"
key = "{key}"
recipient_domains = ["alumni.example.org"]

[outbound]
trusted_networks = ["192.0.2.0/24", "2001:db8::/32"]

[[outbound.keys]]
domain = "example.com"
selector = "ed2026"
key = "{key}"
sign_for = ["example.com", "*.example.com", "Example.NET.", "*.bücher.example"]
"""


def test_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "milter.toml"
    path.write_text(GOOD.format(zone=ZONE, key=_key(tmp_path)))
    config = load_milter_config(path)
    assert (config.listen, config.authserv_id, config.deadline, config.idle_timeout) == (
        "inet:8891@127.0.0.1",
        "mx.example.org",
        20.0,
        600.0,
    )
    assert (config.on_error, config.socket_mode, config.reject_dmarc) == ("tempfail", 0o600, True)
    assert [str(n) for n in config.trusted_networks] == ["192.0.2.0/24", "2001:db8::/32"]
    assert config.keys[0].selector == "ed2026"
    assert config.keys[0].sign_for == (
        "example.com", "*.example.com", "example.net", "*.xn--bcher-kva.example",
    )  # fmt: skip
    assert config.trusted_arc_sealers == ("lists.example.org",)
    assert config.arc_seal is not None and config.arc_seal.selector == "arc2026"
    assert config.arc_seal_domains == ("alumni.example.org",)
    assert config.log_format == "text"
    assert config.trusted_mailing_lists == ("lists.example.com",)
    assert (config.reject_partial_body, config.max_dkim_signatures) == (True, 5)
    assert (config.max_header_size, config.max_header_fields) == (262144, 2000)


def test_every_problem_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx example"\nlisten_backlog = 5\n'
        'deadline = "soon"\non_error = "drop"\nlog_format = "xml"\nmax_header_fields = 5\n'
        '[outbound]\ntrusted_networks = ["10.0.0.0/33"]\n'
        '[[outbound.keys]]\ndomain = "example.com"\nselector = "s"\nkey = "/nonexistent.pem"\n'
        f'[[outbound.keys]]\ndomain = "example.com"\nselector = "t"\nkey = "{_key(tmp_path)}"\n'
        'sign_for = ["*.example.com", "bad domain"]\n'
        f'[[outbound.keys]]\ndomain = "example.com"\nselector = "u"\nkey = "{_key(tmp_path)}"\n'
        "sign_for = true\n"
        '[dns]\nresolver = 1\n[inbound]\ntrusted_mailing_lists = ["lists example"]\n'
        "max_dkim_signatures = 0\nreject_partial_body = 1\n"
        '[inbound.arc_seal]\ndomain = "example.org"\n'
    )
    with pytest.raises(ConfigError) as error:
        load_milter_config(path)
    lines = str(error.value).splitlines()
    expected = [
        (3, "listen_backlog: unknown key"),
        (4, "deadline: must be a number"),
        (25, "dns.resolver: unknown key"),
        (9, "outbound.trusted_networks: '10.0.0.0/33' is not a CIDR network"),
        (13, "outbound.keys[0].key: cannot read key file /nonexistent.pem"),
        (2, "authserv_id: 'mx example' must be a plain token"),
        (5, "on_error: 'drop'"),
        (6, "log_format: 'xml' must be json or text"),
        (18, "outbound.keys[1].sign_for: 'bad domain' is not a domain or *.domain"),
        (23, "outbound.keys[2].sign_for: must be a list"),
        (30, "inbound.arc_seal: lacks selector, key"),
        (27, "inbound.trusted_mailing_lists: 'lists example' is not a host name"),
        (7, "max_header_fields: must be from 10 to 1000000, not 5"),
        (28, "inbound.max_dkim_signatures: must be from 1 to 1000, not 0"),
        (29, "inbound.reject_partial_body: must be a bool"),
    ]
    for line, fragment in expected:
        prefix = f"{path}:{line}: {fragment}"
        assert sum(text.startswith(prefix) for text in lines) == 1, (prefix, lines)
    assert len(lines) == len(expected)
    numbers = [int(text[len(str(path)) + 1 :].split(":")[0]) for text in lines]
    assert numbers == sorted(numbers)  # in the order of the file


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("listen = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_milter_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_milter_config(tmp_path / "missing.toml")


def test_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "milter.toml"
    path.write_text(GOOD.format(zone=ZONE, key=_key(tmp_path)))
    assert main(["milter", "--config", str(path), "--check-config"]) == 0
    assert "ARC sealing as example.org" in capsys.readouterr().out
    key = tmp_path / "seal.pem"
    key.write_bytes(private_key_pem(ED_KEY))
    key.chmod(0o600)
    assert main(["milter", "--config", str(path), "--check-config", "--arc-seal", "x"]) == 2
    assert "--arc-seal: 'x': use DOMAIN:SELECTOR:KEYFILE" in capsys.readouterr().err
    seal = f"fwd.example.net:s1:{key}"
    assert main(["milter", "--config", str(path), "--check-config", "--arc-seal", seal]) == 0
    assert "ARC sealing as fwd.example.net" in capsys.readouterr().out
    key.chmod(0o644)  # readable by others: one warning line, still valid
    assert main(["milter", "--config", str(path), "--check-config", "--arc-seal", seal]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"mailauth milter: warning: private key {key} is accessible by group or "
                   "others (mode 0644); chmod 600 it"]  # fmt: skip
    path.write_text('listen = "tcp:25"\nauthserv_id = "mx.example.org"\n')
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    assert "bad listen socket" in capsys.readouterr().err
    assert main(["milter", "--check-config", "--authserv-id", "mx.example.org"]) == 2
    assert "give --listen" in capsys.readouterr().err
    args = ["milter", "--listen", "inet:8891@127.0.0.1", "--authserv-id", "mx.example.org"]
    args += ["--dns-zone", str(ZONE)]
    nowhere = [
        "milter",
        "--listen",
        "unix:/nonexistent/dir/m.sock",
        "--authserv-id",
        "mx.example.org",
    ]
    assert main([*nowhere, "--dns-zone", str(ZONE), "--check-config"]) == 2
    assert "--listen: unix:/nonexistent/dir/m.sock: missing directory /nonexistent/dir" in (
        capsys.readouterr().err
    )
    assert main([*args, "--check-config", "--arc-seal-domain", "alumni.example.org"]) == 2
    assert "--arc-seal-domain needs --arc-seal" in capsys.readouterr().err
    assert main([*args, "--check-config", "--trusted-mailing-list", "lists.example.org,"]) == 2
    assert "'lists.example.org,' is not a host name" in capsys.readouterr().err
    # options get the file's checks too
    for option, message in (
        (["--deadline", "-1"], "--deadline: must be a positive number of seconds, not -1.0"),
        (["--deadline", "0"], "--deadline: must be a positive number of seconds, not 0.0"),
        (["--deadline", "nan"], "--deadline: must be a positive number of seconds, not nan"),
        (["--deadline", "inf"], "--deadline: must be a positive number of seconds, not inf"),
        (["--idle-timeout", "0"], "--idle-timeout: must be a positive number of seconds, not 0.0"),
        (["--idle-timeout", "nan"], "--idle-timeout: must be a positive number of seconds"),
        (["--metrics-listen", "nonsense"], "--metrics-listen: 'nonsense' must be HOST:PORT"),
        (["--metrics-listen", "127.0.0.1:²"], "must be HOST:PORT"),  # (int('²') raised)
        (["--socket-mode", "999"], "--socket-mode: '999' is not an octal mode such as 660"),
        (["--socket-mode", "-1"], "--socket-mode: '-1' is not an octal mode such as 660"),
        (["--socket-mode", "4770"], "--socket-mode: '4770' is not a permission mode from 0 to"),
        (["--socket-mode", "77777777777"], "'77777777777' is not a permission mode from 0 to"),
        (["--authserv-id", "a b"], "--authserv-id: 'a b' must be a plain token"),
    ):
        assert main([*args, "--check-config", *option]) == 2, option
        assert message in capsys.readouterr().err, option


def test_sighup_reloads_and_sigterm_stops(tmp_path: Path) -> None:
    path = tmp_path / "milter.toml"
    path.write_text(f'listen = "unix:{tmp_path}/m.sock"\nauthserv_id = "mx.example.org"\n'
                    f'[dns]\nzone_files = ["{ZONE}"]\n')  # fmt: skip
    command = [sys.executable, "-m", "mailauth", "milter", "--config", str(path)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        assert "listening" in process.stderr.readline()
        path.write_text("deadline = 5\n" + path.read_text())
        os.kill(process.pid, signal.SIGHUP)
        assert process.stderr.readline().rstrip().endswith("configuration reloaded")
        path.write_text(path.read_text().replace("m.sock", "n.sock"))
        os.kill(process.pid, signal.SIGHUP)
        line = process.stderr.readline()
        assert "configuration reloaded (listen: at the next restart)" in line
        path.write_text("deadline = -1\n")
        os.kill(process.pid, signal.SIGHUP)
        assert "reload failed" in process.stderr.readline()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_loopback_is_trusted_unless_the_file_lists_networks(tmp_path: Path) -> None:
    from mailauth.config import LOOPBACK, MilterConfig

    assert MilterConfig().trusted_networks == LOOPBACK
    path = tmp_path / "milter.toml"
    path.write_text('listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\n')
    assert [str(n) for n in load_milter_config(path).trusted_networks] == ["127.0.0.0/8", "::1/128"]
    path.write_text(path.read_text() + '[outbound]\ntrusted_networks = ["192.0.2.0/24"]\n')
    assert [str(n) for n in load_milter_config(path).trusted_networks] == ["192.0.2.0/24"]
    path.write_text(path.read_text().replace('["192.0.2.0/24"]', "[]"))
    assert load_milter_config(path).trusted_networks == ()  # every client verified


def test_a_reload_keeps_the_dns_cache_while_the_nameservers_stay() -> None:
    from mailauth.cli import _build_parser
    from mailauth.cli.serve import build_milter_parts, effective_config
    from mailauth.dns import Resolver
    from mailauth.pipeline import Authenticator
    from tests.dnsserver import LoopbackDnsServer

    with LoopbackDnsServer(ZONE.read_text()) as one, LoopbackDnsServer(ZONE.read_text()) as two:

        def parts(server: str, previous: Authenticator | None = None) -> Resolver:
            argv = ["milter", "--listen", "inet:8891@127.0.0.1", "--authserv-id", "mx.example.org"]
            args = _build_parser().parse_args([*argv, "--nameserver", server])
            authenticator, _ = build_milter_parts(effective_config(args), args, previous=previous)
            assert isinstance(authenticator.resolver, Resolver)
            return authenticator.resolver

        first = parts(one.address)
        first.lookup("example.com", RRType.TXT)
        running = Authenticator("mx.example.org", first)
        assert parts(one.address, running).cache is first.cache  # same servers: kept
        assert parts(two.address, running).cache is not first.cache  # others: a fresh start


def test_a_reload_takes_the_new_nameservers_from_the_file(tmp_path: Path) -> None:
    from mailauth.cli import _build_parser
    from mailauth.cli.serve import build_milter_parts, effective_config
    from mailauth.dns import Resolver
    from tests.dnsserver import LoopbackDnsServer

    path = tmp_path / "milter.toml"
    base = 'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
    args = _build_parser().parse_args(["milter", "--config", str(path)])
    with LoopbackDnsServer(ZONE.read_text()) as one, LoopbackDnsServer(ZONE.read_text()) as two:
        path.write_text(base + f'[dns]\nnameservers = ["{one.address}"]\n')
        first, _ = build_milter_parts(effective_config(args), args)
        path.write_text(base + f'[dns]\nnameservers = ["{two.address}"]\n')
        second, _ = build_milter_parts(effective_config(args), args, previous=first)
        assert isinstance(second.resolver, Resolver) and isinstance(first.resolver, Resolver)
        assert second.resolver.nameservers == [two.address] != first.resolver.nameservers
        assert second.resolver.cache is not first.resolver.cache


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(-1, 100),
    st.sampled_from([float("nan"), float("inf")]),
    st.sampled_from(["", "v", "inet:1@127.0.0.1", "mx.example.org", "10.0.0.0/8", "*.a.b",
                     "a b", "/nonexistent", "660", "text", "tempfail", "sign", "verify",
                     "from", "*@example.com", "relaxed/simple", "k", "refuse"]),
)  # fmt: skip
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3))
_TABLES = {
    "": ["listen", "authserv_id", "socket_mode", "deadline", "idle_timeout", "on_error",
         "metrics_listen", "log_format", "junk", "mode"],
    "[dns]": ["nameservers", "timeout", "zone_files"],
    "[inbound]": ["reject_dmarc", "quarantine_dmarc", "trusted_arc_sealers",
                  "trusted_mailing_lists", "trusted_authserv_ids", "verify_trusted_networks",
                  "ignore_networks", "ignore_author_domains", "ignore_mail_from_domains",
                  "required_headers", "multiple_authors", "authserv_id_with_queue_id",
                  "received_spf"],
    "[inbound.arc_seal]": ["domain", "selector", "key", "recipient_domains"],
    "[inbound.relay]": ["networks", "received_by", "spf"],
    "[logging]": ["stderr", "syslog", "syslog_socket", "syslog_facility"],
    "[outbound]": ["trusted_networks"],
    "[[outbound.keys]]": ["domain", "selector", "key", "sign_for"],
    "[[listeners]]": ["listen", "mode", "junk"],
    "[daemon_modes]": ["submission", "smtpd"],
    "[signing]": ["canonicalization", "headers", "oversign", "skip_headers", "expire",
                  "min_key_bits", "identity", "unauthorized", "junk"],
    "[signing.keys.k]": ["domain", "selector", "key", "headers", "canonicalization", "expire",
                         "min_key_bits", "junk"],
    "[[signing.table]]": ["from", "keys", "junk"],
    "[signing.users]": ["alice", "bob"],
}  # fmt: skip


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML's nan and inf
    return json.dumps(value)  # numbers and strings read back as TOML alike


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # (the one file is rewritten by every example)
@given(st.data())
def test_any_file_loads_or_gets_one_line_per_problem(tmp_path: Path, data: st.DataObject) -> None:
    """Whatever the file holds, the result is a configuration or a ConfigError with one
    indented line per problem: never another exception."""
    lines = []
    for header, table_keys in _TABLES.items():
        if header and not data.draw(st.booleans()):
            continue
        lines.append(header)
        names = table_keys
        if header == "[[outbound.keys]]":  # mostly complete, so that the later checks run
            key = data.draw(st.sampled_from(["", "/nonexistent"]))  # "" reads as "."
            lines += ['domain = "example.com"', 'selector = "s"', f'key = "{key}"']
            names = ["sign_for"]
        for name in data.draw(st.lists(st.sampled_from(names), unique=True)):
            lines.append(f"{name} = {_toml(data.draw(_VALUES))}")
    path = tmp_path / "fuzz.toml"
    path.write_text("\n".join(lines) + "\n")
    problems: list[str] = []
    try:
        load_milter_config(path)
    except ConfigError as exc:
        problems = str(exc).splitlines()
    assert all(re.match(rf"{re.escape(str(path))}(:\d+)?: \S", line) for line in problems)


def test_check_config_reports_every_problem_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad port and a bad nameserver appeared only once the first five were fixed (issue
    19); every problem now comes at once, FILE:LINE: key: problem, in the file's order, and
    the options' own problems after them."""
    path = tmp_path / "milter.toml"
    path.write_text(
        'listen = "inet:99999@127.0.0.1"\n'
        'authserv_id = "mx example"\n'
        'on_error = "maybe"\n'
        "deadline = -1\n"
        'log_format = "xml"\n'
        'socket_mode = "999"\n'
        "\n[dns]\n"
        'nameservers = ["dns.example"]\n'
        "timeout = 0\n"
        "\n[outbound]\n"
        'trusted_networks = ["10.0.0.0/33"]\n'
    )
    assert main(["milter", "--config", str(path), "--check-config", "--deadline", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"mailauth: error: {path}:1: listen: bad listen socket 'inet:99999@127.0.0.1': "
        "port 99999 out of range 1-65535",
        f"mailauth: error: {path}:2: authserv_id: 'mx example' must be a plain token (a host name)",
        f"mailauth: error: {path}:3: on_error: 'maybe' must be accept or tempfail",
        f"mailauth: error: {path}:4: deadline: must be a positive number of seconds, not -1.0",
        f"mailauth: error: {path}:5: log_format: 'xml' must be json or text",
        f"mailauth: error: {path}:6: socket_mode: '999' is not an octal mode such as 660",
        f"mailauth: error: {path}:9: dns.nameservers: nameserver 'dns.example': not an IP address",
        f"mailauth: error: {path}:10: dns.timeout: must be a positive number of seconds, not 0.0",
        f"mailauth: error: {path}:13: outbound.trusted_networks: '10.0.0.0/33' is not a CIDR "
        "network",
        "mailauth: error: --deadline: must be a positive number of seconds, not 0.0",
    ]


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("tcp:25", "unknown scheme 'tcp'; use inet:PORT@HOST, inet6:PORT@HOST or unix:PATH"),
        ("8891", "no scheme; use inet:PORT@HOST"),
        ("inet:0@127.0.0.1", "port 0 out of range 1-65535"),
        ("inet:smtp@127.0.0.1", "port 'smtp' is not a number"),
        ("unix:", "unix: needs a path"),
        ("unix:/nonexistent/dir/m.sock", "missing directory /nonexistent/dir"),
    ],
)
def test_a_bad_listen_socket_says_what_is_wrong(
    listen: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "milter.toml"
    path.write_text(f'authserv_id = "mx.example.org"\nlisten = "{listen}"\n')
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mailauth: error: {path}:2: listen: ") and problem in err, err
    assert err.count("\n") == 1


def test_a_toml_syntax_error_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "milter.toml"
    path.write_text('listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\nfoo =\n')
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err == f"mailauth: error: {path}:3: not valid TOML: Invalid value\n"


def test_zone_files_of_the_configuration_are_loaded_when_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zone = tmp_path / "db.example"
    zone.write_text('@ IN TXT "v=spf1 -all"\n')
    path = tmp_path / "milter.toml"
    path.write_text(
        'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
        f'[dns]\nzone_files = ["{zone}"]\n'
    )
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err == (
        f"mailauth: error: {path}:4: dns.zone_files: {zone}:1: relative name '@' with no "
        "$ORIGIN (add a $ORIGIN line, write the name with a final dot, or give the origin as "
        "FILE:ORIGIN)\n"
    )
    path.write_text(path.read_text().replace(f"{zone}", f"{zone}:example.com"))
    assert main(["milter", "--config", str(path), "--check-config"]) == 0


def test_sigterm_says_so_and_removes_the_unix_socket(tmp_path: Path) -> None:
    """A shutdown line, and no socket file left behind (a stale one was left on exit)."""
    socket_path = tmp_path / "m.sock"
    command = [sys.executable, "-m", "mailauth", "milter", "--listen", f"unix:{socket_path}"]
    command += ["--authserv-id", "mx.example.org", "--dns-zone", str(ZONE)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        assert "listening" in process.stderr.readline()
        assert socket_path.is_socket()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        rest = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert rest == (
        "mailauth milter: stopped on SIGTERM: 0 MTA connection(s) open, 0 closed in time, "
        "0 cut off after the deadline\n"
    )
    assert not socket_path.exists()


def test_a_socket_file_another_process_put_there_is_left_alone(tmp_path: Path) -> None:
    import socket as sockets

    from mailauth.milter.listen import remove_socket_file, socket_file

    path = tmp_path / "m.sock"
    with sockets.socket(sockets.AF_UNIX) as first:
        first.bind(str(path))
        ours = socket_file(f"unix:{path}")
    path.rename(tmp_path / "ours.sock")  # (kept: its inode number cannot be reused)
    with sockets.socket(sockets.AF_UNIX) as second:  # a new milter took the name over
        second.bind(str(path))
        remove_socket_file(ours)
        assert path.exists()
    remove_socket_file(socket_file(f"unix:{path}"))
    assert not path.exists()
    assert socket_file("inet:8891@127.0.0.1") is None
    # what stands at the path now is not a socket: a symlink to ours, another file
    path.symlink_to(tmp_path / "ours.sock")
    remove_socket_file(ours)
    assert path.is_symlink() and (tmp_path / "ours.sock").is_socket()
    assert socket_file(f"unix:{path}") is None  # (lstat: a symlink is not our socket)
    path.unlink()
    (tmp_path / "ours.sock").rename(path)
    os.chmod(path, 0o600)  # a chmod by the administrator: still ours
    remove_socket_file(ours)
    assert not path.exists()
    path.write_text("not a socket")
    remove_socket_file(ours)
    assert path.read_text() == "not a socket"


def test_the_socket_is_removed_after_a_chmod_and_chgrp(tmp_path: Path) -> None:
    """The administrator's chgrp/chmod of the running milter's socket changed its ctime,
    which was part of its identity: the socket was left behind at exit (issue 19 review)."""
    socket_path = tmp_path / "m.sock"
    command = [sys.executable, "-m", "mailauth", "milter", "--listen", f"unix:{socket_path}"]
    command += ["--authserv-id", "mx.example.org", "--dns-zone", str(ZONE)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        assert "listening" in process.stderr.readline()
        time.sleep(0.05)  # (a later ctime)
        os.chmod(socket_path, 0o600)
        if os.geteuid() == 0:
            os.chown(socket_path, -1, 65534)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not socket_path.exists()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("-1", "'-1' is not an octal mode such as 660"),  # os.chmod made it 07777
        ("+660", "'+660' is not an octal mode such as 660"),
        ("77777777777", "'77777777777' is not a permission mode from 0 to 777 (such as 660)"),
        ("1777", "'1777' is not a permission mode from 0 to 777 (such as 660)"),  # sticky
        ("2770", "'2770' is not a permission mode from 0 to 777 (such as 660)"),  # setgid
    ],
)
def test_socket_mode_is_a_permission_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, problem: str
) -> None:
    """socket_mode out of range passed --check-config, then the milter died on an
    OverflowError or made its socket world-writable (issue 19 review)."""
    path = tmp_path / "milter.toml"
    path.write_text(
        f'listen = "unix:{tmp_path}/m.sock"\nauthserv_id = "mx.example.org"\n'
        f'socket_mode = "{value}"\n[dns]\nzone_files = ["{ZONE}"]\n'
    )
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err == f"mailauth: error: {path}:3: socket_mode: {problem}\n"


def test_a_world_writable_socket_is_warned_about(tmp_path: Path) -> None:
    socket_path = tmp_path / "m.sock"
    command = [sys.executable, "-m", "mailauth", "milter", "--listen", f"unix:{socket_path}"]
    command += ["--authserv-id", "mx.example.org", "--dns-zone", str(ZONE)]
    process = subprocess.Popen(
        [*command, "--socket-mode", "666"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        assert "listening on" in process.stderr.readline()
        assert os.stat(socket_path).st_mode & 0o777 == 0o666
    finally:
        process.terminate()
        process.wait(timeout=30)
    rest = process.stderr.read()  # (what readline left in the buffer, too)
    assert "warning: socket mode 666 lets every local user talk to the milter" in rest


def test_check_config_reports_an_unreachable_nameserver_with_the_other_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reachability probe ran only once every other problem was fixed (issue 19
    review): now it is one more FILE:LINE: problem (or --nameserver: for the option)."""
    path = tmp_path / "milter.toml"
    path.write_text(
        'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx example"\n'
        '[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = 0.5\n'
    )
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"mailauth: error: {path}:2: authserv_id: 'mx example'")
    assert err[1].startswith(f"mailauth: error: {path}:4: dns.nameservers: DNS unreachable: ")
    argv = ["milter", "--check-config", "--listen", "inet:8891@127.0.0.1"]
    argv += ["--authserv-id", "mx example", "--nameserver", "127.0.0.1:1", "--dns-timeout", "0.5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[1].startswith("mailauth: error: --nameserver: DNS unreachable: ")
