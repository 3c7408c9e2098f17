"""A real PostgreSQL server for the tests: initdb into a temporary directory, listening only
on a unix socket there (no TCP), trust authentication, fsync off; stopped at the end.

Root may not run the server (initdb refuses): as root, the data directory is given to the
``postgres`` system user (Debian's package creates it) or ``nobody``, and the server runs as
that user. The binaries: ``initdb``/``pg_ctl`` on PATH, or Debian's
/usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _run_as() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return {"user": entry.pw_uid, "group": entry.pw_gid}
    raise RuntimeError("running as root and no postgres or nobody user to run PostgreSQL as")


class PostgresServer:
    """``url(dbname)``: a libpq URL for a database of this server (unix socket)."""

    def __init__(self) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (initdb, pg_ctl)")
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="mailauth-pg-"))
        self._as = _run_as()
        self._databases = 0

    def __enter__(self) -> PostgresServer:
        if self._as:
            os.chown(self.root, self._as["user"], self._as["group"])
        data = self.root / "data"
        self._pg(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8"])  # fmt: skip
        options = f"-c listen_addresses='' -k {self.root} -c fsync=off -c max_connections=50"
        self._pg(["pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start"])  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg(["pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)

    def _pg(self, command: list[str]) -> None:
        command[0] = str(self.bin / command[0])
        subprocess.run(command, check=True, capture_output=True, cwd=self.root, **self._as)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.root}"

    def processes(self) -> list[int]:
        """The server's processes: the postmaster (its pid file) and its children."""
        postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        found = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:  # (ppid)
                    found.append(int(stat.parent.name))
        return found

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The whole server SIGSTOPped (a hung host: the kernel still accepts and
        acknowledges, nothing answers), continued at the end whatever happens."""
        pids = self.processes()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"t{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
