"""The milter's inbound options over its socket (mailauth.milter.inbound): multi-tier
trust (trusted authserv-ids, relays, the real client from the border's Received field, the
relay's SPF result), verifying trusted networks, OpenDMARC's ignore lists and header checks,
the authserv-id with the queue id, Received-SPF."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailauth.config_inbound import InboundOptions
from mailauth.message import Message
from mailauth.milter import Milter, MilterSettings
from mailauth.milter import inbound as rules
from mailauth.milter import protocol as p
from mailauth.pipeline import Authenticator
from mailauth.results import SpfResult
from tests.milterclient import MilterClient, split_message
from tests.test_milter import DEMO, DMARC, RESOLVER, SENDER, exchange, inserted_fields

RELAY = "10.1.0.25"
BORDER = "border.example.org"
# What the border Postfix writes on top of what it received (the real client: SPF passes
# for it, the demo zone's ip4:192.0.2.0/24, and fails for the relay's address).
BORDER_RECEIVED = (
    "Received",
    " from mail.example.com (unknown [192.0.2.10])\n\tby border.example.org (Postfix) with "
    "ESMTP id 4QB0RD\n\tfor <bob@example.org>; Sun, 29 Nov 2026 10:00:01 +0000 (UTC)",
)
OURS_RECEIVED = (
    "Received",
    " from border.example.org (border.example.org [10.1.0.25])\n\tby mx.example.org (Postfix) "
    "with ESMTP id 4QTEST; Sun, 29 Nov 2026 10:00:02 +0000 (UTC)",
)
TIERS = InboundOptions(
    trusted_authserv_ids=(BORDER,),
    relay_networks=(ipaddress.ip_network("10.1.0.0/24"),),
    relay_received_by=(BORDER,),
)
SPOOF: dict[str, Any] = {
    "ip": "198.51.100.7",
    "helo": "x.example",
    "mail_from": "alice@example.net",
}


def demo(*extra: tuple[str, str], **envelope: Any) -> dict[str, Any]:
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    return {**SENDER, **envelope, "headers": [*extra, *headers], "body": body}


def spoof(headers: list[tuple[str, str]] | None = None, **envelope: Any) -> dict[str, Any]:
    found, body = split_message((DMARC / "unauthenticated.eml").read_bytes())
    return {**SPOOF, **envelope, "headers": headers or found, "body": body}


def ours(replies: list[tuple[bytes, bytes]]) -> str:
    """Our Authentication-Results field, unfolded."""
    (found,) = [f for f in inserted_fields(replies) if f.startswith(b"Authentication-Results")]
    return found.decode().replace("\r\n", "")


def deleted(replies: list[tuple[bytes, bytes]]) -> list[tuple[bytes, int]]:
    found = []
    for command, data in replies:
        if command == p.CHGHEADER:
            (index,) = struct.unpack(">I", data[:4])
            found.append((data[4:].split(b"\0")[0], index))
    return found


# -- trusted authserv-ids and relays (RFC 8601 5, 7.1) --------------------------------------


def test_a_trusted_authserv_id_is_kept_from_a_relay_and_ours_is_not() -> None:
    fields = [
        ("Authentication-Results", f" {BORDER}; spf=pass smtp.mailfrom=alice@example.com"),
        ("Authentication-Results", " mx.example.org; dmarc=pass header.from=example.com"),
        ("Authentication-Results", f' "{BORDER}/4QB0RD"; dkim=pass header.d=example.com'),
    ]
    (replies,) = exchange(
        MilterSettings(inbound=TIERS), demo(OURS_RECEIVED, *fields, BORDER_RECEIVED, ip=RELAY)
    )
    assert deleted(replies) == [(b"Authentication-Results", 2)]  # ours only, on every path


def test_a_trusted_authserv_id_from_anyone_else_is_removed_like_ours() -> None:
    """The field claims our ADMD but did not come through the hop that vouches for it
    (and a border, which has no relays, removes every id of the ADMD from outside mail)."""
    fields = [
        ("Authentication-Results", f" {BORDER}; dmarc=pass header.from=bank.example"),
        ("Authentication-Results", " other.example; spf=pass"),
        ("Authentication-Results", f" {BORDER.upper()}.; dkim=pass header.d=bank.example"),
        ("Authentication-Results", f" {BORDER}/X1; dkim=pass header.d=bank.example"),
    ]
    (replies,) = exchange(MilterSettings(inbound=TIERS), demo(*fields))
    assert deleted(replies) == [(b"Authentication-Results", i) for i in (4, 3, 1)]


def test_the_real_client_comes_from_the_border_received_field() -> None:
    """From the relay (10.1.0.25, which example.com's SPF does not list), SPF is checked for
    the client the border's Received field names: pass, and smtp.remote-ip says so; a
    Received field the sender forged further down, naming the border too, is not read."""
    forged = (
        "Received",
        " from evil.example ([203.0.113.9]) by border.example.org; Sun, 29 Nov 2026 09:00 +0000",
    )
    message = demo(OURS_RECEIVED, BORDER_RECEIVED, forged, ip=RELAY, helo=BORDER)
    (replies,) = exchange(MilterSettings(inbound=TIERS), message)
    header = ours(replies)
    assert "spf=pass smtp.mailfrom=alice@example.com" in header
    assert "smtp.helo=mail.example.com" in header and "smtp.remote-ip=192.0.2.10" in header
    assert "dmarc=pass" in header


def test_the_real_client_is_not_read_from_the_senders_helo() -> None:
    """Postfix writes the sender's HELO as given: an address literal the sender chose (one
    example.com's SPF lists) comes before the border's own ``(NAME [ADDR])``; SPF is
    checked for the address in that comment, the one that connected to the border."""
    for helo in ("[192.0.2.10]", "x [192.0.2.10] by border.example.org"):
        received = (
            "Received",
            f" from {helo} (unknown [198.51.100.7])\n\tby border.example.org (Postfix) with "
            "ESMTP id 4QB0RE\n\tfor <bob@example.org>; Sun, 29 Nov 2026 10:00:01 +0000 (UTC)",
        )
        (replies,) = exchange(
            MilterSettings(inbound=TIERS), demo(OURS_RECEIVED, received, ip=RELAY, helo=BORDER)
        )
        header = ours(replies)
        assert "smtp.remote-ip=198.51.100.7" in header and "spf=fail" in header, header


def test_a_field_the_sender_wrote_is_not_read_when_the_border_wrote_none_by_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """REVIEW-INBOUND F4: the border's own field names it otherwise (its myhostname is not
    ``received_by``, another MTA); a field the sender placed below, naming the border and an
    address example.com's SPF lists, was the topmost one by that name and was read (SPF
    pass for an address the sender chose). Only the fields our hosts wrote are read now:
    the relay's own address is verified, with the warning."""
    elsewhere = (
        "Received",
        " from x.example (unknown [198.51.100.7])\n\tby mx1.border.example.org (Postfix) "
        "with ESMTP id 4QB0RF; Sun, 29 Nov 2026 10:00:01 +0000 (UTC)",
    )
    forged = (
        "Received",
        " from mail.example.com (unknown [192.0.2.10])\n\tby border.example.org (Postfix) "
        "with ESMTP id 4QB0RD; Sun, 29 Nov 2026 09:59:00 +0000 (UTC)",
    )
    for fields in ((elsewhere, forged), (OURS_RECEIVED, elsewhere, forged)):
        caplog.clear()
        message = demo(*fields, ip=RELAY, helo=BORDER)
        with caplog.at_level(logging.INFO, logger="mailauth.milter"):
            (replies,) = exchange(MilterSettings(inbound=TIERS), message)
        header = ours(replies)
        assert "smtp.remote-ip=10.1.0.25" in header and "spf=fail" in header, header
        assert "no Received field by border.example.org" in caplog.text


