"""mailauth check: every seeded defect gives its finding id; a clean domain gives no failure;
the SPF lookup count matches a hand count; MTA-STS fetched from an HTTPS server on loopback."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailauth.check import Area, DomainReport, MtaStsFetcher, Status, check_domain, parse_policy
from mailauth.check.mtasts import mx_matches
from mailauth.check.records import COMMON_SELECTORS
from mailauth.check.spf import check_spf
from mailauth.cli import main
from mailauth.dns import MxRecord, Record, RRType, ZoneResolver
from mailauth.plan import run_plan, run_plan_async
from mailauth.results import SpfResult
from mailauth.spf import check_spf_identity

ZONE = Path(__file__).resolve().parent.parent / "fixtures" / "check" / "check.zone"


@pytest.fixture(scope="module")
def resolver() -> ZoneResolver:
    return ZoneResolver.from_files([ZONE])


def _ids(resolver: ZoneResolver, domain: str, *selectors: str) -> dict[str, Status]:
    report = run_plan(check_domain(domain, selectors=selectors), resolver)
    return {f.id: f.status for f in report.findings}


@pytest.mark.parametrize(
    ("domain", "selectors", "finding", "status"),
    [
        ("spf-missing.example", (), "spf.missing", Status.WARN),
        ("spf-multiple.example", (), "spf.multiple", Status.FAIL),
        ("spf-lookups.example", (), "spf.too-many-lookups", Status.FAIL),
        ("spf-void.example", (), "spf.too-many-void-lookups", Status.FAIL),
        ("spf-loop.example", (), "spf.include-loop", Status.FAIL),
        ("spf-passall.example", (), "spf.pass-all", Status.FAIL),
        ("spf-ptr.example", (), "spf.ptr", Status.WARN),
        ("spf-noall.example", (), "spf.no-all", Status.WARN),
        ("spf-syntax.example", (), "spf.syntax", Status.FAIL),
        ("spf-noinclude.example", (), "spf.include-no-spf", Status.FAIL),
        ("spf-big.example", (), "spf.answer-size", Status.WARN),
        ("dmarc-missing.example", (), "dmarc.missing", Status.FAIL),
        ("dmarc-weak.example", (), "dmarc.policy-none", Status.WARN),
        ("dmarc-weak.example", (), "dmarc.pct", Status.WARN),
        ("dmarc-weak.example", (), "dmarc.no-rua", Status.WARN),
        ("dmarc-external.example", (), "dmarc.external-report-unauthorized", Status.FAIL),
        ("dmarc-nopolicy.example", (), "dmarc.no-policy", Status.FAIL),
        ("dkim-weak.example", ("s1",), "dkim.key-1024", Status.WARN),
        ("dkim-bad.example", ("s2",), "dkim.key-invalid", Status.FAIL),
        ("dkim-revoked.example", ("s3",), "dkim.key-revoked", Status.WARN),
        ("dkim-unusable.example", ("s1",), "dkim.key-unusable", Status.FAIL),  # s=tlsrpt
        ("dkim-unusable.example", ("s2",), "dkim.key-unusable", Status.FAIL),  # h=sha1
        ("good.example", ("nope",), "dkim.selector-missing", Status.FAIL),
        ("good.example", ("a..b",), "dkim.selector-invalid", Status.FAIL),  # (was domain.too-long
        ("good.example", ("a..b",), "mx.ok", Status.PASS),  # for the whole report)
        ("good.example", ("bad sel",), "dkim.selector-invalid", Status.FAIL),
        ("mx-cname.example", (), "mx.cname", Status.FAIL),
        ("mx-noaddr.example", (), "mx.host-unresolvable", Status.FAIL),
        ("mx-null.example", (), "mx.null", Status.PASS),
        ("mx-nullmixed.example", (), "mx.null-mixed", Status.FAIL),  # (was mx.ip-literal)
        ("dmarc-missing.example", (), "mx.missing", Status.WARN),
        ("sts-bad.example", (), "mta-sts.record-syntax", Status.FAIL),
        ("tlsrpt-bad.example", (), "tls-rpt.syntax", Status.FAIL),
        ("bimi-bad.example", (), "bimi.syntax", Status.FAIL),
        ("spf-badname.example", (), "spf.bad-name", Status.FAIL),
        ("spf-redirect-macro.example", (), "spf.macro", Status.WARN),
        ("spf-tworedirects.example", (), "spf.syntax", Status.FAIL),  # RFC 7208 6: at most
        ("spf-twoexp.example", (), "spf.syntax", Status.FAIL),  # once
        ("spf-emptyredirect.example", (), "spf.syntax", Status.FAIL),
        ("spf-bareinclude.example", (), "spf.syntax", Status.FAIL),  # include needs ":domain"
        ("spf-emptya.example", (), "spf.syntax", Status.FAIL),
        ("spf-allvalue.example", (), "spf.syntax", Status.FAIL),
        ("spf-nodot.example", (), "spf.syntax", Status.FAIL),  # RFC 7208 7.1 domain-end
        ("spf-dualcidr.example", (), "spf.syntax", Status.FAIL),  # ip4 takes one length
        ("spf-badname.example", (), "mx.bad-name", Status.FAIL),
        ("spf-badname.example", (), "dmarc.missing", Status.FAIL),  # the audit went on
        ("mx-badname.example", (), "mx.bad-name", Status.FAIL),
        ("tlsrpt-ascii.example", (), "tls-rpt.syntax", Status.FAIL),  # not a URI (RFC 3986)
        ("tlsrpt-ext.example", (), "tls-rpt.ok", Status.PASS),  # (was tls-rpt.syntax)
        ("tlsrpt-tworua.example", (), "tls-rpt.syntax", Status.FAIL),  # RFC 8460 3: rua= once
        ("bimi-ascii.example", (), "bimi.syntax", Status.FAIL),
        # a lookup that failed temporarily is a DNS problem, not a missing record
        ("dns-faulty.example", ("s1",), "dkim.dns-error", Status.FAIL),  # (dkim.selector-missing)
        ("dns-faulty.example", (), "mx.dns-error", Status.FAIL),  # (mx.host-unresolvable)
        ("dns-faulty.example", (), "dmarc.dns-error", Status.FAIL),  # (skipped: dmarc.ok)
        ("dns-faulty.example", (), "mta-sts.dns-error", Status.FAIL),  # (mta-sts.missing)
        ("dns-faulty.example", (), "tls-rpt.dns-error", Status.FAIL),  # (tls-rpt.missing)
        ("dns-faulty.example", (), "bimi.dns-error", Status.FAIL),  # (bimi.missing)
    ],
)
def test_each_defect_has_its_finding(
    resolver: ZoneResolver, domain: str, selectors: tuple[str, ...], finding: str, status: Status
) -> None:
    found = _ids(resolver, domain, *selectors)
    assert found.get(finding) is status, found


def test_a_redirect_with_macros_is_not_asked_literally(resolver: ZoneResolver) -> None:
    # It used to be: "%{d}._spf..." was queried as written, and reported as a permerror.
    found = _ids(resolver, "spf-redirect-macro.example")
    assert "spf.include-no-spf" not in found and found.get("spf.ok") is Status.PASS, found


def test_a_well_configured_domain_has_no_failure(resolver: ZoneResolver) -> None:
    report = run_plan(check_domain("good.example", selectors=["s2026"]), resolver)
    assert not report.failed, [f for f in report.findings if f.status is Status.FAIL]
    ids = {f.id for f in report.findings}
    assert {"spf.ok", "dmarc.ok", "dkim.key-ok", "mx.ok", "tls-rpt.ok", "bimi.ok"} <= ids
    assert all(f.status is Status.PASS for f in report.findings)


def test_spf_lookup_count_matches_the_hand_count(resolver: ZoneResolver) -> None:
    """count.example (fixtures/check/check.zone), counted by hand per RFC 7208 4.6.4:

    count.example     a, mx, include:_a, include:_b                     4
    _a.count.example  a:mail.count.example, include:_c                  2
    _b.count.example  mx:count.example (ip4: costs nothing)             1
    _c.count.example  exists:%{i}... (counted, not followed), ptr       2
                                                                  total 9
    The three MX hosts' address lookups (twice: for mx and mx:count.example) are not terms.
    """
    report = run_plan(check_domain("count.example"), resolver)
    spf = report.details["spf"]
    assert (spf["dns_lookups"], spf["void_lookups"]) == (9, 0)
    tree = spf["tree"]
    assert [c["domain"] for c in tree["children"]] == ["_a.count.example", "_b.count.example"]
    assert tree["children"][0]["children"][0]["dns_lookups"] == 2


def test_json_output_schema_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["check", "good.example", "spf-passall.example", "--dns-zone", str(ZONE)]
    assert main([*args, "--no-fetch", "--json", "--selector", "s2026"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    reports = {r["domain"]: r for r in map(json.loads, lines)}
    assert set(reports) == {"good.example", "spf-passall.example"}
    good = reports["good.example"]
    assert good["status"] == "pass"
    assert good["spf"]["dns_lookups"] == 1 and good["spf"]["void_lookups"] == 0
    assert good["dmarc"]["policy"] == "reject"
    for finding in good["findings"]:
        assert set(finding) == {"area", "id", "status", "message", "fix"}
    assert (
        main(
            ["check", "good.example", "--dns-zone", str(ZONE), "--no-fetch", "--selector", "s2026"]
        )
        == 0
    )
    assert main(["check", "--dns-zone", str(ZONE)]) == 2


def test_domains_from_a_file_with_a_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "domains.txt"
    listing.write_text("# audit\ngood.example\nmx-null.example\n\nbimi-bad.example\n")
    args = ["check", "--from-file", str(listing), "--dns-zone", str(ZONE), "--no-fetch"]
    assert main([*args, "--progress", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "bimi.syntax" in captured.out and "good.example" in captured.out
    assert "3/3" in captured.err  # the progress bar


def test_worker_processes_give_the_same_reports(capsys: pytest.CaptureFixture[str]) -> None:
    domains = ["good.example", "spf-missing.example", "dkim-weak.example", "spf-loop.example"]
    args = ["check", *domains, "--dns-zone", str(ZONE), "--no-fetch", "--json"]
    reports = {}
    for jobs in ("1", "3"):
        assert main([*args, "--jobs", jobs]) == 1
        lines = capsys.readouterr().out.strip().splitlines()
        reports[jobs] = sorted(lines, key=lambda line: json.loads(line)["domain"])
    assert reports["1"] == reports["3"] and len(reports["3"]) == 4
    assert main([*args, "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert main(["check", *domains, "--dns-zone", str(ZONE), "--ca-file", "/nonexistent"]) == 2
    assert "cannot read --ca-file /nonexistent" in capsys.readouterr().err


def test_a_worker_error_or_a_worker_gone_is_one_error_line() -> None:
    import queue

    from mailauth.cli.audit import _drain
    from mailauth.cli.common import CliError

    results: queue.Queue[DomainReport | BaseException] = queue.Queue()
    results.put(CliError("DNS unreachable: no answer"))
    with pytest.raises(CliError, match="DNS unreachable"):
        list(_drain(results, 2, lambda: True))
    with pytest.raises(CliError, match="a worker ended before its domains were checked"):
        list(_drain(queue.Queue(), 1, lambda: False))


# --- MTA-STS over HTTPS on loopback -------------------------------------------------------


def _certificate(names: list[str]) -> tuple[bytes, bytes, bytes]:
    """A test CA and a server certificate for ``names``: (ca_pem, cert_pem, key_pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailauth test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


class _PolicyServer:
    """An HTTPS server on 127.0.0.1 answering what ``response`` says."""

    def __init__(self, tmp: Path, names: list[str]) -> None:
        ca, cert, key = _certificate(names)
        (tmp / "ca.pem").write_bytes(ca)
        (tmp / "cert.pem").write_bytes(cert + key)
        self.ca_file = str(tmp / "ca.pem")
        self.response: tuple[int, dict[str, str], bytes] = (200, {}, b"")
        self.drip = 0.0  # seconds between the body's bytes (0: all at once)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers, body = outer.response
                self.send_response(status)
                for name, value in {"Content-Type": "text/plain", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not outer.drip:
                    self.wfile.write(body)
                    return
                for octet in body:
                    try:
                        self.wfile.write(bytes([octet]))
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(outer.drip)

            def log_message(self, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tmp / "cert.pem"))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def policy_server(tmp_path: Path) -> Iterator[_PolicyServer]:
    server = _PolicyServer(tmp_path, ["mta-sts.good.example"])
    yield server
    server.server.shutdown()


POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.good.example\r\nmax_age: 86400\r\n"


@pytest.mark.parametrize(
    ("response", "finding", "status"),
    [
        ((200, {}, POLICY), "mta-sts.ok", Status.PASS),
        ((200, {}, POLICY.replace(b"mx1.good", b"*.other")), "mta-sts.mx-mismatch", Status.FAIL),
        ((200, {}, POLICY.replace(b"mx1.good.example", b"*")), "mta-sts.mx-mismatch", Status.FAIL),
        ((200, {}, POLICY.replace(b"enforce", b"testing")), "mta-sts.mode-testing", Status.WARN),
        ((200, {}, b"version: STSv1\nmode: sometimes\n"), "mta-sts.policy-syntax", Status.FAIL),
        (
            (301, {"Location": "https://elsewhere.example/"}, b""),
            "mta-sts.policy-fetch",
            Status.FAIL,
        ),
        ((404, {}, b"no"), "mta-sts.policy-fetch", Status.FAIL),
        ((200, {}, b"x" * 70_000), "mta-sts.policy-fetch", Status.FAIL),
        ((200, {"Content-Type": "text/html"}, POLICY), "mta-sts.policy-syntax", Status.FAIL),
    ],
)
def test_mta_sts_policy_fetched_over_https(
    policy_server: _PolicyServer,
    resolver: ZoneResolver,
    response: tuple[int, dict[str, str], bytes],
    finding: str,
    status: Status,
) -> None:
    policy_server.response = response
    fetcher = MtaStsFetcher(verify=policy_server.ca_file, port=policy_server.port, timeout=5)
    report = run_plan(check_domain("good.example", fetcher=fetcher), resolver)
    found = {f.id: f.status for f in report.findings if f.area == "mta-sts"}
    assert found.get(finding) is status, report.findings


def test_mta_sts_policy_sent_slowly_is_abandoned_at_the_timeout(
    policy_server: _PolicyServer, resolver: ZoneResolver
) -> None:
    # One byte every 0.2 s keeps each read within any per-read timeout; before one deadline
    # bounded the whole fetch, this took 14 s here (and a hostile server could go on forever).
    policy_server.response, policy_server.drip = (200, {}, POLICY), 0.2
    fetcher = MtaStsFetcher(verify=policy_server.ca_file, port=policy_server.port, timeout=1)
    started = time.monotonic()
    report = run_plan(check_domain("good.example", fetcher=fetcher), resolver)
    assert time.monotonic() - started < 5
    fetch = [f for f in report.findings if f.id == "mta-sts.policy-fetch"]
    assert fetch and "within 1 s" in fetch[0].message, report.findings


def test_mta_sts_certificate_for_another_name_is_refused(
    tmp_path: Path, resolver: ZoneResolver
) -> None:
    server = _PolicyServer(tmp_path, ["mta-sts.other.example"])
    server.response = (200, {}, POLICY)
    try:
        fetcher = MtaStsFetcher(verify=server.ca_file, port=server.port, timeout=5)
        report = run_plan(check_domain("good.example", fetcher=fetcher), resolver)
    finally:
        server.server.shutdown()
    fetch = [f for f in report.findings if f.id == "mta-sts.policy-fetch"]
    assert fetch and "certificate" in fetch[0].message.lower()


def test_policy_parsing_and_mx_patterns() -> None:
    policy, problems = parse_policy(POLICY.decode())
    assert problems == [] and policy["mode"] == "enforce" and policy["mx"] == ["mx1.good.example"]
    assert mx_matches("*.example.com", "mx.example.com")
    assert not mx_matches("*.example.com", "a.mx.example.com")  # one label only (RFC 8461 4.1)
    assert not mx_matches("*.example.com", "example.com")
    assert parse_policy("version: STSv1\nmode: enforce\nmax_age: 99999999999\n")[1]
    # RFC 8461 3.2 max_age is 1*10DIGIT, ASCII: these raised ValueError ("²", 5,000 digits)
    # or were read as 12 ("١٢", Arabic-Indic digits).
    for age in ("²", "9" * 5000, "١٢"):
        text = f"version: STSv1\nmode: none\nmax_age: {age}\n"
        assert any("max_age" in problem for problem in parse_policy(text)[1]), age


def test_a_closed_pipe_is_not_a_traceback() -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "mailauth", "check", "count.example", "spf-big.example"]
    command += ["--dns-zone", str(ZONE), "--no-fetch"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()  # like `| head -1`
        error = process.stderr.read()
        process.wait(timeout=30)
    assert b"Traceback" not in error


def test_common_selectors_are_probed_only_where_names_exist(resolver: ZoneResolver) -> None:
    def dkim_queries(domain: str) -> tuple[dict[str, Status], list[str]]:
        before = len(resolver.queries)
        report = run_plan(check_domain(domain), resolver)
        asked = [q.name for q in resolver.queries[before:] if "_domainkey" in q.name]
        return {f.id: f.status for f in report.findings if f.area == "dkim"}, asked

    # _domainkey.spf-missing.example does not exist: nothing below it can (RFC 8020).
    ids, asked = dkim_queries("spf-missing.example")
    assert ids == {"dkim.none-found": Status.WARN}
    assert asked == ["_domainkey.spf-missing.example"]
    report = run_plan(check_domain("spf-missing.example"), resolver)
    (none,) = [f for f in report.findings if f.id == "dkim.none-found"]
    assert none.message == "no DKIM key: _domainkey.spf-missing.example does not exist"
    # an empty non-terminal: the common selectors are asked, selector1 found
    ids, asked = dkim_queries("dkim-common.example")
    assert ids == {"dkim.key-1024": Status.WARN} and len(asked) > 10
    # a CNAME at _domainkey to a name that does not exist proves nothing about the names below
    ids, _ = dkim_queries("dkim-cname.example")
    assert ids == {"dkim.key-1024": Status.WARN}


@pytest.mark.parametrize("name", ["..", "a b.example", "-a-.example", "a_b.example", "x" * 64])
def test_a_name_that_is_no_mail_domain_is_one_finding(resolver: ZoneResolver, name: str) -> None:
    before = len(resolver.queries)
    report = run_plan(check_domain(name), resolver)
    assert [(f.id, f.status) for f in report.findings] == [("domain.invalid", Status.FAIL)]
    assert len(resolver.queries) == before  # nothing asked of DNS


def test_a_domain_too_long_for_its_record_names_is_one_finding(resolver: ZoneResolver) -> None:
    """Found by probing: a 249-octet domain is valid, _dmarc.<it> is not; the error used to
    end the whole run (every domain of a --from-file list) with one line."""
    long = ".".join(["a" * 61] * 3 + ["a" * 51]) + ".example.com"
    report = run_plan(check_domain(long), resolver)
    assert [(f.id, f.status) for f in report.findings] == [("domain.too-long", Status.FAIL)]
    assert "cannot exist in DNS" in report.findings[0].message
    selector = run_plan(check_domain("spf-missing.example", selectors=["s" * 63] * 4), resolver)
    assert [f.id for f in selector.findings] != ["domain.too-long"]  # 63 + 12 + 19 fits


def test_a_report_destination_whose_authorisation_name_is_too_long_lacks_it() -> None:
    destination = ".".join(["d" * 61] * 2 + ["x"]) + ".example"  # 133 octets
    domain = ".".join(["o" * 61] * 2) + ".example"  # 131: with destination, over 253
    zone = (
        f"$ORIGIN example.\n$TTL 300\n@ IN SOA ns h 1 7200 3600 1209600 300\n"
        f'_dmarc.{domain}. IN TXT "v=DMARC1; p=reject; rua=mailto:r@{destination}"\n'
    )
    report = run_plan(check_domain(domain), ZoneResolver.from_text(zone))
    (finding,) = [f for f in report.findings if f.id.startswith("dmarc.external-report")]
    assert (finding.id, finding.status) == ("dmarc.external-report-unauthorized", Status.FAIL)


# Hostile DNS data for every record the audit reads: pieces of each syntax, bad names,
# 8-bit octets, 5,000 digits. Each audit must end with findings in every area, and never
# with domain.too-long (the domain is short): that finding once hid the whole report when a
# record named something DNS cannot carry.
_PIECES = [
    b"v=spf1", b"v=DMARC1", b"v=STSv1", b"v=TLSRPTv1", b"v=BIMI1", b"v=DKIM1", b" ", b";", b"=",
    b":", b"!", b",", b"/", b"include:", b"a:", b"mx:", b"exists:", b"redirect=", b"ip4:",
    b"ip6:", b"-all", b"ptr", b"%{d}", b"p=", b"sp=", b"np=", b"rua=", b"mailto:", b"https://",
    b"t=", b"psd=", b"fo=", b"reject", b"none", b"k=rsa", b"id=", b"l=", b"x.example",
    b"a..b", b"\x80", b"\xff", b"\x00", b"\t", b"9" * 5000, b"-", b"*", b"@", b"\\", b"MIIB",
    "\u00fc".encode(), b"_", b"...", b"a" * 64, b"k", b"10",
]  # fmt: skip
_NAMES = [
    "t.example", "_dmarc.t.example", "_mta-sts.t.example", "_smtp._tls.t.example",
    "default._bimi.t.example", "_domainkey.t.example", "selector1._domainkey.t.example",
    "s1._domainkey.t.example", "x.example", "_report._dmarc.x.example",
]  # fmt: skip
_MX = ["mx.t.example", "", ".", "a..b", "\\200.t.example", "192.0.2.1", "x" * 70 + ".example"]
_TXT = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=10).map(b"".join)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    texts=st.dictionaries(st.sampled_from(_NAMES), st.lists(_TXT, min_size=1, max_size=3)),
    mx=st.lists(st.sampled_from(_MX), max_size=4),
    selectors=st.sampled_from([(), ("s1",)]),
)
def test_hostile_records_give_findings_not_a_hidden_report(
    texts: dict[str, list[bytes]], mx: list[str], selectors: tuple[str, ...]
) -> None:
    records: dict[tuple[str, RRType], tuple[int, list[Record]]] = {
        (name, RRType.TXT): (300, list(values)) for name, values in texts.items()
    }
    records[("t.example", RRType.MX)] = (300, [MxRecord(10, host) for host in mx])
    records[("mx.t.example", RRType.A)] = (300, ["192.0.2.1"])
    zone = ZoneResolver(records)
    report = run_plan(check_domain("t.example", selectors=selectors), zone)
    assert "domain.too-long" not in {f.id for f in report.findings}, report.findings
    assert len({f.area for f in report.findings}) >= 6, report.findings


