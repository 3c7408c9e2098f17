"""``mailauth config import`` (mailauth/migrate/): an OpenDKIM + OpenDMARC site's files
(synthetic, fixtures/migrate/README.md) as the milter's TOML -- each setting's mapping, the
notes for what is not carried over, bad input as one located line, the round trip through
``mailauth milter --check-config``, and the imported milter signing over its socket."""

from __future__ import annotations

import asyncio
import contextlib
import email
import hashlib
import os
import socket
import stat
import struct
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailauth.cli import main
from mailauth.dkim import public_key_record
from mailauth.dkim.keys import PrivateKey, private_key_pem
from mailauth.errors import ConfigError
from mailauth.migrate import import_site
from mailauth.migrate.tables import _refile_pattern
from mailauth.milter import protocol as p
from tests.dkim_helpers import ED_KEY, RSA_KEY, dkimpy_dns, verify, zone
from tests.milterclient import MilterClient, split_message
from tests.test_milter import inserted_fields

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "migrate"
NET_KEY = ed25519.Ed25519PrivateKey.generate()
KEYS: dict[str, PrivateKey] = {
    "example.com/rsa2026": RSA_KEY,
    "example.com/ed2026": ED_KEY,
    "example.net/s1": NET_KEY,
}


def _records(keys: Mapping[str, PrivateKey]) -> dict[str, str]:
    """The DNS key records of the site's keys (``domain/selector``: key)."""
    return {
        f"{name.split('/')[1]}._domainkey.{name.split('/')[0]}": public_key_record(key)
        for name, key in keys.items()
    }


RECORDS = _records(KEYS)


def _site(tmp_path: Path, keys: Mapping[str, PrivateKey] = KEYS) -> Path:
    """The fixtures with @DIR@ = tmp_path, the key files (mode 600) and the socket's
    directory."""
    for source in FIXTURES.iterdir():
        if source.name != "README.md":
            text = source.read_text().replace("@DIR@", str(tmp_path))
            (tmp_path / source.name).write_text(text)
    for name, key in keys.items():
        path = tmp_path / "keys" / f"{name}.private"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(private_key_pem(key))
        path.chmod(0o600)
    (tmp_path / "run").mkdir()
    return tmp_path


def _toml(tmp_path: Path, *, dkim: str | None, dmarc: str | None) -> tuple[dict[str, Any], str]:
    imported = import_site(
        tmp_path / dkim if dkim else None, tmp_path / dmarc if dmarc else None, "mx.example.org"
    )
    return tomllib.loads(imported.toml), imported.toml


def test_each_opendkim_and_opendmarc_setting_is_mapped(tmp_path: Path) -> None:
    site = _site(tmp_path)
    data, _ = _toml(site, dkim="site-opendkim.conf", dmarc="site-opendmarc.conf")
    assert {k: v for k, v in data.items() if not isinstance(v, dict)} == {
        "listen": f"unix:{site}/run/opendkim.sock",  # Socket local:...
        "mode": "both",  # Mode sv
        "authserv_id": "mx.example.org",  # AuthservID
        "socket_mode": "770",  # UMask 007
        "on_error": "tempfail",  # On-DNSError, On-InternalError
    }
    assert data["dns"] == {"nameservers": ["127.0.0.1", "::1"], "timeout": 5}
    assert data["logging"] == {"syslog": True, "syslog_facility": "local3"}
    assert data["daemon_modes"] == {"ORIGINATING": "sign"}  # MTA
    assert data["outbound"] == {  # InternalHosts (localhost: its loopback addresses)
        "trusted_networks": ["127.0.0.1/32", "::1/128", "192.0.2.0/24", "2001:db8::/32"]
    }
    assert data["inbound"] == {
        "trusted_authserv_ids": ["border.example.org", "mx2.example.org"],  # both files'
        "max_dkim_signatures": 5,  # MaximumSignaturesToVerify
        "authserv_id_with_queue_id": True,  # AuthservIDWithJobID
        "ignore_networks": ["127.0.0.1/32", "::1/128", "192.0.2.0/24"],  # IgnoreHosts
        "ignore_author_domains": ["partner.example", "lists.example.net"],  # IgnoreDomains
        "ignore_mail_from_domains": ["bounces.example.net"],  # IgnoreMailFrom
        "reject_dmarc": True,  # RejectFailures
        "required_headers": True,  # RequiredHeaders
        "multiple_authors": "reject-domains",  # RejectMultiValueFrom
        "quarantine_dmarc": False,  # HoldQuarantinedMessages
    }
    signing = data["signing"]
    assert {k: v for k, v in signing.items() if k not in ("keys", "table")} == {
        "canonicalization": "relaxed/simple",
        "headers": ["From", "To", "Subject", "Date", "Message-ID"],  # SignHeaders
        "oversign": ["From"],  # OversignHeaders
        "skip_headers": ["X-Mailer"],  # OmitHeaders
        "expire": 604800,  # SignatureTTL
        "identity": ["sender", "from"],  # SenderHeaders (Resent-From: a note)
    }
    assert signing["keys"] == {  # KeyTable: the same files, named, not copied
        "rsa2026._domainkey.example.com": {
            "domain": "example.com", "selector": "rsa2026",
            "key": f"{site}/keys/example.com/rsa2026.private",
        },
        "ed2026._domainkey.example.com": {
            "domain": "example.com", "selector": "ed2026",
            "key": f"{site}/keys/example.com/ed2026.private",
        },
        "s1._domainkey.example.net": {
            "domain": "example.net", "selector": "s1",
            "key": f"{site}/keys/example.net/s1.private",
        },
    }  # fmt: skip
    rsa, ed, net = signing["keys"]
    # refile with MultipleSignatures: every matching line signs -- an address gets the
    # keys of the wider lines too, and the most specific entry comes first
    assert [(e["from"], e["keys"]) for e in signing["table"]] == [
        ("ceo@example.com", [rsa, ed]),
        ("example.com", [rsa, ed]),
        ("example.net", [net]),
        ("*.example.com", [ed]),
    ]


