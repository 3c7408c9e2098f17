"""Where ``mailauth milter`` logs (``[logging]``, docs/milter.md "Logs"): stderr (under
systemd, the journal takes it with the unit's name), and/or a local syslog socket with a
facility (``/dev/log``: rsyslog or syslog-ng, or journald itself, which listens there on
systemd hosts -- so no journald library is needed).

Every line is one record: the per-message lines are JSON or logfmt with no line break
(mailauth.milter.logline), and over syslog each record is one datagram.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket

from mailauth.cli.common import CliError
from mailauth.config_inbound import FACILITIES, LogOptions

STDERR_FORMAT = "mailauth milter: %(message)s"


def configure_logging(options: LogOptions) -> None:
    """Root handlers for the milter's process (level INFO): stderr, syslog, or both.
    CliError (one line, exit 2) when the syslog socket cannot be reached."""
    handlers: list[logging.Handler] = []
    if options.stderr:
        stderr = logging.StreamHandler()
        stderr.setFormatter(logging.Formatter(STDERR_FORMAT))
        handlers.append(stderr)
    if options.syslog:
        handlers.append(syslog_handler(options))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    # A syslog daemon restarting must not write tracebacks to stderr: a record that cannot
    # be sent is dropped (the handler reconnects for the next one).
    logging.raiseExceptions = False


def syslog_handler(options: LogOptions) -> logging.Handler:
    """A handler writing to the local syslog socket, as ``mailauth[PID]: message``."""
    facility = FACILITIES.get(options.syslog_facility, FACILITIES["mail"])
    kind = _socket_kind(options.syslog_socket)
    handler = NonBlockingSysLogHandler(
        address=options.syslog_socket, facility=facility, socktype=kind
    )
    handler.ident = f"mailauth[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter("milter: %(message)s"))
    return handler


class NonBlockingSysLogHandler(logging.handlers.SysLogHandler):
    """SysLogHandler on a non-blocking socket: the milter logs from its event loop, and a
    syslog daemon that stops reading (stopped, wedged, a full queue) must not stop the
    milter with it. A record the socket cannot take at once is dropped (the handler then
    reconnects for the next one, as for a daemon that restarted)."""

    def _connect_unixsocket(self, address: str) -> None:  # (the standard handler's hook)
        sock = socket.socket(socket.AF_UNIX, self.socktype)
        sock.setblocking(False)
        try:
            sock.connect(address)
        except BlockingIOError:
            pass  # (a stream socket's connection under way: records until then are dropped)
        except OSError:
            sock.close()
            raise
        self.socket = sock


def _socket_kind(path: str) -> socket.SocketKind:
    """The kind of the syslog socket at ``path`` (datagram, as /dev/log is, or stream), by
    connecting to it: SysLogHandler ignores a socket it cannot reach at start, and the
    milter would then log nowhere without a word."""
    error: OSError | None = None
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except OSError as exc:
                error = error or exc
                continue
        return kind
    assert error is not None
    raise CliError(f"cannot log to syslog at {path}: {error.strerror or error}")
