"""The milter over its socket: negotiation, a verified message, forged-header removal,
policy, and hostile MTA input (malformed packets, oversize, a dropped connection, abort)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailauth.dns import DnsStatus, Lookup, RRType, ZoneResolver
from mailauth.milter import Milter, MilterSettings, parse_listen, start_server
from mailauth.milter import protocol as p
from mailauth.pipeline import Authenticator
from tests.milterclient import ALL_PROTOCOL, MilterClient, split_message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DEMO = FIXTURES / "demo"
DMARC = FIXTURES / "dmarc"
RESOLVER = ZoneResolver.from_files([DEMO / "example.com.zone", DMARC / "dmarc.zone"])
NOW_DMARC = 1795000100


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def serve(settings: MilterSettings | None = None) -> tuple[asyncio.Server, int, Milter]:
    milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
    server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, milter


# The demo message's client: SPF, DKIM and DMARC pass for it.
SENDER: dict[str, Any] = {
    "ip": "192.0.2.10", "helo": "mail.example.com", "mail_from": "alice@example.com",
}  # fmt: skip


def exchange(
    settings: MilterSettings | None,
    *messages: dict[str, Any],
    authenticator: Authenticator | None = None,
) -> list[list[tuple[bytes, bytes]]]:
    """One MTA connection carrying ``messages`` (keyword arguments of MilterClient.message),
    one after the other: the end-of-message replies of each."""

    async def go() -> list[list[tuple[bytes, bytes]]]:
        milter = Milter(authenticator or Authenticator("mx.example.org", RESOLVER), settings)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = [await client.message(**message) for message in messages]
        await client.close()
        server.close()
        return replies

    return asyncio.run(go())


def inserted_fields(replies: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The fields the replies insert, placed as the MTA places them (each at its index, in
    order), with CRLF line ends: what goes on top of the message."""
    fields: list[bytes] = []
    for command, data in replies:
        if command == p.INSHEADER:
            (index,) = struct.unpack(">I", data[:4])
            name, value = data[4:-1].split(b"\0")
            fields.insert(index, name + b":" + value.replace(b"\n", b"\r\n") + b"\r\n")
    return fields


def test_negotiation_asks_for_leading_space_and_skips_rcpt() -> None:
    async def go() -> None:
        server, port, _ = await serve()
        client = await MilterClient.connect("127.0.0.1", port)
        actions, protocol = await client.negotiate()
        assert actions == p.ACT_ADDHDRS | p.ACT_CHGHDRS | p.ACT_QUARANTINE | p.ACT_SETSYMLIST
        assert protocol & p.P_HDR_LEADSPC and protocol & p.P_NORCPT
        # Steps not needed are skipped, and none but the end of message is answered.
        assert protocol & (p.P_NOUNKNOWN | p.P_NODATA | p.P_NOEOH) == (
            p.P_NOUNKNOWN | p.P_NODATA | p.P_NOEOH
        )
        assert all(protocol & bit for bit in p.NO_REPLY.values())
        await client.close()
        server.close()

    run(go())


async def _optneg(version: int, actions: int, protocol: int) -> bytes:
    """The milter's whole reply to an MTA's offer."""
    server, port, _ = await serve()
    client = await MilterClient.connect("127.0.0.1", port)
    await client.send(p.OPTNEG, struct.pack(">III", version, actions, protocol))
    command, data = await client.read()
    assert command == p.OPTNEG
    await client.close()
    server.close()
    return data


def _macro_lists(data: bytes) -> dict[int, str]:
    lists, offset = {}, 12
    while offset < len(data):
        (stage,) = struct.unpack_from(">I", data, offset)
        end = data.index(b"\0", offset + 4)
        lists[stage] = data[offset + 4 : end].decode()
        offset = end + 1
    return lists


def test_the_negotiation_reply_asks_for_the_macros_the_milter_reads() -> None:
    """Protocol 6 symbol lists: {auth_authen} at MAIL FROM, the queue id at end of message,
    and for every other stage a name no MTA defines (Postfix reads an empty list as its
    main.cf defaults, and sends macros with every header field)."""
    data = asyncio.run(_optneg(6, 0x1FF, 0x1FFFFF))
    nothing = "{mailauth_nothing}"
    assert _macro_lists(data) == {
        p.M_CONNECT: nothing, p.M_HELO: nothing, p.M_ENVFROM: "{auth_authen}",
        p.M_ENVRCPT: nothing, p.M_DATA: nothing, p.M_EOH: nothing, p.M_EOM: "i",
    }  # fmt: skip
    assert struct.unpack(">III", data[:12])[:2] == (6, 0x31 | p.ACT_SETSYMLIST)


@pytest.mark.parametrize(
    ("version", "actions"),
    [(6, 0xFF), (4, 0x1FF), (2, 0x3F)],  # no SMFIF_SETSYMLIST offered; older protocols
)
def test_no_macro_lists_for_an_mta_that_does_not_offer_them(version: int, actions: int) -> None:
    data = asyncio.run(_optneg(version, actions, 0x3FF))
    assert len(data) == 12  # the three numbers, nothing after
    got_version, got_actions, got_protocol = struct.unpack(">III", data)
    assert got_version == version  # never a version above the MTA's
    assert got_actions & ~actions == 0 and not got_actions & p.ACT_SETSYMLIST
    assert got_protocol & ~0x3FF == 0  # only steps offered


@pytest.mark.parametrize("offered", [ALL_PROTOCOL, ALL_PROTOCOL & ~p.P_NR_CONN])
def test_connect_is_answered_only_when_the_mta_waits_for_it(offered: int) -> None:
    async def go() -> bytes | None:
        server, port, _ = await serve()
        client = await MilterClient.connect("127.0.0.1", port)
        _, chosen = await client.negotiate(protocol=offered)
        assert bool(chosen & p.P_NR_CONN) == bool(offered & p.P_NR_CONN)
        await client.send(p.CONNECT, b"mx\x004\0\x19192.0.2.10\0")
        try:
            command, _ = await asyncio.wait_for(client.read(), 0.5)
        except TimeoutError:
            command = None
        await client.close()
        server.close()
        return command

    assert asyncio.run(go()) == (None if offered & p.P_NR_CONN else p.CONTINUE)


def _inserted_header(replies: list[tuple[bytes, bytes]]) -> str:
    for command, data in replies:
        if command == p.INSHEADER:
            (index,) = struct.unpack(">I", data[:4])
            name, value = data[4:-1].split(b"\0")
            assert (index, name) == (0, b"Authentication-Results")
            return value.decode()
    raise AssertionError(f"no header inserted: {replies}")


def test_a_signed_message_gets_one_authentication_results_with_passes() -> None:
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    changed = body.replace(b"Hello Bob", b"Hello Eve")
    # two messages on the same connection
    replies, again = exchange(
        None,
        {**SENDER, "headers": headers, "body": body},
        {**SENDER, "headers": headers, "body": changed},
    )
    value = _inserted_header(replies)
    assert value.startswith(" mx.example.org;")
    for clause in ("spf=pass", "dkim=pass", "dmarc=pass", "arc=none"):
        assert clause in value, value
    assert replies[-1][0] == p.CONTINUE
    assert "dkim=fail" in _inserted_header(again)


