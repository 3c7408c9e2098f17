from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import mailauth
from mailauth import Authenticator, Message, MessageParseError, Verdict
from mailauth.dns import DnsResolver, Lookup, RRType, ZoneResolver
from mailauth.pipeline import make_context
from mailauth.plan import Plan
from mailauth.results import DmarcResult

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator("mx.example.org", ZoneResolver.from_files([DEMO / "example.com.zone"]))


def test_sync_and_async_give_the_same_verdict(authenticator: Authenticator) -> None:
    raw = (DEMO / "message.eml").read_bytes()
    kwargs = {
        "ip": "192.0.2.10",
        "helo": "mail.example.com",
        "mail_from": "alice@example.com",
        "now": 1_800_000_000.0,
    }
    sync = authenticator.verify(raw, **kwargs)  # type: ignore[arg-type]
    async_ = asyncio.run(authenticator.verify_async(raw, **kwargs))  # type: ignore[arg-type]
    assert sync == async_
    assert sync.authentication_results.startswith("Authentication-Results: mx.example.org;")
    assert set(sync.to_dict()) >= {"spf", "dkim", "dmarc", "arc", "authentication_results"}


@pytest.mark.parametrize("ip", ["nonsense", "", "192.0.2.300", "2001:db8::g"])
def test_bad_ip_is_a_value_error(authenticator: Authenticator, ip: str) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        authenticator.verify(b"From: a@example.com\r\n\r\n", ip=ip)


@pytest.mark.parametrize("now", [float("nan"), float("inf"), -1.0, 1e12])
def test_a_time_that_t_cannot_carry_is_a_value_error(
    authenticator: Authenticator, now: float
) -> None:
    """With NaN every comparison is false: an expired signature would pass. t= and x= are
    at most 12 digits (RFC 6376 3.5)."""
    raw = (DEMO / "message.eml").read_bytes()
    key = (DEMO / "demo.key.pem").read_bytes()
    with pytest.raises(ValueError, match="now must be a Unix time from 0 to 10"):
        authenticator.verify(raw, ip="192.0.2.10", now=now)
    with pytest.raises(ValueError, match="now must be a Unix time from 0 to 10"):
        mailauth.Signer("example.com", "demo", key).sign(raw, now=now)
    verdict = authenticator.verify(raw, ip="192.0.2.10", now=1_800_000_000)
    assert verdict.arc is not None
    with pytest.raises(ValueError, match="now must be a Unix time from 0 to 10"):
        mailauth.Sealer("example.com", "demo", key).seal(
            raw, authentication_results="mx.example.org; none", chain=verdict.arc, now=now
        )


def test_not_a_message_is_a_value_error(authenticator: Authenticator) -> None:
    with pytest.raises(MessageParseError):
        authenticator.verify(b"", ip="192.0.2.1")


def test_context_normalises_smtp_facts() -> None:
    context = make_context(
        b"From: a@example.com\r\n\r\n",
        ip=" ::ffff:192.0.2.1 ",
        helo=" mail.example.com ",
        mail_from="<alice@example.com>",
        now=5,
    )
    assert str(context.ip) == "192.0.2.1"  # RFC 7208 5: IPv4-mapped is IPv4
    scoped = make_context(
        b"From: a@example.com\r\n\r\n", ip="fe80::1%eth0", helo="", mail_from="", now=5
    )
    assert str(scoped.ip) == "fe80::1"  # RFC 4007: the zone index is ours, not the client's
    assert context.helo == "mail.example.com"
    assert context.mail_from == "alice@example.com"
    assert context.now == 5.0
    assert (
        make_context(
            b"From: a@x.example\r\n\r\n", ip="::1", helo="", mail_from="<>", now=None
        ).mail_from
        == ""
    )


@pytest.mark.parametrize("mail_from", ["jörg@bücher.example", "x@BÜCHER.example"])
def test_an_internationalised_mail_from_aligns_with_its_a_label(mail_from: str) -> None:
    # RFC 8616: U-labels are compared as A-labels. pyspf reports the U-label domain, and
    # DMARC compared it with the From domain's A-label: SPF passed, DMARC failed.
    zone = ZoneResolver.from_text(
        "$ORIGIN xn--bcher-kva.example.\n$TTL 300\n@ IN SOA ns h 1 1 1 1 1\n"
        '@ IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n'
    )
    message = "From: Jörg <jörg@bücher.example>\r\nSubject: x\r\n\r\nhi\r\n".encode()
    verdict = Authenticator("mx.example.org", zone).verify(
        message, ip="192.0.2.1", helo="mail.example.org", mail_from=mail_from
    )
    assert verdict.spf is not None and verdict.spf.mailfrom.domain == "xn--bcher-kva.example"
    assert verdict.dmarc is not None and verdict.dmarc.result is DmarcResult.PASS
    assert verdict.dmarc.spf_aligned