def test_a_content_filter_on_the_border_is_passed_over() -> None:
    """A filter that re-injects on the border (amavis: its own field by localhost, then the
    border's re-injection field from 127.0.0.1) puts loopback hops above the border's SMTP
    field: they are passed over, and the real client is the SMTP one (it was 127.0.0.1)."""
    reinjected = (
        "Received",
        " from localhost (localhost [127.0.0.1])\n\tby border.example.org (Postfix) with "
        "ESMTP id 4QB0RG; Sun, 29 Nov 2026 10:00:03 +0000 (UTC)",
    )
    filtered = (
        "Received",
        " from border.example.org ([127.0.0.1])\n\tby localhost (amavisd-new, port 10024) "
        "with ESMTP id abc; Sun, 29 Nov 2026 10:00:02 +0000 (UTC)",
    )
    message = demo(OURS_RECEIVED, reinjected, filtered, BORDER_RECEIVED, ip=RELAY, helo=BORDER)
    (replies,) = exchange(MilterSettings(inbound=TIERS), message)
    header = ours(replies)
    assert "spf=pass" in header and "smtp.remote-ip=192.0.2.10" in header, header


def test_the_received_field_is_read_only_from_a_relay() -> None:
    """An outside client that writes the border's Received field itself gets nothing: SPF
    is checked for its own address."""
    message = demo(BORDER_RECEIVED, ip="198.51.100.7", helo="x.example")
    (replies,) = exchange(MilterSettings(inbound=TIERS), message)
    header = ours(replies)
    assert "spf=fail" in header and "smtp.remote-ip=198.51.100.7" in header