# The audit against the verifier: a record that check_host() (as `mailauth verify` runs it)
# ends in permerror must not be called spf.ok. Both read records with the same parser
# (mailauth.spf.record). Left out: terms with macros and ptr (what they cost depends on the
# message: ptr asks the client address's PTR, which can be a void lookup).
_SPF_TERMS = [
    "all", "-all", "~all", "+all", "a", "a:x.t.example", "a/24", "a:", "mx", "mx:x.t.example",
    "mx:", "ptr:", "include", "include:", "include:x.t.example", "exists", "exists:",
    "exists:x.t.example", "ip4:192.0.2.0/24", "ip4:", "ip4:1.2.3.4/33", "ip6:2001:db8::/32",
    "ip6:", "redirect=x.t.example", "redirect=", "exp=x.t.example", "exp=", "all:x", "a//64",
    "mx/24//64", "A:x.t.example", "REDIRECT=x.t.example", "a:-bad-", "a:x.1", "x", "?", "-",
    "ip4:192.0.2.1//64", "include:t.example", "a/33", "mx//129", "a/024", "foo=bar",
    "foo=%x", "ptr/0",
]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_SPF_TERMS), max_size=5))
def test_what_receivers_refuse_is_not_spf_ok(terms: list[str]) -> None:
    record = " ".join(["v=spf1", *terms])
    zone = ZoneResolver.from_text(
        f'$ORIGIN t.example.\n$TTL 300\n@ IN SOA ns h 1 1 1 1 1\n@ IN TXT "{record}"\n'
        'x IN TXT "v=spf1 -all"\nx IN A 192.0.2.5\n@ IN A 192.0.2.6\n@ IN MX 10 x\n'
    )
    outcome = check_spf_identity(zone, ip="198.51.100.1", sender="u@t.example", helo="h")
    findings, _ = run_plan(check_spf("t.example"), zone)
    if outcome.result is SpfResult.PERMERROR:
        assert "spf.ok" not in {f.id for f in findings}, (record, outcome.reason, findings)