@pytest.mark.parametrize("authserv_id", ["", "a b", "x;y", "mx\r\n.example"])
def test_authserv_id_must_be_a_plain_value(authserv_id: str) -> None:
    with pytest.raises(ValueError, match="authserv-id"):
        Authenticator(authserv_id, ZoneResolver({}))


def test_public_api_is_curated() -> None:
    for name in mailauth.__all__:
        assert hasattr(mailauth, name), name
    assert sorted(mailauth.__all__) == mailauth.__all__
    assert {"Authenticator", "Verdict", "Message", "SpfResult", "DkimResult", "Signer"} <= set(
        mailauth.__all__
    )
    from mailauth import dns

    for name in dns.__all__:
        assert hasattr(dns, name), name


def test_a_message_fed_in_pieces_gets_the_same_verdict() -> None:
    """MessageIntake (the milter's path) hashes the body as it comes and keeps none of it."""
    from mailauth.arc import Sealer
    from mailauth.arc.verify import verify_arc
    from mailauth.dkim import public_key_record
    from mailauth.plan import run_plan
    from tests.dkim_helpers import RSA_KEY

    demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
    zone_text = (demo / "example.com.zone").read_text()
    record = public_key_record(RSA_KEY)
    zone_text += f'arc1._domainkey IN TXT "{record[:200]}" "{record[200:]}"\n'
    resolver = ZoneResolver.from_text(zone_text)
    raw = (demo / "message.eml").read_bytes()
    chain = run_plan(verify_arc(Message.parse(raw)), resolver)
    sealed = Sealer("example.com", "arc1", RSA_KEY).seal(
        raw, authentication_results="mx.example.org; arc=none", chain=chain, now=1_795_000_000
    )
    auth = Authenticator("mx.example.org", resolver)
    facts = {"ip": "192.0.2.10", "helo": "mail.example.com", "mail_from": "alice@example.com"}
    for message in (raw, sealed, sealed.replace(b"Hello Bob", b"Hello Eve")):
        whole = auth.verify(message, now=1_795_000_100, **facts)
        head, _, body = message.partition(b"\r\n\r\n")
        intake = auth.intake(now=1_795_000_100, **facts)
        intake.add_headers(head + b"\r\n")
        for start in range(0, len(body), 7):
            intake.add_body(body[start : start + 7])
        streamed = asyncio.run(intake.verdict())
        assert streamed == whole
        assert streamed.arc is not None
    assert whole.arc is not None and whole.arc.result == "fail"  # the changed body