def test_a_relay_without_the_border_field_is_verified_for_its_own_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="mailauth.milter"):
        (replies,) = exchange(MilterSettings(inbound=TIERS), demo(ip=RELAY, helo=BORDER))
    assert "smtp.remote-ip=10.1.0.25" in ours(replies) and "spf=fail" in ours(replies)
    assert "no Received field by border.example.org" in caplog.text


def test_the_log_line_names_the_real_client_and_the_relay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="mailauth.milter"):
        exchange(MilterSettings(inbound=TIERS), demo(BORDER_RECEIVED, ip=RELAY, helo=BORDER))
    (line,) = [json.loads(r.message) for r in caplog.records if r.message.startswith("{")]
    assert (line["client"], line["helo"], line["relay"]) == (
        "192.0.2.10",
        "mail.example.com",
        RELAY,
    )


def test_the_relay_spf_result_is_used_with_spf_upstream() -> None:
    """spf = "upstream": the relay's topmost trusted field gives SPF (here pass, although
    the relay's own address would fail); DKIM and DMARC are still ours."""
    options = InboundOptions(
        trusted_authserv_ids=(BORDER,),
        relay_networks=(ipaddress.ip_network("10.1.0.0/24"),),
        relay_spf="upstream",
    )
    upstream = ("Authentication-Results", f" {BORDER}; spf=pass smtp.mailfrom=alice@example.com")
    older = ("Authentication-Results", f" {BORDER}; spf=fail smtp.mailfrom=alice@example.com")
    (replies,) = exchange(
        MilterSettings(inbound=options), demo(upstream, older, ip=RELAY, helo=BORDER)
    )
    header = ours(replies)
    assert "spf=pass" in header and "dkim=pass" in header and "dmarc=pass" in header
    # From anyone else the same field is removed and not used.
    (replies,) = exchange(MilterSettings(inbound=options), demo(upstream, ip="198.51.100.7"))
    assert "spf=fail" in ours(replies) and deleted(replies) == [(b"Authentication-Results", 1)]


