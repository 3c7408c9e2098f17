from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from mailauth import Authenticator, SpfResult
from mailauth.authresults import render_received_spf
from mailauth.cli import main
from mailauth.dns import ZoneResolver
from mailauth.results import SpfOutcome
from mailauth.spf import check_spf, check_spf_identity, client_ip, is_helo_domain

SPF = Path(__file__).resolve().parent.parent / "fixtures" / "spf"


@pytest.fixture
def zone() -> ZoneResolver:
    return ZoneResolver.from_files([SPF / "spf.zone"])


@pytest.mark.parametrize(
    "result", ["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
)
def test_verify_json_reports_each_result_and_helo(
    result: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "verify",
        str(SPF / "message.eml"),
        "--ip",
        "192.0.2.10",
        "--helo",
        "mail.spf.test",
        "--mail-from",
        f"user@{result}.spf.test",
        "--dns-zone",
        str(SPF / "spf.zone"),
        "--authserv-id",
        "mx.example.org",
        "--json",
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spf"]["result"] == result
    assert data["spf"]["domain"] == f"{result}.spf.test"
    assert data["spf"]["helo"] == {
        "result": "pass",
        "domain": "mail.spf.test",
        "sender": "postmaster@mail.spf.test",
        "reason": "matched a",
        "explanation": "",
    }
    header = data["authentication_results"].replace("\r\n", "")
    assert f"spf={result} " in header
    assert f"smtp.mailfrom=user@{result}.spf.test" in header
    assert "spf=pass smtp.helo=mail.spf.test" in header
    received = data["received_spf"].replace("\r\n", "")
    assert received.startswith(f"Received-SPF: {result} (mx.example.org: ")


def test_fail_carries_the_expanded_explanation(zone: ZoneResolver) -> None:
    # RFC 7208 6.2: exp= is expanded with the macros of section 7
    outcome = check_spf_identity(zone, ip="192.0.2.10", sender="u@fail.spf.test", helo="h.test")
    assert outcome.result is SpfResult.FAIL
    assert (
        outcome.explanation == "192.0.2.10 is not one of fail.spf.test's designated mail servers."
    )


def test_rfc7208_4_5_two_records_are_a_permerror(zone: ZoneResolver) -> None:
    outcome = check_spf_identity(zone, ip="192.0.2.10", sender="u@permerror.spf.test", helo="x")
    assert outcome.result is SpfResult.PERMERROR
    assert "2 SPF records at permerror.spf.test" in outcome.reason


def test_rfc7208_2_6_7_dns_timeout_is_temperror(zone: ZoneResolver) -> None:
    outcome = check_spf_identity(zone, ip="192.0.2.10", sender="u@temperror.spf.test", helo="x")
    assert outcome.result is SpfResult.TEMPERROR
    assert "timeout" in outcome.reason


def test_rfc7208_5_ipv4_mapped_client_is_evaluated_as_ipv4(zone: ZoneResolver) -> None:
    mapped = check_spf_identity(zone, ip="::ffff:192.0.2.10", sender="u@pass.spf.test", helo="x")
    assert mapped.result is SpfResult.PASS
    v6 = check_spf_identity(zone, ip="2001:db8::25", sender="u@v6.spf.test", helo="x")
    assert v6.result is SpfResult.PASS
    other = check_spf_identity(zone, ip="2001:db9::25", sender="u@v6.spf.test", helo="x")
    assert other.result is SpfResult.FAIL


def test_rfc4007_zone_index_is_not_part_of_the_client_address(zone: ZoneResolver) -> None:
    # A link-local client seen as fe80::25%eth0: the zone names our interface. It used to
    # reach pyspf as written and give permerror ("Only hex digits permitted").
    scoped = check_spf_identity(zone, ip="2001:db8::25%eth0", sender="u@v6.spf.test", helo="x")
    assert scoped.result is SpfResult.PASS
    assert str(client_ip(" fe80::1%eth0 ")) == "fe80::1"
    assert str(client_ip("::ffff:192.0.2.1")) == "192.0.2.1"


def test_rfc7208_2_4_null_reverse_path_checks_postmaster_at_helo(zone: ZoneResolver) -> None:
    check = check_spf(zone, ip="192.0.2.10", helo="mail.spf.test", mail_from="")
    assert check.mailfrom.result is SpfResult.PASS
    assert check.mailfrom.sender == "postmaster@mail.spf.test"


@pytest.mark.parametrize(
    ("helo", "checked"),
    [
        ("mail.spf.test", True),
        ("[192.0.2.10]", False),
        ("192.0.2.10", False),
        ("[IPv6:2001:db8::1]", False),
        ("localhost", False),
        ("", False),
        ("mail.spf.test.", True),
    ],
)
def test_rfc7208_2_3_helo_checked_only_when_a_domain(helo: str, checked: bool) -> None:
    assert is_helo_domain(helo) is checked


def test_helo_address_literal_is_none_with_a_reason(zone: ZoneResolver) -> None:
    check = check_spf(zone, ip="192.0.2.10", helo="[192.0.2.10]", mail_from="a@pass.spf.test")
    assert check.mailfrom.result is SpfResult.PASS
    assert check.helo is not None and check.helo.result is SpfResult.NONE
    assert "not a domain name" in check.helo.reason
    null = check_spf(zone, ip="192.0.2.10", helo="[192.0.2.10]", mail_from="")
    assert null.mailfrom.result is SpfResult.NONE
    assert check_spf(zone, ip="192.0.2.10", helo="", mail_from="a@pass.spf.test").helo is None


@pytest.mark.parametrize(
    ("mail_from", "result"),
    [
        ("a@", SpfResult.NONE),
        ("@", SpfResult.NONE),
        ("pass.spf.test", SpfResult.PASS),  # RFC 7208 4.3: no local-part -> postmaster
        ("postmaster", SpfResult.NONE),  # a local-part alone: no domain (RFC 5321 4.1.2)
        ('"odd local;part"@pass.spf.test', SpfResult.PASS),
        ("a@b@pass.spf.test", SpfResult.NONE),
        # RFC 5321 4.1.2: an "@" in a quoted local-part is the local-part's (it gave none,
        # a way around a -all's fail in the header fields)
        ('"x@y"@pass.spf.test', SpfResult.PASS),
        ('"x@y\\"@pass.spf.test', SpfResult.NONE),  # (its closing quote escaped)
        ("a@" + "x" * 64 + ".spf.test", SpfResult.NONE),  # RFC 7208 4.3: malformed domain
        ("a@nodots", SpfResult.NONE),
        ("a@bad..spf.test", SpfResult.NONE),
        ("a@\r\nInjected: yes", SpfResult.NONE),
        ("a@bücher.example", SpfResult.NONE),
    ],
)
def test_odd_mail_from_gives_a_precise_result(
    zone: ZoneResolver, mail_from: str, result: SpfResult
) -> None:
    check = check_spf(zone, ip="192.0.2.10", helo="mail.spf.test", mail_from=mail_from)
    assert check.mailfrom.result is result


def test_a_local_part_alone_is_not_read_as_a_domain(zone: ZoneResolver) -> None:
    """MAIL FROM:<postmaster> was checked, and written, as postmaster@postmaster."""
    check = check_spf(zone, ip="192.0.2.10", helo="mail.spf.test", mail_from="postmaster")
    assert (check.mailfrom.domain, check.mailfrom.sender) == ("", "postmaster")
    assert "no domain" in check.mailfrom.reason
    verdict = Authenticator("mx.example.org", zone).verify(
        b"From: a@b.test\r\n\r\n", ip="192.0.2.10", mail_from="<postmaster>"
    )
    assert "postmaster@postmaster" not in verdict.authentication_results
    assert "smtp.mailfrom=postmaster" in verdict.authentication_results


def test_bad_ip_is_a_value_error(zone: ZoneResolver) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        check_spf_identity(zone, ip="not-an-ip", sender="a@pass.spf.test", helo="x")
    with pytest.raises(ValueError, match="not an IP address"):
        Authenticator("mx.example.org", zone).verify(b"From: a@b.test\r\n\r\n", ip="300.1.1.1")


def test_concurrent_evaluations_keep_their_own_resolver() -> None:
    """No state outside the evaluation: threads evaluating with different resolvers never mix."""
    allow = ZoneResolver.from_text('$ORIGIN x.test.\n@ 60 IN TXT "v=spf1 +all"\n')
    deny = ZoneResolver.from_text('$ORIGIN x.test.\n@ 60 IN TXT "v=spf1 -all"\n')
    wrong: list[str] = []

    def run(resolver: ZoneResolver, expected: SpfResult) -> None:
        for _ in range(200):
            got = check_spf_identity(resolver, ip="192.0.2.1", sender="a@x.test", helo="h").result
            if got is not expected:
                wrong.append(str(got))

    threads = [
        threading.Thread(target=run, args=(resolver, expected))
        for resolver, expected in [(allow, SpfResult.PASS), (deny, SpfResult.FAIL)] * 2
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


@pytest.mark.parametrize(
    "hostile", ["a@b; x=y", "a\r\nX: y@example.com", 'q"uote@example.com', "(c)@example.com"]
)
def test_received_spf_values_cannot_inject(hostile: str) -> None:
    outcome = SpfOutcome(SpfResult.PERMERROR, "mailfrom", "example.com", hostile, reason=hostile)
    field = render_received_spf(outcome, ip="2001:db8::1", helo=hostile, receiver="mx.example.org")
    unfolded = field.replace("\r\n ", " ")
    assert "\r" not in unfolded and "\n" not in unfolded
    assert unfolded.count("receiver=mx.example.org;") == 1
    assert 'client-ip="2001:db8::1";' in unfolded


def test_pyspf_is_only_a_test_oracle() -> None:
    """The runtime (library, CLI, milter) never imports pyspf: it is in the test extra."""
    import subprocess
    import sys

    code = (
        "import sys, mailauth, mailauth.cli, mailauth.milter.server, mailauth.check; "
        "sys.exit('spf' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