def test_forged_authentication_results_with_our_id_are_deleted() -> None:
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    forged = [
        ("Authentication-Results", " mx.example.org; dmarc=pass header.from=example.com"),
        ("Authentication-Results", " other.example; spf=pass"),
        ("Authentication-Results", " (comment) MX.Example.ORG ; dkim=pass"),
    ]
    (replies,) = exchange(None, {**SENDER, "headers": forged + headers, "body": body})
    changes = [struct.unpack(">I", d[:4])[0] for c, d in replies if c == p.CHGHEADER]
    assert changes == [3, 1]  # highest first; the other.example field stays
    assert replies.index(next(r for r in replies if r[0] == p.INSHEADER)) > 1


def test_dmarc_reject_is_refused_with_550_when_asked() -> None:
    headers, body = split_message((DMARC / "unauthenticated.eml").read_bytes())
    spoofer = {"ip": "198.51.100.7", "helo": "x.example", "mail_from": "alice@example.net"}
    (replies,) = exchange(
        MilterSettings(reject_dmarc=True), {**spoofer, "headers": headers, "body": body}
    )
    assert replies[-1][0] == p.REPLYCODE
    assert replies[-1][1].startswith(b"550 5.7.1 DMARC policy of example.net")


@pytest.mark.parametrize(
    "disguise",
    [
        [("From", " Alice <alice@example.net>, Someone <someone@example.org>")],
        [("From", " Alice <alice@example.net>"), ("From", " someone@example.org")],
        [("From", " alice@example.net <alice@example.net>")],  # does not parse
    ],
)
def test_a_disguised_from_does_not_escape_reject(disguise: list[tuple[str, str]]) -> None:
    """A second mailbox, a second From field, or a From that breaks RFC 5322 used to make
    DMARC none or permerror, and the spoof went through under --reject-dmarc."""
    headers, body = split_message((DMARC / "unauthenticated.eml").read_bytes())
    headers = [(n, v) for n, v in headers if n.lower() != "from"] + disguise
    spoofer = {"ip": "198.51.100.7", "helo": "x.example", "mail_from": "alice@example.net"}
    (replies,) = exchange(
        MilterSettings(reject_dmarc=True), {**spoofer, "headers": headers, "body": body}
    )
    assert replies[-1][0] == p.REPLYCODE
    assert replies[-1][1].startswith(b"550 5.7.1 DMARC policy of example.net")


def test_trusted_clients_continue_at_connect() -> None:
    import ipaddress

    async def go() -> None:
        networks = (ipaddress.ip_network("192.0.2.0/24"),)
        server, port, _ = await serve(MilterSettings(trusted_networks=networks))
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        connect = b"c\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.10\0"
        # Not ACCEPT: the milter must see their messages' header fields (forged A-R).
        assert await client.step(p.CONNECT, connect) == p.CONTINUE
        await client.close()
        server.close()

    run(go())


FORGED = [
    ("Authentication-Results", " mx.example.org; dkim=pass header.d=bank.example"),
    ("Authentication-Results", " other.example; spf=pass"),
]


def _deleted(replies: list[tuple[bytes, bytes]]) -> list[int]:
    return [struct.unpack(">I", d[:4])[0] for c, d in replies if c == p.CHGHEADER]


def test_forged_authentication_results_go_on_every_path() -> None:
    """RFC 8601 5: outbound, trusted and SMTP-authenticated messages too, and messages let
    through unchecked (on_error = accept, in the deadline test). An account on the
    submission port must not be able to deliver ``dkim=pass header.d=bank.example`` under
    our id to a local mailbox."""
    import ipaddress

    from mailauth.dkim import Signer
    from tests.dkim_helpers import ED_KEY

    headers, body = split_message((DEMO / "message.eml").read_bytes())
    message: dict[str, Any] = {"headers": FORGED + headers, "body": body}
    trusted = (ipaddress.ip_network("192.0.2.0/24"),)
    laptop = {"ip": "192.0.2.50", "helo": "laptop.example.com", "mail_from": "a@example.com"}
    signers = {"example.com": (Signer("example.com", "ed1", ED_KEY),)}
    cases = [
        (MilterSettings(trusted_networks=trusted), laptop),  # trusted, nothing to sign
        (MilterSettings(trusted_networks=trusted, signers=signers), laptop),  # signed
    ]
    for chosen, sender in cases:
        (replies,) = exchange(chosen, {**sender, **message})
        assert _deleted(replies) == [1], chosen
        assert replies[-1][0] == p.CONTINUE

    async def authenticated() -> list[tuple[bytes, bytes]]:
        server, port, _ = await serve(MilterSettings())
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        await client.send(p.MACRO, p.MAIL + b"{auth_authen}\0alice\0")
        replies = await client.message(**SENDER, **message)
        await client.close()
        server.close()
        return replies

    replies = asyncio.run(authenticated())
    assert _deleted(replies) == [1] and replies[-1][0] == p.CONTINUE


@pytest.mark.parametrize(
    "packet",
    [
        struct.pack(">I", 0),  # empty packet
        struct.pack(">I", 1 << 30) + b"B",  # oversize
        p.encode(b"Z", b"junk"),  # unknown command
        p.encode(p.HEADER, b"no-nul-terminator"),
        p.encode(p.CONNECT, b"host\0" + b"9"),  # unknown family
        p.encode(p.CONNECT, b"host\0" + b"4\0\x19" + b"junk\0"),  # not an IPv4 address
        p.encode(p.OPTNEG, b"\0\0"),  # short negotiation
    ],
)
def test_malformed_packets_close_the_connection_and_the_server_lives(packet: bytes) -> None:
    async def go() -> None:
        server, port, milter = await serve()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(packet)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the milter
        writer.close()
        client = await MilterClient.connect("127.0.0.1", port)  # still serving
        await client.negotiate()
        await client.close()
        await asyncio.sleep(0.05)
        assert milter.connections == 0
        server.close()

    run(go())


def test_a_connection_dropped_mid_message_and_an_abort() -> None:
    headers, body = split_message((DEMO / "message.eml").read_bytes())

    async def go() -> None:
        server, port, milter = await serve()
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        await client.step(p.MAIL, b"<a@example.com>\0")
        await client.step(p.HEADER, b"Subject\0 half a message\0")
        await client.step(p.BODY, b"half a body")
        await client.close()  # dropped mid-message
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        await client.step(p.MAIL, b"<a@example.com>\0")
        await client.step(p.HEADER, b"Subject\0 aborted\0")
        await client.send(p.ABORT)  # the MTA gives up this message; the next one is clean
        replies = await client.message(
            ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com",
            headers=headers, body=body,
        )  # fmt: skip
        assert "dkim=pass" in _inserted_header(replies)
        await client.close()
        await asyncio.sleep(0.05)
        assert milter.connections == 0
        server.close()

    run(go())


def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    # A peer gone without closing (half-open TCP), or a client that only holds connections:
    # closed, as libmilter does; a connection that keeps talking stays.
    async def go() -> None:
        server, port, milter = await serve(MilterSettings(idle_timeout=0.5))
        silent = await MilterClient.connect("127.0.0.1", port)
        await silent.negotiate()
        talking = await MilterClient.connect("127.0.0.1", port)
        await talking.negotiate()
        for _ in range(6):  # 1.2 s in all, never 0.5 s quiet
            await asyncio.sleep(0.2)
            assert await talking.step(p.HELO, b"mail.example.com\0") == p.CONTINUE
        assert await asyncio.wait_for(silent.reader.read(), 5) == b""  # closed by the milter
        assert milter.connections == 1
        await talking.close()
        server.close()

    run(go())


