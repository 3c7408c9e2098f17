"""Authenticated received reports (review17 finding F4): a forged aggregate report that names
a real reporter and Report-ID no longer takes the real one's place, and summaries count only
the reports their reporter's domain signed. Report e-mails are signed with mailauth.Signer
and a test key published in a zone (mailauth.dns.ZoneResolver; tests/report_auth_helpers.py),
on SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
import mailbox
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from mailauth.cli import main
from mailauth.dkim import DkimPolicy
from mailauth.dns import ZoneResolver
from mailauth.reports.received import received_failures, received_reports
from mailauth.reports.received.authenticate import authenticate
from mailauth.reports.received.importer import (
    DUPLICATE,
    ERROR,
    IMPORTED,
    ImportResult,
    SourceItem,
    import_item,
)
from mailauth.reports.received.model import AuthResult, ReportAuth, ReportKind, Trust, report_key
from mailauth.reports.schema import MIGRATIONS, SCHEMA_VERSION
from mailauth.reports.store import Store, open_store
from mailauth.reports.summary import Summary, summarize
from tests.dkim_helpers import RSA_KEY
from tests.received_helpers import aggregate_xml, gzipped, report_mail
from tests.report_auth_helpers import NOW, SELECTOR, resolver, signed, zone_file, zone_text

GOOGLE = "noreply-dmarc-support@google.com"
REPORT_ID = "17000000001234"
DAY = 86_400
BEGIN = 1_700_000_000


def _xml(records: list[tuple[str, int, str]], *, org: str = "google.com", email: str = GOOGLE,
         report_id: str = REPORT_ID) -> bytes:  # fmt: skip
    """An aggregate report about example.com: (source IP, count, "pass" or "fail" for both
    DKIM and SPF) per record."""
    rows = "".join(
        f"<record><row><source_ip>{ip}</source_ip><count>{count}</count><policy_evaluated>"
        f"<disposition>none</disposition><dkim>{result}</dkim><spf>{result}</spf>"
        "</policy_evaluated></row><identifiers><header_from>example.com</header_from>"
        "</identifiers><auth_results><spf><domain>example.com</domain><result>"
        f"{result}</result></spf></auth_results></record>"
        for ip, count, result in records
    )
    return (
        '<?xml version="1.0"?><feedback><report_metadata>'
        f"<org_name>{org}</org_name><email>{email}</email><report_id>{report_id}</report_id>"
        f"<date_range><begin>{BEGIN}</begin><end>{BEGIN + DAY - 1}</end></date_range>"
        "</report_metadata><policy_published><domain>example.com</domain><p>none</p>"
        f"</policy_published>{rows}</feedback>"
    ).encode()


FORGED = _xml([("203.0.113.66", 4_000_000_000, "pass")])
REAL = _xml([("198.51.100.1", 12, "fail")])


def _mail(xml: bytes, sender: str = GOOGLE) -> bytes:
    name = f"google.com!example.com!{BEGIN}!{BEGIN + DAY - 1}.xml.gz"
    return report_mail([(name, "application/gzip", gzipped(xml))], sender=sender)


def _import(store: Store, name: str, data: bytes, faults: dict[str, str] | None = None,
            selectors: tuple[str, ...] = ()) -> ImportResult:  # fmt: skip
    zone = ZoneResolver.from_text(zone_text(faults, selectors))
    [result] = import_item(store, SourceItem(name, data), now=NOW, resolver=zone)
    return result


def _summary(store: Store, include: bool = False) -> Summary:
    return summarize(store, "example.com", 0, BEGIN + 10 * DAY, include_unauthenticated=include)


# -- the report e-mail's authentication ------------------------------------------------------
def test_a_mail_signed_by_its_from_domain_is_authenticated() -> None:
    auth = authenticate(signed(_mail(REAL), "google.com"), resolver(), now=NOW)
    assert auth == ReportAuth(AuthResult.PASS, "google.com", "google.com")


def test_an_unsigned_mail_is_not_authenticated() -> None:
    auth = authenticate(_mail(REAL), resolver(), now=NOW)
    assert (auth.result, auth.domain, auth.from_domain) == (AuthResult.NONE, "", "google.com")


def test_a_mail_signed_by_an_unrelated_domain_is_not_authenticated() -> None:
    auth = authenticate(signed(_mail(REAL), "evil.example"), resolver(), now=NOW)
    assert (auth.result, auth.domain) == (AuthResult.FAIL, "")
    assert auth.reason == "DKIM passed for evil.example, not aligned with From google.com"


def test_a_signature_that_does_not_verify_is_not_authenticated() -> None:
    mail = signed(_mail(REAL), "google.com").replace(b"aggregate report", b"aggregate rep0rt")
    auth = authenticate(mail, resolver(), now=NOW)
    assert (auth.result, auth.domain) == (AuthResult.FAIL, "")
    assert "body hash did not verify" in auth.reason


def test_a_dns_timeout_on_the_key_is_temperror_not_a_verdict() -> None:
    mail = signed(_mail(REAL), "google.com", selector="slow")
    auth = authenticate(mail, resolver({"slow._domainkey.google.com": "timeout"}), now=NOW)
    assert (auth.result, auth.domain, auth.from_domain) == (AuthResult.TEMPERROR, "", "google.com")
    assert "DNS timeout" in auth.reason


def test_an_unusable_from_field_is_permerror() -> None:
    mail = signed(_mail(REAL), "google.com")
    doubled = mail.replace(b"From: ", b"From: a@google.com\r\nFrom: ", 1)
    assert authenticate(doubled, resolver(), now=NOW).result == AuthResult.PERMERROR
    assert authenticate(b"\x00\x01\x02", resolver(), now=NOW).result == AuthResult.PERMERROR


def test_the_dkim_work_per_mail_is_capped() -> None:
    """Twenty signatures (none with a key): at most the verifier's cap of them looked up."""
    mail = _mail(REAL)
    for n in range(20):
        mail = signed(mail, "google.com", selector=f"s{n}")
    zone = resolver()
    auth = authenticate(mail, zone, now=NOW, policy=DkimPolicy(max_signatures=5))
    assert auth.result == AuthResult.FAIL
    assert len(zone.queries) == 5


