"""Instruments for bench_milter.py: CPU time (per process, per cgroup, the whole machine),
packets on a milter socket (tcpdump, decoded here), and system calls (strace -c).

CPU: /proc/PID/stat utime + stime of a milter's processes; a cgroup (v1 cpuacct) holding a
Postfix instance and everything it forks, so that its short-lived smtpd and cleanup
processes count too; /proc/stat for the whole machine (every core: user, nice, system, irq,
softirq, steal), which also sees whatever else the machine is running.

Packets: ``tcpdump -i lo -w`` on the milter's port while messages pass, then each TCP
segment is counted by direction (with or without data), and the two byte streams of every
connection are cut into milter packets, counted by command (``D`` macros, ``L`` headers...).
Loopback never reorders or loses segments, so reassembly only follows sequence numbers.

System calls: ``strace -c -f -p ...`` attached to a set of processes (and whatever they
fork) while messages pass; strace slows them down, so this is a separate, untimed pass.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import struct
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct")
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pids: list[int]) -> float:
    """Seconds of CPU (user + system) that these processes (all their threads) have used."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):  # (gone: counted until then by whoever reaped it)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def machine_cpu() -> float:
    """Seconds of CPU the whole machine has been busy, all cores together."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def descendants(roots: list[int]) -> list[int]:
    """The processes in these trees, roots included."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class CpuGroup:
    """A cpuacct cgroup: the processes put in it and every process they fork later; its
    CPU time (``seconds``) includes the kernel's work in their system calls. Unavailable
    (``seconds`` is None) where cgroup v1 cpuacct is not mounted or not writable."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = CGROUP_ROOT / f"mailauth-bench-{os.getpid()}-{name}"
        try:
            self.path.mkdir()
        except OSError:
            self.path = None

    def add(self, pids: list[int]) -> None:
        if self.path is None:
            return
        for pid in descendants(pids):
            with contextlib.suppress(OSError):  # (a process that has just exited)
                (self.path / "cgroup.procs").write_text(str(pid))

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        if self.path is None:
            return
        for pid in self.pids():  # (stragglers go back to the root group)
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            self.path.rmdir()


@dataclass
class Direction:
    """What one side sent on the milter socket."""

    segments: int = 0  # TCP segments, SYN/FIN/pure ACK included
    data_segments: int = 0  # those carrying data
    octets: int = 0
    commands: Counter[str] = field(default_factory=Counter)  # milter packets by command


@dataclass
class _Stream:
    data: bytearray = field(default_factory=bytearray)
    next_seq: int | None = None
    broken: bool = False

    def add(self, seq: int, payload: bytes) -> None:
        if self.broken or not payload:
            return
        if self.next_seq is not None and seq != self.next_seq:
            skip = (self.next_seq - seq) & 0xFFFFFFFF
            if skip > 1 << 30:  # a gap: a segment the capture missed
                self.broken = True
                return
            if skip >= len(payload):
                return  # (a retransmission)
            payload = payload[skip:]
        self.data += payload
        self.next_seq = (seq + len(payload)) & 0xFFFFFFFF


def _commands(stream: bytes | bytearray) -> Counter[str]:
    found: Counter[str] = Counter()
    offset = 0
    while offset + 5 <= len(stream):
        (length,) = struct.unpack_from(">I", stream, offset)
        if offset + 4 + length > len(stream):
            break  # (a connection still open when the capture stopped)
        found[chr(stream[offset + 4])] += 1
        offset += 4 + length
    return found


def _pcap_records(path: Path) -> Iterator[bytes]:
    raw = path.read_bytes()
    magic = raw[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    (linktype,) = struct.unpack_from(order + "I", raw, 20)
    skip = {1: 14, 113: 16}.get(linktype)  # Ethernet (Linux loopback), Linux cooked
    if skip is None:
        raise RuntimeError(f"pcap link type {linktype} not handled")
    offset = 24
    while offset + 16 <= len(raw):
        (length,) = struct.unpack_from(order + "I", raw, offset + 8)
        yield raw[offset + 16 + skip : offset + 16 + length]
        offset += 16 + length


def count_packets(path: Path, port: int) -> tuple[Direction, Direction]:
    """(MTA -> milter, milter -> MTA) for the milter listening on ``port``."""
    to_milter, from_milter = Direction(), Direction()
    streams: dict[tuple[int, bool], _Stream] = {}
    for ip in _pcap_records(path):
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        (total,) = struct.unpack_from(">H", ip, 2)
        tcp = ip[ihl:total]
        source, dest, seq = struct.unpack_from(">HHI", tcp, 0)
        payload = tcp[(tcp[12] >> 4) * 4 :]
        inbound = dest == port
        side = to_milter if inbound else from_milter
        side.segments += 1
        side.data_segments += bool(payload)
        side.octets += len(payload)
        stream = streams.setdefault((source if inbound else dest, inbound), _Stream())
        if tcp[13] & 0x02:  # SYN: the data starts after it
            stream.next_seq = (seq + 1) & 0xFFFFFFFF
        stream.add(seq, payload)
    if any(stream.broken for stream in streams.values()):
        raise RuntimeError("a segment is missing from the capture")
    for (_, inbound), stream in streams.items():
        (to_milter if inbound else from_milter).commands.update(_commands(stream.data))
    return to_milter, from_milter


class Capture:
    """tcpdump on loopback for the milter's port while the block runs; then ``to_milter``
    and ``from_milter`` hold what each side sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.to_milter, self.from_milter = Direction(), Direction()

    def __enter__(self) -> Capture:
        self._path = Path(tempfile.mkstemp(prefix="mailauth-bench-", suffix=".pcap")[1])
        # --immediate-mode: each packet is handed over (and -U written) as it comes; with
        # the default block buffering the packets of a last, partly filled block are lost at
        # the stop.
        command = ["tcpdump", "-i", "lo", "-nn", "-s", "0", "-B", "65536", "--immediate-mode"]
        command += ["-U", "-w", str(self._path)]
        self._dump = subprocess.Popen(
            [*command, f"tcp port {self.port}"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        _wait_for(self._dump, b"listening on")
        time.sleep(0.5)  # ("listening" is printed a moment before packets are captured)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # (the last segments)
        self._dump.send_signal(signal.SIGINT)
        self._dump.wait(timeout=30)
        assert self._dump.stderr is not None
        summary = self._dump.stderr.read() or b""
        try:
            self.to_milter, self.from_milter = count_packets(self._path, self.port)
        finally:
            self._path.unlink()
        dropped = re.search(rb"(\d+) packets? dropped by kernel", summary)
        captured = re.search(rb"(\d+) packets? captured", summary)
        seen = self.to_milter.segments + self.from_milter.segments
        if dropped is None or int(dropped.group(1)) or captured is None:
            raise RuntimeError(f"tcpdump missed packets: {summary[-300:]!r}")
        if int(captured.group(1)) != seen:
            raise RuntimeError(f"tcpdump captured {captured.group(1)!r}, {seen} in its file")


def _wait_for(process: subprocess.Popen[bytes], marker: bytes, timeout: float = 20) -> None:
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r}: {seen.decode(errors='replace')[-300:]}")
        seen += process.stderr.read() or b""
        time.sleep(0.05)


class SyscallCount:
    """``strace -c -f`` attached to processes (and what they fork) while the block runs:
    ``calls`` then holds the number of each system call."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.calls: Counter[str] = Counter()

    def __enter__(self) -> SyscallCount:
        self._out = Path(tempfile.mkstemp(prefix="mailauth-bench-strace-")[1])
        command = ["strace", "-c", "-f", "-o", str(self._out)]
        command += [arg for pid in self.pids for arg in ("-p", str(pid))]
        self._strace = subprocess.Popen(command, stderr=subprocess.PIPE)
        _wait_for(self._strace, b"attached")
        time.sleep(0.5)  # (every process of the list, not only the first)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self._strace.send_signal(signal.SIGINT)
        self._strace.wait(timeout=60)
        for line in self._out.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                self.calls[parts[-1]] += int(parts[3])
        self._out.unlink()