def test_intake_with_spf_done_verifies_in_one_step_of_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The milter's case: SPF checked since MAIL FROM, keys and records at hand. The checks
    then take no turn of the loop (no task beside SPF, none per method), so no other
    connection's turn comes in between; the verdict is the whole message's."""
    from mailauth import plan

    monkeypatch.setattr(plan, "SLICE", 60.0)  # (a slow machine must not make it yield)
    demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
    raw = (demo / "message.eml").read_bytes()
    auth = Authenticator("mx.example.org", ZoneResolver.from_files([demo / "example.com.zone"]))
    facts = {"ip": "192.0.2.10", "helo": "mail.example.com", "mail_from": "alice@example.com"}
    whole = auth.verify(raw, now=1_796_000_000, **facts)
    head, _, body = raw.partition(b"\r\n\r\n")

    async def main() -> tuple[Verdict, list[str]]:
        order: list[str] = []
        spf = asyncio.ensure_future(auth.check_spf_async(**facts))
        await spf
        intake = auth.intake(now=1_796_000_000, **facts)
        intake.add_headers(head + b"\r\n")
        intake.add_body(body)

        async def other() -> None:
            order.append("other connection")

        waiting = asyncio.ensure_future(other())
        verdict = await intake.verdict(spf)
        order.append("verdict")
        await waiting
        return verdict, order

    verdict, order = asyncio.run(main())
    assert verdict == whole and verdict.dkim and verdict.dkim[0].result == "pass"
    assert order == ["verdict", "other connection"]


def test_intake_whose_checks_fail_at_once_leaves_the_callers_spf_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPF still under way and the signature checks failing in their first step (a bug, a
    MemoryError): the error comes out at once, and the SPF future, the caller's (a library
    user may share it), is neither awaited nor cancelled; the milter cancels its own with
    the message."""
    demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
    raw = (demo / "message.eml").read_bytes()
    auth = Authenticator("mx.example.org", ZoneResolver.from_files([demo / "example.com.zone"]))
    facts = {"ip": "192.0.2.10", "helo": "mail.example.com", "mail_from": "alice@example.com"}
    head, _, body = raw.partition(b"\r\n\r\n")

    def broken(*_: Any) -> Plan[Any]:
        raise RuntimeError("a bug")
        yield  # (a plan)

    monkeypatch.setattr(auth, "signature_checks", broken)

    async def main() -> bool:
        spf = asyncio.ensure_future(asyncio.sleep(30))
        intake = auth.intake(now=1_796_000_000, **facts)
        intake.add_headers(head + b"\r\n")
        intake.add_body(body)
        with pytest.raises(RuntimeError, match="a bug"):
            await intake.verdict(spf)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        alone = not spf.done()
        spf.cancel()
        return alone

    assert asyncio.run(main())


def test_spf_from_dns_and_from_the_cache_agree() -> None:
    """With the network resolver, SPF is a plan on the event loop (no worker thread) whether
    its answers come from DNS or from the cache; the results agree."""
    from tests.dnsserver import LoopbackDnsServer

    demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
    raw = (demo / "message.eml").read_bytes()
    with LoopbackDnsServer((demo / "example.com.zone").read_text()) as server:
        from mailauth.dns import Resolver

        auth = Authenticator("mx.example.org", Resolver([server.address], timeout=1, lifetime=3))

        def verify() -> Verdict:
            coroutine = auth.verify_async(
                raw, ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com"
            )
            return asyncio.run(coroutine)

        first = verify()
        asked = len(server.questions)
        second = verify()
        assert len(server.questions) == asked  # all from the cache
        assert first.spf == second.spf and first.spf is not None
        assert first.spf.mailfrom.result == "pass"


def test_spf_results_are_reused_while_their_dns_answers_are_valid() -> None:
    """The second message from the same client, HELO and sender reuses the SPF result, as
    soon as the first evaluation has seen the TTLs of its answers (from DNS or from the
    cache); it is evaluated again after at most 5 minutes, and asked of DNS again once the
    answers expire (their TTL is 3600 s here)."""
    from mailauth.dns import DnsCache, Resolver
    from tests.dnsserver import LoopbackDnsServer

    demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
    clock = [1000.0]
    cache = DnsCache(clock=lambda: clock[0])
    with LoopbackDnsServer((demo / "example.com.zone").read_text()) as server:
        resolver = Resolver([server.address], timeout=1, lifetime=3, cache=cache)
        auth = Authenticator("mx.example.org", resolver)

        def spf(sender: str = "alice@example.com") -> tuple[str, int, int]:
            check = asyncio.run(
                auth.check_spf_async(ip="192.0.2.10", helo="mail.example.com", mail_from=sender)
            )
            return str(check.mailfrom.result), len(server.questions), cache.hits

        envelope = {
            "ip": "192.0.2.10",
            "helo": "mail.example.com",
            "mail_from": "alice@example.com",
        }
        assert auth.remembered_spf(**envelope) is None
        result, asked, hits = spf()  # cold: DNS
        assert result == "pass" and asked == 3  # example.com TXT, mail.example.com TXT and A
        remembered = auth.remembered_spf(**{**envelope, "ip": "::ffff:192.0.2.10"})
        assert remembered is not None and remembered.mailfrom.result == "pass"  # same client
        assert spf() == (result, asked, hits)  # reused: not even the cache is asked
        assert spf("bob@example.com")[1:] == (asked, hits + 3)  # another sender: evaluated
        clock[0] += 301
        assert spf() == (result, asked, hits + 6)  # older than 5 minutes: evaluated again
        clock[0] += 3600
        assert spf()[1] > asked  # the answers expired: asked again


