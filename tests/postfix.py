"""A throwaway Postfix instance on loopback, for tests and benchmarks (needs root and the
Debian postfix package, which .ci/run installs).

It has its own config, queue and data directories under a temporary directory, logs to a
file (no syslog here), listens on 127.0.0.1:<port>, trusts XCLIENT from loopback, relays
everything to Postfix's ``smtp-sink`` on another loopback port, which writes each delivered
message to a file, and calls the milter given.

Its main.cf must make ``postconf`` warn about nothing (no parameter twice, none unknown), and
it is checked before Postfix starts. A duplicate parameter is the one that matters: its
``overriding earlier entry`` warning is logged by every Postfix process as it starts, postlogd
(the log writer) included, and postlogd logs it to its own socket before it reads from it:
when more than ``net.unix.max_dgram_qlen`` (10 here) records are queued by then, as happens
when a few processes start at once, postlogd waits on itself, every process that logs waits
on postlogd, and the instance hangs for good (seen in CI with three ``overriding earlier
entry`` warnings per process; twenty hang every start).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SENDMAIL = "/usr/sbin/sendmail"  # Postfix's, in Debian's package
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"

MASTER_CF = """\
{port}     inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.org
mydomain = example.org
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.com example.net example.org
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
default_transport = smtp:[127.0.0.1]:{sink_port}
relay_transport = relay:[127.0.0.1]:{sink_port}
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
in_flow_delay = 0
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtpd_milters = {milters}
non_smtpd_milters = {milters}
milter_protocol = 6
milter_default_action = tempfail
milter_connect_timeout = 5s
milter_content_timeout = 30s
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
local_recipient_maps =
biff = no
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main_cf(text: str, settings: Mapping[str, str]) -> str:
    """``text`` with ``settings`` changed in place or added at the end: one line per name
    (a second line for a name is the warning the module's docstring is about)."""
    lines = text.splitlines()
    where = {
        match.group(1): index
        for index, line in enumerate(lines)
        if (match := re.match(r"([a-z0-9_]+)\s*=", line))
    }
    for name, value in settings.items():
        if name in where:
            lines[where[name]] = f"{name} = {value}"
        else:
            lines.append(f"{name} = {value}")
    return "".join(f"{line}\n" for line in lines)