def test_upstream_spf_reads_only_this_envelope_result() -> None:
    raw = (
        f"Authentication-Results: {BORDER}; spf=pass smtp.mailfrom=bob@other.example\r\n"
        "From: a@example.com\r\n\r\n"
    ).encode()
    headers = Message.parse(raw).headers
    assert rules.upstream_spf(headers, (BORDER,), "alice@example.com") is None
    found = rules.upstream_spf(headers, (BORDER,), "bob@other.example")
    assert found is not None and found.mailfrom.result is SpfResult.PASS
    assert rules.upstream_spf(headers, ("elsewhere.example",), "bob@other.example") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            " from h.example (unknown [192.0.2.10]) by border.example.org",
            ("192.0.2.10", "h.example"),
        ),
        (
            " from h.example (x [IPv6:2001:db8::1]) by BORDER.example.org. id 1",
            ("2001:db8::1", "h.example"),
        ),
        (
            " from x.example ([192.0.2.7] helo=h.example) by border.example.org",
            ("192.0.2.7", "h.example"),
        ),
        (" from [192.0.2.7] (unknown [192.0.2.7]) by border.example.org", ("192.0.2.7", "")),
        (" from h.example (unknown [not-an-ip]) by border.example.org", ("", "")),
        (" from h.example by border.example.org", ("", "")),
        (" from h.example ([192.0.2.7]) by other.example", ("", "")),
        (
            " from [192.0.2.7] (port=4711 helo=h.example) by border.example.org",
            ("192.0.2.7", "h.example"),
        ),
        # The sender's HELO is written as given (Postfix joins its words): never read from it.
        (" from [6.6.6.6] (unknown [203.0.113.5]) by border.example.org", ("203.0.113.5", "")),
        (
            " from x [6.6.6.6] by border.example.org (unknown [203.0.113.5])\n\tby "
            "border.example.org (Postfix) with ESMTP id 1",
            ("203.0.113.5", "x"),
        ),
        (" from h.example ([192.0.2.7] helo=[6.6.6.6]) by border.example.org", ("192.0.2.7", "")),
    ],
)
def test_the_relayed_client_as_received_fields_write_it(
    value: str, expected: tuple[str, str]
) -> None:
    headers = Message.parse(f"Received:{value}\r\n\r\n".encode()).headers
    assert rules.relayed_client(headers, (BORDER,)) == expected


_HOPS = (ipaddress.ip_network("10.1.0.0/24"),)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # The border's field first (what Postfix shows its milter): read.
        ([" from h ([192.0.2.7]) by border.example.org", " from e ([6.6.6.6]) by x"],
         "192.0.2.7"),
        # The inner host's own field (Sendmail shows it), from a relay: passed over.
        ([" from b ([10.1.0.25]) by mx.example.org", " from h ([192.0.2.7]) by border.example.org"],
         "192.0.2.7"),
        # A field neither ours nor the border's ends the search: the sender's is never read.
        ([" from h ([192.0.2.7]) by other.example", " from e ([6.6.6.6]) by border.example.org"],
         ""),
        ([" by mx.example.org (Postfix, from userid 0)",
          " from e ([6.6.6.6]) by border.example.org"], ""),
        # Loopback hops (a content filter on the border): passed over.
        ([" from localhost ([127.0.0.1]) by border.example.org",
          " from b ([::1]) by localhost", " from h ([192.0.2.7]) by border.example.org"],
         "192.0.2.7"),
        # The border's field naming no address: nothing, not a field further down.
        ([" from h by border.example.org", " from e ([6.6.6.6]) by border.example.org"], ""),
    ],
)  # fmt: skip
def test_only_the_fields_our_hosts_wrote_are_read(values: list[str], expected: str) -> None:
    raw = "".join(f"Received:{value}\r\n" for value in values) + "\r\n"
    headers = Message.parse(raw.encode()).headers
    assert rules.relayed_client(headers, (BORDER,), _HOPS)[0] == expected


# -- verifying trusted networks --------------------------------------------------------------


def test_mail_from_trusted_networks_is_verified_when_asked() -> None:
    networks = (ipaddress.ip_network("192.0.2.0/24"),)
    (plain,) = exchange(MilterSettings(trusted_networks=networks), demo())
    assert not [c for c, _ in plain if c == p.INSHEADER]  # outbound: neither signed nor verified
    settings = MilterSettings(
        trusted_networks=networks, inbound=InboundOptions(verify_trusted_networks=True)
    )
    (replies,) = exchange(settings, demo())
    assert "spf=pass" in ours(replies) and "dmarc=pass" in ours(replies)