MISSING = {
    "spf.missing", "dmarc.missing", "dmarc.ok", "dkim.selector-missing", "dkim.none-found",
    "mx.missing", "mx.host-unresolvable", "mta-sts.missing", "mta-sts.policy-fetch",
    "tls-rpt.missing", "bimi.missing",
}  # fmt: skip


def test_dns_failures_are_dns_errors_never_missing_records(resolver: ZoneResolver) -> None:
    report = run_plan(check_domain("dns-faulty.example", selectors=["s1"]), resolver)
    ids = {f.id for f in report.findings}
    assert not ids & MISSING, report.findings
    dmarc = next(f for f in report.findings if f.id == "dmarc.dns-error")
    assert dmarc.message == ("reports to reports.example: DNS timeout")
    fetcher = MtaStsFetcher(timeout=0.5)
    sts = run_plan(check_domain("sts-faulty.example", fetcher=fetcher), resolver)
    found = {f.id: f.message for f in sts.findings if f.area == "mta-sts"}
    assert found == {
        "mta-sts.dns-error": "policy host mta-sts.sts-faulty.example A: "
        "no nameserver answered: SERVFAIL"
    }


def test_common_selectors_that_fail_are_one_dns_error() -> None:
    names = [f"{s}._domainkey.x.example" for s in COMMON_SELECTORS]
    resolver = ZoneResolver(
        {("x.example", RRType.TXT): (300, (b"v=spf1 -all",))},
        faults={"_domainkey.x.example": "timeout", **dict.fromkeys(names, "servfail")},
    )
    report = run_plan(check_domain("x.example"), resolver)
    dkim = [(f.id, f.message) for f in report.findings if f.area == "dkim"]
    assert dkim == [
        (
            "dkim.dns-error",
            "TXT default._domainkey.x.example (and 15 more): no nameserver answered: SERVFAIL",
        )
    ]


