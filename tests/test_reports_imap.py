"""Reading report messages over IMAP (mailauth.reports.imap) from a real Dovecot on loopback
(tests/dovecot.py; Debian's dovecot-imapd, which .ci/run installs in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailauth.reports.imap import ImapError, ImapMailbox, parse_imap_url
from tests.dovecot import DovecotServer, dovecot_binary
from tests.received_helpers import aggregate_xml, report_mail
from tests.report_auth_helpers import NOW, signed, zone_file


def test_url_implicit_tls_defaults() -> None:
    location = parse_imap_url("imaps://dmarc%40example.com@mail.example.com")
    assert (location.host, location.port, location.user, location.folder, location.starttls) == (
        "mail.example.com", 993, "dmarc@example.com", "INBOX", False)  # fmt: skip


def test_url_starttls_port_and_folder() -> None:
    location = parse_imap_url("imap://u@[2001:db8::1]:1143/Reports/DMARC")
    assert (location.host, location.port, location.folder, location.starttls) == (
        "2001:db8::1", 1143, "Reports/DMARC", True)  # fmt: skip
    assert parse_imap_url("imaps://u@h/Reports", folder="INBOX").folder == "INBOX"


def test_url_message_names_are_rfc5092() -> None:
    location = parse_imap_url("imaps://a%40b.example@h.example/Rep orts")
    assert (
        location.name(7, 42)
        == "imaps://a%40b.example@h.example:993/Rep%20orts;UIDVALIDITY=7/;UID=42"
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("imaps://u:secret@h.example/", "no password in the URL"),
        ("https://u@h.example/", "scheme must be imaps"),
        ("imaps://h.example/", "no user"),
        ("imaps://u@/INBOX", "no host"),
        ("imaps://u@h.example/?x=1", "no query"),
        ("imaps://u@h.example:99999/", "IMAP URL"),
        ("imaps://u@h.example/a%0Db", "control characters"),
    ],
)
def test_url_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_imap_url(url)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    if dovecot_binary() is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI needs Dovecot (.ci/run installs dovecot-imapd)")
        pytest.skip("Dovecot is not installed (dovecot-imapd)")
    with DovecotServer() as server:
        yield server


def _message(index: int) -> bytes:
    return b"From: r@example.net\r\nSubject: report %d\r\n\r\nbody %d\r\n" % (index, index)


def _empty(server: DovecotServer, *folders: str) -> None:
    for folder in ("", *folders):
        base = server.maildir if not folder else server.maildir / f".{folder}"
        for sub in ("cur", "new"):
            if (base / sub).exists():
                for path in (base / sub).iterdir():
                    path.unlink()


def test_reads_moves_and_second_run_finds_nothing(dovecot: DovecotServer) -> None:
    _empty(dovecot, "Imported")
    for index in range(3):
        dovecot.deliver(_message(index))
    location = parse_imap_url(f"imaps://{dovecot.user}@127.0.0.1:{dovecot.port}/")
    with ImapMailbox(location, dovecot.password, move_to="Imported",
                     ca_file=str(dovecot.ca_file)) as mailbox:  # fmt: skip
        read = list(mailbox.messages())
        for message in read[:2]:  # the third "could not be read": it stays
            mailbox.done(message)
    assert [m.raw for m in read] == [_message(i) for i in range(3)]
    assert all(m.name.startswith(f"imaps://dmarc@127.0.0.1:{dovecot.port}/INBOX;") for m in read)
    assert mailbox.moved == 2
    assert (dovecot.folder_count(), dovecot.folder_count("Imported")) == (1, 2)
    with ImapMailbox(location, dovecot.password, move_to="Imported",
                     ca_file=str(dovecot.ca_file)) as mailbox:  # fmt: skip
        assert [m.raw for m in mailbox.messages()] == [_message(2)]


def test_read_only_without_move_to_and_peek_keeps_unseen(dovecot: DovecotServer) -> None:
    _empty(dovecot, "Imported")
    dovecot.deliver(_message(5))
    location = parse_imap_url(f"imap://{dovecot.user}@127.0.0.1:{dovecot.starttls_port}/INBOX")
    with ImapMailbox(location, dovecot.password, ca_file=str(dovecot.ca_file)) as mailbox:
        (message,) = list(mailbox.messages())
        mailbox.done(message)
    assert message.raw == _message(5) and mailbox.moved == 0
    assert dovecot.folder_count() == 1
    new = list((dovecot.maildir / "new").iterdir()) + list((dovecot.maildir / "cur").iterdir())
    assert all(":2,S" not in path.name for path in new)  # no \Seen flag set


def test_oversized_message_is_listed_not_fetched(dovecot: DovecotServer) -> None:
    _empty(dovecot, "Imported")
    dovecot.deliver(_message(1) + b"x" * 5000 + b"\r\n")
    location = parse_imap_url(f"imaps://{dovecot.user}@127.0.0.1:{dovecot.port}")
    with ImapMailbox(location, dovecot.password, ca_file=str(dovecot.ca_file),
                     max_message_bytes=1000) as mailbox:  # fmt: skip
        (message,) = list(mailbox.messages())
    assert message.raw is None and message.error is not None and "over the limit" in message.error


def test_wrong_password_untrusted_certificate_and_no_server(dovecot: DovecotServer) -> None:
    location = parse_imap_url(f"imaps://{dovecot.user}@127.0.0.1:{dovecot.port}")
    with (
        pytest.raises(ImapError, match="login as 'dmarc' refused"),
        ImapMailbox(location, "wrong", ca_file=str(dovecot.ca_file)),
    ):
        pass
    with (
        pytest.raises(ImapError, match="TLS certificate not trusted"),
        ImapMailbox(location, dovecot.password),
    ):
        pass
    closed = parse_imap_url(f"imaps://{dovecot.user}@127.0.0.1:1")
    with (
        pytest.raises(ImapError, match="cannot connect"),
        ImapMailbox(closed, dovecot.password, ca_file=str(dovecot.ca_file), timeout=5),
    ):
        pass


def test_starttls_is_required_of_the_server(dovecot: DovecotServer) -> None:
    """imap:// against the implicit-TLS port: the TLS handshake never comes as plain IMAP,
    so it fails rather than logging in without TLS."""
    location = parse_imap_url(f"imap://{dovecot.user}@127.0.0.1:{dovecot.port}")
    with (
        pytest.raises(ImapError),
        ImapMailbox(location, dovecot.password, ca_file=str(dovecot.ca_file), timeout=5),
    ):
        pass


REAL = Path(__file__).resolve().parent.parent / "fixtures" / "dmarc-reports" / "real-world"
GOOGLE = (
    REAL
    / "aggregate"
    / "Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174.eml"
)
LINKEDIN = REAL / "failure" / "dmarc_ruf_report_linkedin.eml"


NO_KEYS = REAL.parent / "no-keys.zone"


def _import(
    dovecot: DovecotServer, store: Path, password_file: Path, *extra: str
) -> tuple[int, list[dict[str, str]], str]:
    """``reports import --imap`` in a process of its own; DNS from a zone (no keys unless
    ``extra`` gives its own --dns-zone), never the system's resolver."""
    dns = () if "--dns-zone" in extra else ("--dns-zone", str(NO_KEYS))
    argv = [sys.executable, "-m", "mailauth", "reports", "import", "--json",
            "--imap", f"imaps://{dovecot.user}@127.0.0.1:{dovecot.port}/INBOX",
            "--imap-password-file", str(password_file), "--imap-ca", str(dovecot.ca_file),
            "--store", str(store), *dns, *extra]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, lines, done.stderr