# -- F4: the forged report and the real one -------------------------------------------------
def test_forged_report_first_then_the_real_signed_one_both_stored(store_url: str) -> None:
    """review17 F4's repro: a forged report (the real reporter's org, e-mail and Report-ID,
    4,000,000,000 passing messages) imported first; the real one, signed by google.com, with
    12 failing messages, second: both stored, and the verdict is the real one's."""
    store = open_store(store_url)
    try:
        forged = _import(store, "forged.xml", FORGED)
        real = _import(store, "real.eml", signed(_mail(REAL), "google.com"))
        assert (forged.status, forged.authenticated) == (IMPORTED, None)
        assert (real.status, real.authenticated) == (IMPORTED, "google.com")
        assert real.to_json()["authenticated"] == "google.com"
        stored = {r.source.split(" > ")[0]: r for r in received_reports(store, "example.com")}
        assert stored["forged.xml"].trust == Trust.SUPERSEDED
        assert stored["forged.xml"].auth == ReportAuth(AuthResult.NONE)
        assert stored["real.eml"].trust == Trust.AUTHENTICATED
        assert stored["real.eml"].auth == ReportAuth(AuthResult.PASS, "google.com", "google.com")
        assert stored["real.eml"].report_key != stored["forged.xml"].report_key
        found = _summary(store)
        assert (found.messages, found.readiness.failing, found.reports) == (12, 12, 1)
        assert found.unauthenticated.reports == 1
        assert found.unauthenticated.messages == 4_000_000_000
        assert found.unauthenticated.superseded == 1
        assert found.verdict()[0].startswith("12 messages (100.0 %) from 1 source would be")
        # the forged copy is never counted, even when unauthenticated reports are
        included = _summary(store, include=True)
        assert (included.messages, included.readiness.failing) == (12, 12)
        # importing either again: a duplicate
        assert _import(store, "forged.xml", FORGED).status == DUPLICATE
        again = _import(store, "real.eml", signed(_mail(REAL), "google.com"))
        assert (again.status, again.authenticated) == (DUPLICATE, "google.com")
    finally:
        store.close()


