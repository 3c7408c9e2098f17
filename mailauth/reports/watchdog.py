"""A client-side bound on a database statement (:class:`~.store_postgres.PostgresStore` with a
``timeout``): a server's own ``statement_timeout`` is of no use when the server does not
run at all (stopped, swapping, its host's kernel still acknowledging the packets), and
psycopg has no timeout of its own for a statement. One thread per connection watches the
statement in progress and calls ``abort`` (which shuts the connection's socket: the
statement then fails with a connection error) once it has run too long."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class StatementWatchdog:
    """One thread per timed connection: while a statement runs (:meth:`armed`), calls
    ``abort`` once it has run ``seconds``."""

    def __init__(self, seconds: float, abort: Callable[[], None]) -> None:
        self.seconds, self._abort = seconds, abort
        self._deadline: float | None = None
        self._idle = False  # (the thread waits for a deadline: it must be woken for one)
        self._stopped = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="mailauth-store-watchdog", daemon=True
                )
                self._thread.start()
            self._deadline = time.monotonic() + self.seconds
            if self._idle:  # (else it wakes at an earlier deadline and finds this one)
                self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                self._deadline = None

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._stopped:
                deadline = self._deadline
                if deadline is None:
                    self._idle = True
                    self._changed.wait()
                    self._idle = False
                elif (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
                else:
                    self._deadline = None
                    self._abort()
