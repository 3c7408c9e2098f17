"""Where ``mailauth milter`` logs (``[logging]``, docs/milter.md "Logs"): stderr (under
systemd, the journal takes it with the unit's name), and/or a local syslog socket with a
facility (``/dev/log``: rsyslog or syslog-ng, or journald itself, which listens there on
systemd hosts -- so no journald library is needed).

Every line is one record: the per-message lines are JSON or logfmt with no line break
(mailauth.milter.logline), and over syslog each record is one datagram.

Neither blocks the event loop: the syslog socket is non-blocking, and stderr is written by
a thread of its own from a bounded queue (:class:`QueuedStderr`). A pipe or journal stream
that stops reading fills, and a blocking write on the loop would stop every message with it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import logging.handlers
import os
import queue
import socket
import sys
import threading
import time
from typing import Protocol

from mailauth.cli.common import CliError
from mailauth.config_inbound import FACILITIES, LogOptions

STDERR_FORMAT = "mailauth milter: %(message)s"
# Records waiting for stderr (about 300 octets each); past that they are dropped and counted,
# and a line says how many once stderr has taken half of those waiting.
STDERR_QUEUE = 10_000
# Seconds the last records may take to go out when the milter stops (stderr wedged: no
# more; the milter must still stop).
STDERR_CLOSE_TIMEOUT = 5.0


def configure_logging(options: LogOptions) -> None:
    """Root handlers for the milter's process (level INFO): stderr, syslog, or both.
    CliError (one line, exit 2) when the syslog socket cannot be reached."""
    handlers: list[logging.Handler] = []
    if options.stderr:
        handlers.append(QueuedStderr(fmt=STDERR_FORMAT))
    if options.syslog:
        handlers.append(syslog_handler(options))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        if isinstance(old, QueuedStderr):
            old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    # A syslog daemon restarting must not write tracebacks to stderr: a record that cannot
    # be sent is dropped (the handler reconnects for the next one).
    logging.raiseExceptions = False


class Stream(Protocol):
    """What :class:`QueuedStderr` writes to (stderr, or a test's stand-in)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class QueuedStderr(logging.handlers.QueueHandler):
    """A handler that formats a record where it is logged (the event loop) and hands the
    line to a thread that writes it to ``stream`` (stderr), through a queue of at most
    ``size`` records: a full queue drops the record (counted in ``dropped``) instead of
    waiting. The thread writes to the stream itself, holding no handler's lock: one stuck
    in a write to a wedged stderr never holds up ``logging.shutdown`` at exit.

    ``dropped`` is two counters, each kept by one side (the loggers' under the handler's
    lock, the writer thread's by that thread alone), so that no count is lost between
    them. A line saying how many were dropped is queued only once the stream has taken a
    line again, and written by the thread with the count at that moment: a stream that
    fails every write gets no note per record. A stream gone for good (:data:`GONE`: its
    reader closed the pipe or socket, or the file is closed) cannot be reopened -- stderr
    is a descriptor the process inherited --, so after the first such error nothing more
    is queued or written (counted as dropped), and one warning says so through the other
    handlers (syslog)."""

    def __init__(
        self, stream: Stream | None = None, size: int = STDERR_QUEUE, fmt: str = "%(message)s"
    ) -> None:
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(maxsize=size)
        super().__init__(self._queue)
        self.setFormatter(logging.Formatter(fmt))  # (prepare() leaves the line in msg)
        self.stream: Stream = stream if stream is not None else sys.stderr
        self._refused = 0  # records not queued (full, or stderr gone): the loggers' side
        self._failed = 0  # records the stream did not take: the writer thread's side
        self._told = 0  # drops already said in a line (the writer thread's)
        self._taking = True  # the last write went through (the writer thread's)
        self._note_queued = False
        self.gone = ""  # why stderr is gone for good ("" while it is not)
        self._writer = threading.Thread(target=self._write, name="mailauth-log", daemon=True)
        self._writer.start()

    @property
    def dropped(self) -> int:
        """Records lost: no room in the queue, not taken by the stream, or stderr gone."""
        return self._refused + self._failed

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.gone:
            self._refused += 1
            return
        try:
            if self._note_due() and self._queue.qsize() <= self._queue.maxsize // 2:
                # (once stderr takes lines again: not a note for every slot freed)
                self._note_queued = True  # (before: the writer may take the note at once)
                self._queue.put_nowait(_NOTE)
            self._queue.put_nowait(record)
        except queue.Full:
            self._refused += 1

    def _note_due(self) -> bool:
        return self._taking and not self._note_queued and self.dropped > self._told

    def _write(self) -> None:
        while (record := self._queue.get()) is not None:
            if record is _NOTE:
                self._note_queued = False
                lost = self.dropped - self._told
                if lost and self._put(self._drops_note(lost)):
                    self._told += lost
            elif not self._put(record):
                self._failed += 1

    def _put(self, record: logging.LogRecord) -> bool:
        """Write one line; whether the stream took it."""
        if self.gone:
            return False
        try:
            self.stream.write(f"{record.msg}\n")
            self.stream.flush()
        except (OSError, ValueError) as exc:
            self._taking = False
            if isinstance(exc, ValueError) or exc.errno in GONE:
                self.gone = str(exc) or type(exc).__name__
                _log.warning("stderr is gone for good (%s): no more log lines there", self.gone)
            return False
        self._taking = True
        return True

    def _drops_note(self, lost: int) -> logging.LogRecord:
        """The line saying how many records were dropped since the last such line."""
        text = f"{lost} log lines dropped: stderr did not take them in time"
        note = logging.LogRecord("mailauth.milter", logging.WARNING, __file__, 0, text, None, None)
        prepared: logging.LogRecord = self.prepare(note)
        return prepared

    def close(self) -> None:
        """Write what is queued (for STDERR_CLOSE_TIMEOUT at most), then stop the thread."""
        if self._writer.is_alive():
            ends = time.monotonic() + STDERR_CLOSE_TIMEOUT
            # (stderr wedged: no room for the last note or the end mark, or no end to the
            # write; the daemon thread then ends with the process)
            with contextlib.suppress(queue.Full):
                self.acquire()  # (the last drops said too, if stderr takes lines)
                try:
                    note = self._note_due()
                    self._note_queued = self._note_queued or note
                finally:
                    self.release()
                if note:
                    self._queue.put(_NOTE, timeout=STDERR_CLOSE_TIMEOUT)
                self._queue.put(None, timeout=max(0.0, ends - time.monotonic()))
            self._writer.join(max(0.0, ends - time.monotonic()))
        super().close()


# The queue's mark for "a line saying how many were dropped" (the writer counts them).
_NOTE = logging.LogRecord("mailauth.milter", logging.WARNING, __file__, 0, "", None, None)
_log = logging.getLogger("mailauth.milter")
# What a write to stderr fails with once its reader has gone for good (a closed pipe, a
# journal stream whose journald is gone) or its descriptor is: never taken again.
GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.EBADF})


def configured() -> bool:
    """Whether :func:`configure_logging` has set the milter's handlers up (a reload: what
    is said then goes through them, never straight to a stderr that may not take it)."""
    ours = (QueuedStderr, NonBlockingSysLogHandler)
    return any(isinstance(handler, ours) for handler in logging.getLogger().handlers)


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