def test_a_reused_spf_result_expires_with_its_shortest_dns_answer() -> None:
    from mailauth.dns import DnsCache, Resolver
    from tests.dnsserver import LoopbackDnsServer

    demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
    zone = (demo / "example.com.zone").read_text().replace("$TTL 3600", "$TTL 100")
    clock = [1000.0]
    cache = DnsCache(clock=lambda: clock[0])
    with LoopbackDnsServer(zone) as server:
        auth = Authenticator(
            "mx.example.org", Resolver([server.address], timeout=1, lifetime=3, cache=cache)
        )

        def asked() -> int:
            coroutine = auth.check_spf_async(
                ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com"
            )
            assert asyncio.run(coroutine).mailfrom.result == "pass"
            return len(server.questions)

        assert asked() == 3
        assert asked() == 3  # reused
        clock[0] += 99
        assert asked() == 3  # still reused
        clock[0] += 2
        assert asked() == 6  # the answers are gone, and so is the result built on them


def test_dmarc_discovery_is_reused_for_an_author_domain_seen_moments_ago() -> None:
    """With the network resolver, the second message from the same Author Domain asks no
    DMARC question, not even of the cache, and gets the same verdict; after 5 minutes (or
    the shortest TTL of the walk's answers: 300 s for the NXDOMAIN at _dmarc.com, the
    zone's SOA minimum) the domain is walked again."""
    from mailauth.dns import DnsCache, Resolver
    from tests.dnsserver import LoopbackDnsServer

    class Recording(Resolver):
        asked: list[str]

        def lookup(self, name: str, rdtype: RRType) -> Lookup:
            self.asked.append(name)
            return super().lookup(name, rdtype)

    raw = (DEMO / "message.eml").read_bytes()
    clock = [1000.0]
    with LoopbackDnsServer((DEMO / "example.com.zone").read_text()) as server:
        resolver = Recording(
            [server.address], timeout=1, lifetime=3, cache=DnsCache(clock=lambda: clock[0])
        )
        resolver.asked = []
        auth = Authenticator("mx.example.org", resolver)

        def verify(sender: str) -> tuple[Verdict, list[str]]:
            del resolver.asked[:]
            verdict = auth.verify(raw, ip="192.0.2.10", helo="mail.example.com", mail_from=sender)
            return verdict, [n for n in resolver.asked if n.startswith("_dmarc.")]

        first, walked = verify("alice@example.com")
        assert first.dmarc is not None and first.dmarc.result == "pass"
        assert walked == ["_dmarc.example.com", "_dmarc.com"]
        assert verify("bob@example.com")[1] == []  # another envelope: DMARC from the memo
        second, walked = verify("alice@example.com")
        assert (second, walked) == (first, [])
        clock[0] += 301
        assert verify("alice@example.com")[1] == ["_dmarc.example.com", "_dmarc.com"]


def test_each_method_has_its_own_dns_budget() -> None:
    """Past its allotment a method's questions fail unasked: its result is temperror with a
    reason, and the other methods are unaffected (none can starve DMARC)."""
    from mailauth.pipeline import MessageLimits

    zone = ZoneResolver.from_files([DEMO / "example.com.zone"])
    raw = (DEMO / "message.eml").read_bytes()
    facts = {"ip": "192.0.2.10", "helo": "mail.example.com", "mail_from": "alice@example.com"}
    deep = raw.replace(b"From: Alice Example <alice@example.com>", b"From: <a@w.x.y.z.example.org>")
    assert deep != raw
    tight = Authenticator("mx.example.org", zone, limits=MessageLimits(dmarc_queries=3))
    verdict = tight.verify(deep, now=1_800_000_000, **facts)
    assert verdict.dmarc is not None and verdict.dmarc.result is DmarcResult.TEMPERROR
    assert "DMARC w.x.y.z.example.org: more than 3 DNS queries" in verdict.dmarc.reason
    assert verdict.spf is not None and str(verdict.spf.mailfrom.result) == "pass"
    roomy = Authenticator("mx.example.org", zone)
    verdict = roomy.verify(deep, now=1_800_000_000, **facts)
    assert verdict.dmarc is not None and verdict.dmarc.result is DmarcResult.NONE


