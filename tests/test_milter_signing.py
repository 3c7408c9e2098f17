"""The milter's modes (per listening socket, per {daemon_name}) and its signing table with
SMTP-AUTH bindings, over its socket as an MTA drives it (tests/milterclient.py)."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from mailauth.dkim import Signer, public_key_record
from mailauth.milter import Milter, MilterSettings
from mailauth.milter import protocol as p
from mailauth.milter.modes import Route, mode_of, route
from mailauth.milter.signing_table import SigningPolicy, SigningRule
from mailauth.pipeline import Authenticator
from tests.dkim_helpers import ED_KEY, RSA_KEY, dkimpy_verify, verify, zone
from tests.milterclient import MilterClient, split_message
from tests.test_milter import DEMO, RESOLVER, SENDER, inserted_fields

TRUSTED = (ipaddress.ip_network("192.0.2.0/24"),)
LAPTOP: dict[str, Any] = {
    "ip": "192.0.2.50", "helo": "laptop.example.com", "mail_from": "alice@example.com",
}  # fmt: skip
OUTSIDER: dict[str, Any] = {
    "ip": "198.51.100.7", "helo": "client.example", "mail_from": "alice@example.com",
}  # fmt: skip
RSA_SIGNER = Signer("example.com", "rsa1", RSA_KEY)
ED_SIGNER = Signer("example.com", "ed1", ED_KEY)
RECORDS = {
    "rsa1._domainkey.example.com": public_key_record(RSA_KEY),
    "ed1._domainkey.example.com": public_key_record(ED_KEY),
}
RAW = (DEMO / "message.eml").read_bytes()
UNSIGNED = RAW[RAW.index(b"From: ") :]  # (the demo without its own signature)


def _message(raw: bytes = UNSIGNED) -> dict[str, Any]:
    headers, body = split_message(raw)
    return {"headers": headers, "body": body}


def _names(replies: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [f.split(b":", 1)[0] for f in inserted_fields(replies)]


def _serve_two(
    settings: MilterSettings, *sessions: tuple[str, dict[str, Any]]
) -> list[list[tuple[bytes, bytes]]]:
    """One milter on two sockets, as `mailauth milter` serves ``listen`` and a further
    ``[[listeners]]`` entry; each session (socket "main" or "second", message) on its own
    connection."""

    async def go() -> list[list[tuple[bytes, bytes]]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
        main = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        handle = functools.partial(milter.handle, listener="inet:2@127.0.0.1")
        second = await asyncio.start_server(handle, "127.0.0.1", 0)
        ports = {s: x.sockets[0].getsockname()[1] for s, x in (("main", main), ("second", second))}
        replies = []
        for socket_name, message in sessions:
            client = await MilterClient.connect("127.0.0.1", ports[socket_name])
            await client.negotiate()
            replies.append(await client.message(**message))
            await client.close()
        main.close()
        second.close()
        return replies

    return asyncio.run(go())


def test_mode_and_route_tables() -> None:
    listeners, daemons = {"inet:2@127.0.0.1": "sign"}, {"submission": "sign", "smtpd": "verify"}
    assert mode_of("", {}, "both", listeners, daemons) == "both"
    assert mode_of("inet:2@127.0.0.1", {}, "verify", listeners, daemons) == "sign"
    assert mode_of("", {"daemon_name": "submission"}, "verify", listeners, daemons) == "sign"
    # The daemon's mode wins over the socket's; an unknown daemon name leaves the socket's.
    assert mode_of("inet:2@127.0.0.1", {"daemon_name": "smtpd"}, "both", listeners, daemons) == (
        "verify"
    )
    assert mode_of("inet:2@127.0.0.1", {"daemon_name": "x"}, "both", listeners, daemons) == "sign"
    assert [route(m, o) for m in ("verify", "sign", "both") for o in (True, False)] == [
        Route.VERIFY, Route.VERIFY, Route.SIGN, Route.PASS, Route.SIGN, Route.VERIFY,
    ]  # fmt: skip


def test_a_verifying_and_a_signing_socket_in_one_milter() -> None:
    """Port 25 verifies, port 587 signs: the same trusted client is verified on the one and
    signed on the other; a client neither trusted nor authenticated on the signing socket
    passes untouched (OpenDKIM's Mode s)."""
    settings = MilterSettings(
        trusted_networks=TRUSTED,
        signers={"example.com": (ED_SIGNER,)},
        mode="verify",
        listener_modes={"inet:2@127.0.0.1": "sign"},
    )
    verified, signed, untouched, inbound = _serve_two(
        settings,
        ("main", {**LAPTOP, **_message()}),
        ("second", {**LAPTOP, **_message()}),
        ("second", {**OUTSIDER, **_message()}),
        ("main", {**SENDER, **_message(RAW)}),
    )
    assert _names(verified) == [b"Authentication-Results"]
    assert _names(signed) == [b"DKIM-Signature"]
    assert _names(untouched) == [] and untouched[-1][0] == p.CONTINUE
    (header,) = inserted_fields(inbound)
    assert b"dkim=pass" in header and b"dmarc=pass" in header


def test_modes_by_daemon_name_and_the_macro_is_asked_for() -> None:
    settings = MilterSettings(
        trusted_networks=TRUSTED,
        signers={"example.com": (ED_SIGNER,)},
        daemon_modes={"submission": "sign", "smtpd": "verify"},
    )

    async def go() -> tuple[bytes, list[list[tuple[bytes, bytes]]]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.send(p.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        _, negotiated = await client.read()
        client.protocol = struct.unpack(">III", negotiated[:12])[2]
        replies = [
            await client.message(**LAPTOP, **_message(), daemon_name=name)
            for name in ("submission", "smtpd", "other")
        ]
        await client.close()
        server.close()
        return negotiated, replies

    negotiated, (submission, smtpd, other) = asyncio.run(go())
    assert b"\0\0\0\0{daemon_name}\0" in negotiated  # SMFIM_CONNECT (0): {daemon_name}
    assert _names(submission) == [b"DKIM-Signature"]
    assert _names(smtpd) == [b"Authentication-Results"]
    assert _names(other) == [b"DKIM-Signature"]  # not listed: the socket's mode (both)


def test_without_daemon_modes_the_connect_macros_stay_as_they_were() -> None:
    async def go() -> bytes:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), MilterSettings())
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.send(p.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        _, negotiated = await client.read()
        await client.close()
        server.close()
        return negotiated

    negotiated = asyncio.run(go())
    assert b"{daemon_name}" not in negotiated and b"{mailauth_nothing}" in negotiated


def _policy(unauthorized: str) -> SigningPolicy:
    return SigningPolicy(
        rules=(
            SigningRule("example.com", (RSA_SIGNER, ED_SIGNER)),
            SigningRule("example.org", (Signer("example.org", "org1", ED_KEY),)),
        ),
        users={"alice": ("example.com",)},
        unauthorized=unauthorized,
    )


def _authenticated(settings: MilterSettings, raw: bytes, user: str) -> list[tuple[bytes, bytes]]:
    async def go() -> list[tuple[bytes, bytes]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = await client.message(**OUTSIDER, **_message(raw), auth=user)
        await client.close()
        server.close()
        return replies

    return asyncio.run(go())


AS_ORG = UNSIGNED.replace(b"alice@example.com", b"ceo@example.org")


def test_an_authenticated_user_gets_its_own_domain_dual_signed() -> None:
    replies = _authenticated(MilterSettings(signing=_policy("refuse")), UNSIGNED, "alice")
    fields = inserted_fields(replies)
    assert _names(replies) == [b"DKIM-Signature", b"DKIM-Signature"]
    delivered = b"".join(fields) + UNSIGNED
    outcomes = verify(delivered, zone(RECORDS), now=time.time())
    assert [(o.result, o.selector) for o in outcomes] == [("pass", "rsa1"), ("pass", "ed1")]
    assert dkimpy_verify(delivered, RECORDS)


def test_a_user_is_refused_for_a_domain_it_may_not_sign(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mailauth.milter")
    replies = _authenticated(MilterSettings(signing=_policy("refuse")), AS_ORG, "alice")
    assert replies[-1][0] == p.REPLYCODE
    assert (
        replies[-1][1] == b"550 5.7.1 Not authorized to send mail from example.org as this user\0"
    )
    assert not _names(replies)
    (line,) = [
        json.loads(r.getMessage()) for r in caplog.records if "not_authorized" in r.getMessage()
    ]
    assert line == {
        "queue_id": "4QTEST",
        "client": "198.51.100.7",
        "user": "alice",
        "mail_from": "<alice@example.com>",
        "not_authorized_for": "example.org",
        "action": "reject",
    }


def test_or_sent_unsigned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mailauth.milter")
    replies = _authenticated(MilterSettings(signing=_policy("unsigned")), AS_ORG, "alice")
    assert replies[-1][0] == p.CONTINUE and not _names(replies)
    assert any('"action":"unsigned"' in r.getMessage() for r in caplog.records)
    # A user with no binding at all signs for nothing.
    replies = _authenticated(MilterSettings(signing=_policy("refuse")), UNSIGNED, "mallory")
    assert replies[-1][0] == p.REPLYCODE and b"example.com" in replies[-1][1]


def test_a_trusted_network_without_authentication_is_not_bound() -> None:
    async def go() -> list[tuple[bytes, bytes]]:
        settings = MilterSettings(trusted_networks=TRUSTED, signing=_policy("refuse"))
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = await client.message(**LAPTOP, **_message(AS_ORG))
        await client.close()
        server.close()
        return replies

    assert _names(asyncio.run(go())) == [b"DKIM-Signature"]


def test_the_command_line_and_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--mode sets the --listen socket's mode over the file's; --check-config counts the
    table's keys and checks the directory of each [[listeners]] unix socket; the settings
    the milter is built with carry the modes and the table."""
    from mailauth.cli import _build_parser, main
    from mailauth.cli.serve import build_milter_parts, effective_config
    from mailauth.dkim.keys import private_key_pem

    key = tmp_path / "ed.pem"
    key.write_bytes(private_key_pem(ED_KEY))
    key.chmod(0o600)
    path = tmp_path / "milter.toml"
    path.write_text(
        'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\nmode = "verify"\n'
        '[dns]\nzone_files = ["' + str(DEMO / "example.com.zone") + '"]\n'
        '[[listeners]]\nlisten = "unix:' + str(tmp_path) + '/m.sock"\nmode = "sign"\n'
        '[daemon_modes]\nORIGINATING = "sign"\n'
        '[signing.keys.ed]\ndomain = "example.com"\nselector = "ed1"\nkey = "' + str(key) + '"\n'
        '[[signing.table]]\nfrom = "*@example.com"\nkeys = ["ed"]\n'
    )
    assert main(["milter", "--config", str(path), "--check-config"]) == 0
    assert "1 signing keys" in capsys.readouterr().out
    args = _build_parser().parse_args(["milter", "--config", str(path), "--mode", "both"])
    config = effective_config(args)
    _, settings = build_milter_parts(config, args)
    assert (settings.mode, dict(settings.daemon_modes)) == ("both", {"ORIGINATING": "sign"})
    assert dict(settings.listener_modes) == {f"unix:{tmp_path}/m.sock": "sign"}
    assert settings.signing is not None
    assert [(r.pattern, [s.selector for s in r.signers]) for r in settings.signing.rules] == [
        ("example.com", ["ed1"])
    ]
    path.write_text(path.read_text().replace(f"{tmp_path}/m.sock", f"{tmp_path}/no/m.sock"))
    assert main(["milter", "--config", str(path), "--check-config"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"{path}:7: listeners[0].listen: unix:{tmp_path}/no/m.sock: missing directory "
            f"{tmp_path}/no"
        )
    )