def test_import_from_imap_moves_what_was_stored_and_is_idempotent(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    """The real report e-mails in a real IMAP folder over TLS: imported, moved to
    --move-to; the unreadable one stays, listed; a second run finds only that one; a copy of
    a report already stored is a duplicate, and moved too."""
    _empty(dovecot, "Imported")
    dovecot.deliver(GOOGLE.read_bytes())
    dovecot.deliver(LINKEDIN.read_bytes())
    dovecot.deliver(b"From: someone@example.net\r\nSubject: not a report\r\n\r\nhello\r\n")
    secret = tmp_path / "imap.pass"
    secret.write_text(dovecot.password + "\n")
    store = tmp_path / "reports.sqlite"
    code, lines, stderr = _import(dovecot, store, secret, "--move-to", "Imported")
    assert code == 1, stderr  # (one input could not be read)
    by_status = sorted((line["status"], line["kind"]) for line in lines)
    assert by_status == [("error", None), ("imported", "aggregate"), ("imported", "failure")]
    aggregate = next(line for line in lines if line["kind"] == "aggregate")
    assert aggregate["reporter"] == "google.com" and aggregate["domain"] == "borschow.com"
    assert aggregate["authenticated"] is None  # (google.com's key of 2019 is not in the zone)
    assert str(aggregate["file"]).startswith(f"imaps://dmarc@127.0.0.1:{dovecot.port}/INBOX;")
    assert (dovecot.folder_count(), dovecot.folder_count("Imported")) == (1, 2)

    code, lines, _ = _import(dovecot, store, secret, "--move-to", "Imported")
    assert code == 1 and [line["status"] for line in lines] == ["error"]
    assert (dovecot.folder_count(), dovecot.folder_count("Imported")) == (1, 2)

    dovecot.deliver(GOOGLE.read_bytes())  # the same report once more
    code, lines, _ = _import(dovecot, store, secret, "--move-to", "Imported")
    assert sorted(line["status"] for line in lines) == ["duplicate", "error"]
    assert (dovecot.folder_count(), dovecot.folder_count("Imported")) == (1, 3)


def test_import_from_imap_usage_errors_are_one_line(dovecot: DovecotServer, tmp_path: Path) -> None:
    store = tmp_path / "reports.sqlite"
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not it\n")
    code, _, stderr = _import(dovecot, store, wrong)
    assert code == 2 and stderr.count("\n") == 1
    assert "login as 'dmarc' refused" in stderr
    argv = [sys.executable, "-m", "mailauth", "reports", "import", "--store", str(store),
            "--imap", f"imaps://{dovecot.user}@127.0.0.1:{dovecot.port}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MAILAUTH_IMAP_PASSWORD"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "--imap needs --imap-password-file FILE or MAILAUTH_IMAP_PASSWORD" in done.stderr
    env["MAILAUTH_IMAP_PASSWORD"] = dovecot.password  # the environment, and no CA: untrusted
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "TLS certificate not trusted" in done.stderr
    done = subprocess.run([*argv[:-1], "imaps://dmarc:pw@127.0.0.1/"], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 2 and "no password in the URL" in done.stderr


def test_messages_flagged_deleted_are_not_read_again(dovecot: DovecotServer) -> None:
    # Without MOVE and UIDPLUS, a moved message is copied and flagged \Deleted but stays:
    # read again, it would be imported (a duplicate) and copied again every run.
    _empty(dovecot, "Imported")
    dovecot.deliver(_message(7))
    dovecot.deliver(_message(8))
    new = sorted((dovecot.maildir / "new").iterdir())
    new[1].rename(dovecot.maildir / "cur" / f"{new[1].name}:2,T")  # (Maildir's \Deleted)
    location = parse_imap_url(f"imaps://{dovecot.user}@127.0.0.1:{dovecot.port}/")
    with ImapMailbox(location, dovecot.password, ca_file=str(dovecot.ca_file)) as mailbox:
        assert [m.raw for m in mailbox.messages()] == [_message(7)]


def test_import_from_imap_carries_authentication(dovecot: DovecotServer, tmp_path: Path) -> None:
    """Report e-mails over IMAP are authenticated like files: one signed by its reporter
    (``authenticated``), moved; one whose key lookup times out (temperror: stored
    unauthenticated, left in the folder to be checked again); at the next import, with DNS
    answering, that one is stored authenticated and moved."""
    _empty(dovecot, "Imported")
    xml = aggregate_xml(2).encode()
    dovecot.deliver(signed(report_mail([("a.xml", "text/xml", xml)])))
    slow = aggregate_xml(3, report_id="slow").encode()
    dovecot.deliver(signed(report_mail([("b.xml", "text/xml", slow)]), selector="slow"))
    secret = tmp_path / "imap.pass"
    secret.write_text(dovecot.password + "\n")
    store = tmp_path / "reports.sqlite"
    (tmp_path / "timeout").mkdir()
    timeout = zone_file(tmp_path / "timeout", {"slow._domainkey.receiver.example": "timeout"})
    extra = ("--move-to", "Imported", "--now", str(NOW))
    code, lines, stderr = _import(dovecot, store, secret, "--dns-zone", str(timeout), *extra)
    assert code == 0, stderr
    assert sorted((line["report_id"], line["status"], line["authenticated"]) for line in lines) == [
        ("id-1", "imported", "receiver.example"), ("slow", "imported", None)]  # fmt: skip
    assert (dovecot.folder_count(), dovecot.folder_count("Imported")) == (1, 1)

    answering = zone_file(tmp_path, selectors=("slow",))
    code, lines, stderr = _import(dovecot, store, secret, "--dns-zone", str(answering), *extra)
    assert code == 0, stderr
    assert [(line["report_id"], line["status"], line["authenticated"]) for line in lines] == [
        ("slow", "imported", "receiver.example")]  # fmt: skip
    assert (dovecot.folder_count(), dovecot.folder_count("Imported")) == (0, 2)