def _notes(tmp_path: Path, dkim: str | None, dmarc: str | None) -> list[str]:
    imported = import_site(
        tmp_path / dkim if dkim else None, tmp_path / dmarc if dmarc else None, "mx.example.org"
    )
    for note in imported.notes:  # every note is in the file too, as a comment
        assert f"#   {note}" in imported.toml
    return [note.replace(str(tmp_path) + "/", "") for note in imported.notes]


def test_every_setting_without_an_equivalent_is_one_line(tmp_path: Path) -> None:
    notes = _notes(_site(tmp_path), "site-opendkim.conf", "site-opendmarc.conf")
    located = [note.split(": ", 2)[:2] for note in notes]
    assert located == [
        ["site-opendkim.conf:3", "SyslogSuccess"],
        ["site-opendkim.conf:5", "LogWhy"],
        ["site-opendkim.conf:9", "UserID"],
        ["site-opendkim.conf:10", "PidFile"],
        ["site-opendkim.conf:17", "MinimumKeyBits"],
        ["site-opendkim.conf:18", "SenderHeaders"],  # Resent-From
        ["site-opendkim.conf:22", "On-BadSignature"],
        ["TrustedHosts:5", "!192.0.2.66"],
        ["TrustedHosts:6", "relay.example.com"],
        ["site-opendkim.conf:27", "ExternalIgnoreList"],
        ["site-opendkim.conf:28", "MTA"],  # (signs only trusted or authenticated clients)
        ["site-opendkim.conf:31", "TrustAnchorFile"],
        ["site-opendkim.conf:32", "ReportAddress"],
        ["site-opendkim.conf:33", "BodyLengthDB"],
        ["SigningTable:6", "a*@example.org s1._domainkey.example.net"],
        ["site-opendmarc.conf:4", "TrustedAuthservIDs"],
        ["ignore.hosts:5", "backup-mx.example.net"],
        ["site-opendmarc.conf:14", "FailureReports"],
        ["site-opendmarc.conf:15", "HistoryFile"],
        ["site-opendmarc.conf:16", "PublicSuffixList"],
        ["site-opendmarc.conf:17", "Socket"],  # (one socket replaces both milters)
        ["site-opendmarc.conf:19", "SyslogFacility mail"],  # differs: OpenDKIM's kept
        ["site-opendmarc.conf:20", "UMask 002"],
        ["site-opendmarc.conf:21", "UserID"],
        ["site-opendmarc.conf:22", "PidFile"],
    ]
    assert "keeps" in notes[21] and "local3" in notes[21]


def test_the_debian_files(tmp_path: Path) -> None:
    """Debian's enabled settings: syslog, relaxed/simple, From oversigned, the two unix
    sockets (one kept), the umask; the rest are notes."""
    for name in ("debian-opendkim.conf", "debian-opendmarc.conf"):
        (tmp_path / name).write_bytes((FIXTURES / name).read_bytes())
    data, _ = _toml(tmp_path, dkim="debian-opendkim.conf", dmarc="debian-opendmarc.conf")
    assert data == {
        "listen": "unix:/run/opendkim/opendkim.sock",
        "mode": "both",
        "authserv_id": "mx.example.org",
        "socket_mode": "770",
        "logging": {"syslog": True},
        "signing": {"canonicalization": "relaxed/simple", "oversign": ["From"]},
    }
    notes = _notes(tmp_path, "debian-opendkim.conf", "debian-opendmarc.conf")
    assert [n.split(": ", 2)[:2] for n in notes] == [
        ["debian-opendkim.conf:5", "SyslogSuccess"],
        ["debian-opendkim.conf:20", "UserID"],
        ["debian-opendkim.conf:26", "PidFile"],
        ["debian-opendkim.conf:29", "TrustAnchorFile"],
        ["debian-opendmarc.conf:4", "PidFile"],
        ["debian-opendmarc.conf:7", "PublicSuffixList"],
        ["debian-opendmarc.conf:9", "Socket"],
        ["debian-opendmarc.conf:13", "UMask 0002"],
        ["debian-opendmarc.conf:15", "UserID"],
    ]