def test_what_a_connection_can_make_the_milter_hold_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mailauth.milter.server as milter_server

    monkeypatch.setattr(milter_server, "MAX_MACROS", 10_000)
    headers, body = split_message((DEMO / "message.eml").read_bytes())

    async def go() -> None:
        settings = MilterSettings(on_error="tempfail", max_header_size=10_000)
        server, port, milter = await serve(settings)
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        flood = [("X-Junk", "x" * 900)] * 20  # 18 KB of header fields: not kept, refused
        replies = await client.message(**SENDER, headers=flood + headers, body=body)
        assert replies == [(p.REPLYCODE, b"552 5.3.4 Message header too large (header "
                            b"section larger than 10000 octets)\0")]  # fmt: skip
        assert milter.held == 0
        replies = await client.message(**SENDER, headers=headers, body=body)  # the next is
        assert "dkim=pass" in _inserted_header(replies)  # checked as usual
        assert milter.held == 0  # (released at the end of each message)
        for n in range(20):  # 20 KB of macros: a protocol error, the connection closes
            await client.send(p.MACRO, b"C" + f"{{m{n}}}".encode() + b"\0" + b"v" * 990 + b"\0")
        try:
            closed = await asyncio.wait_for(client.reader.read(), 5)
        except ConnectionResetError:  # (closed before it read all we sent: a reset)
            closed = b""
        assert closed == b""
        await asyncio.sleep(0.05)
        assert milter.connections == 0
        server.close()

    run(go())


def test_header_fields_are_capped_by_count_as_well_as_size() -> None:
    # 2 million tiny fields took the milter to 557 MB: each field costs Python objects.
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    tiny = [("X", "")] * 1_001
    (replies,) = exchange(None, {**SENDER, "headers": tiny + headers, "body": body})
    assert replies == [
        (p.REPLYCODE, b"552 5.3.4 Message header too large (more than 1000 header fields)\0")
    ]
    # (under the cap, checked: 1,000 fields in all)
    tiny = [("X", "")] * (1_000 - len(headers))
    (replies,) = exchange(None, {**SENDER, "headers": tiny + headers, "body": body})
    assert b"dkim=pass" in b"".join(data for _, data in replies)


def test_header_data_held_for_all_connections_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mailauth.milter.server as milter_server

    monkeypatch.setattr(milter_server, "MAX_HELD_HEADERS", 6_000)
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    message = {**SENDER, "headers": headers, "body": body}

    async def go() -> None:
        server, port, milter = await serve(MilterSettings(on_error="tempfail"))
        first = await MilterClient.connect("127.0.0.1", port)
        await first.negotiate()
        await first.step(p.MAIL, b"<a@example.com>\0")
        await first.step(p.HEADER, b"X-Big\0" + b"x" * 5_000 + b"\0")  # held, mid-message
        second = await MilterClient.connect("127.0.0.1", port)
        await second.negotiate()
        assert await second.message(**message) == [(p.TEMPFAIL, b"")]  # short of memory
        await first.close()  # its message is dropped: the memory comes back
        await asyncio.sleep(0.05)
        assert milter.held == 0
        assert "dkim=pass" in _inserted_header(await second.message(**message))
        await second.close()
        server.close()

    run(go())


def test_the_deadline_answers_the_mta_in_time() -> None:
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    slow = ZoneResolver.from_files([DEMO / "example.com.zone"])

    class Slow(ZoneResolver):
        async def lookup_async(self, name, rdtype):  # type: ignore[no-untyped-def]
            await asyncio.sleep(5)
            return slow.lookup(name, rdtype)

    async def go() -> None:
        for on_error, expected in (("accept", p.CONTINUE), ("tempfail", p.TEMPFAIL)):
            milter = Milter(
                Authenticator("mx.example.org", Slow({})),
                MilterSettings(deadline=0.3, on_error=on_error),
            )
            server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
            client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
            await client.negotiate()
            started = asyncio.get_running_loop().time()
            replies = await client.message(
                ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com",
                headers=FORGED + headers, body=body,
            )  # fmt: skip
            assert asyncio.get_running_loop().time() - started < 2
            # Accepted unchecked, the message still loses the field forged with our id.
            deleted = [p.CHGHEADER] if on_error == "accept" else []
            assert [r[0] for r in replies] == [*deleted, expected]
            await client.close()
            server.close()

    run(go())


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("inet:8891@127.0.0.1", ("inet", 8891, "127.0.0.1")),
        ("inet6:8891@::1", ("inet6", 8891, "::1")),
        ("unix:/run/mailauth.sock", ("unix", "/run/mailauth.sock", "")),
        ("inet:8891", ("inet", 8891, "127.0.0.1")),
    ],
)
def test_listen_sockets(spec: str, parsed: tuple[str, object, str]) -> None:
    assert parse_listen(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["tcp:25", "inet:0@x", "inet:99999@x", "unix:", "inet:²@x", "inet:٥٣@x"]
)
def test_bad_listen_sockets(spec: str) -> None:
    with pytest.raises(ValueError, match="bad listen socket"):
        parse_listen(spec)