# -- OpenDMARC's ignore lists ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (InboundOptions(ignore_networks=(ipaddress.ip_network("198.51.100.0/24"),)), "network"),
        (InboundOptions(ignore_author_domains=("example.net",)), "author-domain"),
    ],
)
def test_an_ignored_message_gets_results_but_no_dmarc_disposition(
    options: InboundOptions, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    (refused,) = exchange(MilterSettings(reject_dmarc=True), spoof())
    assert refused[-1][0] == p.REPLYCODE
    with caplog.at_level(logging.INFO, logger="mailauth.milter"):
        (replies,) = exchange(MilterSettings(reject_dmarc=True, inbound=options), spoof())
    assert replies[-1][0] == p.CONTINUE and "dmarc=fail" in ours(replies)
    (line,) = [json.loads(r.message) for r in caplog.records if r.message.startswith("{")]
    assert (line["ignored"], line["action"], line["disposition"]) == (reason, "continue", "reject")


def test_a_mail_from_domain_is_ignored_only_once_spf_authenticates_it() -> None:
    """MAIL FROM is the sender's to write: naming a listed domain from an address its SPF
    does not list (SPF fails) leaves the spoof of example.net refused; from one it lists
    (SPF passes for example.com), the message is ignored."""
    options = InboundOptions(ignore_mail_from_domains=("example.com",))
    settings = MilterSettings(reject_dmarc=True, inbound=options)
    (refused,) = exchange(settings, spoof(mail_from="bounce@example.com"))
    assert refused[-1][0] == p.REPLYCODE
    (replies,) = exchange(settings, spoof(ip="192.0.2.10", mail_from="bounce@example.com"))
    assert replies[-1][0] == p.CONTINUE and "dmarc=fail" in ours(replies)


def test_an_author_domain_is_ignored_only_when_every_author_is() -> None:
    headers, _ = split_message((DMARC / "unauthenticated.eml").read_bytes())
    headers = [(n, v) for n, v in headers if n.lower() != "from"]
    headers.append(("From", " alice@example.net, eve@example.com"))
    options = InboundOptions(ignore_author_domains=("example.net",))
    (replies,) = exchange(MilterSettings(reject_dmarc=True, inbound=options), spoof(headers))
    assert replies[-1][0] == p.REPLYCODE  # example.com is not ignored


# -- RequiredHeaders and multi-valued From (RFC 5322 3.6) ------------------------------------


def _without(name: str, extra: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    headers, body = split_message((DEMO / "message.eml").read_bytes())
    kept = [(n, v) for n, v in headers if n.lower() != name.lower()]
    return {**SENDER, "headers": kept + (extra or []), "body": body}


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (_without("From"), b"550 5.6.0 A message must have exactly one From field"),
        (_without("Date"), b"550 5.6.0 A message must have exactly one Date field"),
        (
            _without("X", [("From", " eve@example.com")]),
            b"550 5.6.0 A message must have exactly one From field",
        ),
        (
            _without("X", [("Subject", " again")]),
            b"550 5.6.0 A message must have at most one Subject field",
        ),
        (
            _without("From", [("From", " Undisclosed:;")]),
            b"550 5.6.0 The From field has no domain",
        ),
    ],
)
def test_required_headers_refuses_what_rfc_5322_forbids(
    message: dict[str, Any], reply: bytes
) -> None:
    (replies,) = exchange(MilterSettings(inbound=InboundOptions(required_headers=True)), message)
    assert replies[-1][0] == p.REPLYCODE and replies[-1][1].startswith(reply)
    (default,) = exchange(None, message)  # off by default
    assert default[-1][0] == p.CONTINUE