def test_the_real_report_first_then_a_forged_mail(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert _import(store, "real.eml", signed(_mail(REAL), "google.com")).status == IMPORTED
        forged = _import(store, "forged.eml", _mail(FORGED))  # unsigned, same From
        assert (forged.status, forged.authenticated) == (IMPORTED, None)
        found = _summary(store)
        assert (found.messages, found.readiness.failing) == (12, 12)
        assert (found.unauthenticated.reports, found.unauthenticated.superseded) == (1, 1)
        assert _summary(store, include=True).messages == 12
    finally:
        store.close()


def test_a_report_signed_by_another_organisation_is_not_counted(store_url: str) -> None:
    """A forged report in an e-mail that evil.example signed and sent from its own address,
    naming google.com as the reporter: stored (its authenticated domain is evil.example),
    never counted for google.com, and it takes nobody's place."""
    store = open_store(store_url)
    try:
        mail = signed(_mail(FORGED, sender="dmarc@evil.example"), "evil.example")
        forged = _import(store, "evil.eml", mail)
        assert (forged.status, forged.authenticated) == (IMPORTED, "evil.example")
        assert forged.notes == (
            "authenticated by evil.example, but not sent from the address the report names "
            "(noreply-dmarc-support@google.com): not counted in summaries unless "
            "--include-unauthenticated",
        )
        assert _import(store, "real.eml", signed(_mail(REAL), "google.com")).status == IMPORTED
        found = _summary(store)
        assert (found.messages, found.unauthenticated.reports) == (12, 1)
        [stored] = [r for r in received_reports(store, "example.com") if r.source == "evil.eml > "
                    f"google.com!example.com!{BEGIN}!{BEGIN + DAY - 1}.xml.gz"]  # fmt: skip
        assert (stored.auth.domain, stored.auth.from_domain) == ("evil.example", "evil.example")
        assert stored.trust == Trust.SUPERSEDED  # (a copy of the report stored authenticated)
    finally:
        store.close()


def test_a_user_of_the_reporting_domain_cannot_pre_empt_the_report(store_url: str) -> None:
    """REVIEW17B 3: a user of a mailbox provider that also reports signs -- with the
    provider's own key, as for all its users' mail -- a report naming the provider's
    reporting address and a Report-ID the provider will use. The same organisation made it
    authenticated, and the real report, arriving later, was stored superseded. Now the
    From address must be the report's own: the user's copy is unauthenticated."""
    store = open_store(store_url)
    try:
        early = signed(_mail(FORGED, sender="mallory@google.com"), "google.com")
        forged = _import(store, "early.eml", early)
        assert (forged.status, forged.authenticated) == (IMPORTED, "google.com")  # (its d=)
        assert "not sent from the address the report names" in forged.notes[0]
        assert _import(store, "real.eml", signed(_mail(REAL), "google.com")).status == IMPORTED
        found = _summary(store)
        assert (found.messages, found.unauthenticated.reports) == (12, 1)
        trusts = {
            r.source.partition(" ")[0]: r.trust for r in received_reports(store, "example.com")
        }
        assert trusts == {"early.eml": Trust.SUPERSEDED, "real.eml": Trust.AUTHENTICATED}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("sender", "email"),
    [
        ("dmarc-reports@google.com", GOOGLE),  # (another mailbox of the reporter's domain)
        (GOOGLE, f"mailto:{GOOGLE}"),
        (GOOGLE, f"Google <{GOOGLE}>"),
    ],
)
def test_a_forgery_first_never_makes_a_signed_report_a_duplicate(sender: str, email: str) -> None:
    """REVIEW24 1: with the authenticated domain left out of the key of a report whose From
    is not its <email>, an unsigned forgery imported first had the real report's key, and
    the real one was dropped as a duplicate. Every signed copy's key carries who signed it
    (d= and the From address)."""
    store = open_store(":memory:")
    try:
        forged = _mail(_xml([("203.0.113.66", 4_000_000_000, "pass")], email=email),
                       sender="x@attacker.example")  # fmt: skip
        real = signed(_mail(_xml([("198.51.100.1", 12, "fail")], email=email), sender=sender),
                      "google.com")  # fmt: skip
        assert _import(store, "forged.eml", forged).status == IMPORTED
        assert _import(store, "real.eml", real).status == IMPORTED
        assert _import(store, "again.eml", real).status == DUPLICATE  # (itself, again)
    finally:
        store.close()