def test_unix_socket(tmp_path: Path) -> None:
    async def go() -> None:
        milter = Milter(Authenticator("mx.example.org", RESOLVER))
        path = tmp_path / "milter.sock"
        server = await start_server(milter.handle, f"unix:{path}", 0o600)
        assert path.stat().st_mode & 0o777 == 0o600
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(p.encode(p.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
        await writer.drain()
        assert (await reader.readexactly(5))[4:5] == p.OPTNEG
        writer.close()
        server.close()

    run(go())


def test_trusted_clients_mail_is_dkim_signed_dual() -> None:
    import ipaddress

    from mailauth.dkim import Signer, public_key_record
    from tests.dkim_helpers import ED_KEY, RSA_KEY, dkimpy_verify, verify, zone

    signers = (Signer("example.com", "rsa1", RSA_KEY), Signer("example.com", "ed1", ED_KEY))
    networks = (ipaddress.ip_network("192.0.2.0/24"),)
    raw = (DEMO / "message.eml").read_bytes()
    raw = raw[raw.index(b"From: ") :]  # drop the demo's own signature
    headers, body = split_message(raw)
    settings = MilterSettings(trusted_networks=networks, signers={"example.com": signers})
    laptop = {"ip": "192.0.2.50", "helo": "laptop.example.com", "mail_from": "alice@example.com"}
    (replies,) = exchange(settings, {**laptop, "headers": headers, "body": body})
    fields = inserted_fields(replies)
    assert len(fields) == 2 and replies[-1][0] == p.CONTINUE
    assert all(f.startswith(b"DKIM-Signature:") for f in fields)
    delivered = b"".join(fields) + raw
    records = {
        "rsa1._domainkey.example.com": public_key_record(RSA_KEY),
        "ed1._domainkey.example.com": public_key_record(ED_KEY),
    }
    outcomes = verify(delivered, zone(records), now=1.9e9)
    assert [o.result for o in outcomes] == ["pass", "pass"]
    assert dkimpy_verify(delivered, records)


def test_one_log_line_per_message(caplog: pytest.LogCaptureFixture) -> None:
    import json

    headers, body = split_message((DEMO / "message.eml").read_bytes())
    with caplog.at_level("INFO", logger="mailauth.milter"):
        exchange(None, {**SENDER, "headers": headers, "body": body, "queue_id": "4QLOG1"})
    (line,) = [r.getMessage() for r in caplog.records if "4QLOG1" in r.getMessage()]
    record = json.loads(line)
    assert record["queue_id"] == "4QLOG1" and record["client"] == "192.0.2.10"
    assert (record["spf"], record["dmarc"], record["action"]) == ("pass", "pass", "continue")
    assert record["dkim"] == ["pass:example.com"] and record["ms"] >= 0


@pytest.mark.parametrize("offered", [0x1FFFFF, p.P_NORCPT | p.P_HDR_LEADSPC, 0])
def test_with_and_without_no_reply_steps(offered: int) -> None:
    """MTAs that offer SMFIP_NR_* get no replies to CONNECT/HELO/MAIL/DATA/headers/body;
    others get one per step; an MTA without SMFIP_HDR_LEADSPC gets the space after the colon
    added."""
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    if not offered & p.P_HDR_LEADSPC:
        headers = [(name, value.lstrip(" ")) for name, value in headers]

    async def go() -> None:
        server, port, _ = await serve()
        client = await MilterClient.connect("127.0.0.1", port)
        _, chosen = await client.negotiate(protocol=offered)
        assert bool(chosen & p.P_NR_HDR) == bool(offered & p.P_NR_HDR)
        replies = await client.message(
            ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com",
            headers=headers, body=body,
        )  # fmt: skip
        value = _inserted_header(replies)
        assert "dkim=pass" in value and value.startswith(" " if chosen & p.P_HDR_LEADSPC else "m")
        await client.close()
        server.close()

    run(go())


@pytest.mark.parametrize(
    "skipped",
    [p.P_NOEOH | p.P_NODATA, p.P_NOEOH, p.P_NODATA, 0],
    ids=["no EOH, no DATA", "no EOH", "no DATA", "both sent"],
)
@pytest.mark.parametrize("body", [None, b""], ids=["body", "empty body"])
def test_a_message_is_verified_when_the_mta_skips_eoh_and_data(
    skipped: int, body: bytes | None
) -> None:
    """Without EOH the checks start at the first body chunk, or at the end of message when
    there is no body at all; DATA carries nothing the milter needs."""
    headers, signed_body = split_message((DEMO / "message.eml").read_bytes())

    async def go() -> str:
        server, port, _ = await serve()
        client = await MilterClient.connect("127.0.0.1", port)
        _, chosen = await client.negotiate(protocol=(ALL_PROTOCOL & ~0x240) | skipped)
        assert chosen & 0x240 == skipped  # (what the client then leaves out)
        replies = await client.message(
            **SENDER, headers=headers, body=signed_body if body is None else body
        )
        await client.close()
        server.close()
        return _inserted_header(replies)

    inserted = asyncio.run(go())
    assert "spf=pass" in inserted and "dmarc=" in inserted
    assert ("dkim=pass" if body is None else "dkim=fail") in inserted


def _conversation(headers: list[tuple[str, str]], body: bytes) -> bytes:
    """What Postfix writes for one message (all steps unanswered, macros as we ask)."""
    packets = [
        (p.OPTNEG, struct.pack(">III", 6, 0x1FF, ALL_PROTOCOL)),
        (p.MACRO, p.CONNECT),
        (p.CONNECT, b"client.example\x004\0\x19192.0.2.10\0"),
        (p.MACRO, p.HELO),
        (p.HELO, b"mail.example.com\0"),
        (p.MACRO, p.MAIL),
        (p.MAIL, b"<alice@example.com>\0"),
        (p.MACRO, p.RCPT),
        (p.MACRO, p.DATA),
    ]
    for name, value in headers:
        packets += [(p.MACRO, p.HEADER), (p.HEADER, f"{name}\0{value}\0".encode())]
    packets += [(p.MACRO, p.BODY), (p.BODY, body), (p.MACRO, p.EOM + b"i\0004QONE\0"), (p.EOM, b"")]
    return b"".join(p.encode(command, data) for command, data in packets)


@pytest.mark.parametrize("write_size", [1 << 20, 7, 1], ids=["one write", "7 octets", "1 octet"])
def test_packets_are_taken_whole_however_the_mta_writes_them(write_size: int) -> None:
    """Several packets in one read (as Postfix writes the steps it does not wait on), or a
    packet spread over many reads: the same replies."""
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    stream = _conversation(headers, body)

    async def go() -> list[tuple[bytes, bytes]]:
        server, port, _ = await serve()
        client = await MilterClient.connect("127.0.0.1", port)
        for start in range(0, len(stream), write_size):
            client.writer.write(stream[start : start + write_size])
            await client.writer.drain()
        replies = [await client.read()]  # the OPTNEG reply
        while replies[-1][0] != p.CONTINUE:
            replies.append(await client.read())
        await client.close()
        server.close()
        return replies

    replies = asyncio.run(go())
    assert [command for command, _ in replies] == [p.OPTNEG, p.INSHEADER, p.CONTINUE]
    assert "dkim=pass" in _inserted_header(replies) and "spf=pass" in _inserted_header(replies)


def test_take_packets_leaves_a_partial_packet_and_refuses_an_oversize_one_at_once() -> None:
    buffer = bytearray(p.encode(p.HELO, b"a\0") + p.encode(p.MAIL, b"<b>\0")[:6])
    assert list(p.take_packets(buffer)) == [(p.HELO, b"a\0")]
    assert buffer == p.encode(p.MAIL, b"<b>\0")[:6]  # kept for the next read
    oversize = bytearray(struct.pack(">I", p.MAX_PACKET + 1) + b"B")
    with pytest.raises(p.ProtocolError):
        list(p.take_packets(oversize))  # (no need to wait for a MiB that is refused anyway)


def test_quit_nc_starts_a_new_smtp_connection_on_the_same_socket() -> None:
    import ipaddress

    headers, body = split_message((DEMO / "message.eml").read_bytes())

    async def go() -> None:
        networks = (ipaddress.ip_network("192.0.2.0/24"),)
        settings = MilterSettings(trusted_networks=networks, signers={"example.org": ()})
        server, port, _ = await serve(settings)
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        connect = b"c\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.10\0"
        assert await client.step(p.CONNECT, connect) == p.CONTINUE  # trusted: signing mode
        await client.send(p.QUIT_NC)
        replies = await client.message(
            ip="198.51.100.7", helo="mail.example.com", mail_from="alice@example.com",
            headers=headers, body=body,
        )  # fmt: skip
        assert "dkim=pass" in _inserted_header(replies)  # verified: the trust did not carry over
        await client.close()
        server.close()

    run(go())


def test_prometheus_metrics() -> None:
    import socket as socket_module

    import httpx

    from mailauth.milter import Metrics

    headers, body = split_message((DEMO / "message.eml").read_bytes())
    metrics = Metrics()

    async def go() -> None:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), None, metrics)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        for _ in range(2):
            await client.message(
                ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com",
                headers=headers, body=body,
            )  # fmt: skip
        await client.close()
        server.close()

    run(go())
    sample = metrics.registry.get_sample_value
    assert sample("mailauth_results_total", {"method": "dkim", "result": "pass"}) == 2
    assert sample("mailauth_results_total", {"method": "dmarc", "result": "pass"}) == 2
    assert sample("mailauth_actions_total", {"action": "continue"}) == 2
    assert sample("mailauth_check_seconds_count") == 2
    with socket_module.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve("127.0.0.1", port)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'mailauth_results_total{method="spf",result="pass"} 2.0' in text


