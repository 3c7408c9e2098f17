"""A report e-mail whose authentication ended in ``temperror`` (DNS failed for the key of an
aligned signature) is never a ``duplicate`` (issue 17, 4a): the only copy the store can hold
under its key is an unauthenticated one (an earlier ``temperror``, a bare file), so the
report is still to be checked, and the result is ``error`` (exit status 1; an IMAP message
stays in its folder) until DNS answers and it is stored authenticated. On SQLite and a real
PostgreSQL; keys in a zone with fault pragmas (tests/report_auth_helpers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.dns import ZoneResolver
from mailauth.reports.received import received_reports
from mailauth.reports.received.importer import (
    DUPLICATE,
    ERROR,
    IMPORTED,
    RECHECK_FOR,
    ImportResult,
    SourceItem,
    import_item,
)
from mailauth.reports.received.model import Trust
from mailauth.reports.store import Store, open_store
from tests.received_helpers import REAL_WORLD, aggregate_xml, gzipped, report_mail
from tests.report_auth_helpers import NOW, signed, zone_file, zone_text

SLOW = {"slow._domainkey.receiver.example": "timeout"}
XML = aggregate_xml(3, report_id="t-1").encode()


def _mail() -> bytes:
    mail = report_mail([("r.xml.gz", "application/gzip", gzipped(XML))])
    return signed(mail, "receiver.example", selector="slow")


def _import(store: Store, name: str, data: bytes, *, answering: bool = False) -> ImportResult:
    text = zone_text(selectors=("slow",)) if answering else zone_text(SLOW)
    zone = ZoneResolver.from_text(text)
    [result] = import_item(store, SourceItem(name, data), now=NOW, resolver=zone)
    return result


def test_a_bare_file_then_the_email_with_a_temperror_is_an_error_not_a_duplicate(
    store_url: str,
) -> None:
    store = open_store(store_url)
    try:
        assert _import(store, "r.xml", XML).status == IMPORTED  # (a bare file: unauthenticated)
        mail = _import(store, "r.eml", _mail())
        assert (mail.status, mail.recheck, mail.records) == (ERROR, True, 3)
        assert mail.error.startswith("not authenticated for now (DKIM d=receiver.example s=slow")
        assert mail.error.endswith("import the e-mail again to check it again")
        later = _import(store, "r.eml", _mail(), answering=True)
        assert (later.status, later.authenticated) == (IMPORTED, "receiver.example")
        trusts = sorted(r.trust for r in received_reports(store, "example.com"))
        assert trusts == [Trust.AUTHENTICATED, Trust.SUPERSEDED]
        assert _import(store, "r.eml", _mail(), answering=True).status == DUPLICATE
    finally:
        store.close()


def test_a_failure_report_twice_with_a_temperror_is_an_error_not_a_duplicate(
    store_url: str,
) -> None:
    """The path where the store's key decides (failure and TLS reports are never told from
    their metadata first)."""
    raw = (REAL_WORLD / "failure/dmarc_ruf_report_linkedin.eml").read_bytes()
    raw = raw.split(b"\n", 1)[1]  # (the mbox "From " line)
    raw = raw.replace(b"\nFrom: dmarc-noreply@linkedin.com\n", b"\nFrom: dmarc@receiver.example\n")
    mail = signed(raw, "receiver.example", selector="slow")
    store = open_store(store_url)
    try:
        first = _import(store, "f.eml", mail)
        assert (first.kind, first.status, first.recheck) == ("failure", IMPORTED, True)
        again = _import(store, "f.eml", mail)
        assert (again.status, again.recheck) == (ERROR, True)
        assert "not authenticated for now" in again.error
        assert (again.auth_note, again.notes) == (again.error, ())
    finally:
        store.close()


def test_the_cli_exits_1_for_a_temperror_already_stored_unauthenticated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.eml"
    path.write_bytes(_mail())
    (tmp_path / "slow").mkdir()
    zone = str(zone_file(tmp_path / "slow", SLOW))
    common = ["reports", "import", str(path), "--store", str(tmp_path / "r.sqlite"),
              "--dns-zone", zone, "--now", str(NOW), "--json"]  # fmt: skip
    assert main(common) == 0
    [first] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (first["status"], first["auth_result"]) == ("imported", "temperror")
    assert main(common) == 1
    [again] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (again["status"], again["auth_result"]) == ("error", "temperror")
    assert "not authenticated for now" in again["error"]
    assert again["auth_note"] == again["error"]


def _import_at(store: Store, name: str, data: bytes, now: int) -> ImportResult:
    zone = ZoneResolver.from_text(zone_text(SLOW))
    [result] = import_item(store, SourceItem(name, data), now=now, resolver=zone)
    return result


def test_a_temperror_that_lasts_is_settled_as_unauthenticated_after_three_days(
    store_url: str,
) -> None:
    """A signer whose DNS never answers (an attacker's, or a domain gone) must not make
    every import fail for good, each one waiting for its DNS: RECHECK_FOR after the
    unauthenticated copy was stored, the e-mail is a duplicate with a note (exit 0, an IMAP
    message moves on). Both paths: an aggregate report told from its metadata, a failure
    report by the store's key."""
    raw = (REAL_WORLD / "failure/dmarc_ruf_report_linkedin.eml").read_bytes()
    raw = raw.split(b"\n", 1)[1].replace(b"\nFrom: dmarc-noreply@linkedin.com\n",
                                         b"\nFrom: dmarc@receiver.example\n")  # fmt: skip
    failure = signed(raw, "receiver.example", selector="slow")
    store = open_store(store_url)
    try:
        for name, mail in (("r.eml", _mail()), ("f.eml", failure)):
            assert _import_at(store, name, mail, NOW).status == IMPORTED
            almost = _import_at(store, name, mail, NOW + RECHECK_FOR - 1)
            assert (almost.status, almost.recheck) == (ERROR, True)
            settled = _import_at(store, name, mail, NOW + RECHECK_FOR)
            assert (settled.status, settled.recheck, settled.error) == (DUPLICATE, False, "")
            assert settled.auth_note.startswith("still not authenticated (DKIM d=receiver")
            assert settled.auth_note.endswith("72 hours after it was first stored: kept "
                                              "unauthenticated, not checked again")  # fmt: skip
            assert settled.auth_note in settled.notes
    finally:
        store.close()