def test_a_report_naming_no_address_is_never_authenticated(store_url: str) -> None:
    """REVIEW17B 2: with no usable <email>, the reporter was taken from the e-mail's From:
    any domain signing its own mail had its reports counted, and could supersede a copy
    that named no address either."""
    store = open_store(store_url)
    try:
        for email in ("", "not an address", "x@-bad-.example"):
            mail = signed(_mail(_xml([("192.0.2.1", 1, "pass")], email=email)), "google.com")
            result = _import(store, f"{email or 'none'}.eml", mail)
            assert result.status == IMPORTED, email
            assert "not counted in summaries" in result.notes[0], email
        assert _summary(store).messages == 0
    finally:
        store.close()


def test_a_temperror_is_stored_unauthenticated_and_checked_again(store_url: str) -> None:
    store = open_store(store_url)
    try:
        mail = signed(_mail(REAL), "google.com", selector="slow")
        first = _import(store, "r.eml", mail, faults={"slow._domainkey.google.com": "timeout"})
        assert (first.status, first.authenticated, first.recheck) == (IMPORTED, None, True)
        assert first.notes[0].startswith("not authenticated for now (DKIM d=google.com s=slow:")
        [stored] = received_reports(store, "example.com")
        assert (stored.auth.result, stored.auth.domain, stored.trust) == (
            AuthResult.TEMPERROR, "", Trust.UNAUTHENTICATED)  # fmt: skip
        assert _summary(store).messages == 0
        # DNS answers again: the same e-mail authenticated; the temperror copy superseded
        still = _import(store, "r.eml", mail, faults={"slow._domainkey.google.com": "timeout"})
        assert (still.status, still.authenticated, still.recheck) == (ERROR, None, True)
        assert still.error.startswith("not authenticated for now (DKIM d=google.com s=slow:")
        later = _import(store, "r.eml", mail, selectors=("slow",))
        assert (later.status, later.authenticated, later.recheck) == (IMPORTED, "google.com", False)
        assert _summary(store).messages == 12
        found = _summary(store, include=True)
        assert (found.messages, found.unauthenticated.superseded) == (12, 1)
    finally:
        store.close()


def test_failure_and_tls_reports_carry_their_authentication(store_url: str) -> None:
    from tests.received_helpers import REAL_WORLD

    store = open_store(store_url)
    try:
        raw = (REAL_WORLD / "failure/dmarc_ruf_report_linkedin.eml").read_bytes()
        result = _import(store, "ruf.eml", raw)
        assert (result.kind, result.authenticated) == (ReportKind.FAILURE, None)
        [failure] = received_failures(store, "example.com")
        assert (failure.auth.result, failure.auth.from_domain) == (AuthResult.NONE, "linkedin.com")
        rows = store.fetchall("SELECT auth_result, from_domain FROM received_failures")
        assert [tuple(map(str, r)) for r in rows] == [("none", "linkedin.com")]
    finally:
        store.close()


