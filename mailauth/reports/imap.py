"""Report messages from an IMAP mailbox, for ``mailauth reports import --imap URL``.

The mailbox a domain owner's ``rua=``/``ruf=`` address delivers to is read over TLS only:
``imaps://`` (implicit TLS, port 993 by default) or ``imap://`` with STARTTLS, which is then
required (port 143): a server that does not offer it is an error, never a plain-text login.
The certificate is verified against the system's CAs, or a CA file given for a private
server. The password comes from a file or an environment variable, never from the command
line or the URL (a URL with a password in it is refused).

Messages are listed by UID, their sizes fetched first: one larger than the import's limit is
reported as unreadable without being downloaded. Each message is fetched with
``BODY.PEEK[]``, so reading it sets no ``\\Seen`` flag. After the caller has stored a
message's report (or found it already stored), it calls :meth:`ImapMailbox.done`, and the
message is moved to the ``--move-to`` folder: with MOVE (RFC 6851) when the server offers
it, else COPY, ``\\Deleted`` and UID EXPUNGE (UIDPLUS, RFC 4315), else COPY and ``\\Deleted``
only (a plain EXPUNGE could remove other clients' deleted messages). Moves are sent in
batches, and whatever is pending when the import ends or fails is moved then. A message
that could not be read stays where it is, for a look by hand; the store makes a second
import of anything idempotent.

IMAPClient (a maintained layer over the standard library's imaplib) parses the responses
and encodes folder names in IMAP's modified UTF-7.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError

MOVE_BATCH = 100
SIZE_BATCH = 500


class ImapError(Exception):
    """A connection, TLS, login or protocol failure: one line for the operator."""


@dataclass(frozen=True)
class ImapLocation:
    host: str
    port: int
    user: str
    folder: str
    starttls: bool

    def name(self, uidvalidity: int, uid: int) -> str:
        """The RFC 5092 IMAP URL of one message (the ``file`` of an import's output)."""
        scheme = "imap" if self.starttls else "imaps"
        user = urllib.parse.quote(self.user, safe="")
        folder = urllib.parse.quote(self.folder, safe="/")
        return f"{scheme}://{user}@{self.host}:{self.port}/{folder};UIDVALIDITY={uidvalidity}/;UID={uid}"


def parse_imap_url(url: str, folder: str | None = None) -> ImapLocation:
    """``imaps://USER@HOST[:PORT][/FOLDER]`` or ``imap://…`` (STARTTLS). The user may be
    percent-encoded (``dmarc%40example.com``); ``folder`` overrides the URL's (default
    INBOX). ValueError with the reason for anything else."""
    try:
        parts = urllib.parse.urlsplit(url)
        port_given = parts.port
    except ValueError as error:
        raise ValueError(f"IMAP URL {url!r}: {error}") from None
    if parts.scheme not in ("imap", "imaps"):
        raise ValueError(f"IMAP URL {url!r}: the scheme must be imaps:// or imap:// (STARTTLS)")
    if parts.password is not None:
        raise ValueError(
            f"IMAP URL {url!r}: no password in the URL; give it in a file or the environment"
        )
    if not parts.username:
        raise ValueError(f"IMAP URL {url!r}: no user (imaps://USER@HOST)")
    if not parts.hostname:
        raise ValueError(f"IMAP URL {url!r}: no host")
    if parts.query or parts.fragment:
        raise ValueError(f"IMAP URL {url!r}: no query or fragment allowed")
    starttls = parts.scheme == "imap"
    path = urllib.parse.unquote(parts.path.strip("/"))
    chosen = folder if folder is not None else (path or "INBOX")
    if not chosen or any(ord(c) < 0x20 or c == "\x7f" for c in chosen):
        raise ValueError(f"IMAP folder {chosen!r}: empty or with control characters")
    return ImapLocation(
        host=parts.hostname,
        port=port_given or (143 if starttls else 993),
        user=urllib.parse.unquote(parts.username),
        folder=chosen,
        starttls=starttls,
    )


@dataclass(frozen=True)
class ImapMessage:
    """One message of the folder: ``raw`` is None when it was not fetched, and then
    ``error`` says why."""

    uid: int
    name: str
    raw: bytes | None
    error: str | None = None


class ImapMailbox:
    """A logged-in session on one folder; use as a context manager."""

    def __init__(
        self,
        location: ImapLocation,
        password: str,
        *,
        move_to: str | None = None,
        ca_file: str | None = None,
        timeout: float = 60.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if move_to is not None and (
            not move_to or any(ord(c) < 0x20 or c == "\x7f" for c in move_to)
        ):
            raise ValueError(f"IMAP folder {move_to!r}: empty or with control characters")
        self.location = location
        self.move_to = move_to
        self.max_message_bytes = max_message_bytes
        self._password = password
        self._context = ssl.create_default_context(cafile=ca_file)
        self._timeout = timeout
        self._client: Any = None
        self._uidvalidity = 0
        self._pending: list[int] = []
        self._capabilities: set[bytes] = set()
        self.moved = 0

    def __enter__(self) -> ImapMailbox:
        where = f"{self.location.host}:{self.location.port}"
        try:
            client = imapclient.IMAPClient(
                self.location.host,
                port=self.location.port,
                ssl=not self.location.starttls,
                ssl_context=self._context,
                timeout=self._timeout,
            )
        except (OSError, IMAPClientError) as error:
            raise ImapError(f"IMAP {where}: cannot connect: {_reason(error)}") from None
        self._client = client
        try:
            if self.location.starttls:
                if not client.has_capability("STARTTLS"):
                    raise ImapError(f"IMAP {where}: the server does not offer STARTTLS")
                client.starttls(self._context)
            try:
                client.login(self.location.user, self._password)
            except LoginError as error:
                raise ImapError(
                    f"IMAP {where}: login as {self.location.user!r} refused: {_reason(error)}"
                ) from None
            self._capabilities = set(client.capabilities())
            moving = self.move_to is not None and self.move_to != self.location.folder
            if moving and not client.folder_exists(self.move_to):
                client.create_folder(self.move_to)
            selected = client.select_folder(self.location.folder, readonly=self.move_to is None)
            self._uidvalidity = int(selected.get(b"UIDVALIDITY", 0))
        except ImapError:
            self._close()
            raise
        except (OSError, IMAPClientError) as error:
            self._close()
            raise ImapError(f"IMAP {where}: {_reason(error)}") from None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error is None:
                self.flush()
            else:  # the import failed: move what was stored, without hiding the failure
                with contextlib.suppress(ImapError):
                    self.flush()
        finally:
            self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except (OSError, IMAPClientError):
            with contextlib.suppress(OSError, IMAPClientError):
                client.shutdown()

    def messages(self) -> Iterator[ImapMessage]:
        """Every message of the folder at the time of the call, in UID order."""
        for listed in self.messages_listed():
            yield self.fetch(listed)

    def messages_listed(self) -> Iterator[tuple[int, int | None]]:
        """(UID, size or None when it went away) of every message of the folder now, in
        UID order: the sizes fetched in batches, nothing else."""
        try:
            uids = sorted(int(uid) for uid in self._client.search(["NOT", "DELETED"]))
        except (OSError, IMAPClientError) as error:
            raise ImapError(f"IMAP {self.location.folder}: {_reason(error)}") from None
        for start in range(0, len(uids), SIZE_BATCH):
            batch = uids[start : start + SIZE_BATCH]
            try:
                sizes = self._client.fetch(batch, ["RFC822.SIZE"])
            except (OSError, IMAPClientError) as error:
                raise ImapError(f"IMAP {self.location.folder}: {_reason(error)}") from None
            for uid in batch:
                yield uid, sizes.get(uid, {}).get(b"RFC822.SIZE")

    def fetch(self, listed: tuple[int, int | None]) -> ImapMessage:
        """One message listed by :meth:`messages_listed`: fetched when within the size
        limit (``BODY.PEEK[]``: no ``\\Seen`` flag set)."""
        uid, size = listed
        name = self.location.name(self._uidvalidity, uid)
        if size is None:
            return ImapMessage(uid, name, None, "gone from the folder while importing")
        if size > self.max_message_bytes:
            return ImapMessage(
                uid, name, None, f"{size} bytes, over the limit of {self.max_message_bytes}"
            )
        try:
            fetched = self._client.fetch([uid], ["BODY.PEEK[]"])
        except (OSError, IMAPClientError) as error:
            raise ImapError(f"IMAP {self.location.folder}: {_reason(error)}") from None
        raw = fetched.get(uid, {}).get(b"BODY[]")
        if not isinstance(raw, bytes):
            return ImapMessage(uid, name, None, "gone from the folder while importing")
        return ImapMessage(uid, name, raw)

    def done(self, message: ImapMessage) -> None:
        """The message's report is in the store: move it (in a batch) to ``move_to``."""
        if self.move_to is None or self.move_to == self.location.folder:
            return
        self._pending.append(message.uid)
        if len(self._pending) >= MOVE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Move the messages marked done so far."""
        pending, self._pending = self._pending, []
        if not pending or self._client is None or self.move_to is None:
            return
        try:
            if b"MOVE" in self._capabilities:
                self._client.move(pending, self.move_to)
            else:
                self._client.copy(pending, self.move_to)
                self._client.add_flags(pending, [imapclient.DELETED])
                if b"UIDPLUS" in self._capabilities:
                    self._client.uid_expunge(pending)
        except (OSError, IMAPClientError) as error:
            raise ImapError(
                f"IMAP: moving {len(pending)} message(s) to {self.move_to!r}: {_reason(error)}"
            ) from None
        self.moved += len(pending)


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({error.verify_message})"
    argument = error.args[0] if len(error.args) == 1 else None
    text = argument.decode(errors="replace") if isinstance(argument, bytes) else str(error)
    quoted = re.fullmatch(r"b(['\"])(.*)\1", text.strip())  # imaplib's str() of a bytes reply
    text = (quoted.group(2) if quoted else text).strip() or type(error).__name__
    return text.splitlines()[0][:300]