def test_spf_starts_at_mail_from() -> None:
    """SPF needs only the envelope: the milter asks its DNS questions before the message
    arrives, and the verdict uses that result."""
    resolver = ZoneResolver.from_files([DEMO / "example.com.zone"])
    headers, body = split_message((DEMO / "message.eml").read_bytes())

    async def go() -> None:
        milter = Milter(Authenticator("mx.example.org", resolver))
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate(protocol=p.P_NORCPT | p.P_HDR_LEADSPC)  # a reply to each step
        connect = b"c\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.10\0"
        assert await client.step(p.CONNECT, connect) == p.CONTINUE
        assert await client.step(p.HELO, b"mail.example.com\0") == p.CONTINUE
        assert await client.step(p.MAIL, b"<alice@example.com>\0") == p.CONTINUE
        await asyncio.sleep(0.05)
        asked = [(q.name, q.rdtype) for q in resolver.queries]
        assert ("example.com", "TXT") in asked  # before any header was sent
        for name, value in headers:
            await client.step(p.HEADER, f"{name}\0{value}\0".encode())
        await client.step(p.EOH)
        await client.step(p.BODY, body)
        await client.send(p.EOM)
        replies: list[tuple[bytes, bytes]] = []
        while not replies or replies[-1][0] != p.CONTINUE:
            replies.append(await client.read())
        assert "spf=pass smtp.mailfrom=alice@example.com" in _inserted_header(replies).replace(
            "\n", ""
        )
        await client.close()
        server.close()

    run(go())


def test_inbound_mail_is_arc_sealed_when_asked() -> None:
    import dkim as dkimpy

    from mailauth.arc import Sealer, verify_arc
    from mailauth.dkim import public_key_record
    from mailauth.dns import RRType
    from mailauth.message import Message
    from mailauth.plan import run_plan
    from mailauth.results import ArcResult
    from tests.dkim_helpers import RSA_KEY, dkimpy_dns

    raw = (DEMO / "message.eml").read_bytes()
    headers, body = split_message(raw)
    settings = MilterSettings(sealer=Sealer("example.org", "arc1", RSA_KEY))

    (replies,) = exchange(settings, {**SENDER, "headers": headers, "body": body})
    assert replies[-1][0] == p.CONTINUE
    delivered = inserted_fields(replies)  # the ARC set ends up on top
    names = [f.split(b":")[0] for f in delivered]
    assert names == [
        b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results",
        b"Authentication-Results",
    ]  # fmt: skip
    assert b"i=1; mx.example.org; spf=pass" in delivered[2] and b"dmarc=pass" in delivered[2]
    sealed = b"".join(delivered) + raw
    record = public_key_record(RSA_KEY)
    zone = ZoneResolver({("arc1._domainkey.example.org", RRType.TXT): (300, (record.encode(),))})
    outcome = run_plan(verify_arc(Message.parse(sealed)), zone)
    assert (outcome.result, outcome.domains) == (ArcResult.PASS, ("example.org",)), outcome.reason
    assert b"cv=none" in delivered[0]
    records = {"arc1._domainkey.example.org": record}
    assert dkimpy.arc_verify(sealed, dnsfunc=dkimpy_dns(records))[0] == b"pass"
    # A changed body breaks the seal: the hash was taken from what the MTA passed.
    broken = sealed.replace(b"Hello Bob", b"Hello Eve")
    assert run_plan(verify_arc(Message.parse(broken)), zone).result is ArcResult.FAIL


def test_sealing_only_for_forwarding_domains() -> None:
    from mailauth.arc import Sealer
    from tests.dkim_helpers import ED_KEY

    headers, body = split_message((DEMO / "message.eml").read_bytes())
    settings = MilterSettings(
        sealer=Sealer("example.org", "arc2", ED_KEY),
        seal_domains=frozenset({"alumni.example.org", "xn--bcher-kva.example"}),
    )
    domains = (
        ("bob@example.net",),
        ("bob@example.net", "<Carol@Alumni.Example.ORG>"),
        ("<jörg@Bücher.example.>",),  # SMTPUTF8: the U-label is the configured A-label
    )

    async def go() -> list[list[bytes]]:
        server, port, _ = await serve(settings)
        client = await MilterClient.connect("127.0.0.1", port)
        _, protocol = await client.negotiate()
        assert not protocol & p.P_NORCPT and protocol & p.P_NR_RCPT  # RCPT seen, not answered
        inserted = []
        for recipients in domains:
            replies = await client.message(
                ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com",
                headers=headers, body=body, recipients=recipients,
            )  # fmt: skip
            inserted.append([d[4:].split(b"\0")[0] for c, d in replies if c == p.INSHEADER])
        await client.close()
        server.close()
        return inserted

    plain, sealed, sealed_idn = asyncio.run(go())
    assert plain == [b"Authentication-Results"]
    assert sealed == sealed_idn == [
        b"Authentication-Results", b"ARC-Seal", b"ARC-Message-Signature",
        b"ARC-Authentication-Results",
    ]  # fmt: skip


def test_text_log_lines_quote_what_the_client_sent(caplog: pytest.LogCaptureFixture) -> None:
    import shlex

    headers, body = split_message((DEMO / "message.eml").read_bytes())

    evil = {**SENDER, "helo": 'evil" action=reject\nqueue_id=x', "queue_id": "4QLOG2"}
    with caplog.at_level("INFO", logger="mailauth.milter"):
        exchange(MilterSettings(log_format="text"), {**evil, "headers": headers, "body": body})
    (line,) = [r.getMessage() for r in caplog.records if "4QLOG2" in r.getMessage()]
    assert "\n" not in line
    pairs = dict(item.split("=", 1) for item in shlex.split(line))
    assert list(pairs) == [
        "queue_id", "client", "helo", "mail_from", "spf", "dkim", "arc", "dmarc",
        "disposition", "action", "ms",
    ]  # fmt: skip
    assert pairs["helo"] == 'evil" action=reject\\nqueue_id=x'  # one value, escapes kept
    assert (pairs["queue_id"], pairs["dkim"], pairs["action"]) == (
        "4QLOG2", "pass:example.com", "continue",
    )  # fmt: skip