def test_a_flat_signing_table_in_opendkim_lookup_order(tmp_path: Path) -> None:
    """Keys looked up as OpenDKIM does (address, domain, .parent): the address entry first
    whatever the file's order; SubDomains does not widen the table (OpenDKIM's behaviour,
    compared below); a second line for a key and user@.domain are notes."""
    site = _site(tmp_path)
    data, _ = _toml(site, dkim="site-plain-opendkim.conf", dmarc=None)
    assert data["listen"] == "inet:8891@127.0.0.1"  # inet:8891@localhost
    rsa, ed, net = data["signing"]["keys"]
    assert [(e["from"], e["keys"]) for e in data["signing"]["table"]] == [
        ("ceo@example.com", [rsa]),
        ("example.com", [ed]),
        ("*.example.net", [net]),  # .example.net
    ]
    notes = _notes(site, "site-plain-opendkim.conf", None)
    assert [n.split(": ", 2)[0] for n in notes] == [
        "SigningTable.plain:5",
        "SigningTable.plain:6",
        "site-plain-opendkim.conf",  # (no Canonicalization: OpenDKIM's simple/simple)
    ]
    assert "matched first by SigningTable.plain:2" in notes[1]


def test_multiple_signatures_in_a_flat_table_gathers_every_level(tmp_path: Path) -> None:
    site = _site(tmp_path)
    conf = site / "site-plain-opendkim.conf"
    conf.write_text(conf.read_text() + "MultipleSignatures yes\n")
    data, _ = _toml(site, dkim=conf.name, dmarc=None)
    rsa, ed, net = data["signing"]["keys"]
    assert [(e["from"], e["keys"]) for e in data["signing"]["table"]] == [
        ("ceo@example.com", [rsa, ed]),  # its own line and example.com's (the first)
        ("example.com", [ed]),  # (its second line is never read, as without)
        ("*.example.net", [net]),
    ]


@pytest.mark.parametrize(
    ("written", "pattern"),
    [
        ("*", "*"),
        ("*@*", "*"),
        ("*@example.com", "example.com"),
        ("*@*.example.com", "*.example.com"),
        ("*.example.com", "*.example.com"),  # (* before the dot: any address at a subdomain)
        ("Alice@Example.COM", "alice@example.com"),
        ("a*@example.com", None),  # (* inside a word)
        ("*example.com", None),  # (badexample.com too)
        ("example.com", None),  # (a whole address to refile: never matches one)
        ("user@*.example.com", None),
        ("*@exa*mple.com", None),
    ],
)
def test_refile_patterns_carried_only_when_exact(written: str, pattern: str | None) -> None:
    assert _refile_pattern(written) == pattern


def test_the_one_key_form_and_data_sets_that_cannot_be_read(tmp_path: Path) -> None:
    site = _site(tmp_path)
    conf = site / "one.conf"
    conf.write_text(
        "Domain csl:example.com,example.org\nSelector rsa2026\n"
        f"KeyFile {site}/keys/example.com/rsa2026.private\nSubDomains true\n"
        "InternalHosts ldap://ldap.example.com/dc=example\nMTA dsn:mysql://u@h/db/table=t\n"
        "Socket inet:8891\nMode s\nSomethingNew 1\n"
    )
    imported = import_site(conf, None, "mx.example.org")
    data = tomllib.loads(imported.toml)
    assert (data["listen"], data["mode"]) == ("inet:8891@0.0.0.0", "sign")  # all interfaces
    assert data["signing"]["keys"] == {
        name: {"domain": domain, "selector": "rsa2026",
               "key": f"{site}/keys/example.com/rsa2026.private"}
        for name, domain in (("example-com", "example.com"), ("example-org", "example.org"))
    }  # fmt: skip
    assert [(e["from"], e["keys"]) for e in data["signing"]["table"]] == [
        ("example.com", ["example-com"]),
        ("*.example.com", ["example-com"]),
        ("example.org", ["example-org"]),
        ("*.example.org", ["example-org"]),
    ]
    assert "outbound" not in data and "daemon_modes" not in data
    assert imported.notes[-2].endswith(
        "one.conf:9: SomethingNew: not an OpenDKIM setting this importer knows: left out"
    )
    unread = [n for n in imported.notes if "data set cannot be imported" in n]
    assert [n.split(": ")[1] for n in unread] == ["InternalHosts", "MTA"]
    assert "a ldap: data set" in unread[0] and "a dsn: data set" in unread[1]


def test_key_file_problems_are_warnings(tmp_path: Path) -> None:
    site = _site(tmp_path)
    (site / "keys/example.com/ed2026.private").chmod(0o644)
    (site / "keys/example.net/s1.private").unlink()
    imported = import_site(site / "site-opendkim.conf", None, "mx.example.org")
    assert [w.replace(str(site) + "/", "") for w in imported.warnings] == [
        "KeyTable:3: private key keys/example.com/ed2026.private is accessible by "
        "group or others (mode 0644); chmod 600 it",
        "KeyTable:4: key file keys/example.net/s1.private does not exist (or is not a file)",
    ]
    assert "#   " + imported.warnings[0] in imported.toml
    assert b"PRIVATE KEY" not in imported.toml.encode()  # (named, never copied)


