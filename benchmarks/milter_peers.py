"""The configurations bench_milter.py puts behind Postfix, side by side in one run: no milter,
an empty milter (the protocol handling alone), ``mailauth milter``, and rspamd doing only
SPF, DKIM, ARC and DMARC (the shared tool ``rspamd-auth-milter.sh``), when it is installed.

Each :class:`Peer` starts its milter, says where it listens and which processes are its own
(whose CPU time is the milter's), and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from mailauth.milter import protocol as p
from mailauth.milter.negotiation import MACROS, STEPS_SKIPPED
from tests.postfix import free_port

# The shared tools sit beside the repository (../shared/tools), as they are laid out for
# every developer and for CI.
RSPAMD_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "tools" / "rspamd-auth-milter.sh"


class Unavailable(Exception):
    """This configuration cannot run here (the reason says why); its row is skipped."""


class Peer:
    name = ""
    note = ""  # which processes the milter CPU column counts

    def __init__(self) -> None:
        self.port: int | None = None

    def start(self) -> None:
        """Start the milter (raise Unavailable if it cannot run here)."""

    def pids(self) -> list[int]:
        """The milter's processes (none without a milter)."""
        return []

    def group_pids(self) -> list[int]:
        """The roots of every process the milter runs (they and their children)."""
        return self.pids()

    def stop(self) -> None:
        """Stop the milter."""


class NoMilter(Peer):
    name = "no milter"


class EmptyMilter(Peer):
    name = "empty milter"
    note = "(protocol only, checks nothing)"

    def start(self) -> None:
        self.port = free_port()
        self._process = multiprocessing.Process(target=empty_milter, args=(self.port,))
        self._process.daemon = True
        self._process.start()
        _wait_listening(self.port)

    def pids(self) -> list[int]:
        return [self._process.pid or 0]

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(timeout=10)


class MailauthMilter(Peer):
    name = "mailauth milter"
    note = "(one process)"

    def __init__(self, nameserver: str) -> None:
        super().__init__()
        self.nameserver = nameserver

    def start(self) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "mailauth", "milter", "--listen"]
        command += [f"inet:{self.port}@127.0.0.1", "--authserv-id", "mx.example.org"]
        self._process = launch([*command, "--nameserver", self.nameserver])

    def pids(self) -> list[int]:
        return [self._process.pid]

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)


class Rspamd(Peer):
    """rspamd 3.4 as an authentication-only milter: a proxy (milter) worker and a scanner
    worker, which talk HTTP over another loopback socket."""

    name = "rspamd"
    note = "(its two workers)"

    def __init__(self, nameserver: str, script: Path = RSPAMD_SCRIPT) -> None:
        super().__init__()
        self.nameserver, self.script = nameserver, script
        # Kept between runs: rspamd's first start compiles the public suffix list (~8 s).
        self.directory = Path(tempfile.gettempdir()) / "mailauth-bench-rspamd"

    def start(self) -> None:
        if shutil.which("rspamd") is None:
            raise Unavailable(
                "rspamd is not installed (apt-get install -y --no-install-recommends rspamd)"
            )
        if not self.script.exists():
            raise Unavailable(f"no {self.script}")
        self.port = _two_free_ports()  # the milter, and its scanner worker on port + 1
        started = subprocess.run(
            [str(self.script), str(self.directory), str(self.port), self.nameserver],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if started.returncode:
            raise Unavailable(f"{self.script.name}: {started.stderr.strip()[-300:]}")

    def _pid(self, name: str) -> int:
        return int((self.directory / name).read_text().strip())

    def pids(self) -> list[int]:
        return [self._pid("worker-proxy.pid"), self._pid("worker-normal.pid")]

    def group_pids(self) -> list[int]:
        """Every rspamd process: the main one and all its workers."""
        return [self._pid("rspamd.pid")]

    def stop(self) -> None:
        main = self._pid("rspamd.pid")
        with contextlib.suppress(ProcessLookupError):
            os.kill(main, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(main):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _two_free_ports() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise Unavailable("no two consecutive free ports")


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def launch(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a milter, its log going to a file (as to journald or a log file in production),
    and wait for its "listening" line. A pipe drained by a thread of this process would not
    do: with the SMTP client threads holding the GIL it fills, and the milter's event loop
    then waits on its log writes."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process below
    milter = subprocess.Popen(command, stderr=log)
    deadline = time.monotonic() + 30
    while os.pread(log.fileno(), 4096, 0).find(b"listening") < 0:
        if milter.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the milter did not start: {os.pread(log.fileno(), 4096, 0)!r}")
        time.sleep(0.05)
    weakref.finalize(milter, log.close)
    return milter


def empty_milter(port: int) -> None:
    """A milter that checks nothing: the same negotiation and reading as mailauth's (steps
    and macros, batched reads, one quick ACK per read left unanswered), CONTINUE where a
    reply is due, one header inserted at end of message. Its cost is what Postfix and the
    protocol cost before any checking."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        no_reply: set[bytes] = set()
        header = p.header_reply(p.INSHEADER, 0, "Authentication-Results", " mx.example.org; none")
        received = bytearray()
        while chunk := await reader.read(1 << 16):
            received += chunk
            replies = []
            for command, data in p.take_packets(received):
                if command == p.OPTNEG:
                    version, actions, protocol = p.parse_optneg(data)
                    wanted = STEPS_SKIPPED | p.P_NORCPT | p.P_HDR_LEADSPC
                    chosen = protocol & (wanted | sum(p.NO_REPLY.values()))
                    no_reply = {c for c, bit in p.NO_REPLY.items() if chosen & bit}
                    ours = actions & (p.ACT_ADDHDRS | p.ACT_SETSYMLIST)
                    lists = MACROS if ours & p.ACT_SETSYMLIST else None
                    replies.append(p.optneg_reply(min(version, 6), ours, chosen, lists))
                elif command == p.EOM:
                    replies.append(header + p.encode(p.CONTINUE))
                elif command == p.QUIT:
                    writer.close()
                    return
                elif command not in (p.MACRO, p.ABORT, p.QUIT_NC) and command not in no_reply:
                    replies.append(p.encode(p.CONTINUE))
            if replies:
                writer.write(b"".join(replies))
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 2)
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())