LIST_DOMAIN = "lists.example.org"


def _list_message() -> tuple[bytes, dict[str, str]]:
    """A message From a p=reject domain, re-signed by a mailing list (its own d=, which does
    not align), and the DNS records: the author's policy and the list's key."""
    from mailauth.dkim import Signer, public_key_record
    from tests.dkim_helpers import MESSAGE, NOW, RSA_KEY

    signed = Signer(LIST_DOMAIN, "list1", RSA_KEY).sign(MESSAGE, now=NOW)
    records = {
        "_dmarc.example.com": "v=DMARC1; p=reject",
        f"list1._domainkey.{LIST_DOMAIN}": public_key_record(RSA_KEY),
    }
    return signed, records


def _list_verdict(raw: bytes, resolver: DnsResolver) -> Verdict:
    from mailauth.dmarc import DmarcLocalPolicy
    from mailauth.policy import trust_mailing_lists
    from tests.dkim_helpers import NOW

    local = DmarcLocalPolicy(overrides=(trust_mailing_lists([LIST_DOMAIN]),))
    authenticator = Authenticator("mx.example.net", resolver, dmarc_policy=local)
    return authenticator.verify(raw, ip="198.51.100.9", mail_from=f"bounce@{LIST_DOMAIN}", now=NOW)


@pytest.mark.parametrize("fault", ["timeout", "servfail", "silent", "truncate_tcp_refused"])
def test_a_trusted_list_whose_key_lookup_failed_is_not_rejected(fault: str) -> None:
    """--trusted-mailing-list lets the list's mail through when DMARC fails; when the list's
    own DKIM key lookup fails temporarily, whether it is the list is unknown: DMARC is
    temperror (on_error), not the author's p=reject. Zone pragmas and the wire."""
    from mailauth.dns import RRType
    from tests.dnsserver import LoopbackDnsServer, txt_zone

    raw, records = _list_message()
    key = f"list1._domainkey.{LIST_DOMAIN}"
    if fault in ("timeout", "servfail"):
        data = {(n, RRType.TXT): (300, (v.encode(),)) for n, v in records.items()}
        fine = _list_verdict(raw, ZoneResolver(data))
        del data[(key, RRType.TXT)]
        failing = _list_verdict(raw, ZoneResolver(data, faults={key: fault}))
    else:
        with LoopbackDnsServer(txt_zone(records)) as server:
            fine = _list_verdict(raw, server.resolver())
        with LoopbackDnsServer(txt_zone(records), faults={key: fault}) as server:
            failing = _list_verdict(raw, server.resolver())
    assert fine.dmarc is not None and failing.dmarc is not None
    assert (fine.dmarc.result, fine.dmarc.override) == (DmarcResult.FAIL, "mailing_list")
    assert fine.dmarc.disposition.value == "none"
    assert (failing.dmarc.result, failing.dmarc.disposition.value) == (
        DmarcResult.TEMPERROR,
        "none",
    )
    assert failing.dmarc.reason.startswith(
        f"mailing list {LIST_DOMAIN}: dkim=temperror header.d={LIST_DOMAIN} (key lookup failed: "
    )


@pytest.mark.parametrize(
    ("record", "kept"),
    [
        ("v=spf1 -all", True),  # a fail without exp=: nothing but DNS answers in it
        ("v=spf1 ptr -all", True),  # the PTR query's NXDOMAIN: a negative answer, cached
        ("v=spf1 -all exp=why.example.com", False),  # an explanation (it may use %{t})
        ("v=spf1 a:slow.example.com -all", False),  # a temporary failure: never cached
        ("v=spf1 -all exp=slow.example.com", False),  # no explanation, as exp= timed out
    ],
)
def test_which_spf_results_are_kept(record: str, kept: bool) -> None:
    # A result is kept only while evaluating again would give it.
    from mailauth.dns import Resolver
    from tests.test_spf_openspf import TimeoutDnsServer

    zone = (
        "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns h 1 1 1 1 300\n"
        f'@ IN TXT "{record}"\nwhy IN TXT "refused at %{{t}}"\n'
    )
    with TimeoutDnsServer(zone, {"slow.example.com"}) as server:
        auth = Authenticator(
            "mx.example.org", Resolver([server.address], timeout=0.2, lifetime=0.3)
        )
        envelope = {"ip": "192.0.2.10", "helo": "", "mail_from": "a@example.com"}
        first = asyncio.run(auth.check_spf_async(**envelope))
        assert first.mailfrom.result in ("fail", "temperror")
        assert (auth.remembered_spf(**envelope) is not None) is kept


