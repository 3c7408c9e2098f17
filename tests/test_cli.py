from __future__ import annotations

import json
import os
import re
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
        (["verify", "--bogus"], "unrecognized option --bogus"),
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sign", "-", "--domain", "example.com", "--selector", "s", "--key", "/dev/zero"],
         "cannot read key file /dev/zero: larger than 1,048,576 octets"),
        (["verify", str(DEMO / "message.eml"), "--ip", "192.0.2.1", "--dns-zone", "/dev/zero"],
         "cannot read zone file /dev/zero: larger than 67,108,864 octets"),
        (["milter", "--config", "/dev/zero", "--check-config"],
         "cannot read /dev/zero: larger than 1,048,576 octets"),
        (["verify", "/dev/zero", *ARGS], "cannot read /dev/zero: larger than 268,435,456 octets"),
    ],
)  # fmt: skip
def test_a_file_without_end_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A path naming a device (or the wrong file) once filled the memory: every file an
    # operator names is read up to a bound (mailauth.files).
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_empty_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    assert main(["verify", str(empty), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty message" in err


@pytest.mark.parametrize(
    "raw",
    [
        b"\nHey gang,\r\nThis is a test message.\r\n",  # ValiMail ARC cv_no_headers
        b" continued\r\nFrom: alice@example.com\r\n\r\nbody\r\n",
        b"\x00From: alice@example.com\r\n\r\nbody\r\n",
        b"\xef\xbb\xbfFrom: alice@example.com\r\n\r\nbody\r\n",
        b": no name\r\n\r\nbody\r\n",
        b"no colon at all\r\n",
    ],
)
def test_verify_reads_a_file_as_the_mta_would_have_delivered_it(
    raw: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first line that is not a header field ends the header section there (as Postfix
    does): the message is evaluated, none/permerror with reasons, exit 0 (issue 19)."""
    path = tmp_path / "odd.eml"
    path.write_bytes(raw)
    assert main(["verify", str(path), "--json", *ARGS]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["dkim"] == [] and verdict["arc"]["result"] == "none"
    assert verdict["dmarc"]["result"] == "none" and verdict["dmarc"]["reason"]


def test_binary_input_is_not_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert main(["verify", str(path), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err == "mailauth: error: not a message: binary data (control octets at its start)\n"


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


@pytest.mark.parametrize("mode", ["servfail", "refused", "truncate_tcp_refused"])
def test_verify_with_a_failing_nameserver_reports_temperror_never_a_verdict(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nameserver that answers but fails every question (SERVFAIL, REFUSED, truncated
    answers whose TCP retry is refused): every method is temperror, DMARC applies no
    policy, and the reasons say what happened without naming the server."""
    from tests.dnsserver import LoopbackDnsServer

    zone = (DEMO / "example.com.zone").read_text()
    with LoopbackDnsServer(zone, mode=mode) as broken:
        args = ["verify", str(DEMO / "message.eml"), *ARGS[:6], "--json"]
        assert main([*args, "--nameserver", broken.address, "--dns-timeout", "0.5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spf"]["result"] == data["spf"]["helo"]["result"] == "temperror"
    assert [d["result"] for d in data["dkim"]] == ["temperror"]
    dmarc = data["dmarc"]
    assert (dmarc["result"], dmarc["policy"], dmarc["disposition"]) == ("temperror", None, "none")
    assert mode.split("_", maxsplit=1)[0].upper() in dmarc["reason"].upper()
    assert "127.0.0.1" not in data["authentication_results"]


@pytest.mark.parametrize("fault", ["silent", "servfail", "truncate_tcp_refused"])
def test_arc_sealing_over_the_wire_refuses_a_chain_whose_key_failed(
    fault: str, tmp_path: Path
) -> None:
    """mailauth sign --arc with --nameserver: the chain's key lookup fails on the wire (a
    timeout, SERVFAIL, a truncated answer whose TCP retry is refused): not sealed, exit 75
    (EX_TEMPFAIL), nothing on stdout."""
    from tests.dnsserver import LoopbackDnsServer

    lines = []
    for selector in ("arc1", "arc2"):
        args = ["keygen", "--domain", "example.org", "--selector", selector, "--out", str(tmp_path)]
        assert main(args) == 0
        lines.append((tmp_path / f"{selector}.txt").read_text())
    zone = (DEMO / "example.com.zone").read_text() + "$ORIGIN .\n" + "".join(lines)

    def seal(source: Path, selector: str, address: str) -> tuple[int, bytes]:
        out = tmp_path / "out.eml"
        command = [sys.executable, "-m", "mailauth", "sign", "--arc", str(source)]
        command += ["--authserv-id", "mx.example.org", "--ip", "192.0.2.10"]
        command += ["--nameserver", address, "--dns-timeout", "0.5", "--domain", "example.org"]
        command += ["--selector", selector, "--key", str(tmp_path / f"{selector}.private")]
        with out.open("wb") as stdout:
            code = subprocess.run(command, stdout=stdout, check=False).returncode
        return code, out.read_bytes()

    hop1 = tmp_path / "hop1.eml"
    with LoopbackDnsServer(zone) as server:
        code, sealed = seal(DEMO / "message.eml", "arc1", server.address)
    assert code == 0 and sealed.startswith(b"ARC-Seal: ") and b"cv=none" in sealed
    hop1.write_bytes(sealed)
    with LoopbackDnsServer(zone, faults={"arc1._domainkey.example.org": fault}) as server:
        assert seal(hop1, "arc2", server.address) == (75, b"")


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


# --- mailauth keygen / sign -------------------------------------------------------------------

ZONE_HEAD = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns.example.com. h.example.com. 1 1 1 1 1\n"
PLAIN = (DEMO / "message.eml").read_bytes().split(b"\nFrom: ", 1)[1]
PLAIN = b"From: " + PLAIN


def _keygen(
    tmp_path: Path, selector: str, algorithm: str, capsys: pytest.CaptureFixture[str]
) -> str:
    args = ["keygen", "--domain", "example.com", "--selector", selector]
    assert main([*args, "--algorithm", algorithm, "--out", str(tmp_path / "keys")]) == 0
    return capsys.readouterr().out


def test_keygen_sign_verify_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rsa_line = _keygen(tmp_path, "s2026", "rsa", capsys)
    ed_line = _keygen(tmp_path, "e2026", "ed25519", capsys)
    key = tmp_path / "keys" / "s2026.private"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "s2026.txt").read_text().strip() == rsa_line.strip()
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', rsa_line))
    zone = tmp_path / "example.com.zone"
    zone.write_text(ZONE_HEAD + rsa_line + ed_line)
    message = tmp_path / "message.eml"
    message.write_bytes(PLAIN)
    sign = ["sign", str(message), "--domain", "example.com"]
    keys = ["--selector", "s2026", "--key", str(key)]
    keys += ["--selector", "e2026", "--key", str(tmp_path / "keys" / "e2026.private")]
    result = subprocess.run(
        [sys.executable, "-m", "mailauth", *sign, *keys], capture_output=True, check=True
    )
    signed = result.stdout
    assert signed.endswith(PLAIN)
    assert signed.count(b"DKIM-Signature:") == 2
    good, bad = tmp_path / "signed.eml", tmp_path / "changed.eml"
    good.write_bytes(signed)
    bad.write_bytes(signed.replace(b"Hello Bob", b"Hello Eve"))
    verify = ["--ip", "192.0.2.1", "--dns-zone", str(zone)]
    capsys.readouterr()
    assert main(["verify", str(good), *verify]) == 0
    out = capsys.readouterr().out
    assert out.count("dkim=pass") == 2
    assert main(["verify", str(bad), *verify]) == 0
    out = capsys.readouterr().out
    assert out.count("dkim=fail") == 2
    assert 'reason="body hash did not verify"' in out.replace("\n ", " ")


def test_keygen_never_overwrites_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _keygen(tmp_path, "s1", "ed25519", capsys)
    args = [
        "keygen",
        "--domain",
        "example.com",
        "--selector",
        "s1",
        "--out",
        str(tmp_path / "keys"),
    ]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().endswith("exists; not overwriting a key")
    # a selector is a DNS label, and names the key file: "../x" could write elsewhere
    outside = ["keygen", "--domain", "example.com", "--selector", "../x", "--out", str(tmp_path)]
    assert main(outside) == 2
    assert "bad selector '../x'" in capsys.readouterr().err
    assert not (tmp_path.parent / "x.private").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main([*args[:-1], str(a_file)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--out {a_file}: not a directory")


@pytest.mark.parametrize("now", ["nan", "inf", "-1", "1e12", "soon"])
@pytest.mark.parametrize("command", ["verify", "sign"])
def test_now_must_be_a_time_that_t_can_carry(
    command: str, now: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN would make every time comparison false (no signature would ever expire); t= is
    1*12DIGIT (RFC 6376 3.5). Refused before anything runs, as one line."""
    args = [command, str(DEMO / "message.eml"), "--now", now]
    args += ARGS if command == "verify" else ["--domain", "example.com", "--selector", "s"]
    args += [] if command == "verify" else ["--key", str(DEMO / "demo.key.pem")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"argument --now: not a Unix time from 0 to 10^12: '{now}'" in err
    assert "Traceback" not in err


def test_dns_timeout_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("nan", "inf", "0", "-1"):  # NaN and inf used to wait forever
        argv = ["verify", str(DEMO / "message.eml"), "--ip", "192.0.2.1"]
        assert main([*argv, "--nameserver", "127.0.0.1:1", "--dns-timeout", value]) == 2
        assert "--dns-timeout must be a positive number of seconds" in capsys.readouterr().err


def test_sign_warns_about_a_readable_key_and_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _keygen(tmp_path, "s1", "ed25519", capsys)
    key = tmp_path / "keys" / "s1.private"
    key.chmod(0o644)
    message = tmp_path / "m.eml"
    message.write_bytes(PLAIN)
    result = subprocess.run(
        [sys.executable, "-m", "mailauth", "sign", str(message), "--domain", "example.com",
         "--selector", "s1", "--key", str(key)],
        capture_output=True,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stderr.decode().startswith("mailauth: warning: private key")
    assert result.stdout.endswith(PLAIN)
    bad = ["sign", str(message), "--domain", "example.com", "--selector", "s1"]
    assert main([*bad, "--key", str(message)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a PEM key" in err
    assert main([*bad, "--selector", "s2", "--key", str(key)]) == 2
    assert "one --selector" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["verify", "sign", "keygen", "check", "milter"])
def test_every_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


# --- DMARC on the fixtures (fixtures/dmarc/README.md) ----------------------------------------

DMARC = DEMO.parent / "dmarc"


@pytest.mark.parametrize(
    ("message", "ip", "mail_from", "result", "policy", "disposition"),
    [
        ("aligned", "192.0.2.10", "alice@example.net", "pass", "reject", "none"),
        ("spf-only", "192.0.2.10", "alice@example.net", "pass", "reject", "none"),
        ("dkim-only", "198.51.100.7", "alice@example.net", "pass", "reject", "none"),
        ("unauthenticated", "198.51.100.7", "alice@example.net", "fail", "reject", "reject"),
        ("subdomain", "198.51.100.7", "news@news.example.net", "fail", "quarantine", "quarantine"),
        ("nonexistent", "198.51.100.7", "ghost@nowhere.example.net", "fail", "reject", "reject"),
        ("no-record", "198.51.100.7", "eve@example.edu", "none", None, "none"),
        ("dns-timeout", "198.51.100.7", "sam@slow.example.org", "temperror", None, "none"),
    ],
)
def test_verify_json_reports_dmarc_on_the_fixtures(  # noqa: PLR0917
    message: str,
    ip: str,
    mail_from: str,
    result: str,
    policy: str | None,
    disposition: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["verify", str(DMARC / f"{message}.eml"), "--ip", ip, "--mail-from", mail_from]
    args += ["--dns-zone", str(DMARC / "dmarc.zone"), "--now", "1795000100", "--json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    dmarc = data["dmarc"]
    assert (dmarc["result"], dmarc["policy"], dmarc["disposition"]) == (result, policy, disposition)
    if message == "dkim-only":
        assert data["spf"]["result"] == "fail"
        assert dmarc["dkim_aligned"] == ["example.net"] and not dmarc["spf_aligned"]
    if message == "spf-only":
        assert data["dkim"] == [] and dmarc["spf_aligned"]
    if message == "subdomain":
        assert dmarc["policy_tag"] == "sp"
    if message == "nonexistent":
        assert dmarc["policy_tag"] == "np"
    assert f"dmarc={result}" in data["authentication_results"]


# --- ARC sealing at two hops --------------------------------------------------------------


def test_two_arc_hops_with_the_cli_pass_with_mailauth_and_dkimpy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dkim

    from mailauth.dkim.canon import to_crlf
    from mailauth.dns import RRType, ZoneResolver

    lines = []
    for domain, selector in (("lists.example.org", "arc1"), ("fwd.example.net", "arc2")):
        args = ["keygen", "--domain", domain, "--selector", selector, "--out", str(tmp_path)]
        assert main(args) == 0
        lines.append(capsys.readouterr().out)
    zone = tmp_path / "all.zone"
    zone.write_text((DEMO / "example.com.zone").read_text() + "".join(lines))

    def seal(source: Path, authserv_id: str, ip: str, domain: str, selector: str) -> Path:
        target = tmp_path / f"{selector}.eml"
        command = [sys.executable, "-m", "mailauth", "sign", "--arc", str(source)]
        command += ["--authserv-id", authserv_id, "--ip", ip, "--dns-zone", str(zone)]
        command += ["--domain", domain, "--selector", selector]
        command += ["--key", str(tmp_path / f"{selector}.private")]
        target.write_bytes(subprocess.run(command, capture_output=True, check=True).stdout)
        return target

    hop1 = seal(
        DEMO / "message.eml", "lists.example.org", "192.0.2.10", "lists.example.org", "arc1"
    )
    hop2 = seal(hop1, "fwd.example.net", "198.51.100.20", "fwd.example.net", "arc2")
    verify = ["--ip", "203.0.113.5", "--dns-zone", str(zone), "--json"]
    assert main(["verify", str(hop2), *verify]) == 0
    arc = json.loads(capsys.readouterr().out)["arc"]
    assert (arc["result"], arc["domains"]) == ("pass", ["lists.example.org", "fwd.example.net"])
    resolver = ZoneResolver.from_files([zone])

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        texts = resolver.lookup(name.decode().rstrip("."), RRType.TXT).texts
        return texts[0] if texts else b""

    sealed = to_crlf(hop2.read_bytes())
    assert dkim.arc_verify(sealed, dnsfunc=dnsfunc)[0] == b"pass"
    changed = tmp_path / "changed.eml"
    changed.write_bytes(hop2.read_bytes().replace(b"Hello Bob", b"Hello Eve"))
    assert main(["verify", str(changed), *verify]) == 0
    assert json.loads(capsys.readouterr().out)["arc"]["result"] == "fail"
    assert (
        dkim.arc_verify(sealed.replace(b"Hello Bob", b"Hello Eve"), dnsfunc=dnsfunc)[0] == b"fail"
    )


def test_sign_arc_needs_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sign", "--arc", str(DEMO / "message.eml"), "--domain", "example.org"]
    args += ["--selector", "s", "--key", str(DEMO / "demo.key.pem")]
    assert main(args) == 2
    assert "--arc needs --authserv-id and --ip" in capsys.readouterr().err


def test_verify_l_policy_and_signature_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailauth.dkim import public_key_record, zone_txt_line
    from tests.dkim_helpers import MESSAGE, NOW, RSA_KEY, dkimpy_sign

    signature = dkimpy_sign(MESSAGE, "rsa-sha256", "relaxed/relaxed", length=True)
    message = tmp_path / "appended.eml"
    message.write_bytes(signature + MESSAGE + b"Unsigned postscript\r\n")  # l= body-append
    zone = tmp_path / "keys.zone"
    record = public_key_record(RSA_KEY)
    zone.write_text(zone_txt_line("rsa1._domainkey.example.com", record) + "\n")
    base = ["verify", str(message), "--ip", "192.0.2.1", "--dns-zone", str(zone), "--json"]
    base += ["--now", str(NOW * 2)]

    def dkim(*extra: str) -> list[dict[str, object]]:
        assert main([*base, *extra]) == 0
        return list(json.loads(capsys.readouterr().out)["dkim"])

    assert dkim()[0]["result"] == "pass"
    assert dkim("--reject-partial-body")[0]["result"] == "policy"
    twice = tmp_path / "twice.eml"
    twice.write_bytes(signature + signature + MESSAGE)
    base[1] = str(twice)
    outcomes = dkim("--max-signatures", "1")
    assert [o["result"] for o in outcomes] == ["pass", "policy"]
    assert main([*base, "--max-signatures", "0"]) == 2
    assert "--max-signatures" in capsys.readouterr().err


def test_sign_arc_does_not_seal_a_chain_it_could_not_validate(tmp_path: Path) -> None:
    lines = []
    for selector in ("arc1", "arc2"):
        args = ["keygen", "--domain", "example.org", "--selector", selector, "--out", str(tmp_path)]
        lines.append(subprocess.run([sys.executable, "-m", "mailauth", *args],
                                    capture_output=True, check=True, text=True).stdout)  # fmt: skip
    zone = tmp_path / "all.zone"
    zone.write_text((DEMO / "example.com.zone").read_text() + "".join(lines))

    def seal(source: Path, selector: str, zone_file: Path) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "mailauth", "sign", "--arc", str(source)]
        command += ["--authserv-id", "mx.example.org", "--ip", "192.0.2.10"]
        command += ["--dns-zone", str(zone_file), "--domain", "example.org"]
        command += ["--selector", selector, "--key", str(tmp_path / f"{selector}.private")]
        return subprocess.run(command, capture_output=True, check=False)

    hop1 = tmp_path / "hop1.eml"
    hop1.write_bytes(seal(DEMO / "message.eml", "arc1", zone).stdout)
    failing = tmp_path / "failing.zone"
    fault = "; mailauth-fault: arc1._domainkey.example.org timeout\n"  # (arc1's key left out)
    failing.write_text((DEMO / "example.com.zone").read_text() + lines[1] + fault)
    done = seal(hop1, "arc2", failing)
    assert (done.returncode, done.stdout) == (75, b"")  # EX_TEMPFAIL: try again later
    assert done.stderr.decode().splitlines() == [
        "mailauth sign: error: not sealed: ARC-Message-Signature i=1: key lookup failed: "
        "DNS timeout; ARC-Seal i=1: key lookup failed: DNS timeout"
    ]


def test_verify_does_not_load_what_only_other_commands_use() -> None:
    """Start-up is most of the CPU of one `mailauth verify`: the HTTP client (MTA-STS),
    the progress bar (check) and the metrics client (milter) load only when used."""
    code = (
        "import sys, mailauth.cli, mailauth.milter.server, mailauth.check; "
        "found = [m for m in ('httpx', 'tqdm', 'prometheus_client') if m in sys.modules]; "
        "sys.exit(','.join(found) or None)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_sign_arc_with_dns_unreachable_is_a_temporary_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A .forward pipe must defer, not bounce, when the local resolver is down: 75."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        silent = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, never answers
        args = ["sign", "--arc", str(DEMO / "message.eml"), "--authserv-id", "mx.example.org"]
        args += ["--ip", "192.0.2.10", "--nameserver", silent, "--dns-timeout", "0.3"]
        args += ["--domain", "example.org", "--selector", "s", "--key", str(DEMO / "demo.key.pem")]
        assert main(args) == 75
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1].startswith("mailauth sign: error: not sealed: DNS unreach")


def test_dns_zone_with_its_origin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zone file as BIND keeps it (no $ORIGIN, the origin in named.conf): FILE:ORIGIN.
    Without the origin: one line naming the file and the line, exit 2."""
    text = (DEMO / "example.com.zone").read_text()
    zone = tmp_path / "db.example.com"
    zone.write_text("\n".join(line for line in text.splitlines() if "$ORIGIN" not in line))
    argv = ["verify", str(DEMO / "message.eml"), "--ip", "192.0.2.10", "--dns-zone"]
    assert main([*argv, f"{zone}:example.com"]) == 0
    assert "dkim=pass" in capsys.readouterr().out
    assert main([*argv, str(zone)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.match(rf"mailauth: error: {re.escape(str(zone))}:\d+: relative name", err), err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["verify", "--ip", "192.0.2.1", "--now", "abc"],
         "mailauth verify: error: argument --now: not a Unix time from 0 to 10^12: 'abc'; "
         "see mailauth verify --help"),
        (["verify", "--ipp", "192.0.2.1"],
         "mailauth verify: error: unrecognized option --ipp (did you mean --ip?); "
         "see mailauth verify --help"),
        (["verify", "a.eml", "b.eml", "--ip", "192.0.2.1"],
         "mailauth verify: error: unrecognized arguments: b.eml; see mailauth verify --help"),
        (["verify", "--mail-from", "postmaster", "--ip", "192.0.2.1"],
         "mailauth verify: error: argument --mail-from: 'postmaster' is not a reverse-path: "
         "give local-part@domain, or '' or '<>' for the null reverse-path; "
         "see mailauth verify --help"),
        (["sign", "--domain", "example.com"],
         "mailauth sign: error: the following arguments are required: --selector, --key; "
         "see mailauth sign --help"),
        (["sign", "--arc", "--mail-from", "<postmaster>", "--domain", "d", "--selector", "s",
          "--key", "k"],
         "mailauth sign: error: argument --mail-from: '<postmaster>' is not a reverse-path"),
        (["keygen", "--domain", "example.com", "--selector", "s", "--out", "k",
          "--algorithm", "dsa"],
         "mailauth keygen: error: argument --algorithm: invalid choice: 'dsa'"),
        (["check", "--jsn", "example.com"],
         "mailauth check: error: unrecognized option --jsn (did you mean --json?)"),
        (["milter", "--check-confg"],
         "mailauth milter: error: unrecognized option --check-confg (did you mean "
         "--check-config?)"),
        (["bogus"], "mailauth: error: argument COMMAND: invalid choice: 'bogus'"),
        ([], "mailauth: error: give a command (verify, sign, keygen, check, milter, reports, "
             "config); see mailauth --help"),
        (["--frobnicate"], "mailauth: error: unrecognized arguments: --frobnicate"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_naming_the_command(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not argparse's usage block (2-10 lines); a misspelt option of a command names that
    command, ahead of the options still missing (issue 19)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(expected), captured.err
    assert captured.err.rstrip().endswith("--help")


def test_options_argparse_takes_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    """Abbreviations, --opt=value, negative numbers as values, and '--'."""
    message = str(DEMO / "message.eml")
    zone = ["--dns-zone", str(DEMO / "example.com.zone")]
    assert main(["verify", message, "--ip=192.0.2.10", "--mail", "a@example.com", *zone]) == 0
    assert "smtp.mailfrom=a@example.com" in capsys.readouterr().out
    assert main(["verify", "--ip", "192.0.2.10", "--now", "-5", *zone, "--", message]) == 2
    assert "not a Unix time" in capsys.readouterr().err  # (-5 reached the type, not the scan)
    assert (
        main(["verify", "--ip", "192.0.2.10", "--mail-from", "@example.com", *zone, message]) == 0
    )
    assert "smtp.mailfrom=postmaster@example.com" in capsys.readouterr().out


def test_verify_json_documents_received_spf(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(DEMO / "message.eml"), "--json", *ARGS]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["received_spf"].startswith("Received-SPF: pass")
    docs = (DEMO.parent.parent / "docs" / "cli.md").read_text()
    for key in data:
        assert f"| `{key}` |" in docs, key


def test_keygen_gives_the_key_to_the_service_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keygen run as root for the milter's user: --owner USER[:GROUP] (issue 19); the key
    is the user's before a byte of it is written."""
    import grp
    import os
    import pwd

    nobody = pwd.getpwnam("nobody")
    out = tmp_path / "keys"
    args = ["keygen", "--domain", "example.com", "--algorithm", "ed25519", "--out", str(out)]
    if os.geteuid() != 0:
        assert main([*args, "--selector", "s1", "--owner", "nobody"]) == 2
        assert "--owner needs root" in capsys.readouterr().err
        assert not (out / "s1.private").exists()  # no key left to the wrong user
        return
    assert main([*args, "--selector", "s1", "--owner", "nobody"]) == 0
    for path in (out / "s1.private", out / "s1.txt"):
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert (out / "s1.private").stat().st_mode & 0o777 == 0o600
    assert (out / "s1.txt").stat().st_mode & 0o777 == 0o644
    # the directory stays root's (the service user must not be able to plant files in it)
    assert (out.stat().st_uid, out.stat().st_gid) == (0, nobody.pw_gid)
    assert out.stat().st_mode & 0o777 == 0o750
    group = grp.getgrgid(0).gr_name
    assert main([*args, "--selector", "s2", "--owner", f"nobody:{group}"]) == 0
    assert (out / "s2.private").stat().st_gid == 0
    capsys.readouterr()
    for owner, message in (("nosuchuser", "no user 'nosuchuser'"), ("nobody:nosuchgroup",
                           "no group 'nosuchgroup'")):  # fmt: skip
        assert main([*args, "--selector", "s3", "--owner", owner]) == 2
        assert capsys.readouterr().err == f"mailauth: error: --owner {owner!r}: {message}\n"
        assert not (out / "s3.private").exists()


def _root_keygen_args(out: Path) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (keygen --owner)")
    return ["keygen", "--domain", "example.com", "--algorithm", "ed25519", "--out", str(out)]


def test_keygen_refuses_a_symlink_planted_as_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service user who could write to --out plants SELECTOR.txt -> /etc/shadow: root
    neither writes through it nor gives its target away (issue 19 review)."""
    out = tmp_path / "keys"
    args = _root_keygen_args(out)
    assert main([*args, "--selector", "s1", "--owner", "nobody"]) == 0
    target = tmp_path / "shadow"
    target.write_text("root:secret\n")
    target.chmod(0o600)
    (out / "s2.txt").symlink_to(target)
    assert main([*args, "--selector", "s2", "--owner", "nobody"]) == 2
    assert "s2.txt exists; not overwriting it" in capsys.readouterr().err
    assert target.read_text() == "root:secret\n"
    assert (target.stat().st_uid, target.stat().st_mode & 0o777) == (0, 0o600)
    assert not (out / "s2.private").exists()  # no half pair left
    assert (out / "s2.txt").is_symlink()  # not ours: not removed either


def test_keygen_failure_keeps_files_it_did_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    out.mkdir(mode=0o755)
    (out / "s3.txt").write_text("the published record\n")
    if os.geteuid() != 0:  # --owner root as a user: fchown fails; s3.txt stays
        argv = ["keygen", "--domain", "example.com", "--selector", "s3", "--out", str(out)]
        assert main([*argv, "--algorithm", "ed25519", "--owner", "root"]) == 2
    else:  # the record exists: refused, and the key just made is removed
        assert main([*_root_keygen_args(out), "--selector", "s3"]) == 2
        assert "s3.txt exists; not overwriting it" in capsys.readouterr().err
    assert (out / "s3.txt").read_text() == "the published record\n"
    assert not (out / "s3.private").exists()


def test_keygen_as_root_refuses_a_directory_others_can_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    out = tmp_path / "keys"
    args = _root_keygen_args(out)
    out.mkdir(mode=0o755)
    for uid, mode in ((nobody.pw_uid, 0o755), (0, 0o777), (0, 0o775)):
        os.chown(out, uid, 0)
        out.chmod(mode)
        assert main([*args, "--selector", "s1", "--owner", "nobody"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "writable by a user other than root" in err
        assert list(out.iterdir()) == []
    link = tmp_path / "link"
    link.symlink_to(out)
    argv = ["keygen", "--domain", "example.com", "--algorithm", "ed25519", "--out", str(link)]
    assert main([*argv, "--selector", "s1"]) == 2
    assert "a symlink" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text", ["a@", "@", "postmaster@", "a@b@c", "<a@b.example", "a@bank.example>", "a@b c", "<>>"]
)
def test_mail_from_must_be_a_reverse_path(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """These passed as MAIL FROM, with a made-up or missing domain (issue 19 review)."""
    argv = ["verify", "--ip", "192.0.2.1", "--dns-zone", str(DEMO / "example.com.zone")]
    assert main([*argv, "--mail-from", text, str(DEMO / "message.eml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"argument --mail-from: {text!r} is not a reverse-path" in err


@pytest.mark.parametrize(
    "text", ['"x@y"@example.com', "<>", "", "<a@example.com>", "@example.com", " a@example.com "]
)
def test_mail_from_reverse_paths_accepted(text: str) -> None:
    from mailauth.cli.common import reverse_path_arg

    assert reverse_path_arg(text) == text