@pytest.mark.parametrize(
    ("conf", "extra", "problem"),
    [
        ("Mode sx\n", {}, "c.conf:1: Mode: 'sx' must be s, v or sv"),
        ("Syslog maybe\n", {}, "c.conf:1: Syslog: 'maybe' is not a boolean"),
        ("# c\nSocket\n", {}, "c.conf:2: Socket: no value"),
        ("Socket inet:http@localhost\n", {}, "c.conf:1: Socket: 'inet:http@localhost': port"),
        ("Socket tcp:25\n", {}, "c.conf:1: Socket: 'tcp:25' is not inet:PORT@HOST"),
        ("UMask 9\n", {}, "c.conf:1: UMask: '9' is not an octal umask"),
        ("SignatureTTL -1\n", {}, "c.conf:1: SignatureTTL: '-1' is not a number"),
        ("Canonicalization loose\n", {}, "c.conf:1: Canonicalization: 'loose' must be"),
        ("On-DNSError shrug\n", {}, "c.conf:1: On-DNSError: 'shrug' is not an action"),
        ("Mode s\nmode v\n", {}, "c.conf:2: mode: given twice (line 1 too)"),
        ("Sock=et x\n", {}, "c.conf:1: 'Sock=et' is not a setting name"),
        ("KeyTable @/kt\nSigningTable @/st\n", {"kt": "k example.com\n", "st": "x k\n"},
         "kt:1: a KeyTable line is NAME domain:selector:keyfile"),
        ("KeyTable @/kt\nSigningTable refile:@/st\n",
         {"kt": "k example.com:s:/k\n", "st": "*@example.com k\n*@example.net other\n"},
         "st:2: key 'other' is not in the KeyTable"),
        ("KeyTable @/kt\n", {"kt": "k example.com:s:/k\n"},
         "c.conf:1: KeyTable: KeyTable and SigningTable go together"),
        ("InternalHosts @/missing\n", {}, "missing: cannot read: No such file or directory"),
        ("Selector s\n", {}, "c.conf:1: Selector: Domain, Selector and KeyFile go together"),
        ("Socket inet:1@::1\0\n", {}, "c.conf: not a text file"),
    ],
)  # fmt: skip
def test_bad_input_is_one_located_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], conf: str, extra: dict[str, str],
    problem: str,
) -> None:  # fmt: skip
    for name, text in extra.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "c.conf"
    path.write_text(conf.replace("@/", f"{tmp_path}/"))
    with pytest.raises(ConfigError) as raised:
        import_site(path, None, "mx.example.org")
    assert str(raised.value).replace(f"{tmp_path}/", "").startswith(problem)
    assert main(["config", "import", "--opendkim", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.replace(f"{tmp_path}/", "").startswith(f"mailauth: error: {problem}")


def test_the_command_writes_the_file_and_it_passes_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(tmp_path)
    out = site / "milter.toml"
    argv = ["config", "import", "--opendkim", str(site / "site-opendkim.conf"),
            "--opendmarc", str(site / "site-opendmarc.conf"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert (
        sum(line.startswith("mailauth config import: not carried over: ") for line in lines) == 25
    )
    assert lines[-1].startswith(f"mailauth config import: wrote {out} (25 notes, 0 warnings)")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert main(argv) == 2  # (not overwritten without --force)
    assert (
        capsys.readouterr().err == f"mailauth: error: {out}: exists; give --force to overwrite it\n"
    )
    assert main([*argv, "--force"]) == 0
    capsys.readouterr()
    listener = _syslog_here(out)
    zone_file = _zone_file(site)
    check = ["milter", "--config", str(out), "--dns-zone", str(zone_file), "--check-config"]
    assert main(check) == 0, capsys.readouterr().err
    assert "3 signing keys" in capsys.readouterr().out
    listener.close()
    assert main(["config", "import", "--opendmarc", str(site / "site-opendmarc.conf")]) == 0
    alone = tomllib.loads(capsys.readouterr().out)
    assert (alone["listen"], alone["mode"]) == ("inet:8893@127.0.0.1", "both")


def test_the_command_without_files_and_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "import"]) == 2
    assert capsys.readouterr().err == (
        "mailauth: error: config import: give --opendkim FILE, --opendmarc FILE or both\n"
    )
    assert main(["config"]) == 2
    assert (
        capsys.readouterr().err == "mailauth: error: say what to do: mailauth config import ...\n"
    )
    for argv in (["config", "--help"], ["config", "import", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        assert "mailauth config import --opendkim /etc/opendkim.conf" in capsys.readouterr().out


def _syslog_here(config: Path) -> socket.socket:
    """A syslog socket next to ``config`` for its ``[logging] syslog = true`` (this host
    may have no /dev/log): the caller closes it."""
    path = config.parent / "log.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    text = config.read_text().replace("syslog = true", f'syslog = true\nsyslog_socket = "{path}"')
    config.write_text(text)
    return listener


def _zone_file(site: Path, records: dict[str, str] = RECORDS) -> Path:
    path = site / "keys.zone"
    lines = ["$ORIGIN .", "$TTL 300"]
    for name, record in records.items():
        chunks = " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
        lines.append(f"{name}. IN TXT {chunks}")
    path.write_text("\n".join(lines) + "\n")
    return path


MESSAGE = (
    "From: {sender}\r\nTo: Bob <bob@example.org>\r\nSubject: imported\r\n"
    "Date: Sat, 05 Dec 2026 09:00:00 +0000\r\nMessage-ID: <{tag}@example.com>\r\n"
    "X-Mailer: mua 1.0\r\n\r\nSigned by the imported configuration.\r\n"
)


def _signed(where: Path | int, sender: str) -> bytes:
    """One message from a trusted client (InternalHosts) through a milter's socket (a unix
    socket's path, or a port on 127.0.0.1): the message with the fields the milter adds
    on top (inserted at the top or, as OpenDKIM may, added: DKIM does not mind where)."""
    raw = MESSAGE.format(sender=sender, tag=sender.partition("@")[0]).encode()
    headers, body = split_message(raw)

    async def send() -> list[tuple[bytes, bytes]]:
        if isinstance(where, Path):
            client = await MilterClient.connect_unix(str(where))
        else:
            client = await MilterClient.connect("127.0.0.1", where)
        await client.negotiate()
        try:
            return await _transaction(client, sender, headers, body)
        finally:
            await client.close()

    replies = asyncio.run(send())
    added = [name + b":" + value.replace(b"\n", b"\r\n") + b"\r\n"
             for command, data in replies if command == p.ADDHEADER
             for name, value in [data[:-1].split(b"\0")]]  # fmt: skip
    return b"".join(inserted_fields(replies)) + b"".join(added) + raw


async def _transaction(
    client: MilterClient, sender: str, headers: list[tuple[str, str]], body: bytes
) -> list[tuple[bytes, bytes]]:
    """An SMTP transaction as tests/milterclient.py's, except that a milter may accept
    the message before its end (OpenDKIM does with mail it has nothing to do for): then
    no replies to apply; and it may skip the rest of the body (SMFIR_SKIP)."""
    macros = b"j\0mx.example.org\0{daemon_name}\0smtpd\0"
    await client.send(p.MACRO, p.CONNECT + macros)
    steps = [
        (p.CONNECT, b"laptop.example.com\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.50\0"),
        (p.HELO, b"laptop.example.com\0"),
        (p.MAIL, f"<{sender}>\0".encode()),
        (p.RCPT, b"<bob@example.org>\0"),
        (p.DATA, b""),
        *((p.HEADER, f"{name}\0{value}\0".encode()) for name, value in headers),
        (p.EOH, b""),
        (p.BODY, body),
    ]
    for command, data in steps:
        reply = await client.step(command, data)
        if reply == p.ACCEPT:
            return []
        # (SKIP: the milter wants no more of the body, which is one chunk here)
        assert reply == p.CONTINUE or (command, reply) == (p.BODY, b"s"), (command, reply)
    await client.send(p.MACRO, p.EOM + b"i\0" + b"4QTEST\0")
    await client.send(p.EOM)
    replies = []
    while True:
        command, data = await client.read()
        replies.append((command, data))
        if command in (p.CONTINUE, p.ACCEPT, p.REJECT, p.TEMPFAIL, p.REPLYCODE):
            return replies


@contextlib.contextmanager
def _imported_milter(
    site: Path, records: dict[str, str] = RECORDS, conf: str = "site-opendkim.conf"
) -> Iterator[Path]:
    """``mailauth milter`` started with the configuration imported from the site's
    opendkim.conf (DNS from a zone file, syslog to a socket here, an inet socket moved to
    the unix one: the tests share the host): its unix socket."""
    out = site / "milter.toml"
    assert main(["config", "import", "--opendkim", str(site / conf), "--out", str(out)]) == 0
    text = out.read_text()
    listen = next(line for line in text.splitlines() if line.startswith("listen = "))
    out.write_text(text.replace(listen, f'listen = "unix:{site}/run/opendkim.sock"'))
    listener = _syslog_here(out)
    command = [sys.executable, "-m", "mailauth", "milter", "--config", str(out),
               "--dns-zone", str(_zone_file(site, records))]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        socket_path = site / "run" / "opendkim.sock"
        deadline = time.monotonic() + 30
        while not socket_path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket_path.exists(), process.stderr.read() if process.stderr else ""
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=30)
        listener.close()


def _signatures(raw: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature field, white space removed."""
    found = []
    for value in email.message_from_bytes(raw).get_all("DKIM-Signature") or []:
        text = "".join(str(value).split())
        found.append(dict(part.split("=", 1) for part in text.split(";") if part))
    return found


def test_the_imported_milter_signs_wildcard_matches_with_the_right_keys(tmp_path: Path) -> None:
    """``mailauth milter --config IMPORTED`` over its unix socket: alice@example.com
    (``*@example.com``, two keys) gets an RSA and an Ed25519 signature, bob@sales.example.com
    (``*@*.example.com``) the Ed25519 one, with the imported settings (c=, x=, h=); each
    verifies with mailauth and with dkimpy."""
    site = _site(tmp_path)
    with _imported_milter(site) as socket_path:
        alice = _signed(socket_path, "alice@example.com")
        bob = _signed(socket_path, "bob@sales.example.com")
    resolver = zone(RECORDS)
    for raw, selectors in ((alice, ["rsa2026", "ed2026"]), (bob, ["ed2026"])):
        signatures = _signatures(raw)
        assert [(t["d"], t["s"]) for t in signatures] == [("example.com", s) for s in selectors]
        outcomes = verify(raw, resolver, now=time.time())
        assert [(str(o.result), o.selector) for o in outcomes] == [("pass", s) for s in selectors]
        for index in range(len(selectors)):
            assert dkimpy.DKIM(raw).verify(idx=index, dnsfunc=dkimpy_dns(RECORDS))
        for tags in signatures:  # the imported signature settings
            assert tags["c"] == "relaxed/simple"
            assert int(tags["x"]) - int(tags["t"]) == 604800
            signed = sorted(tags["h"].lower().split(":"))  # (From once more: oversigned)
            assert signed == ["date", "from", "from", "message-id", "subject", "to"]


def test_hostile_values_stay_values_in_the_toml(tmp_path: Path) -> None:
    """Quotes, backslashes, control characters and '#' from the input files are escaped
    in the TOML: each value reads back as written, none adds a key or a line."""
    conf = tmp_path / "c.conf"
    conf.write_text(
        'AuthservID mx"\\.example.org\x0b\nMTA csl:a"b],c\\d\x01\nSignHeaders From,X-"A"\n'
        "Socket inet:8891@127.0.0.1\n"
    )
    imported = import_site(conf, None, "mx.example.org")
    data = tomllib.loads(imported.toml)
    assert data["daemon_modes"] == {'a"b]': "sign", "c\\d\x01": "sign"}
    assert data["signing"]["headers"] == ["From", 'X-"A"']
    assert data["authserv_id"] == 'mx"\\.example.org'
    assert set(data) == {"listen", "mode", "authserv_id", "daemon_modes", "signing"}


def test_a_large_table_with_multiple_signatures_is_read_in_linear_time(tmp_path: Path) -> None:
    """9,000 refile lines (3,000 hosted domains and their subdomains, two keys each) import
    in about a second (each entry's wider entries are looked up, not searched for: a scan
    would make 36 million comparisons here)."""
    (tmp_path / "kt").write_text(
        f"k1 example.com:s1:{tmp_path}/k\nk2 example.com:s2:{tmp_path}/k\n"
    )
    (tmp_path / "st").write_text(
        "".join(f"*@d{n}.example k1\n*.d{n}.example k1\n*@d{n}.example k2\n" for n in range(3_000))
    )
    conf = tmp_path / "c.conf"
    conf.write_text(f"KeyTable {tmp_path}/kt\nSigningTable refile:{tmp_path}/st\n"
                    "MultipleSignatures yes\nCanonicalization relaxed\n")  # fmt: skip
    started = time.perf_counter()
    imported = import_site(conf, None, "mx.example.org")
    elapsed = time.perf_counter() - started
    data = tomllib.loads(imported.toml)
    assert len(data["signing"]["table"]) == 6_000
    assert data["signing"]["table"][0] == {"from": "d0.example", "keys": ["k1", "k2"]}
    assert data["signing"]["canonicalization"] == "relaxed/simple"
    assert elapsed < 10, elapsed


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    conf=st.text(st.sampled_from("KeyTableSigningMode sv:/@*.,#\n\t!x1"), max_size=200),
    table=st.text(st.sampled_from("k *@.exampl:/,#\n\t%!1"), max_size=200),
)
def test_any_input_is_a_configuration_or_one_error_line(
    tmp_path: Path, conf: str, table: str
) -> None:
    (tmp_path / "t").write_text(table)
    path = tmp_path / "c.conf"
    path.write_text(conf.replace(":/", f":{tmp_path}/t ").replace("@/", f"{tmp_path}/t"))
    try:
        imported = import_site(path, path, "mx.example.org")
    except ConfigError as exc:
        problem = str(exc)
    else:
        tomllib.loads(imported.toml)
        return
    assert "\n" not in problem and problem.startswith(str(tmp_path))


# --- against Debian's packages (.ci/run installs opendkim and opendmarc) ----------------------

OPENDKIM = Path("/usr/sbin/opendkim")
SHIPPED = {"opendkim": Path("/etc/opendkim.conf"), "opendmarc": Path("/etc/opendmarc.conf")}


def _shipped(package: str) -> Path | None:
    """The package's configuration file when it is as Debian ships it (dpkg's checksum)."""
    path = SHIPPED[package]
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Conffiles}", package], capture_output=True, text=True
    )
    sums = dict(line.split()[:2] for line in listed.stdout.splitlines() if line.strip())
    if not path.exists() or str(path) not in sums:
        return None
    return path if hashlib.md5(path.read_bytes()).hexdigest() == sums[str(path)] else None


@pytest.mark.skipif(
    os.environ.get("CI") != "true"  # (under CI a missing package fails the test)
    and not (_shipped("opendkim") and _shipped("opendmarc")),
    reason="Debian's opendkim and opendmarc packages are not installed (or their "
    "configuration files were changed): .ci/run installs them",
)
def test_debians_shipped_files_import_and_pass_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real /etc/opendkim.conf and /etc/opendmarc.conf of Debian's packages: the same
    mapping as the synthetic copies in fixtures/migrate, and --check-config passes once the
    socket's directory exists (here in tmp_path)."""
    dkim, dmarc = _shipped("opendkim"), _shipped("opendmarc")
    imported = import_site(dkim, dmarc, "mx.example.org")
    copies = import_site(
        FIXTURES / "debian-opendkim.conf", FIXTURES / "debian-opendmarc.conf", "mx.example.org"
    )
    assert tomllib.loads(imported.toml) == tomllib.loads(copies.toml)
    assert [n.split(": ", 2)[1] for n in imported.notes] == [
        n.split(": ", 2)[1] for n in copies.notes
    ]
    out = tmp_path / "milter.toml"
    out.write_text(imported.toml.replace("/run/opendkim/", f"{tmp_path}/"))
    listener = _syslog_here(out)
    try:
        assert main(["milter", "--config", str(out), "--dns-zone", str(_zone_file(tmp_path)),
                     "--check-config"]) == 0, capsys.readouterr().err  # fmt: skip
    finally:
        listener.close()


@contextlib.contextmanager
def _opendkim(site: Path, conf_name: str = "site-opendkim.conf") -> Iterator[int]:
    """Debian's OpenDKIM with the site's own opendkim.conf, on a loopback port, in the
    foreground as this user (UserID and PidFile left out: the test runs as root and the
    keys are its own, mode 600; no syslog): the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = site / "opendkim-run.conf"
    keep = [line for line in (site / conf_name).read_text().splitlines()
            if not line.startswith(("Socket", "UserID", "PidFile", "Syslog"))]  # fmt: skip
    # (RequireSafeKeys no: OpenDKIM also refuses a key under a world-writable directory,
    # and the test's directory is under /tmp)
    run = [f"Socket inet:{port}@127.0.0.1", "Syslog no", "RequireSafeKeys no", ""]
    conf.write_text("\n".join([*keep, *run]))
    process = subprocess.Popen([str(OPENDKIM), "-f", "-x", str(conf)], stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.skipif(
    os.environ.get("CI") != "true"  # (under CI a missing package fails the test)
    and not OPENDKIM.exists(),
    reason="Debian's opendkim package is not installed (.ci/run installs it): OpenDKIM "
    "itself not compared",
)
def test_opendkim_and_the_imported_milter_sign_the_same_mail_with_the_same_keys(
    tmp_path: Path,
) -> None:
    """The site's files run by OpenDKIM, and the configuration imported from them run by
    mailauth: each message gets signatures with the same d=, s=, c= and signed fields from
    both (the refile's wildcards, two keys for example.com by MultipleSignatures, the
    subdomain pattern, example.net's key, mail no line matches left unsigned), and
    OpenDKIM's signatures verify with mailauth. The one difference is the line the
    importer reported: a*@example.org (a * inside a word) signs amy@example.org in
    OpenDKIM only. (All three keys are RSA here: Debian's OpenDKIM 2.11 signs every key
    with its one SignatureAlgorithm, and fails on an Ed25519 key with rsa-sha256.)"""
    keys = {name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for name in KEYS}  # fmt: skip
    records = _records(keys)
    site = _site(tmp_path, keys)
    senders = ["alice@example.com", "ceo@example.com", "bob@sales.example.com",
               "carol@example.net", "dave@example.org", "amy@example.org"]  # fmt: skip
    with _opendkim(site) as port:
        theirs = {sender: _signed(port, sender) for sender in senders}
    with _imported_milter(site, records) as socket_path:
        ours = {sender: _signed(socket_path, sender) for sender in senders}
    resolver = zone(records)

    def made(raw: bytes) -> list[tuple[str, str, str, list[str]]]:
        return sorted(
            (t["d"], t["s"], t["c"], sorted(t["h"].lower().split(":"))) for t in _signatures(raw)
        )

    for sender in senders[:-1]:
        assert made(ours[sender]) == made(theirs[sender]), sender
        outcomes = verify(theirs[sender], resolver, now=time.time())
        assert {str(o.result) for o in outcomes} <= {"pass"}, sender
    assert [(d, s) for d, s, _, _ in made(theirs["ceo@example.com"])] == [
        ("example.com", "ed2026"), ("example.com", "rsa2026")
    ]  # fmt: skip
    assert made(theirs["dave@example.org"]) == []
    assert [(d, s) for d, s, _, _ in made(theirs["amy@example.org"])] == [("example.net", "s1")]
    assert made(ours["amy@example.org"]) == []


@pytest.mark.skipif(
    os.environ.get("CI") != "true"  # (under CI a missing package fails the test)
    and not OPENDKIM.exists(),
    reason="Debian's opendkim package is not installed (.ci/run installs it): OpenDKIM "
    "itself not compared",
)
@pytest.mark.parametrize(("multiple", "subdomains"), [(False, True), (True, True), (False, False)])
def test_opendkim_and_the_imported_milter_agree_on_a_flat_signing_table(
    tmp_path: Path, multiple: bool, subdomains: bool
) -> None:
    """The flat SigningTable (exact keys, .domain, a key twice), with and without
    MultipleSignatures and SubDomains: the same keys (d=, s=) for each message from
    OpenDKIM and from the imported configuration (.parent keys are looked up with or
    without SubDomains). Two differences, both reported by the importer: c= (no
    Canonicalization: OpenDKIM's simple/simple, mailauth's relaxed/relaxed), and
    user@x.example.org, which OpenDKIM's user@.example.org line signs and mailauth cannot
    express."""
    keys = {name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for name in KEYS}  # fmt: skip
    records = _records(keys)
    site = _site(tmp_path, keys)
    conf = site / "site-plain-opendkim.conf"
    text = conf.read_text() + ("MultipleSignatures yes\n" if multiple else "")
    conf.write_text(text if subdomains else text.replace("SubDomains      yes\n", ""))
    senders = ["ceo@example.com", "alice@example.com", "x@sub.example.com",
               "y@example.net", "z@mail.example.net", "user@x.example.org"]  # fmt: skip
    with _opendkim(site, "site-plain-opendkim.conf") as port:
        theirs = {sender: _signatures(_signed(port, sender)) for sender in senders}
    with _imported_milter(site, records, "site-plain-opendkim.conf") as socket_path:
        ours = {sender: _signatures(_signed(socket_path, sender)) for sender in senders}
    for sender in senders[:-1]:
        assert sorted((t["d"], t["s"]) for t in ours[sender]) == sorted(
            (t["d"], t["s"]) for t in theirs[sender]
        ), sender
        assert {t["c"] for t in theirs[sender]} <= {"simple/simple"}
        assert {t["c"] for t in ours[sender]} <= {"relaxed/relaxed"}
    expected_ceo = [("example.com", "ed2026"), ("example.com", "rsa2026")] if multiple else [
        ("example.com", "rsa2026")
    ]  # fmt: skip
    assert sorted((t["d"], t["s"]) for t in theirs["ceo@example.com"]) == expected_ceo
    # the line the importer reported (user@.example.org: an address at any subdomain)
    assert [(t["d"], t["s"]) for t in theirs["user@x.example.org"]] == [("example.net", "s1")]
    assert ours["user@x.example.org"] == []


@pytest.mark.parametrize(
    ("daemon", "line", "values", "note"),
    [
        ("dkim", "Socket /run/opendkim/s.sock", {"listen": "unix:/run/opendkim/s.sock"}, None),
        ("dkim", "Socket inet6:8891@[::1]", {"listen": "inet6:8891@::1"}, None),
        ("dkim", "Socket inet:8891@mx.example.org", {"listen": "inet:8891@mx.example.org"},
         "a host name (mx.example.org) is not resolved"),
        ("dkim", "Mode v", {"mode": "verify"}, None),
        ("dkim", "AuthservID HOSTNAME", {"authserv_id": "mx.example.org"}, None),
        ("dkim", "On-Default accept", {"on_error": "accept"}, "only the error action"),
        ("dkim", "On-InternalError r", {}, "reject: on_error is accept or tempfail"),
        ("dkim", "On-NoSignature quarantine", {}, "no action on a DKIM result alone"),
        ("dkim", "MaximumHeaders 65536", {"max_header_size": 65536}, None),
        ("dkim", "SignatureTTL 0", {}, None),
        ("dkim", "SyslogFacility LOG_MAIL", {"logging": {"syslog_facility": "mail"}}, None),
        ("dkim", "SyslogFacility kern", {}, "facility 'kern' is not one mailauth names"),
        ("dkim", "SignHeaders To,Subject", {"signing": {"headers": ["From", "To", "Subject"]}},
         None),
        ("dkim", "SignHeaders *,+X-Custom", {}, "a wildcard or +/- list has no equivalent"),
        ("dkim", "OmitHeaders From,Received", {"signing": {"skip_headers": ["Received"]}}, None),
        ("dkim", "Canonicalization simple", {"signing": {"canonicalization": "simple/simple"}},
         None),
        ("dkim", "AuthservIDWithJobID yes", {"inbound": {"authserv_id_with_queue_id": True}},
         None),
        ("dkim", "AutoRestart yes", {}, "systemd restarts the milter"),
        ("dmarc", "Socket local:/run/opendmarc/s.sock",
         {"listen": "unix:/run/opendmarc/s.sock", "mode": "both"}, None),
        ("dmarc", "IgnoreAuthenticatedClients false", {}, "false has no equivalent"),
        ("dmarc", "SPFIgnoreResults false", {}, 'relay.spf = "upstream"'),
        ("dmarc", "SPFSelfValidate false", {}, "mailauth always checks SPF itself"),
        ("dmarc", "RejectMultiValueFrom false", {"inbound": {"multiple_authors": "evaluate"}},
         None),
        ("dmarc", "IgnoreDomains example.com, -bad-", {"inbound": {
            "ignore_author_domains": ["example.com"]}}, "'-bad-' is not a domain name"),
        ("dmarc", "HistoryFile /var/run/opendmarc/opendmarc.dat", {}, "[reports] store"),
        ("dmarc", "Frobnicate yes", {}, "not an OpenDMARC setting this importer knows"),
    ],
)  # fmt: skip
def test_each_setting_alone(
    tmp_path: Path, daemon: str, line: str, values: dict[str, Any], note: str | None
) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(line + "\n")
    imported = import_site(conf if daemon == "dkim" else None,
                           conf if daemon == "dmarc" else None, "mx.example.org")  # fmt: skip
    data = tomllib.loads(imported.toml)
    for key, value in values.items():
        assert data[key] == value
    notes = [n for n in imported.notes if not n.startswith(f"{conf}: no Socket")]
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith(f"{conf}:1: ") and note in notes[0]
