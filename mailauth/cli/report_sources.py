"""Where ``mailauth reports import`` finds received reports: files and directories, a Maildir,
an mbox, an IMAP folder. Each source is a sized iterable of :class:`SourceItem` (the
importer's input, :mod:`mailauth.reports.received.importer`); the IMAP source also has
``settle`` (an item's reports are stored: move its message) and ``close``.

Every item is read with a bound (``max_input``): a file or mailbox message larger than that
is an item with an error, never read whole. A directory is walked without following
symbolic links to directories; names starting with ``.`` are skipped.
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator
from pathlib import Path

from mailauth.files import read_limited, read_stream
from mailauth.reports.imap import ImapError, ImapLocation, ImapMailbox, ImapMessage
from mailauth.reports.received.importer import SourceItem
from mailauth.reports.received.limits import describe_size


def _error(exc: OSError, limit: int) -> str:
    if exc.errno == 27:  # EFBIG, from read_limited
        return f"refused: larger than {describe_size(limit)}"
    return f"cannot read: {exc.strerror or exc}"


class FileSource:
    """Files, and every file under the directories, in name order."""

    def __init__(self, paths: list[str], limit: int) -> None:
        self.limit = limit
        self.paths: list[str] = []
        for path in paths:
            if os.path.isdir(path):
                self.paths.extend(_walk(path))
            else:
                self.paths.append(path)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[SourceItem]:
        for path in self.paths:
            try:
                yield SourceItem(path, read_limited(path, self.limit))
            except OSError as exc:
                yield SourceItem(path, error=_error(exc, self.limit))


def _walk(directory: str) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
    return found


class MaildirSource:
    """The messages of a Maildir's ``new/`` and ``cur/`` (``tmp/``: messages still being
    delivered, skipped), in name order (Maildir names begin with their delivery time)."""

    def __init__(self, path: str, limit: int) -> None:
        self.limit = limit
        root = Path(path)
        if not all((root / sub).is_dir() for sub in ("new", "cur")):
            raise ValueError(f"{path} is not a Maildir (no new/ and cur/ in it)")
        self.paths = [
            str(entry) for sub in ("new", "cur")
            for entry in sorted((root / sub).iterdir())
            if not entry.name.startswith(".") and entry.is_file()
        ]  # fmt: skip

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[SourceItem]:
        for path in self.paths:
            try:
                yield SourceItem(path, read_limited(path, self.limit))
            except OSError as exc:
                yield SourceItem(path, error=_error(exc, self.limit))


class MboxSource:
    """The messages of an mbox file (Python's ``mailbox``: the ``From`` lines split it, and
    ``>From`` quoting is as the file has it). Items are named ``FILE[n]`` (from 1)."""

    def __init__(self, path: str, limit: int) -> None:
        self.limit = limit
        self.path = path
        if not os.path.isfile(path):
            raise ValueError(f"{path} is not an mbox file")
        try:
            self.box = mailbox.mbox(path, create=False)
            self.keys = list(self.box.iterkeys())
        except (OSError, mailbox.Error) as exc:
            raise ValueError(f"cannot read the mbox {path}: {exc}") from None

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[SourceItem]:
        try:
            for number, key in enumerate(self.keys, 1):
                name = f"{self.path}[{number}]"
                try:
                    with self.box.get_file(key) as handle:
                        yield SourceItem(name, read_stream(handle, self.limit))  # type: ignore[arg-type]
                except OSError as exc:
                    yield SourceItem(name, error=_error(exc, self.limit))
        finally:
            self.box.close()


class ImapSource:
    """The messages of an IMAP folder (:mod:`mailauth.reports.imap`: TLS only, the password
    from a file or the environment). Connected when made, so that a wrong URL, password or
    certificate is a usage error before anything is imported. A message whose reports are
    all in the store afterwards (imported, or there already) is moved to ``move_to`` when
    given; one that could not be read stays where it is. Items are named by their RFC 5092
    URL."""

    def __init__(self, location: ImapLocation, password: str, *, move_to: str | None,
                 ca_file: str | None, limit: int) -> None:  # fmt: skip
        self.mailbox = ImapMailbox(
            location, password, move_to=move_to, ca_file=ca_file, max_message_bytes=limit
        )
        self.mailbox.__enter__()
        try:
            self.messages = list(self.mailbox.messages_listed())
        except ImapError:
            self.close()
            raise
        self._by_name: dict[str, ImapMessage] = {}

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[SourceItem]:
        for listed in self.messages:
            message = self.mailbox.fetch(listed)
            if message.raw is None:
                yield SourceItem(message.name, error=f"refused: {message.error}")
                continue
            self._by_name[message.name] = message
            yield SourceItem(message.name, message.raw)

    def settle(self, item: SourceItem, stored: bool) -> None:
        """``item``'s reports are all stored (``stored``), or not: moved, or left."""
        message = self._by_name.pop(item.name, None)
        if message is not None and stored:
            self.mailbox.done(message)

    def close(self) -> None:
        self.mailbox.__exit__(None, None, None)
