"""The milter's cost, measured four ways (root and Debian's postfix needed, as for the tests).

1. Through Postfix (tests/postfix.py), side by side in one run, one throwaway Postfix per
   configuration: no milter, an empty milter (the same protocol handling, no checks: what
   Postfix's milter support costs by itself), ``mailauth milter`` (SPF, DKIM, ARC, DMARC,
   TCP socket) and rspamd doing only SPF, DKIM, ARC and DMARC (../shared/tools/
   rspamd-auth-milter.sh; its row is skipped, with the reason, when rspamd is not installed).
   DKIM-signed 4.6 KB messages over 20 concurrent SMTP sessions, the client address given
   with XCLIENT (so that SPF runs for real), DNS from a server on loopback (warm after the
   first messages). The configurations take turns, in a rotated order, for several rounds;
   each round gives each configuration's messages per second as a ratio to no milter in that
   round, and CPU ms per message: of the milter's processes (/proc/PID/stat), of the
   milter's and of Postfix's process trees (cpuacct cgroups: smtpd, cleanup, qmgr, smtp and
   smtp-sink, their system calls included), and of the whole machine (/proc/stat: everything
   running on it, this benchmark's SMTP client and DNS server included). Then, untimed, per
   message: the TCP segments and milter packets on the milter socket in each direction
   (tcpdump), and the system calls of the milter and of Postfix (strace -c -f).
2. The milter alone, driven over its socket by 100 concurrent connections: messages per
   second and the 99th percentile of the end-of-message latency.
3. Peak memory (VmHWM) of the milter process while 20 messages of 20 MB pass at once.
4. First-time senders: the milter alone, 100 connections, each message from a domain whose
   DNS answers are not cached yet, every DNS answer 50 ms late (tests/dnsserver.py's slow
   server): messages per second when SPF has to wait for DNS.

Run: sudo python benchmarks/bench_milter.py [--messages 1000] [--rounds 5] [--postfix-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_check
from milter_measure import (
    Capture,
    CpuGroup,
    SyscallCount,
    descendants,
    machine_cpu,
    process_cpu,
)
from milter_peers import (
    RSPAMD_SCRIPT,
    EmptyMilter,
    MailauthMilter,
    NoMilter,
    Peer,
    Rspamd,
    Unavailable,
    launch,
)

from mailauth.dkim import Signer
from tests.dnsserver import LoopbackDnsServer, slow_dns_process
from tests.milterclient import MilterClient, split_message
from tests.postfix import ThrowawayPostfix, free_port

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


def demo_message(size: int) -> bytes:
    """The demo message with its body grown to about ``size`` bytes, signed again with the
    demo key (selector ``demo``, published in the demo zone)."""
    raw = (DEMO / "message.eml").read_bytes()
    unsigned = raw[raw.index(b"From: ") :]
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    unsigned += line * max(0, (size - len(unsigned)) // len(line))
    signer = Signer("example.com", "demo", (DEMO / "demo.key.pem").read_bytes())
    return signer.sign(unsigned)


MESSAGE = demo_message(4000)


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def smtp_load(port: int, messages: int, sessions: int) -> float:
    """Messages accepted per second over ``sessions`` concurrent SMTP connections."""
    per_session = messages // sessions

    def session() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.ehlo("client.example")
            smtp.docmd("XCLIENT", "ADDR=192.0.2.10 NAME=[UNAVAILABLE] HELO=mail.example.com")
            smtp.ehlo("mail.example.com")
            for _ in range(per_session):
                smtp.sendmail("alice@example.com", ["bob@example.net"], MESSAGE)

    threads = [threading.Thread(target=session) for _ in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_session * sessions / (time.perf_counter() - started)


async def direct_load(port: int, messages: int, connections: int) -> tuple[float, float]:
    headers, body = split_message(MESSAGE)
    latencies: list[float] = []
    per_connection = messages // connections

    async def connection() -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        for _ in range(per_connection):
            started = time.perf_counter()
            await client.message(
                ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com",
                headers=headers, body=body,
            )  # fmt: skip
            latencies.append(time.perf_counter() - started)
        await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.quantiles(latencies, n=100)[98]


async def big_messages(port: int, count: int, size_mb: int) -> None:
    headers, body = split_message(MESSAGE)
    line = b"x" * 998 + b"\r\n"
    big = body + line * (size_mb * 1_000_000 // len(line))

    async def one() -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        await client.message(
            ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com",
            headers=headers, body=big,
        )  # fmt: skip
        await client.close()

    await asyncio.gather(*(one() for _ in range(count)))


def first_time_senders(count: int) -> float:
    """Messages per second from ``count`` domains never seen before (DNS 50 ms away)."""
    zone = bench_check.make_zone(count)
    with slow_dns_process(zone, 0.05) as address:
        port = free_port()
        command = [sys.executable, "-m", "mailauth", "milter", "--listen"]
        command += [f"inet:{port}@127.0.0.1", "--authserv-id", "mx.example.org"]
        milter = launch([*command, "--nameserver", address])
        try:
            return asyncio.run(_first_time_load(port, count))
        finally:
            milter.terminate()
            milter.wait(timeout=30)


async def _first_time_load(port: int, count: int) -> float:
    waiting = list(range(count))

    async def connection() -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        while waiting:
            n = waiting.pop()
            raw = (
                f"From: a@d{n}.example\r\nTo: b@example.org\r\nSubject: first\r\n"
                f"Message-ID: <{n}@d{n}.example>\r\n\r\nHello.\r\n"
            ).encode()
            headers, body = split_message(raw)
            await client.message(
                ip="192.0.2.10", helo=f"mx.d{n}.example", mail_from=f"a@d{n}.example",
                headers=headers, body=body,
            )  # fmt: skip
        await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(100)))
    return count / (time.perf_counter() - started)


@dataclass
class Row:
    """One configuration behind its own Postfix, and what was measured for it."""

    peer: Peer
    postfix: ThrowawayPostfix
    mta: CpuGroup
    milter: CpuGroup
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    ms: dict[str, list[float]] = field(default_factory=dict)  # CPU ms per message, by column
    wire: Capture | None = None
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    dns_queries: int = 0  # asked of the benchmark's DNS server in the tcpdump pass


def _timed(row: Row, messages: int, sessions: int) -> None:
    pids = row.peer.pids()
    meters = {
        "milter": lambda: process_cpu(pids) if pids else None,
        "milter tree": row.milter.seconds,
        "Postfix": row.mta.seconds,
        "client": _own_cpu,
        "machine": machine_cpu,
    }
    before = {name: meter() for name, meter in meters.items()}
    row.rates.append(smtp_load(row.postfix.port, messages, sessions))
    sent = messages // sessions * sessions
    for name, meter in meters.items():
        start, end = before[name], meter()
        if start is not None and end is not None:
            row.ms.setdefault(name, []).append((end - start) * 1000 / sent)
    parts = [row.ms.get(name, []) for name in ("milter tree", "Postfix", "client")]
    if all(len(part) == len(row.rates) for part in parts):
        row.ms.setdefault("all", []).append(sum(part[-1] for part in parts))


def _own_cpu() -> float:
    """This process: the SMTP client's threads and the DNS server's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def through_postfix(args: argparse.Namespace, dns: LoopbackDnsServer) -> list[Row]:
    peers = [NoMilter(), EmptyMilter(), MailauthMilter(dns.address)]
    peers.append(Rspamd(dns.address, args.rspamd_script))
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        for peer in peers:
            try:
                peer.start()
            except Unavailable as exc:
                print(f"{peer.name}: not measured: {exc}")
                continue
            stack.callback(peer.stop)
            postfix = stack.enter_context(ThrowawayPostfix(peer.port))
            slug = peer.name.split()[0]
            row = Row(peer, postfix, CpuGroup(f"{slug}-postfix"), CpuGroup(f"{slug}-milter"))
            stack.callback(row.mta.remove)
            stack.callback(row.milter.remove)
            row.mta.add(postfix.pids())
            row.milter.add(peer.group_pids())
            smtp_load(postfix.port, args.sessions * 4, args.sessions)  # warm up (DNS caches)
            rows.append(row)
        for turn in range(args.rounds):
            for row in rows[turn % len(rows) :] + rows[: turn % len(rows)]:
                _timed(row, args.messages, args.sessions)
            for row in rows:
                row.ratios.append(row.rates[-1] / rows[0].rates[-1])
        sessions = max(1, args.count_messages * args.sessions // args.messages)
        for row in rows:  # untimed: tcpdump, then strace, each in its own pass
            asked = len(dns.questions)
            if row.peer.port is not None:
                with Capture(row.peer.port) as row.wire:
                    smtp_load(row.postfix.port, args.count_messages, sessions)
            row.dns_queries = len(dns.questions) - asked
            milter = SyscallCount(row.peer.pids())
            mta = SyscallCount(descendants(row.postfix.pids()))
            with contextlib.ExitStack() as tracing:
                if row.peer.pids():
                    tracing.enter_context(milter)
                tracing.enter_context(mta)
                smtp_load(row.postfix.port, args.count_messages, sessions)
            row.calls = {"milter": milter.calls, "Postfix": mta.calls}
    return rows


def _spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    middle = f"{statistics.median(values):.{digits}f}"
    return f"{middle} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def report(rows: list[Row], args: argparse.Namespace) -> None:
    sent = args.messages // args.sessions * args.sessions
    print(
        f"Postfix, {args.sessions} sessions, {sent} messages of {len(MESSAGE)} bytes per "
        f"configuration and round, {args.rounds} rounds; median [lowest-highest]. CPU ms per "
        "message: the milter's processes; Postfix's (smtp-sink's too); this benchmark's "
        "client and DNS server; all three (with every milter process); the whole machine "
        "(/proc/stat: also whatever else runs on it)."
    )
    columns = ("milter", "Postfix", "client", "all", "machine")
    print(f"  {'':16} {'msg/s':>13} {'ratio':>16}" + "".join(f" {c:>18}" for c in columns))
    for row in rows:
        cpu = "".join(f" {_spread(row.ms.get(column, [])):>18}" for column in columns)
        print(f"  {row.peer.name:16} {_spread(row.rates, 0):>13} {_spread(row.ratios):>16}{cpu}")
    print("  " + "; ".join(f"{row.peer.name}: {row.peer.note}" for row in rows if row.peer.note))
    ours = [row for row in rows if isinstance(row.peer, MailauthMilter)]
    peers = [row for row in rows if isinstance(row.peer, Rspamd)]
    for mine, theirs in zip(ours, peers, strict=False):  # (the same round, adjacent turns)
        pairs = list(zip(mine.ratios, theirs.ratios, strict=True))
        print(
            f"  {mine.peer.name}'s ratio at least {theirs.peer.name}'s in "
            f"{sum(a >= b for a, b in pairs)} of {len(pairs)} rounds; "
            f"difference {_spread([a - b for a, b in pairs])}"
        )
    count = args.count_messages // max(1, args.count_messages * args.sessions // args.messages)
    print(
        f"Per message, {args.count_messages} messages ({count} per SMTP session, "
        "milter connections set up and closed included): TCP segments (with data) and milter "
        "packets by command, each way (tcpdump); system calls (strace -c -f):"
    )
    n = args.count_messages
    for row in rows:
        print(f"  {row.peer.name}: {row.dns_queries / n:.1f} DNS queries (warm caches)")
        if row.wire is not None:
            for label, side in (
                ("MTA->milter", row.wire.to_milter),
                (
                    "milter->MTA",
                    row.wire.from_milter,
                ),
            ):
                commands = " ".join(f"{c}:{v / n:.1f}" for c, v in side.commands.most_common())
                print(
                    f"    {label}: {side.segments / n:.1f} segments ({side.data_segments / n:.1f}"
                    f" with data, {side.octets / n:.0f} octets); packets {commands}"
                )
        for label, calls in row.calls.items():
            if calls:
                top = ", ".join(f"{name} {v / n:.1f}" for name, v in calls.most_common(6))
                print(f"    {label} system calls: {sum(calls.values()) / n:.1f} ({top})")


def start_milter(dns: LoopbackDnsServer) -> tuple[subprocess.Popen[bytes], int]:
    peer = MailauthMilter(dns.address)
    peer.start()
    return peer._process, peer.port or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="per configuration and round")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count-messages", type=int, default=200, help="tcpdump/strace passes")
    parser.add_argument("--first-time", type=int, default=400, help="senders never seen before")
    parser.add_argument("--postfix-only", action="store_true", help="only the comparison (1)")
    parser.add_argument("--rspamd-script", type=Path, default=RSPAMD_SCRIPT)
    args = parser.parse_args()
    with LoopbackDnsServer((DEMO / "example.com.zone").read_text()) as dns:
        rows = through_postfix(args, dns)
        report(rows, args)
        if args.postfix_only:
            return
        milter, port = start_milter(dns)
        try:
            rate, p99 = asyncio.run(direct_load(port, args.messages, 100))
            asyncio.run(big_messages(port, 20, 20))
            memory = peak_memory_mb(milter.pid)
        finally:
            milter.terminate()
            milter.wait(timeout=30)
    print(f"milter alone, 100 connections: {rate:.0f} msg/s, p99 {p99 * 1000:.1f} ms")
    print(f"peak memory of the milter with 20 x 20 MB at once: {memory:.0f} MB")
    first = first_time_senders(args.first_time)
    print(f"milter alone, {args.first_time} first-time senders, DNS 50 ms away: {first:.0f} msg/s")


if __name__ == "__main__":
    main()
