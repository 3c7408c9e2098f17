"""A unix-socket proxy in front of the tests' PostgreSQL server (tests/pgserver.py) that
loses a COMMIT's answer: a connection lost at the worst moment, on demand.

Clients connect to ``directory`` (a libpq ``host=``); everything is passed through, except
that once :meth:`CommitProxy.arm`\\ ed, the next client message whose query is ``COMMIT`` is
treated by ``mode``:

- ``"answer"``: the COMMIT is passed on, the server's answer read (the transaction has
  committed) and not passed back; both sides closed.
- ``"request"``: the COMMIT is not passed on; both sides closed (the server rolls back).
- ``"hold"``: the COMMIT is not passed on; the client's side closed, the server's kept
  open (its transaction idle, holding its locks, as when the server has not noticed).
- ``"stall"``: the message is not passed on, and nothing answered (a pooler waiting for a
  backend that does not come); ``pattern`` chooses the message (a regular expression).

``refuse_after``: once the COMMIT is lost, new connections are refused (the store gone).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import threading
from pathlib import Path

_SOCKET = ".s.PGSQL.5432"
_COMMIT = re.compile(rb"[^ ]COMMIT\x00")  # (a query that is COMMIT: not "... ON COMMIT DROP")


class CommitProxy:
    def __init__(
        self,
        server_directory: Path,
        mode: str = "answer",
        refuse_after: bool = False,
        pattern: re.Pattern[bytes] = _COMMIT,
    ) -> None:
        self.server = str(server_directory / _SOCKET)
        self.pattern = pattern
        self.mode, self.refuse_after = mode, refuse_after
        self.directory = tempfile.mkdtemp(prefix="pgp-")  # (short: a socket path's limit)
        self.lost = 0  # COMMITs lost
        self.connections = 0
        self._armed = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(os.path.join(self.directory, _SOCKET))
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CommitProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_listening()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, _SOCKET))
        os.rmdir(self.directory)

    def url(self, url: str) -> str:
        """``url`` (a database of the server) reached through the proxy."""
        return url.replace(f"host={os.path.dirname(self.server)}", f"host={self.directory}")

    def arm(self) -> None:
        self._armed = True

    def _stop_listening(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.server)
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            state = {"lose": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self._armed and self.pattern.search(data):
                    self._armed = False
                    self._lost()
                    if self.mode == "stall":
                        continue
                    if self.mode == "answer":
                        state["lose"] = True  # (before the COMMIT goes: its answer follows)
                        server.sendall(data)
                        return
                    _close(client)
                    if self.mode == "request":
                        _close(server)
                    return
                server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["lose"]:  # the COMMIT's answer: the server has committed
                    _close(client)
                    _close(server)
                    return
                client.sendall(data)

    def _lost(self) -> None:
        self.lost += 1
        if self.refuse_after:
            self._stop_listening()


def _close(sock: socket.socket) -> None:
    """(Shut down first: a close alone sends nothing while another thread reads it.)"""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
