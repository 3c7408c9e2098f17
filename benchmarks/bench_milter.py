"""The milter's cost, measured three ways (root and Debian's postfix needed, as for the tests).

1. Through a throwaway Postfix (tests/postfix.py): N DKIM-signed messages of 4 KB over
   20 concurrent SMTP sessions, the client address given with XCLIENT (so that SPF runs for
   real), DNS from a server on loopback (warm after the first messages); messages accepted
   per second with ``mailauth milter`` (SPF, DKIM, ARC, DMARC, TCP socket), with an empty
   milter (the same protocol handling, no checks: what Postfix's milter support costs by
   itself) and with no milter, as ratios, and each milter process's CPU ms per message.
2. The milter alone, driven over its socket by 100 concurrent connections: messages per
   second and the 99th percentile of the end-of-message latency.
3. Peak memory (VmHWM) of the milter process while 20 messages of 20 MB pass at once.
4. First-time senders: the milter alone, 100 connections, each message from a domain whose
   DNS answers are not cached yet, every DNS answer 50 ms late (tests/dnsserver.py's slow
   server): messages per second when SPF has to wait for DNS.

Run: sudo python benchmarks/bench_milter.py [--messages 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_check

from mailauth.dkim import Signer
from mailauth.milter import protocol as p
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


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


def start_milter(dns: LoopbackDnsServer) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "mailauth", "milter", "--listen", f"inet:{port}@127.0.0.1"]
    command += ["--authserv-id", "mx.example.org", "--nameserver", dns.address]
    return launch(command), port


def empty_milter(port: int) -> None:
    """A milter that checks nothing: the same negotiation as mailauth's (skipped steps, no
    replies where allowed, quick ACKs), CONTINUE where a reply is due, one header inserted
    at end of message. Its cost is what Postfix and the protocol cost before any checking."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        no_reply: set[bytes] = set()
        header = p.header_reply(p.INSHEADER, 0, "Authentication-Results", " mx.example.org; none")
        while True:
            try:
                packet = await reader.readexactly(p.decode_header(await reader.readexactly(4)))
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            command, data = packet[:1], packet[1:]
            if command == p.OPTNEG:
                _, actions, protocol = p.parse_optneg(data)
                wanted = p.P_NORCPT | p.P_NOUNKNOWN | p.P_HDR_LEADSPC | sum(p.NO_REPLY.values())
                chosen = protocol & wanted
                no_reply = {c for c, bit in p.NO_REPLY.items() if chosen & bit}
                writer.write(p.optneg_reply(actions & p.ACT_ADDHDRS, chosen))
            elif command == p.EOM:
                writer.write(header + p.encode(p.CONTINUE))
            elif command == p.QUIT:
                break
            elif command not in (p.MACRO, p.ABORT, p.QUIT_NC) and command not in no_reply:
                writer.write(p.encode(p.CONTINUE))
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--first-time", type=int, default=400, help="senders never seen before")
    args = parser.parse_args()
    with LoopbackDnsServer((DEMO / "example.com.zone").read_text()) as dns:
        with ThrowawayPostfix(None) as postfix:
            smtp_load(postfix.port, args.sessions * 2, args.sessions)  # warm up
            bare = smtp_load(postfix.port, args.messages, args.sessions)
        port = free_port()
        empty = multiprocessing.Process(target=empty_milter, args=(port,), daemon=True)
        empty.start()
        try:
            with ThrowawayPostfix(port) as postfix:
                smtp_load(postfix.port, args.sessions * 2, args.sessions)
                before = cpu_seconds(empty.pid or 0)
                nothing = smtp_load(postfix.port, args.messages, args.sessions)
                empty_ms = (cpu_seconds(empty.pid or 0) - before) * 1000 / args.messages
        finally:
            empty.terminate()
        milter, port = start_milter(dns)
        try:
            with ThrowawayPostfix(port) as postfix:
                smtp_load(postfix.port, args.sessions * 2, args.sessions)  # warm the DNS cache
                before = cpu_seconds(milter.pid)
                filtered = smtp_load(postfix.port, args.messages, args.sessions)
                cpu_ms = (cpu_seconds(milter.pid) - before) * 1000 / args.messages
            rate, p99 = asyncio.run(direct_load(port, args.messages, 100))
            asyncio.run(big_messages(port, 20, 20))
            memory = peak_memory_mb(milter.pid)
        finally:
            milter.terminate()
            milter.wait(timeout=30)
    print(f"Postfix, {args.sessions} sessions, {args.messages} messages of {len(MESSAGE)} bytes:")
    print(f"  no milter           {bare:8.0f} msg/s")
    print(f"  empty milter        {nothing:8.0f} msg/s   ratio {nothing / bare:.2f}   "
          f"milter CPU {empty_ms:.1f} ms/msg (protocol only, checks nothing)")  # fmt: skip
    print(f"  mailauth milter     {filtered:8.0f} msg/s   ratio {filtered / bare:.2f}   "
          f"milter CPU {cpu_ms:.1f} ms/msg")  # fmt: skip
    print(f"milter alone, 100 connections: {rate:.0f} msg/s, p99 {p99 * 1000:.1f} ms")
    print(f"peak memory of the milter with 20 x 20 MB at once: {memory:.0f} MB")
    first = first_time_senders(args.first_time)
    print(f"milter alone, {args.first_time} first-time senders, DNS 50 ms away: {first:.0f} msg/s")


if __name__ == "__main__":
    main()
