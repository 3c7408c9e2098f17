"""What a report e-mail's passing DKIM signature must cover for the report to be authenticated
(issue 17, mailauth.reports.received.authenticate.REPORT_POLICY): From and Content-Type in
h= (an unsigned Content-Type can be replaced, its boundary too, under an intact body hash:
the importer would read another attachment than the one signed), and no l= shorter than the
body (what follows it is unsigned). Otherwise the report is imported unauthenticated, and the
reason shows in ``--json`` (``auth_result``, ``auth_note``) and on the note line. Messages
are signed with mailauth.Signer and the test key in a zone (tests/report_auth_helpers.py);
the l= signature is dkimpy's (mailauth's signer makes none, RFC 6376 8.2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from mailauth.cli import main
from mailauth.dkim import DkimPolicy, Signer
from mailauth.reports.received import authenticate as authenticate_module
from mailauth.reports.received.authenticate import authenticate
from mailauth.reports.received.model import AuthResult
from mailauth.results import DkimResult
from tests.dkim_helpers import RSA_KEY
from tests.received_helpers import aggregate_xml, gzipped, report_mail
from tests.report_auth_helpers import NOW, SELECTOR, resolver, signed, zone_file

SENDER = "dmarc@receiver.example"  # aggregate_xml's <email>
ATTACHMENT = "receiver.example!example.com!1700000000!1700086399.xml.gz"


def _mail() -> bytes:
    return report_mail([(ATTACHMENT, "application/gzip", gzipped(aggregate_xml().encode()))],
                       sender=SENDER)  # fmt: skip


def _without_content_type(raw: bytes) -> bytes:
    """``raw`` signed by receiver.example with every default field but Content-Type."""
    return Signer("receiver.example", SELECTOR, RSA_KEY, skip=["content-type"]).sign(raw, now=NOW)


def _with_length(raw: bytes) -> bytes:
    """``raw`` signed by receiver.example with l= (dkimpy, at the real time: it takes no
    clock), Content-Type in h=."""
    pem = RSA_KEY.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())  # fmt: skip
    field = dkim.sign(raw, SELECTOR.encode(), b"receiver.example", pem, length=True,
                      include_headers=[b"from", b"subject", b"content-type"])  # fmt: skip
    return bytes(field) + raw


def test_the_report_policy_requires_from_and_content_type_and_the_whole_body() -> None:
    expected = DkimPolicy(reject_partial_body=True, required_headers=("from", "content-type"))
    assert expected == authenticate_module.REPORT_POLICY


def test_a_signature_that_does_not_sign_content_type_does_not_authenticate() -> None:
    mail = _without_content_type(_mail())
    assert b"content-type" not in mail.split(b"\n\n", 1)[0].lower().split(b"h=", 1)[1][:200]
    auth = authenticate(mail, resolver(), now=NOW)
    assert (auth.result, auth.domain) == (AuthResult.FAIL, "")
    assert auth.reason == "DKIM d=receiver.example policy: h= does not sign content-type"
    # the same mail signed with Content-Type in h= passes (the test is not about the key)
    assert authenticate(signed(_mail()), resolver(), now=NOW).result == AuthResult.PASS


def test_the_boundary_changed_under_an_unsigned_content_type_keeps_the_body_hash() -> None:
    """Why Content-Type matters: a new boundary (the attachment's part no longer found)
    leaves the body hash and the signature intact; only the required h= refuses it."""
    mail = _without_content_type(_mail())
    head, body = mail.split(b"\n\n", 1)
    start = head.index(b'boundary="') + len(b'boundary="')
    changed = head[:start] + b"X" + head[start + 1 :] + b"\n\n" + body
    lax = authenticate(changed, resolver(), now=NOW, policy=DkimPolicy(reject_partial_body=True))
    assert lax.result == AuthResult.PASS  # (what the importer accepted before)
    strict = authenticate(changed, resolver(), now=NOW)
    assert strict.result == AuthResult.FAIL
    assert "h= does not sign content-type" in strict.reason


def test_the_verifier_gives_policy_for_a_required_field_not_signed() -> None:
    from mailauth.dkim import verify_dkim
    from mailauth.message import Message
    from mailauth.plan import run_plan

    message = Message.parse(_without_content_type(_mail()))
    policy = DkimPolicy(required_headers=("from", "content-type"))
    [outcome] = run_plan(verify_dkim(message, now=NOW, policy=policy), resolver())
    assert (outcome.result, outcome.reason) == (DkimResult.POLICY,
                                                "h= does not sign content-type")  # fmt: skip
    [plain] = run_plan(verify_dkim(message, now=NOW), resolver())
    assert plain.result == DkimResult.PASS


def test_a_signature_with_l_shorter_than_the_body_does_not_authenticate() -> None:
    whole = _with_length(_mail())
    assert authenticate(whole, resolver(), now=time.time()).result == AuthResult.PASS
    auth = authenticate(whole + b"--appended\n", resolver(), now=time.time())
    assert auth.result == AuthResult.FAIL
    assert "policy: l=" in auth.reason and "body octets unsigned" in auth.reason


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_without_content_type, "h= does not sign content-type"),
        (lambda raw: _with_length(raw) + b"--appended\n", "body octets unsigned"),
    ],
    ids=["content-type-not-signed", "l-shorter-than-body"],
)
def test_the_import_says_why_in_json_and_on_the_note_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, reason: str
) -> None:
    assert callable(make)
    path = tmp_path / "report.eml"
    path.write_bytes(make(_mail()))
    store, zone = str(tmp_path / "r.sqlite"), str(zone_file(tmp_path))
    now = str(NOW if make is _without_content_type else int(time.time()))
    common = ["--store", store, "--dns-zone", zone, "--now", now]
    assert main(["reports", "import", str(path), *common, "--json"]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["status"], line["authenticated"], line["auth_result"]) == (
        "imported", None, "fail")  # fmt: skip
    assert reason in line["auth_note"] and "not counted in summaries" in line["auth_note"]
    # the note line (without --json) says the same; the summary leaves the report out
    path2 = tmp_path / "again.sqlite"
    assert main(["reports", "import", str(path), "--store", str(path2), "--dns-zone", zone,
                 "--now", now]) == 0  # fmt: skip
    err = capsys.readouterr().err
    shown = f"{path} > {ATTACHMENT}: note: unauthenticated (fail: DKIM d=receiver.example policy: "
    assert shown in err
    assert reason in err
    assert main(["reports", "summary", "example.com", "--store", store, "--since",
                 "2023-01-01", "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["messages"] == 0 and summary["unauthenticated"]["reports"] == 1