@pytest.mark.parametrize(
    ("from_value", "mode", "refused"),
    [
        (" alice@example.com, bob@example.com", "reject-domains", False),
        (" alice@example.com, eve@example.net", "reject-domains", True),
        (" alice@example.com, bob@example.com", "reject", True),
        (" alice@example.com", "reject", False),
        (" alice@example.com, eve@example.net", "evaluate", False),
    ],
)
def test_multiple_authors(from_value: str, mode: str, refused: bool) -> None:
    message = _without("From", [("From", from_value)])
    options = InboundOptions(multiple_authors=mode)
    (replies,) = exchange(MilterSettings(inbound=options), message)
    if refused:
        assert replies[-1][0] == p.REPLYCODE and replies[-1][1].startswith(b"550 5.7.1 A From")
    else:
        assert replies[-1][0] == p.CONTINUE


# -- AuthservIDWithJobID, Received-SPF -------------------------------------------------------


def test_the_authserv_id_with_the_queue_id() -> None:
    forged = ("Authentication-Results", ' "mx.example.org/4QOTHER"; dmarc=pass')
    settings = MilterSettings(inbound=InboundOptions(authserv_id_with_queue_id=True))
    (replies,) = exchange(settings, {**demo(forged), "queue_id": "4QTEST"})
    assert ours(replies).startswith('Authentication-Results: "mx.example.org/4QTEST"; spf=pass')
    assert deleted(replies) == [(b"Authentication-Results", 1)]
    # A hostile queue id cannot break the field: only letters and digits are kept.
    (replies,) = exchange(settings, {**demo(), "queue_id": 'Q1"; dkim=pass\r\n'})
    assert ours(replies).startswith('Authentication-Results: "mx.example.org/Q1dkimpass"; ')


def test_received_spf_is_inserted_when_asked_and_ours_from_outside_removed() -> None:
    fields = [
        ("Received-SPF", " pass (mx.example.org: forged) client-ip=192.0.2.10;"),
        ("Received-SPF", " pass (other.example: kept) receiver=other.example;"),
        ("Received-SPF", ' pass (x) client-ip=192.0.2.10; receiver="MX.example.org";'),
    ]
    message = demo(*fields, helo='evil"; receiver=mx.example.org')
    (default,) = exchange(None, message)  # off: none inserted, the forged ones removed
    assert not [f for f in inserted_fields(default) if f.startswith(b"Received-SPF")]
    assert deleted(default) == [(b"Received-SPF", 3), (b"Received-SPF", 1)]
    settings = MilterSettings(inbound=InboundOptions(received_spf=True))
    (replies,) = exchange(settings, message)
    assert deleted(replies) == [(b"Received-SPF", 3), (b"Received-SPF", 1)]
    top = inserted_fields(replies)
    assert top[0].startswith(b"Authentication-Results:")  # ours on top, then Received-SPF
    received = top[1].decode()
    unfolded = received.replace("\r\n", "")
    assert unfolded.startswith("Received-SPF: pass (mx.example.org: domain of alice@example.com")
    assert 'helo="evil\\"; receiver=mx.example.org";' in unfolded  # quoted: one value
    assert unfolded.count("\r") == 0 and received.endswith("\r\n")
    assert "receiver=mx.example.org; identity=mailfrom" in unfolded


def test_a_received_spf_field_claiming_us_is_removed_when_we_write_none() -> None:
    """REVIEW-INBOUND F5: with received_spf off, a sender's ``Received-SPF: pass
    (mx.example.org: ...)`` stayed, the topmost one (RFC 7208 9.1: the receiver's goes
    above all others), for whatever reads it (a Sieve rule, OpenDMARC with SPFIgnoreResults
    false) to take as this host's. Removed now as a forged Authentication-Results field is:
    our id always, a trusted id unless a relay sent it; others' fields stay."""
    forged = [
        ("Received-SPF", " pass (mx.example.org: 192.0.2.10 is permitted) client-ip=6.6.6.6;"),
        ("Received-SPF", f" pass (x) receiver={BORDER}; identity=mailfrom"),
        ("Received-SPF", " Pass (mailfrom) identity=mailfrom; receiver=<UNKNOWN>"),
    ]
    settings = MilterSettings(inbound=TIERS)
    (outside,) = exchange(settings, spoof([*forged, *spoof()["headers"]]))
    assert deleted(outside) == [(b"Received-SPF", 2), (b"Received-SPF", 1)]
    assert "dmarc=fail" in ours(outside)
    (relayed,) = exchange(settings, demo(*forged, BORDER_RECEIVED, ip=RELAY, helo=BORDER))
    assert deleted(relayed) == [(b"Received-SPF", 1)]  # (the border's own id is kept)