# -- the store migration ----------------------------------------------------------------------
def test_migration_from_version_4_keeps_old_rows_and_their_keys(store_url: str) -> None:
    """A store at schema version 4 with a report in it (as the previous version wrote it):
    migrated, the row is unauthenticated with its old key, a re-import of the same bare file
    is a duplicate, and the same report signed by its reporter is stored beside it."""
    store = open_store(store_url, migrate=False)
    try:
        with store.write():
            for statements in MIGRATIONS[:4]:
                for statement in statements:
                    store.execute(statement)
            store.execute("CREATE TABLE mailauth_schema (version INTEGER NOT NULL)")
            store.execute("INSERT INTO mailauth_schema (version) VALUES (4)")
            old_key = report_key(ReportKind.AGGREGATE, "google.com", GOOGLE, REPORT_ID)
            store.execute(
                "INSERT INTO received_aggregate VALUES (?, 'google.com', ?, '', ?, "
                "'example.com', ?, ?, 'none', '', '', '', '', '', '', '', '', 'rfc7489', '', "
                "'[]', '[]', 1, 12, 'old.xml', 1)",
                (old_key, GOOGLE, REPORT_ID, BEGIN, BEGIN + DAY - 1),
            )
            store.execute(
                "INSERT INTO received_records VALUES (?, 0, 'google.com', 'example.com', ?, ?, "
                "'198.51.100.1', 12, 'none', 'fail', 'fail', '[]', 'example.com', '', '', "
                "'[]', '[]')",
                (old_key, BEGIN, BEGIN + DAY - 1),
            )
        assert store.migrate() == (4, SCHEMA_VERSION)
        [old] = received_reports(store, "example.com")
        assert (old.report_key, old.auth, old.trust) == (
            old_key, ReportAuth(AuthResult.UNKNOWN), Trust.UNAUTHENTICATED)  # fmt: skip
        assert _summary(store).messages == 0
        assert _summary(store, include=True).messages == 12
        assert _import(store, "again.xml", REAL).status == DUPLICATE
        assert _import(store, "r.eml", signed(_mail(REAL), "google.com")).status == IMPORTED
        found = _summary(store, include=True)
        assert (found.messages, found.unauthenticated.superseded) == (12, 1)
    finally:
        store.close()