class ThrowawayPostfix:
    """``milter``: where the milter listens: a TCP port on 127.0.0.1, a Postfix milter
    address such as ``unix:mailauth/milter.sock`` (relative to :attr:`queue`), or None for
    no milter. The instance lives in its own directory under /tmp (Postfix's daemons run as
    the postfix user and must reach it), removed afterwards. ``settings``: main.cf
    parameters changed or added; ``master_extra``: lines added to master.cf (more
    services: a submission port, ``-o`` overrides)."""

    def __init__(
        self,
        milter: int | str | None,
        settings: Mapping[str, str] | None = None,
        master_extra: str = "",
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailauth-postfix-", dir="/tmp"))
        self.port = free_port()
        self.sink_port = free_port()
        self.milter = milter
        self.settings, self.master_extra = dict(settings or {}), master_extra
        self.queue = self.root / "queue"
        self.sink_dir = self.root / "delivered"
        self.config = self.root / "config"
        self._sink: subprocess.Popen[bytes] | None = None
        self.killed: list[str] = []  # processes left after postfix stop (_end_stragglers)

    def __enter__(self) -> ThrowawayPostfix:
        try:
            self._start()
        except BaseException:
            with contextlib.suppress(Exception):  # (the start's error is the one to see)
                self.__exit__(None, None, None)  # (nothing of a failed start is left behind)
            raise
        return self

    def _start(self) -> None:
        for sub in ("config", "queue", "data", "delivered"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        values = {
            "root": self.root,
            "port": f"127.0.0.1:{self.port}",
            "sink_port": self.sink_port,
            "milters": (
                f"inet:127.0.0.1:{self.milter}"
                if isinstance(self.milter, int)
                else self.milter or ""
            ),
        }
        (self.config / "main.cf").write_text(main_cf(MAIN_CF.format(**values), self.settings))
        (self.config / "master.cf").write_text(MASTER_CF.format(**values) + self.master_extra)
        self._check_config()
        os.chmod(self.root, 0o755)
        shutil.chown(self.sink_dir, "postfix")
        self._sink = subprocess.Popen(
            [
                SMTP_SINK,
                "-u",
                "postfix",
                "-d",
                f"{self.sink_dir}/%M.",
                f"127.0.0.1:{self.sink_port}",
                "50",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._postfix("set-permissions")
        self._postfix("start")
        self._wait_listening()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            subprocess.run([POSTFIX, "-c", str(self.config), "stop"], capture_output=True,
                           timeout=30)  # fmt: skip
        except subprocess.TimeoutExpired:
            self._kill_master()  # (`postfix stop` waits on postlogd too when it hangs)
        self._end_stragglers()
        if self._sink is not None:
            self._sink.terminate()
            self._sink.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def _check_config(self) -> None:
        result = subprocess.run(
            [POSTCONF, "-c", str(self.config), "-n"], capture_output=True, text=True, timeout=30
        )
        if result.returncode or "warning" in result.stderr:
            raise RuntimeError(f"the throwaway Postfix's config is not clean: {result.stderr}")

    def _kill_master(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
            if pid in self._processes():  # (not another process that took a stale pid)
                os.kill(pid, signal.SIGKILL)

    def _processes(self) -> list[int]:
        """This instance's processes: Postfix's daemons, and ``master -t`` run by ``postfix
        stop``, work in its queue directory."""
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(
                    self.root
                ):
                    found.append(int(entry.name))
        return found

    def _states(self) -> list[str]:
        """Each process of the instance, and what it waits in (``unix_wait_for_peer``: on a
        full unix-dgram socket, postlogd's)."""
        states = []
        for pid in self._processes():
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
                states.append(f"{name}[{pid}] in {wchan if wchan not in ('', '0') else 'run'}")
        return states

    def _end_stragglers(self) -> None:
        """Waits a little for the instance's processes to go after ``postfix stop``, then
        ends those left, each noted in :attr:`killed` (and warned about): a daemon that waits
        on a hung postlogd never sees the master go, and would outlive the test run."""
        deadline = time.monotonic() + 10
        while self._processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self._states()
        for pid in self._processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if left:  # (after the kill: under -W error the warning raises)
            self.killed += left
            warnings.warn(
                f"Postfix processes left after postfix stop, killed: {left}", stacklevel=2
            )

    def _postfix(self, *args: str) -> None:
        command = [POSTFIX, "-c", str(self.config), *args]
        result = subprocess.run(command, capture_output=True, timeout=60)
        if result.returncode:
            raise RuntimeError(f"postfix {' '.join(args)}: {result.stderr.decode()[-500:]}")

    def _wait_listening(self) -> None:
        """Until smtpd greets (220): the kernel accepts a connection even while smtpd hangs
        (on postlogd, say), so a connection alone proves nothing. (The milter sees this
        session's CONNECT and QUIT, before any test's.)"""
        deadline, last = time.monotonic() + 20, ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as probe:
                    greeting = probe.makefile("rb").readline(512)
                    if greeting.startswith(b"220"):
                        probe.sendall(b"QUIT\r\n")
                        return
                    last = repr(greeting)
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"postfix did not greet ({last}); processes: {self._states()}; "
            f"log: {self.log()[-2000:]}"
        )

    def sendmail(self, raw: bytes, sender: str, *recipients: str) -> None:
        """Submit on the host, as local programs do (Postfix's sendmail, then pickup)."""
        command = [SENDMAIL, "-C", str(self.config), "-f", sender, *recipients]
        result = subprocess.run(command, input=raw, capture_output=True, timeout=60)
        if result.returncode:
            raise RuntimeError(f"sendmail: {result.stderr.decode()[-500:]}")

    def queue_listing(self) -> list[dict[str, Any]]:
        """The messages in Postfix's queues (postqueue -j), each with its ``queue_name``."""
        result = subprocess.run(
            [POSTQUEUE, "-c", str(self.config), "-j"], capture_output=True, timeout=30
        )
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def pids(self) -> list[int]:
        """Postfix's master process and smtp-sink: every process of this instance descends
        from one of them (for benchmarks that account the MTA's CPU)."""
        master = (self.queue / "pid" / "master.pid").read_text().strip()
        return [int(master)] + ([self._sink.pid] if self._sink is not None else [])

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def delivered(self, count: int, timeout: float = 20) -> list[bytes]:
        """The messages the sink received (waits for ``count`` of them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(self.sink_dir.iterdir())
            if len(files) >= count:
                time.sleep(0.2)
                return [f.read_bytes() for f in sorted(self.sink_dir.iterdir())]
            time.sleep(0.1)
        raise TimeoutError(
            f"{len(list(self.sink_dir.iterdir()))} of {count} delivered; log:\n{self.log()[-3000:]}"
        )
