"""The hostile corpus (tests/hostile.py) and its benchmark: messages that parse, zones that
load, and, built small, messages that verify as the full-size ones are meant to; the
benchmark's DNS server and --help. No timing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailauth.dkim import KeyRecordError, parse_key_record
from mailauth.dns import DnsStatus, Resolver, RRType, ZoneResolver
from mailauth.message import Message
from mailauth.pipeline import Authenticator
from mailauth.results import ArcResult, DkimResult, DmarcResult, SpfResult, Verdict
from tests import hostile
from tests.dnsserver import LoopbackDnsServer, QuestionCounter, slow_dns_process

ROOT = Path(__file__).resolve().parent.parent
BUILDERS = {"ordinary": hostile.ordinary, **hostile.HOSTILE}


def dkim_results(verdict: Verdict) -> list[DkimResult]:
    assert verdict.dkim is not None
    return [outcome.result for outcome in verdict.dkim]


def spf_result(verdict: Verdict) -> SpfResult:
    assert verdict.spf is not None
    assert verdict.spf.mailfrom is not None
    return verdict.spf.mailfrom.result


def verify(case: hostile.Case) -> tuple[Verdict, ZoneResolver]:
    resolver = ZoneResolver.from_text(case.zone)
    authenticator = Authenticator("mx.example.org", resolver)
    verdict = authenticator.verify(
        case.message, ip=case.ip, helo=case.helo, mail_from=case.mail_from, now=hostile.NOW
    )
    return verdict, resolver


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_case_parses_and_its_zone_loads(name: str) -> None:
    case = BUILDERS[name]()
    assert case.name == name
    assert case.description
    message = Message.parse(case.message)
    assert message.author().domains == (case.mail_from.rpartition("@")[2],)
    assert ZoneResolver.from_text(case.zone).lookup(case.helo, RRType.TXT).texts


def test_cases_are_deterministic() -> None:
    hostile.ordinary.cache_clear()
    first = hostile.ordinary().message
    hostile.ordinary.cache_clear()
    assert hostile.ordinary().message == first


def test_all_zones_join_into_one_file_for_the_dns_server() -> None:
    server = LoopbackDnsServer(hostile.zone_file([build() for build in BUILDERS.values()]))
    for name, rdtype, rcode in [
        ("_dmarc.ordinary.test", "TXT", dns.rcode.NOERROR),
        ("m9.spf.hostile.test", "MX", dns.rcode.NOERROR),
        (".", "NS", dns.rcode.NOERROR),  # (the milter's reachability check)
        ("_dmarc.test", "TXT", dns.rcode.NXDOMAIN),
    ]:
        response = server.answer(dns.message.make_query(name, rdtype))  # (no threads started)
        assert response.rcode() == rcode
        assert bool(response.answer) == (rcode == dns.rcode.NOERROR)


def test_ordinary_passes_everything() -> None:
    verdict, _ = verify(hostile.ordinary())
    assert spf_result(verdict) is SpfResult.PASS
    assert dkim_results(verdict) == [DkimResult.PASS]
    assert verdict.dmarc is not None
    assert verdict.dmarc.result is DmarcResult.PASS
    assert 2000 <= len(hostile.ordinary().message) <= 4000


def test_decoy_chain_passes_with_its_real_keys() -> None:
    verdict, _ = verify(hostile.decoy_exponent_arc(sets=3, decoys=0))
    assert verdict.arc is not None
    assert verdict.arc.result is ArcResult.PASS
    assert dkim_results(verdict) == [DkimResult.PASS]


def test_decoys_sort_before_the_real_key_and_are_refused_for_their_exponent() -> None:
    case = hostile.decoy_exponent_arc(sets=2)
    lookup = ZoneResolver.from_text(case.zone).lookup("s2._domainkey.arc.hostile.test", RRType.TXT)
    texts = sorted(lookup.texts)
    assert len(texts) == 4  # MAX_KEY_RECORDS
    for decoy in texts[:3]:  # a 3000-bit exponent: one check would cost ~15 ms
        with pytest.raises(KeyRecordError, match=r"RSA public exponent a 30[0-9][0-9]-bit number"):
            parse_key_record(decoy)
    real = parse_key_record(texts[3]).key
    assert isinstance(real, rsa.RSAPublicKey) and real.public_numbers().e == 65537
    assert real.key_size == hostile.DECOY_MODULUS_BITS  # (signatures as long)
    verdict, _ = verify(case)  # the decoys are skipped: the chain passes on its real keys
    assert verdict.arc is not None and verdict.arc.result is ArcResult.PASS


def test_many_l_bodies_signatures_pass_with_distinct_lengths() -> None:
    verdict, _ = verify(hostile.many_l_bodies(body_size=20_000, signatures=3))
    assert dkim_results(verdict) == [DkimResult.PASS] * 3
    lengths = {d.body_length for d in verdict.dkim or ()}
    assert len(lengths) == 3
    assert verdict.arc is not None
    assert verdict.arc.result is ArcResult.PASS


def test_big_aar_chain_passes() -> None:
    case = hostile.big_aar_chain(sets=3, aar_size=4096)
    verdict, _ = verify(case)
    assert verdict.arc is not None
    assert verdict.arc.result is ArcResult.PASS
    fields = Message.parse(case.message).get_all("ARC-Authentication-Results")
    assert len(fields) == 3
    assert all(len(f.raw) >= 4096 for f in fields)


def test_spf_tree_asks_every_host_for_both_identities() -> None:
    verdict, resolver = verify(hostile.spf_tree(terms=2, hosts=3))
    assert spf_result(verdict) is SpfResult.FAIL
    a_queries = [q for q in resolver.queries if q.rdtype is RRType.A]
    # HELO and MAIL FROM, 2 mx: terms of 3 hosts (side by side, each its own questions)
    assert len(a_queries) == 2 * 2 * 3


def test_the_full_spf_tree_is_cut_by_the_spf_budget() -> None:
    verdict, resolver = verify(hostile.spf_tree())  # 111 questions for each identity
    assert spf_result(verdict) is SpfResult.TEMPERROR
    assert (
        verdict.spf is not None and "SPF: more than 40 DNS queries" in verdict.spf.mailfrom.reason
    )
    assert len(resolver.queries) <= 40 + 20 + 20  # MAIL FROM, HELO, the other methods


def test_many_signatures_verifies_the_real_ones_and_caps_the_rest() -> None:
    case = hostile.many_signatures(count=50)
    assert len(Message.parse(case.message).get_all("DKIM-Signature")) == 50
    verdict, _ = verify(case)  # (the cap: 10, the real ones on top)
    assert dkim_results(verdict) == [DkimResult.PASS] * 10 + [DkimResult.POLICY]


def test_bench_hostile_help() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_hostile.py"), "--help"]
    run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    for option in ("--rate", "--hostile-rate", "--seconds", "--connections", "--quick"):
        assert option in run.stdout
    assert "--verify-cpu" in run.stdout


def test_benchmark_dns_server_answers_large_records_over_tcp_and_counts() -> None:
    questions = QuestionCounter()
    zone = hostile.zone_file([hostile.decoy_exponent_arc(sets=2)])
    with slow_dns_process(zone, 0.01, slow_under="hostile.test", questions=questions) as address:
        resolver = Resolver([address], edns_payload=1232)  # (on loopback: 4096 by default)
        lookup = resolver.lookup("s1._domainkey.arc.hostile.test", RRType.TXT)
        assert len(lookup.texts) == 4  # about 3.5 KB: truncated over UDP, then TCP
        assert resolver.lookup("nothing.ordinary.test", RRType.A).status is DnsStatus.NXDOMAIN
    assert (questions.udp, questions.tcp) == (2, 1)
    late = questions.lateness()  # (the two about hostile.test: over UDP, then TCP)
    assert late.answers == 2 and 0 <= late.seconds <= 2 * late.worst and late.worst < 1


def test_the_benchmark_dns_server_says_how_late_its_delayed_answers_went() -> None:
    """bench_hostile prints it per phase: the hostile names' DNS was as slow as stated."""
    questions = QuestionCounter()
    zone = hostile.zone_file([hostile.decoy_exponent_arc(sets=1)])
    with slow_dns_process(zone, 0.01, slow_under="hostile.test", questions=questions) as address:
        resolver = Resolver([address])
        resolver.lookup("nothing.hostile.test", RRType.A)
        start = questions.restart_worst()
        assert start.answers == 1 and start.worst == 0.0
        for name in ("a.hostile.test", "b.hostile.test", "c.ordinary.test"):
            resolver.lookup(name, RRType.A)
        since = questions.lateness(since=start)
    assert since.answers == 2  # (the answer about ordinary.test was not delayed)
    assert questions.pid.value not in (0, os.getpid())  # (for its schedstat: bench_hostile)
    pooled, now = since + start, questions.lateness()
    assert (pooled.answers, pooled.worst, pooled.over_5ms) == (now.answers, now.worst, now.over_5ms)
    assert pooled.seconds == pytest.approx(now.seconds)