def test_trusted_mailing_lists_are_not_refused_under_reject_dmarc() -> None:
    from mailauth.dmarc import DmarcLocalPolicy
    from mailauth.policy import trust_mailing_lists

    headers, body = split_message((DMARC / "unauthenticated.eml").read_bytes())

    def go(lists: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
        policy = DmarcLocalPolicy(overrides=(trust_mailing_lists(lists),))
        authenticator = Authenticator("mx.example.org", RESOLVER, dmarc_policy=policy)
        # A list server at 192.0.2.10, SPF-authenticated as example.com, relays mail whose
        # author domain (example.net, p=reject) it cannot authenticate.
        relayed = {**SENDER, "mail_from": "list-bounces@example.com"}
        settings = MilterSettings(reject_dmarc=True)
        message = {**relayed, "headers": headers, "body": body}
        (replies,) = exchange(settings, message, authenticator=authenticator)
        return replies

    trusted = go(("example.com",))
    assert trusted[-1][0] == p.CONTINUE
    value = _inserted_header(trusted)
    assert "spf=pass" in value and "dmarc=fail" in value, value
    assert go(("lists.example.org",))[-1][0] == p.REPLYCODE  # not this list


def test_keys_sign_for_other_from_domains() -> None:
    import ipaddress
    import time

    from mailauth.dkim import Signer, public_key_record
    from mailauth.milter.outbound import signers_for
    from tests.dkim_helpers import ED_KEY, verify, zone

    signer = Signer("example.com", "ed1", ED_KEY)
    table = {"example.com": (signer,), "*.example.com": (signer,), "example.net": (signer,)}
    assert signers_for(table, "example.com") == (signer,)
    assert signers_for(table, "news.eu.example.com") == (signer,)  # the nearest *.parent
    assert signers_for(table, "example.net") == (signer,)
    assert signers_for(table, "sub.example.net") == ()  # no *.example.net entry
    assert signers_for(table, "badexample.com") == ()

    raw = (
        b"From: News <news@news.example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
        b"Message-ID: <n-1@news.example.com>\r\n\r\nHello.\r\n"
    )
    headers, body = split_message(raw)

    settings = MilterSettings(
        trusted_networks=(ipaddress.ip_network("192.0.2.0/24"),), signers=table
    )
    laptop = {
        "ip": "192.0.2.50",
        "helo": "laptop.example.com",
        "mail_from": "news@news.example.com",
    }
    (replies,) = exchange(settings, {**laptop, "headers": headers, "body": body})
    (field,) = inserted_fields(replies)
    signed = field + raw
    records = {"ed1._domainkey.example.com": public_key_record(ED_KEY)}
    (outcome,) = verify(signed, zone(records), now=time.time())
    assert (outcome.result, outcome.domain) == ("pass", "example.com")


def test_refused_mail_is_not_sealed() -> None:
    from unittest import mock

    from mailauth.arc import Sealer
    from tests.dkim_helpers import ED_KEY

    sealer = Sealer("example.org", "arc2", ED_KEY)
    settings = MilterSettings(reject_dmarc=True, sealer=sealer)
    spoofed, body = split_message((DMARC / "unauthenticated.eml").read_bytes())
    signed, signed_body = split_message((DEMO / "message.eml").read_bytes())
    spoofer = {"ip": "198.51.100.7", "helo": "x.example", "mail_from": "alice@example.net"}
    with mock.patch.object(sealer, "seal_fields", wraps=sealer.seal_fields) as seal_fields:
        refused, accepted = exchange(
            settings,
            {**spoofer, "headers": spoofed, "body": body},
            {**SENDER, "headers": signed, "body": signed_body},
        )
    assert (refused[-1][0], accepted[-1][0]) == (p.REPLYCODE, p.CONTINUE)
    assert seal_fields.call_count == 1  # the accepted message only
    assert b"ARC-Seal" in b"".join(inserted_fields(accepted))


@pytest.mark.parametrize(
    ("connect", "reply"),
    [
        (b"localhost\0U", p.CONTINUE),  # no network client: local mail, trusted
        (b"localhost\0L\0\0/var/run/x.sock\0", p.CONTINUE),  # a local socket likewise
        (b"mx\x006\0\x19IPv6:2001:db8::1\0", p.CONTINUE),  # Sendmail's IPv6 form
        (b"mx\x004\0\x19[192.0.2.10]\0", p.CONTINUE),
    ],
)
def test_connect_families(connect: bytes, reply: bytes) -> None:
    async def go() -> bytes:
        server, port, _ = await serve()
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        got = await client.step(p.CONNECT, connect)
        await client.close()
        server.close()
        return got

    assert asyncio.run(go()) == reply


_COMMANDS = [
    p.MACRO, p.CONNECT, p.HELO, p.MAIL, p.RCPT, p.DATA, p.HEADER, p.EOH, p.BODY, p.EOM,
    p.ABORT, p.QUIT_NC, p.UNKNOWN, b"Z",
]  # fmt: skip
_PIECES = [
    b"", b"From", b"From: a@example.com", b"<a@example.com>", b"192.0.2.10", b"4", b"U",
    b"i", b"{auth_authen}", b"\xff\xfe", b"DKIM-Signature", b"v=1; a=rsa-sha256; d=x",
]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(_COMMANDS),
            st.one_of(
                st.binary(max_size=40),
                st.lists(st.sampled_from(_PIECES), max_size=5).map(b"\0".join),
            ),
        ),
        max_size=20,
    )
)
def test_any_packet_sequence_gets_a_reply_or_a_protocol_error(
    steps: list[tuple[bytes, bytes]],
) -> None:
    """Whatever an MTA (or something posing as one) sends after negotiation, the milter
    answers or closes the connection with a protocol error: no other exception escapes."""
    import ipaddress

    from mailauth.arc import Sealer
    from mailauth.dkim import Signer
    from mailauth.milter.session import Session
    from tests.dkim_helpers import ED_KEY

    milter = Milter(
        Authenticator("mx.example.org", RESOLVER),
        MilterSettings(
            sealer=Sealer("example.org", "s", ED_KEY),
            trusted_networks=(ipaddress.ip_network("192.0.2.0/25"),),
            signers={"example.com": (Signer("example.com", "s", ED_KEY),)},
            log_format="text",
        ),
    )

    async def go() -> None:
        session = Session()
        await milter._dispatch(session, p.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        try:
            for command, data in steps:
                if await milter._dispatch(session, command, data) is None:
                    break
        except p.ProtocolError:
            pass
        finally:
            session.message.discard()

    asyncio.run(go())


def test_dmarc_quarantine_is_a_quarantine_action_when_asked() -> None:
    raw = (
        b"From: News <news@news.example.net>\r\nTo: bob@example.org\r\nSubject: offer\r\n"
        b"Message-ID: <q-1@attacker.example>\r\n\r\nClick.\r\n"
    )
    headers, body = split_message(raw)
    spoofer = {"ip": "198.51.100.7", "helo": "x.example", "mail_from": "news@news.example.net"}
    message = {**spoofer, "headers": headers, "body": body}
    (held,) = exchange(MilterSettings(quarantine_dmarc=True), message)
    (quarantine,) = [d for c, d in held if c == p.QUARANTINE]
    assert quarantine == b"DMARC quarantine for news.example.net\0"
    assert "dmarc=fail" in _inserted_header(held) and held[-1][0] == p.CONTINUE
    (passed,) = exchange(MilterSettings(reject_dmarc=True), message)  # reject only: not held
    assert not [c for c, _ in passed if c == p.QUARANTINE] and passed[-1][0] == p.CONTINUE


def test_signing_and_sealing_keep_to_the_deadline() -> None:
    """Private-key work waits for a worker thread; when none comes free in time, the MTA is
    answered at the deadline all the same (unsigned mail goes on, an inbound message keeps
    its Authentication-Results without an ARC set)."""
    import ipaddress
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from mailauth.arc import Sealer
    from mailauth.dkim import Signer
    from tests.dkim_helpers import ED_KEY

    raw = (DEMO / "message.eml").read_bytes()
    headers, body = split_message(raw[raw.index(b"From: ") :])
    settings = MilterSettings(
        deadline=0.3,
        trusted_networks=(ipaddress.ip_network("192.0.2.128/25"),),
        signers={"example.com": (Signer("example.com", "ed1", ED_KEY),)},
        sealer=Sealer("example.org", "arc2", ED_KEY),
    )
    release = threading.Event()

    async def go() -> list[list[tuple[bytes, bytes]]]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        busy = loop.run_in_executor(None, release.wait)  # the one worker thread is taken
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        started = loop.time()
        outbound = await client.message(
            ip="192.0.2.200", helo="laptop.example.com", mail_from="alice@example.com",
            headers=headers, body=body,
        )  # fmt: skip
        inbound = await client.message(**SENDER, headers=headers, body=body)
        assert loop.time() - started < 2
        release.set()
        await busy
        await client.close()
        server.close()
        return [outbound, inbound]

    outbound, inbound = asyncio.run(go())
    assert [c for c, _ in outbound] == [p.CONTINUE]  # accept (the default): unsigned
    assert [f.split(b":")[0] for f in inserted_fields(inbound)] == [b"Authentication-Results"]


class _Failing:
    """A resolver whose answers for some names fail temporarily (a DNS timeout), the rest
    from another resolver."""

    def __init__(self, inner: ZoneResolver, *names: str) -> None:
        self.inner, self.names = inner, set(names)

    def lookup(self, name: str, rdtype: RRType) -> Lookup:
        if name.lower().rstrip(".") in self.names:
            return Lookup(name, rdtype, DnsStatus.TEMPFAIL, reason="DNS timeout")
        return self.inner.lookup(name, rdtype)

    async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
        return self.lookup(name, rdtype)


# The demo message from an address SPF fails for: only DKIM can pass DMARC (p=reject).
FORWARDED = {"ip": "198.51.100.7", "helo": "fwd.example", "mail_from": "alice@example.com"}


def test_a_dkim_key_timeout_is_dmarc_temperror_never_a_reject() -> None:
    """RFC 9989: with no aligned pass and an aligned DKIM result of temperror, no failure
    can be concluded. Before, a DNS blip on the key refused legitimate mail with 550."""
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    resolver = _Failing(RESOLVER, "demo._domainkey.example.com")
    message = {**FORWARDED, "headers": headers, "body": body}
    authenticator = Authenticator("mx.example.org", resolver)
    # The policy at stake (p=reject) is one the milter acts on: deferred, not refused and
    # not let through (dmarc_temperror = "tempfail", the default).
    (deferred,) = exchange(MilterSettings(reject_dmarc=True), message, authenticator=authenticator)
    assert deferred == [
        (p.REPLYCODE, b"451 4.4.3 DMARC for example.com could not be evaluated; try again later\0")
    ]
    settings = MilterSettings(reject_dmarc=True, dmarc_temperror="accept")
    (accepted,) = exchange(settings, message, authenticator=authenticator)
    assert accepted[-1][0] == p.CONTINUE
    header = _inserted_header(accepted).replace("\n", "")
    assert "dkim=temperror" in header and "dmarc=temperror" in header
    # Not acting on DMARC: on_error decides (accept by default).
    (passed,) = exchange(MilterSettings(), message, authenticator=authenticator)
    assert passed[-1][0] == p.CONTINUE
    (retried,) = exchange(MilterSettings(on_error="tempfail"), message, authenticator=authenticator)
    assert retried[-1][0] == p.REPLYCODE and retried[-1][1].startswith(b"451 4.4.3")
    (rejected,) = exchange(MilterSettings(reject_dmarc=True), message)  # (the key answers)
    assert "dkim=pass" in _inserted_header(rejected)  # the message is not a spoof after all


@pytest.mark.parametrize(
    "fault", ["silent", "servfail", "truncate_tcp_refused", "wrong_type", "referral"]
)
def test_a_dkim_key_failure_on_the_wire_is_never_a_reject(fault: str) -> None:
    """The same through dnspython and a DNS server: the key lookup times out, gets SERVFAIL,
    a truncated answer whose TCP retry is refused, a broken server's answer of another type
    or a referral. With reject_dmarc on, the message is deferred (451 4.4.3), or goes on
    (dmarc=temperror) under dmarc_temperror = accept; never a 550."""
    from tests.dnsserver import LoopbackDnsServer

    headers, body = split_message((DEMO / "message.eml").read_bytes())
    message = {**FORWARDED, "headers": headers, "body": body}
    zone = (DEMO / "example.com.zone").read_text()
    with LoopbackDnsServer(zone, faults={"demo._domainkey.example.com": fault}) as server:
        authenticator = Authenticator("mx.example.org", server.resolver())
        (accepted,) = exchange(
            MilterSettings(reject_dmarc=True, dmarc_temperror="accept"),
            message,
            authenticator=authenticator,
        )
        (deferred,) = exchange(
            MilterSettings(reject_dmarc=True), message, authenticator=authenticator
        )
    assert accepted[-1][0] == p.CONTINUE
    header = _inserted_header(accepted).replace("\n", "")
    assert "dkim=temperror" in header and "dmarc=temperror" in header
    assert deferred[-1][0] == p.REPLYCODE and deferred[-1][1].startswith(b"451 4.4.3 DMARC")


def test_a_chain_whose_key_timed_out_is_not_sealed() -> None:
    from mailauth.arc import Sealer
    from tests.dkim_helpers import RSA_KEY

    raw = (DEMO / "message.eml").read_bytes()
    headers, body = split_message(raw)
    settings = MilterSettings(sealer=Sealer("example.org", "arc1", RSA_KEY))
    (first,) = exchange(settings, {**SENDER, "headers": headers, "body": body})
    hop1 = b"".join(inserted_fields(first)[:3]) + raw  # the ARC set we sealed, as received
    resolver = _Failing(RESOLVER, "arc1._domainkey.example.org")
    authenticator = Authenticator("mx.example.net", resolver)
    headers, body = split_message(hop1)
    message = {**SENDER, "headers": headers, "body": body}
    sealer = Sealer("example.org", "arc2", RSA_KEY)
    (accepted,) = exchange(MilterSettings(sealer=sealer), message, authenticator=authenticator)
    names = [f.split(b":")[0] for f in inserted_fields(accepted)]
    assert names == [b"Authentication-Results"]  # no cv=fail set ends the chain
    assert "arc=temperror" in _inserted_header(accepted).replace("\n", "")
    settings = MilterSettings(sealer=sealer, on_error="tempfail")
    (retried,) = exchange(settings, message, authenticator=authenticator)
    assert retried == [(p.TEMPFAIL, b"")]
    # Not sealing: the temporary failure changes nothing, the message goes on.
    (plain,) = exchange(MilterSettings(on_error="tempfail"), message, authenticator=authenticator)
    assert plain[-1][0] == p.CONTINUE


def test_quarantine_is_logged_and_counted_as_quarantine(caplog: pytest.LogCaptureFixture) -> None:
    import json

    from mailauth.milter import Metrics

    raw = (
        b"From: News <news@news.example.net>\r\nTo: bob@example.org\r\nSubject: offer\r\n"
        b"Message-ID: <q-2@attacker.example>\r\n\r\nClick.\r\n"
    )
    headers, body = split_message(raw)
    spoofer: dict[str, Any] = {
        "ip": "198.51.100.7", "helo": "x.example", "mail_from": "news@news.example.net",
    }  # fmt: skip
    metrics = Metrics()

    async def go() -> None:
        milter = Milter(
            Authenticator("mx.example.org", RESOLVER),
            MilterSettings(quarantine_dmarc=True),
            metrics,
        )
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        await client.message(**spoofer, headers=headers, body=body, queue_id="4QQUAR")
        await client.close()
        server.close()

    with caplog.at_level("INFO", logger="mailauth.milter"):
        run(go())
    (line,) = [r.getMessage() for r in caplog.records if "4QQUAR" in r.getMessage()]
    assert json.loads(line)["action"] == "quarantine"
    sample = metrics.registry.get_sample_value
    assert sample("mailauth_actions_total", {"action": "quarantine"}) == 1
    assert sample("mailauth_actions_total", {"action": "continue"}) is None


def test_spf_for_first_time_senders_runs_with_no_worker_thread() -> None:
    """SPF is a plan on the event loop: senders whose DNS is not cached, answered 50 ms late
    by a server in another process, start no thread (pyspf ran in a pool of 64 that slow DNS
    could exhaust, and a thread past the deadline kept querying)."""
    import threading

    from mailauth.dns import Resolver
    from tests.dnsserver import slow_dns_process

    senders = "".join(
        f'd{i}.example. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n' for i in range(20)
    )
    headers, body = split_message((DEMO / "message.eml").read_bytes())

    before = {t.ident for t in threading.enumerate()}

    async def go(address: str) -> tuple[list[str], list[str]]:
        resolver = Resolver([address], timeout=2, lifetime=4)
        server, port, milter = await serve()
        milter.authenticator = Authenticator("mx.example.org", resolver)
        clients = [await MilterClient.connect("127.0.0.1", port) for _ in range(20)]
        for client in clients:
            await client.negotiate()
        results = await asyncio.gather(
            *(
                client.message(
                    ip="192.0.2.10", helo="mail.example.com", mail_from=f"a@d{i}.example",
                    headers=headers, body=body,
                )
                for i, client in enumerate(clients)
            )
        )  # fmt: skip
        # (Looked at before the loop ends: asyncio.run joins its worker threads on the way out.)
        started = [t.name for t in threading.enumerate() if t.ident not in before]
        for client in clients:
            await client.close()
        server.close()
        return [_inserted_header(r) for r in results], started

    with slow_dns_process("$ORIGIN .\n" + senders, 0.05) as address:
        headers_out, started = asyncio.run(go(address))
    assert all("spf=pass" in h.replace("\n", "") for h in headers_out)
    assert started == [], started


def test_a_dmarc_reject_is_not_turned_into_a_4xx_by_an_attacker_arc_set() -> None:
    """A spoof carrying an ARC set whose key lookup the attacker makes time out: the chain
    is arc=temperror, and a sealing milter defers such messages -- but a DMARC reject
    stands on its own and takes precedence (no seal is needed to refuse)."""
    from mailauth.arc import Sealer, verify_arc
    from mailauth.message import Message
    from mailauth.plan import run_plan
    from tests.dkim_helpers import RSA_KEY

    raw = (DMARC / "unauthenticated.eml").read_bytes()
    chain = run_plan(verify_arc(Message.parse(raw)), RESOLVER)
    hop = Sealer("evil.example", "s1", RSA_KEY).seal(
        raw, authentication_results="relay.evil.example; none", chain=chain
    )
    headers, body = split_message(hop)
    spoofer = {"ip": "198.51.100.7", "helo": "x.example", "mail_from": "alice@example.net"}
    resolver = _Failing(RESOLVER, "s1._domainkey.evil.example")
    authenticator = Authenticator("mx.example.org", resolver)
    settings = MilterSettings(
        reject_dmarc=True, on_error="tempfail", sealer=Sealer("example.org", "arc1", RSA_KEY)
    )
    (replies,) = exchange(
        settings, {**spoofer, "headers": headers, "body": body}, authenticator=authenticator
    )
    assert replies[-1][0] == p.REPLYCODE
    assert replies[-1][1].startswith(b"550 5.7.1 DMARC policy of example.net")


def test_an_mta_that_closes_without_reading_the_replies_is_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ConnectionResetError from writer.drain() escaped the handler: asyncio logged a
    traceback per such connection (issue 19). Now one line at most, and the server lives."""
    import socket as sockets

    headers, body = split_message((DEMO / "message.eml").read_bytes())

    async def go() -> None:
        server, port, milter = await serve()
        for _ in range(3):
            client = await MilterClient.connect("127.0.0.1", port)
            await client.negotiate()
            sock = client.writer.get_extra_info("socket")
            sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_LINGER, struct.pack("ii", 1, 0))
            task = asyncio.ensure_future(client.message(**SENDER, headers=headers, body=body))
            while not client.eom_sent:
                await asyncio.sleep(0.001)
            task.cancel()
            client.writer.transport.abort()  # RST: the milter's reply meets a reset
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        await _until_closed(milter)
        replies = await _one_message(port, headers, body)  # the server still serves
        assert "dkim=pass" in _inserted_header(replies)
        await _until_closed(milter)
        server.close()

    with caplog.at_level("DEBUG"):
        run(go())
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= 30]
    closed = [r for r in caplog.records if "closed by the MTA" in r.getMessage()]
    assert len(closed) <= 3


async def _until_closed(milter: Milter) -> None:
    for _ in range(250):
        if not milter.connections:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("a milter connection is still open")


async def _one_message(
    port: int, headers: list[tuple[str, str]], body: bytes
) -> list[tuple[bytes, bytes]]:
    client = await MilterClient.connect("127.0.0.1", port)
    await client.negotiate()
    replies = await client.message(**SENDER, headers=headers, body=body)
    await client.close()
    return replies


def test_a_signed_outbound_message_gets_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    import ipaddress
    import json

    from mailauth.dkim import Signer
    from tests.dkim_helpers import ED_KEY

    signer = Signer("example.com", "ed1", ED_KEY)
    settings = MilterSettings(
        trusted_networks=(ipaddress.ip_network("192.0.2.0/24"),),
        signers={"example.com": (signer,)},
    )
    raw = (DEMO / "message.eml").read_bytes()
    headers, body = split_message(raw[raw.index(b"From: ") :])
    laptop = {"ip": "192.0.2.50", "helo": "laptop.example.com", "mail_from": "alice@example.com"}
    with caplog.at_level("INFO", logger="mailauth.milter"):
        exchange(settings, {**laptop, "headers": headers, "body": body, "queue_id": "4QSIGN"})
    (line,) = [r.getMessage() for r in caplog.records if "4QSIGN" in r.getMessage()]
    record = json.loads(line)
    assert record["signed"] == ["example.com:ed1:ed25519-sha256"]
    assert (record["client"], record["mail_from"], record["action"]) == (
        "192.0.2.50", "<alice@example.com>", "continue",
    )  # fmt: skip