@pytest.mark.parametrize("mode", ["silent", "servfail", "truncate_tcp_refused"])
def test_a_failing_nameserver_gives_dns_errors_only(mode: str) -> None:
    """Through dnspython and a server that fails every question (a timeout, SERVFAIL, a
    truncated answer whose TCP retry is refused): every area says DNS failed; none says a
    record is missing."""
    from tests.dnsserver import LoopbackDnsServer

    with LoopbackDnsServer("$ORIGIN .\n" + ZONE.read_text(), mode=mode) as server:
        plan = check_domain("good.example", selectors=["s2026"], fetcher=MtaStsFetcher())
        report = asyncio.run(run_plan_async(plan, server.resolver(timeout=0.1, lifetime=0.2)))
    ids = {f.id for f in report.findings}
    assert not ids & MISSING, report.findings
    expected = {"spf", "dmarc", "dkim", "mx", "mta-sts", "tls-rpt", "bimi"}
    assert {f.area for f in report.findings if f.id.endswith(".dns-error")} == expected


@pytest.mark.parametrize(
    "term",
    [
        "a/33", "mx//129", "a/024", "foo=%x", "foo=%{x}", "a:%{x}.example", "ip6:fe80::1%eth0",
        "exists:%{c}.x.example", "redirect=%{q}.example", "ptr/0", "a:foo.%{d}x",
        "exp=%{r}.x.example",
    ],
)  # fmt: skip
def test_terms_check_host_refuses_are_spf_syntax(term: str) -> None:
    # Each of these was spf.ok (or only spf.macro) in the audit's own parser, and a
    # permerror for the verifier (RFC 7208 5, 6, 7.1): now one parser reads both.
    record = f"v=spf1 {term} -all"
    zone = ZoneResolver.from_text(
        f'$ORIGIN t.example.\n$TTL 300\n@ IN SOA ns h 1 1 1 1 1\n@ IN TXT "{record}"\n'
    )
    outcome = check_spf_identity(zone, ip="198.51.100.1", sender="u@t.example", helo="h")
    findings, _ = run_plan(check_spf("t.example"), zone)
    ids = {f.id for f in findings}
    assert outcome.result is SpfResult.PERMERROR, outcome
    assert "spf.syntax" in ids and "spf.ok" not in ids, findings


