"""Reading report messages over IMAP (mailauth.reports.imap) from a real Dovecot on loopback
(tests/dovecot.py; Debian's dovecot-imapd, which .ci/run installs in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mailauth.reports.imap import ImapError, ImapMailbox, parse_imap_url
from tests.dovecot import DovecotServer, dovecot_binary


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