def test_spf_explanations_use_the_verdicts_clock_and_authserv_id() -> None:
    # RFC 7208 7.3: %{t} is the time of the check (the caller's now, as for DKIM), %{r} the
    # receiving host (the authserv-id).
    zone = ZoneResolver.from_text(
        "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns h 1 1 1 1 300\n"
        '@ IN TXT "v=spf1 -all exp=why.example.com"\nwhy IN TXT "%{r} refused it at %{t}"\n'
    )
    verdict = Authenticator("mx.example.org", zone).verify(
        b"From: a@example.com\r\n\r\nhi\r\n",
        ip="192.0.2.10",
        mail_from="a@example.com",
        now=1_800_000_000,
    )
    assert verdict.spf is not None
    assert verdict.spf.mailfrom.explanation == "mx.example.org refused it at 1800000000"


def test_the_body_is_canonicalized_only_as_the_signatures_ask() -> None:
    """DKIM and ARC share one pass per canonicalization, and only the canonicalizations the
    DKIM-Signatures and ARC-Message-Signatures use run: a relaxed-only message is never
    canonicalized simple."""
    from mailauth.arc import Sealer
    from mailauth.dkim import Canonicalization, Signer
    from tests.dkim_helpers import ED_KEY

    raw = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    signed = Signer("example.com", "ed1", ED_KEY).sign(raw, now=1_800_000_000)
    auth = Authenticator("mx.example.org", ZoneResolver({}))
    verdict = auth.verify(signed, ip="192.0.2.1", now=1_800_000_000)
    assert verdict.arc is not None
    sealed = Sealer("example.org", "arc1", ED_KEY).seal(
        signed, authentication_results="mx.example.org; none", chain=verdict.arc
    )
    streamed = auth.prepare(Message.parse(sealed).headers, 1_800_000_000)
    assert streamed.body.has(Canonicalization.RELAXED)
    assert not streamed.body.has(Canonicalization.SIMPLE)
    simple = Signer("example.com", "ed1", ED_KEY, canonicalization="simple/simple").sign(raw)
    streamed = auth.prepare(Message.parse(simple).headers, 1_800_000_000)
    assert streamed.body.has(Canonicalization.SIMPLE)
    assert not streamed.body.has(Canonicalization.RELAXED)


class _SlowNames:
    """A resolver whose answers about names under ``slow`` take ``delay`` seconds."""

    def __init__(self, zone: ZoneResolver, slow: str, delay: float) -> None:
        self.zone, self.slow, self.delay = zone, slow, delay

    def lookup(self, name: str, rdtype: RRType) -> Lookup:
        return self.zone.lookup(name, rdtype)

    async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
        if name.rstrip(".").endswith(self.slow):
            await asyncio.sleep(self.delay)
        return self.zone.lookup(name, rdtype)


BANK = """
$ORIGIN bank.example.
@ 300 IN SOA ns h 1 1 1 1 1
@ 300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
_dmarc 300 IN TXT "v=DMARC1; p=reject"
$ORIGIN evil.example.
@ 300 IN SOA ns h 1 1 1 1 1
helo 300 IN TXT "v=spf1 a:x1.evil.example a:x2.evil.example a:x3.evil.example -all"
"""
SPOOF = b"From: CEO <ceo@bank.example>\r\nTo: b@example.org\r\nSubject: pay\r\n\r\nNow.\r\n"