def test_a_repeated_unknown_modifier_is_ignored_by_both() -> None:
    # RFC 7208 6: unknown modifiers are ignored "no matter where, or how often, they appear"
    zone = ZoneResolver.from_text(
        "$ORIGIN t.example.\n$TTL 300\n@ IN SOA ns h 1 1 1 1 1\n"
        '@ IN TXT "v=spf1 foo=bar ip4:198.51.100.0/24 foo=bar -all"\n'
    )
    outcome = check_spf_identity(zone, ip="198.51.100.1", sender="u@t.example", helo="h")
    findings, _ = run_plan(check_spf("t.example"), zone)
    assert outcome.result is SpfResult.PASS
    assert "spf.ok" in {f.id for f in findings}


# --- what a new user trips on (issue 19)


def test_a_domain_that_does_not_exist_is_one_finding(
    resolver: ZoneResolver, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo gave seven "missing" findings (and a DKIM guess); now one, and it says so."""
    report = run_plan(check_domain("nosuch.example"), resolver)
    assert [(f.area, f.id, f.status) for f in report.findings] == [
        (Area.DOMAIN, "domain.nxdomain", Status.FAIL)
    ]
    assert "does not exist in DNS (NXDOMAIN)" in report.findings[0].message
    assert main(["check", "nosuch.example", "--dns-zone", str(ZONE), "--no-fetch"]) == 1
    out = capsys.readouterr().out
    assert "domain.nxdomain" in out and "missing" not in out


def test_status_is_the_same_in_the_summary_and_the_json(
    resolver: ZoneResolver, capsys: pytest.CaptureFixture[str]
) -> None:
    """A domain with warnings only was `warn` in the summary, "pass" in the JSON."""
    args = ["check", "dmarc-weak.example", "--dns-zone", str(ZONE), "--no-fetch"]
    assert main(args) == 0  # (warnings do not fail the run)
    assert capsys.readouterr().out.startswith("dmarc-weak.example: warn (0 fail, ")
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "warn"
    report = run_plan(check_domain("dmarc-weak.example"), resolver)
    assert report.status is Status.WARN and not report.failed


def test_a_run_over_several_domains_ends_with_totals(capsys: pytest.CaptureFixture[str]) -> None:
    domains = ["good.example", "dmarc-weak.example", "nosuch.example", "dns-faulty.example"]
    args = ["check", *domains, "--dns-zone", str(ZONE), "--no-fetch", "--selector", "s2026"]
    assert main(args) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (
        "4 domains checked: 3 failing, 0 with warnings only, 1 passing; 1 with DNS errors"
    )
    assert main([*args, "--json"]) == 1
    captured = capsys.readouterr()
    assert all(json.loads(line) for line in captured.out.splitlines())  # JSON Lines only
    assert captured.err.strip().startswith("4 domains checked: ")
    assert main(args[:2] + args[5:]) == 0  # one domain: no totals line
    assert "domains checked" not in capsys.readouterr().out


def test_a_name_without_a_dot_in_a_term_is_one_precise_finding() -> None:
    zone = ZoneResolver.from_text(
        '$ORIGIN t.example.\n$TTL 300\n@ IN TXT "v=spf1 include:i1 a:mail -all"\n'
    )
    findings, _ = run_plan(check_spf("t.example"), zone)
    syntax = [f for f in findings if f.id == "spf.syntax"]
    assert [f.message for f in syntax] == [
        f"t.example: {term!r} names {name!r}, not a fully qualified domain name (RFC 7208 7.1:"
        " a dot and a top label) (permerror)"
        for term, name in (("include:i1", "i1"), ("a:mail", "mail"))
    ]
    assert not any("unknown or malformed" in f.message for f in findings)


def test_an_invalid_name_is_its_own_area(resolver: ZoneResolver) -> None:
    report = run_plan(check_domain("a b.example"), resolver)
    assert [(f.area, f.id) for f in report.findings] == [(Area.DOMAIN, "domain.invalid")]
    assert report.to_dict()["findings"][0]["area"] == "domain"


def test_a_policy_fetch_error_names_the_address_it_tried(
    tmp_path: Path, resolver: ZoneResolver
) -> None:
    """mta-sts.good.example is 127.0.0.1 in the zone; nothing listens on the port."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    report = run_plan(check_domain("good.example", fetcher=MtaStsFetcher(port=port)), resolver)
    (fetch,) = [f for f in report.findings if f.id == "mta-sts.policy-fetch"]
    assert fetch.message.startswith(
        "https://mta-sts.good.example/.well-known/mta-sts.txt (at 127.0.0.1): "
    ), fetch.message
