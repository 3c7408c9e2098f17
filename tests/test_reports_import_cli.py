"""``mailauth reports import`` on SQLite and a real PostgreSQL: files and directories, Maildir,
mbox, --json (exactly its keys), duplicates (idempotent), exit statuses, usage errors."""

from __future__ import annotations

import json
import mailbox
import shutil
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.reports import open_store
from mailauth.reports.received import (
    received_domains,
    received_failures,
    received_records,
    received_reports,
    received_tls_policies,
)
from tests.received_helpers import REAL_WORLD, aggregate_xml, gzipped, report_mail, tls_json

KEYS = ["file", "kind", "reporter", "report_id", "domain", "records", "messages", "status",
        "error", "authenticated", "auth_result", "auth_note"]  # fmt: skip


NO_KEYS = Path(__file__).resolve().parent.parent / "fixtures/dmarc-reports/no-keys.zone"


def _run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``reports import ARGS``, its DNS from a zone (no key: e-mails unauthenticated) unless
    ARGS name their own."""
    dns = () if {"--dns-zone", "--nameserver"} & set(args) else ("--dns-zone", str(NO_KEYS))
    code = main(["reports", "import", *args, *dns])
    out, err = capsys.readouterr()
    return code, out, err


def _samples(tmp_path: Path) -> Path:
    copy = tmp_path / "samples"
    shutil.copytree(REAL_WORLD, copy)
    (copy / "LICENSE-parsedmarc-samples").unlink()
    return copy


def test_import_the_real_world_samples_twice(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = _samples(tmp_path)
    code, out, err = _run("--store", store_url, str(samples), capsys=capsys)
    assert code == 0
    assert out == "14 reports imported, 0 already in the store, 0 unreadable (from 14 inputs)\n"
    google = "Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174"
    assert err.splitlines() == [  # (the two repairs, and the e-mails not authenticated, noted)
        f"mailauth reports import: {samples}/aggregate/{google}.eml > google.com!borschow.com!"
        "1549929600!1550015999.zip > google.com!borschow.com!1549929600!1550015999.xml: note: "
        "unauthenticated (fail: DKIM d=google.com permerror: no key for signature at "
        "20161025._domainkey.google.com): not counted in summaries unless "
        "--include-unauthenticated",
        f"mailauth reports import: {samples}/aggregate/ikea.com!example.de!1538690400!"
        "1538776800.xml: note: repaired XML: the root element is <schema>, not <feedback>",
        f"mailauth reports import: {samples}/aggregate/invalid_xml.xml: note: repaired XML: "
        "not well-formed (invalid token): line 5, column 17",
        f"mailauth reports import: {samples}/failure/DMARC Failure Report for domain.de "
        "(mail-from=sharepoint@domain.de, ip=10.10.10.10).eml: note: unauthenticated (none: no "
        "DKIM signature)",
        f"mailauth reports import: {samples}/failure/dmarc_ruf_report_linkedin.eml: note: "
        "unauthenticated (none: no DKIM signature)",
    ]
    code, out, _ = _run("--store", store_url, str(samples), capsys=capsys)
    assert (code, out) == (0, "0 reports imported, 14 already in the store, 0 unreadable "
                              "(from 14 inputs)\n")  # fmt: skip
    store = open_store(store_url)
    try:
        domains = {d.domain: (d.reports, d.messages) for d in received_domains(store)}
        assert domains == {"example.com": (10, 135), "example.de": (1, 1), "borschow.com": (1, 1)}
        assert len(list(received_records(store, "example.com"))) == 11
        failures = received_failures(store, "example.com") + received_failures(store, "domain.de")
        assert sorted(f.reporter for f in failures) == ["domain.de", "linkedin.com"]
        counts = store.fetchall("SELECT COUNT(*) FROM received_aggregate")
        assert int(counts[0][0]) == 12
    finally:
        store.close()


def test_json_output(store_url: str, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.xml.gz").write_bytes(gzipped(aggregate_xml(3, report_id="a").encode()))
    (inputs / "b.json").write_bytes(tls_json())
    (inputs / "c.xml").write_text("<feedback><report_metadata>")
    shutil.copy(REAL_WORLD / "failure/dmarc_ruf_report_linkedin.eml", inputs / "d.eml")
    code, out, err = _run("--store", store_url, "--json", str(inputs), str(inputs / "a.xml.gz"),
                          capsys=capsys)  # fmt: skip
    assert (code, err) == (1, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(list(line) == KEYS for line in lines)
    assert lines == [
        {"file": f"{inputs}/a.xml.gz", "kind": "aggregate", "reporter": "Receiver",
         "report_id": "a", "domain": "example.com", "records": 3, "messages": 6,
         "status": "imported", "error": None, "authenticated": None, "auth_result": "none",
         "auth_note": None},
        {"file": f"{inputs}/b.json", "kind": "tls", "reporter": "Company-X",
         "report_id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be", "domain": "company-y.example",
         "records": 1, "messages": 0, "status": "imported", "error": None, "authenticated": None,
         "auth_result": "none", "auth_note": None},
        {"file": f"{inputs}/c.xml", "kind": "aggregate", "reporter": "", "report_id": "",
         "domain": "", "records": 0, "messages": 0, "status": "error",
         "error": "not well-formed XML: the XML ends before its policy_published "
                  "(truncated?)", "authenticated": None, "auth_result": "none", "auth_note": None},
        {"file": f"{inputs}/d.eml", "kind": "failure", "reporter": "linkedin.com",
         "report_id": "<BB.91.26019.C3EA7CC5@mail516.prod.linkedin.com>",
         "domain": "example.com", "records": 1, "messages": 1, "status": "imported",
         "error": None, "authenticated": None, "auth_result": "none",
         "auth_note": "unauthenticated (none: no DKIM signature)"},
        {"file": f"{inputs}/a.xml.gz", "kind": "aggregate", "reporter": "Receiver",
         "report_id": "a", "domain": "example.com", "records": 3, "messages": 6,
         "status": "duplicate", "error": None, "authenticated": None, "auth_result": "none",
         "auth_note": None},
    ]  # fmt: skip
    store = open_store(store_url)
    try:
        [policy] = received_tls_policies(store, "company-y.example")
        assert (policy.policy.success, policy.policy.failure) == (5326, 303)
    finally:
        store.close()


def _maildir(root: Path) -> Path:
    box = mailbox.Maildir(root, create=True)
    box.add(report_mail([("a.xml.gz", "application/gzip",
                          gzipped(aggregate_xml(report_id="m1").encode()))]))  # fmt: skip
    box.add((REAL_WORLD / "failure/dmarc_ruf_report_linkedin.eml").read_bytes())
    box.add(b"From: friend@example.org\r\nSubject: lunch\r\n\r\nnoon?\r\n")
    # (one message already seen: moved to cur/ with the "S" flag)
    key = box.add(report_mail([("b.zip", "application/zip", b"PK\x05\x06" + b"\0" * 18)]))
    message = box[key]
    message.set_subdir("cur")
    message.add_flag("S")
    box[key] = message
    (root / "tmp" / "being-delivered").write_bytes(b"not yet")
    return root


def test_a_maildir(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _maildir(tmp_path / "Maildir")
    code, out, err = _run("--store", store_url, "--maildir", str(root), "--json",
                          capsys=capsys)  # fmt: skip
    assert (code, err) == (1, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["kind"], line["status"], line["report_id"]) for line in lines] == [
        ("aggregate", "imported", "m1"),
        ("failure", "imported", "<BB.91.26019.C3EA7CC5@mail516.prod.linkedin.com>"),
        (None, "error", ""),
        (None, "error", ""),
    ]
    assert lines[2]["error"].startswith("no report in this e-mail")
    assert lines[3]["error"] == "a zip archive with no files in it"
    assert lines[3]["file"].startswith(f"{root}/cur/") and lines[3]["file"].endswith(" > b.zip")
    assert all("/tmp/" not in line["file"].removeprefix(str(tmp_path)) for line in lines)
    code, out, _ = _run("--store", store_url, "--maildir", str(root), capsys=capsys)
    assert (code, out) == (1, "0 reports imported, 2 already in the store, 2 unreadable "
                              "(from 4 inputs)\n")  # fmt: skip


def test_an_mbox(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "reports.mbox"
    box = mailbox.mbox(path)
    for n in range(3):
        box.add(report_mail([(f"r{n}.xml", "text/xml",
                              aggregate_xml(report_id=f"x{n}").encode())]))  # fmt: skip
    google = "Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174.eml"
    box.add((REAL_WORLD / "aggregate" / google).read_bytes())
    box.close()
    code, out, err = _run("--store", store_url, "--mbox", str(path), "--json", capsys=capsys)
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["file"], line["report_id"]) for line in lines] == [
        (f"{path}[1] > r0.xml", "x0"), (f"{path}[2] > r1.xml", "x1"),
        (f"{path}[3] > r2.xml", "x2"),
        (f"{path}[4] > google.com!borschow.com!1549929600!1550015999.zip > "
         "google.com!borschow.com!1549929600!1550015999.xml", "949348866075514174"),
    ]  # fmt: skip
    store = open_store(store_url)
    try:
        found = sorted(r.report_id for r in received_reports(store, "example.com"))
        assert found == ["x0", "x1", "x2"]
    finally:
        store.close()


def test_the_store_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "from-config.sqlite"
    config = tmp_path / "milter.toml"
    config.write_text(f'[reports]\nstore = "{store}"\n')
    report = tmp_path / "r.xml"
    report.write_text(aggregate_xml())
    code, out, _ = _run("--config", str(config), str(report), capsys=capsys)
    assert (code, out) == (0, "1 reports imported, 0 already in the store, 0 unreadable "
                              "(from 1 inputs)\n")  # fmt: skip
    assert store.exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "mailauth: error: give report files or directories, --maildir DIR, --mbox FILE "
             "or --imap URL"),
        (["r.xml"], "mailauth: error: give --store STORE (or [reports] store in --config FILE)"),
        (["--maildir", "."], "mailauth: error: . is not a Maildir (no new/ and cur/ in it)"),
        (["--mbox", "nowhere.mbox"], "mailauth: error: nowhere.mbox is not an mbox file"),
        (["--store", "/nonexistent/dir/s.sqlite", "r.xml"],
         "mailauth: error: report store /nonexistent/dir/s.sqlite: No such file or directory"),
        (["--sotre", "x", "r.xml"], "mailauth reports import: error: unrecognized option "
         "--sotre (did you mean --store?)"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(args: list[str], error: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.xml").write_text(aggregate_xml())
    code, out, err = _run(*args, capsys=capsys)
    assert (code, out) == (2, "")
    assert err.splitlines()[0].startswith(error)
    assert len(err.splitlines()) == 1


def test_an_unreadable_file_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.xml"
    code, _, err = _run("--store", str(tmp_path / "s.sqlite"), str(missing), capsys=capsys)
    assert code == 1
    assert err == f"mailauth reports import: {missing}: cannot read: No such file or directory\n"


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["reports", "import", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "mailauth reports import --maildir" in out and "Exit status" in out


def test_progress_bar_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(12):
        (tmp_path / f"r{n}.xml").write_text(aggregate_xml(report_id=f"p{n}"))
    code, out, err = _run("--store", str(tmp_path / "s.sqlite"), "--progress", "--json",
                          *(str(tmp_path / f"r{n}.xml") for n in range(12)),
                          capsys=capsys)  # fmt: skip
    assert code == 0
    assert "12/12" in err and "input" in err
    assert len(out.splitlines()) == 12  # (stdout: the JSON lines only)
    _, _, quiet = _run("--store", str(tmp_path / "s.sqlite"), str(tmp_path / "r0.xml"),
                       capsys=capsys)  # fmt: skip
    assert quiet == ""  # (not a terminal, no --progress: no bar)