def test_a_slow_helo_domain_cannot_turn_the_mail_from_fail_into_temperror() -> None:
    """The HELO and MAIL FROM checks run side by side, each with its own budget: answers
    about the attacker's HELO name held just inside the timeout used to pace the MAIL FROM
    check (lock-step) until the shared 20 s ran out: spf=temperror, aligned, dmarc=temperror
    (a delivered spoof under on_error=accept)."""
    from mailauth.pipeline import MessageLimits
    from mailauth.results import Policy, SpfResult

    resolver = _SlowNames(ZoneResolver.from_text(BANK), "evil.example", 2.0)
    limits = MessageLimits(spf_seconds=0.5, dkim_seconds=0.5, arc_seconds=0.5)
    auth = Authenticator("mx.example.org", resolver, limits=limits)

    async def go() -> tuple[Verdict, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        verdict = await auth.verify_async(
            SPOOF, ip="198.51.100.7", helo="helo.evil.example", mail_from="ceo@bank.example"
        )
        return verdict, loop.time() - started

    verdict, took = asyncio.run(go())
    assert took < 1.5
    assert verdict.spf is not None and verdict.spf.helo is not None
    assert verdict.spf.mailfrom.result is SpfResult.FAIL
    assert verdict.spf.helo.result is SpfResult.TEMPERROR
    assert "SPF HELO: time limit" in verdict.spf.helo.reason
    assert verdict.dmarc is not None
    assert (verdict.dmarc.result, verdict.dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)


def test_other_author_domains_cannot_starve_or_hold_up_the_spoofed_one() -> None:
    """Each Author Domain is evaluated side by side with a budget of its own: deep or slow
    domains a sender adds to the From field time out or run out alone; the bank still
    fails, and the strictest failing policy applies."""
    from mailauth.pipeline import MessageLimits
    from mailauth.results import Policy

    raw = SPOOF.replace(
        b"From: CEO <ceo@bank.example>",
        b"From: a@a.b.c.d.e.f.evil.example, b@x.evil.example, CEO <ceo@bank.example>",
    )
    resolver = _SlowNames(ZoneResolver.from_text(BANK), "x.evil.example", 2.0)
    limits = MessageLimits(dmarc_queries=4, dmarc_seconds=0.5)
    auth = Authenticator("mx.example.org", resolver, limits=limits)

    async def go() -> tuple[Verdict, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        verdict = await auth.verify_async(raw, ip="198.51.100.7", mail_from="ceo@bank.example")
        return verdict, loop.time() - started

    verdict, took = asyncio.run(go())
    assert took < 1.5
    assert verdict.dmarc is not None
    assert (verdict.dmarc.result, verdict.dmarc.disposition) == (DmarcResult.FAIL, Policy.REJECT)
    assert verdict.dmarc.domain == "bank.example"


def test_limits_scale_to_a_shorter_deadline() -> None:
    from mailauth.pipeline import MessageLimits

    assert MessageLimits.within(30) == MessageLimits()
    short = MessageLimits.within(10)
    assert short.spf_seconds + short.dmarc_seconds <= 9
    assert short.spf_queries == MessageLimits().spf_queries


def test_an_spf_result_made_under_a_refusal_of_its_budget_is_not_remembered() -> None:
    """The SPF memo keeps a result while its DNS answers are valid; a result in which a
    budget gave up on a question (here the PTR question, past the time limit because the
    loop was busy) says nothing about the domain and must not be served to the next
    messages (it was a fail, kept for minutes)."""
    import time

    from mailauth.dns import Query, Resolver
    from mailauth.pipeline import MessageLimits
    from mailauth.results import SpfResult

    data = ZoneResolver.from_text(
        's.example. 300 IN TXT "v=spf1 a:x.s.example ptr -all"\n'
        "x.s.example. 300 IN A 203.0.113.9\nout.s.example. 300 IN A 192.0.2.10\n"
        "10.2.0.192.in-addr.arpa. 300 IN PTR out.s.example.\n"
    )

    class Stalled(Resolver):
        stall = True

        async def lookup_async(self, name: str, rdtype: RRType) -> Lookup:
            cached = self.cache.get(Query.of(name, rdtype))
            if cached is not None:
                return cached
            if name == "x.s.example" and self.stall:
                time.sleep(0.35)  # the event loop busy elsewhere, past the SPF time limit
            lookup = data.lookup(name, rdtype)
            self.cache.put(lookup)
            return lookup

    resolver = Stalled(["127.0.0.1"])
    auth = Authenticator("mx.test", resolver, limits=MessageLimits(spf_seconds=0.3))
    envelope = {"ip": "192.0.2.10", "helo": "", "mail_from": "u@s.example"}
    first = asyncio.run(auth.check_spf_async(**envelope))
    assert first.mailfrom.result is SpfResult.TEMPERROR
    assert auth.remembered_spf(**envelope) is None
    resolver.stall = False
    assert asyncio.run(auth.check_spf_async(**envelope)).mailfrom.result is SpfResult.PASS