# -- the command line -------------------------------------------------------------------------
def test_cli_maildir_and_mbox_carry_authentication(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zone = zone_file(tmp_path)
    root = tmp_path / "Maildir"
    box = mailbox.Maildir(root, create=True)
    box.add(signed(_mail(REAL), "google.com"))
    box.add(_mail(_xml([("192.0.2.9", 5, "pass")], report_id="unsigned")))
    mbox_path = tmp_path / "reports.mbox"
    mbox = mailbox.mbox(mbox_path)
    mbox.add(signed(report_mail([("a.xml", "text/xml", aggregate_xml(2).encode())]),
                    "receiver.example"))  # fmt: skip
    mbox.close()
    store = str(tmp_path / "r.sqlite")
    common = ["--store", store, "--dns-zone", str(zone), "--json", "--now", str(NOW)]
    assert main(["reports", "import", "--maildir", str(root), "--mbox", str(mbox_path),
                 *common]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((line["report_id"], line["authenticated"]) for line in lines) == [
        (REPORT_ID, "google.com"), ("id-1", "receiver.example"), ("unsigned", None)]  # fmt: skip
    assert main(["reports", "summary", "example.com", "--store", store, "--since",
                 "2023-01-01"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert (
        "\nunauthenticated reports: 1, 5 messages: left out of the verdict and the rates "
        "(--include-unauthenticated counts them)\n"
    ) in out
    assert out.startswith("example.com: 15 messages from 3 sources in 2 reports by 2 reporters")
    assert "\n12 messages (80.0 %) from 1 source would be rejected under p=reject" in out
    assert main(["reports", "summary", "example.com", "--store", store, "--since",
                 "2023-01-01", "--include-unauthenticated", "--json"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["unauthenticated"] == {"reports": 1, "messages": 5, "superseded": 0,
                                       "included": True}  # fmt: skip


def test_cli_signatures_are_checked_at_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--now is the verifier's clock: a signature made a day in its future is refused."""
    path = tmp_path / "r.eml"
    path.write_bytes(signed(_mail(REAL), "google.com"))
    store = str(tmp_path / "r.sqlite")
    zone = str(zone_file(tmp_path))
    assert main(["reports", "import", str(path), "--store", store, "--dns-zone", zone,
                 "--json", "--now", str(NOW - DAY)]) == 0  # fmt: skip
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["authenticated"] is None


def test_cli_dns_options_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["reports", "import", str(tmp_path), "--store", str(tmp_path / "r.sqlite"),
                 "--dns-zone", "x.zone", "--nameserver", "127.0.0.1"])  # fmt: skip
    assert code == 2
    assert (
        capsys.readouterr().err.strip().endswith("--dns-zone and --nameserver exclude each other")
    )


def test_the_same_report_signed_with_two_domains_of_its_reporter_counts_once(
    store_url: str,
) -> None:
    """The same report in two e-mails, from and signed by google.com and by a subdomain of
    it: two keys (two authenticated domains, both the reporter's), counted once."""
    store = open_store(store_url)
    try:
        first = _import(store, "a.eml", signed(_mail(REAL), "google.com"))
        assert (first.status, first.authenticated) == (IMPORTED, "google.com")
        other = signed(_mail(REAL, sender="dmarc@mail.google.com"), "mail.google.com")
        second = _import(store, "b.eml", other)
        assert (second.status, second.authenticated) == (IMPORTED, "mail.google.com")
        trust = {r.auth.domain: r.trust for r in received_reports(store, "example.com")}
        assert trust == {"google.com": Trust.AUTHENTICATED, "mail.google.com": Trust.SUPERSEDED}
        found = _summary(store, include=True)
        assert (found.messages, found.reports) == (12, 1)
    finally:
        store.close()


def test_a_repeated_mime_field_prepended_to_a_signed_mail_is_not_authenticated() -> None:
    """REVIEW17B 1: the verifier reads the last of a repeated field, the MIME parser the
    first; a Content-Type (or Content-Transfer-Encoding, MIME-Version, From) prepended to a
    mail the reporter really signed made the importer read an attachment the signature never
    vouched for. Such a mail is not authenticated."""
    mail = signed(_mail(REAL), "google.com")
    for field in (
        b"Content-Type: multipart/mixed; boundary=ATK\r\n",
        b"MIME-Version: 1.0\r\n",
        b"From: noreply-dmarc-support@google.com\r\n",
    ):
        auth = authenticate(field + mail, resolver(), now=NOW)
        assert auth.result == AuthResult.PERMERROR, field
        assert "more than one " in auth.reason or "2 From fields" in auth.reason, auth.reason


def test_a_signature_of_part_of_the_body_does_not_authenticate() -> None:
    """REVIEW17B 1 (l=): a signature covering only the first part of the body leaves room for
    another attachment after it: not a pass here (the verifier's reject_partial_body). The
    l= signature is dkimpy's (mailauth's signer makes none)."""
    pem = RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    raw = _mail(REAL)
    field = dkim.sign(raw, SELECTOR.encode(), b"google.com", pem, length=True,
                      include_headers=[b"from", b"subject", b"content-type"])  # fmt: skip
    now = time.time()  # (dkimpy signs at the real time: checked at NOW, t= was in the future)
    auth = authenticate(field + raw + b"appended\r\n", resolver(), now=now)
    assert auth.result == AuthResult.FAIL, auth
    assert "body octets unsigned" in auth.reason, auth.reason
    assert authenticate(field + raw, resolver(), now=now).result == AuthResult.PASS