def test_received_spf_receivers_are_read_from_pair_and_comment() -> None:
    claims = rules.claimed_by
    assert claims(b" pass (mx.example.org: x)", "mx.example.org", (), True) == rules.OURS
    assert claims(b' none receiver="border.example.org";', "mx", (BORDER,), True) == rules.TRUSTED
    assert claims(b" none receiver=elsewhere.example;", "mx.example.org", (), True) is None


def test_an_ignored_network_is_not_refused_for_its_header() -> None:
    """As OpenDMARC's IgnoreHosts: mail from an ignored network is not looked at."""
    options = InboundOptions(
        required_headers=True, ignore_networks=(ipaddress.ip_network("192.0.2.0/24"),)
    )
    (replies,) = exchange(MilterSettings(inbound=options), _without("Date"))
    assert replies[-1][0] == p.CONTINUE and "dmarc=pass" in ours(replies)
    options = InboundOptions(required_headers=True, ignore_author_domains=("example.com",))
    (replies,) = exchange(MilterSettings(inbound=options), _without("Date"))
    assert replies[-1][0] == p.REPLYCODE  # an ignored domain's is


def test_no_received_spf_of_ours_for_a_relay_spf_result() -> None:
    """spf = "upstream": the SPF result is the relay's, not an evaluation of ours, so no
    Received-SPF field of ours claims it."""
    options = InboundOptions(
        trusted_authserv_ids=(BORDER,),
        relay_networks=(ipaddress.ip_network("10.1.0.0/24"),),
        relay_spf="upstream",
        received_spf=True,
    )
    upstream = ("Authentication-Results", f" {BORDER}; spf=pass smtp.mailfrom=alice@example.com")
    (replies,) = exchange(MilterSettings(inbound=options), demo(upstream, ip=RELAY))
    assert [f[:22] for f in inserted_fields(replies)] == [b"Authentication-Results"]
    assert "spf=pass" in ours(replies)


def test_verifying_trusted_networks_spares_authenticated_senders() -> None:
    """Submission (an SMTP-authenticated sender, ``{auth_authen}``) stays outbound."""
    settings = MilterSettings(
        trusted_networks=(ipaddress.ip_network("192.0.2.0/24"),),
        inbound=InboundOptions(verify_trusted_networks=True),
    )

    async def go() -> list[tuple[bytes, bytes]]:
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        await client.send(p.MACRO, p.MAIL + b"{auth_authen}\0alice\0")
        replies = await client.message(**demo())
        await client.close()
        server.close()
        return replies

    assert not [c for c, _ in asyncio.run(go()) if c == p.INSHEADER]


def test_a_relay_without_an_spf_result_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    options = InboundOptions(
        trusted_authserv_ids=(BORDER,),
        relay_networks=(ipaddress.ip_network("10.1.0.0/24"),),
        relay_received_by=(BORDER,),
        relay_spf="upstream",
    )
    upstream = ("Authentication-Results", f" {BORDER}; dkim=pass header.d=example.com")
    with caplog.at_level(logging.INFO, logger="mailauth.milter"):
        (replies,) = exchange(
            MilterSettings(inbound=options), demo(upstream, BORDER_RECEIVED, ip=RELAY)
        )
    assert "spf=pass" in ours(replies)  # checked for the Received field's client
    assert "no SPF result from a trusted relay's field: checked for the Received" in caplog.text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.text(max_size=200))
def test_the_rules_take_any_field_without_an_exception(value: bytes, text: str) -> None:
    """Hostile values: an answer (or none), never an exception."""
    assert rules.claimed_by(value, "mx.example.org", (BORDER,)) in (None, rules.OURS, rules.TRUSTED)
    assert rules.claimed_by(value, "mx.example.org", (BORDER,), True) in (
        None,
        rules.OURS,
        rules.TRUSTED,
    )
    raw = (
        b"Received: "
        + value.replace(b"\r", b"").replace(b"\n", b" ")
        + b" by border.example.org\r\n"
    )
    raw += (
        f"Authentication-Results: {BORDER}; {text}".encode()
        .replace(b"\r", b"")
        .replace(b"\n", b" ")
        + b"\r\nFrom: a@example.com\r\n\r\n"
    )
    headers = Message.parse(raw).headers
    ip, _ = rules.relayed_client(headers, (BORDER,))
    assert ip == "" or ipaddress.ip_address(ip)
    rules.upstream_spf(headers, (BORDER,), "a@example.com")


def test_long_hostile_fields_cost_little() -> None:
    import time

    value = b" from x (" + b"[" * 500_000 + b") by border.example.org"
    spf = b' pass receiver="' + b"receiver=" * 100_000
    started = time.perf_counter()
    headers = Message.parse(b"Received:" + value + b"\r\n\r\n").headers
    assert rules.relayed_client(headers * 200, (BORDER,)) == ("", "")
    assert rules.claimed_by(spf, "mx.example.org", (), True) is None
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "spf=pass (sender IP is 192.0.2.10; (nested) ok) smtp.mailfrom=alice@example.com"
            " smtp.helo=mail.example.com; dkim=pass header.d=example.com",
            ("pass", "alice@example.com", "helo:pass"),
        ),
        (
            " spf = softfail\r\n smtp.mailfrom = alice@example.com",
            ("softfail", "alice@example.com", ""),
        ),
        ('spf=fail smtp.mailfrom="a;b"@example.com', ("fail", "a;b@example.com", "")),
        ("dkim=pass header.d=example.com; spf=none smtp.helo=x.example", None),
        ("spf=bogus smtp.mailfrom=alice@example.com", None),
        ("spf=pass smtp.mailfrom=alice@example.com (", ("pass", "alice@example.com", "")),
    ],
)
def test_the_relay_spf_result_as_fields_write_it(
    value: str, expected: tuple[str, str, str] | None
) -> None:
    raw = f"Authentication-Results: {BORDER} 1; {value}\r\n\r\n".encode()
    found = rules.upstream_spf(Message.parse(raw).headers, (BORDER,), "<alice@example.com>")
    if expected is None:
        assert found is None
        return
    assert found is not None
    helo = f"helo:{found.helo.result}" if found.helo else ""
    assert (str(found.mailfrom.result), found.mailfrom.sender, helo) == expected
    assert found.mailfrom.reason == f"from {BORDER}"


def test_a_heavy_relayed_message_is_checked_in_a_worker_for_the_real_client() -> None:
    """(mailauth.milter.offload) A heavy message from a relay goes to a worker process with
    the client the border's Received field names, as on the event loop."""
    from mailauth.milter.offload import Offloader
    from tests.test_milter_offload import _decoys, worker_authenticator

    pool = Offloader(worker_authenticator, workers=1)
    message = demo(BORDER_RECEIVED, *_decoys(6), ip=RELAY, helo=BORDER)

    async def go() -> list[tuple[bytes, bytes]]:
        pool.start()
        settings = MilterSettings(inbound=TIERS)
        milter = Milter(Authenticator("mx.example.org", RESOLVER), settings, offloader=pool)
        server = await asyncio.start_server(milter.handle, "127.0.0.1", 0)
        client = await MilterClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.negotiate()
        replies = await client.message(**message)
        await client.close()
        server.close()
        return replies

    try:
        replies = asyncio.run(go())
        assert pool.offloaded == 1
    finally:
        pool.close()
    header = ours(replies)
    assert "spf=pass" in header and "smtp.remote-ip=192.0.2.10" in header
    assert "dmarc=pass" in header
