"""DMARC aggregate reports: building them, and what recording costs the milter.

1. Building: a store filled as the recorders would leave it after one day of a busy
   receiver -- 1,000,000 messages from 50,000 source IPs for 10,000 policy domains (each
   message's row: its policy domain, source IP and one of four result combinations) --
   then every report claimed, its RFC 9990 XML built, gzipped and marked sent, as
   ``mailauth reports send`` does: the time it takes, and the peak of memory allocated
   while building (tracemalloc), at 100,000 and at 1,000,000 messages: it must not grow
   with the message count.
2. Recording: ``mailauth milter`` (a process of its own, DNS from the demo zone file)
   driven directly over its socket by 20 concurrent connections, with ``[reports]`` off,
   on SQLite and (``--store``/``--postgres``) on PostgreSQL, the milters taking turns:
   messages per second and their ratios, the CPU per message of each milter and of the
   PostgreSQL server (medians of the rounds). Client addresses vary over 192.0.2.0/24
   (SPF pass) so that the recorder writes many rows.

Run: python benchmarks/bench_reports.py [--messages 1000000] [--store postgresql://... |
     --postgres] [--milter-messages 3000] [--rounds 3] [--only build|record]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.dkim import Signer
from mailauth.reports import ReportSettings, closed_reports, mark_sent, open_store, write_batch
from mailauth.reports.batch import Batch
from mailauth.reports.observe import Observation
from mailauth.results import Policy, PublishedPolicy
from tests.milterclient import MilterClient, split_message

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
DAY = 86400
T0 = 1_767_225_600  # 2026-01-01 UTC
SETTINGS = ReportSettings("Example Mail", "dmarc@example.net", "example.net")
VARIANTS = (
    ("pass", "pass", "pass", "pass", "none"),
    ("fail", "pass", "fail", "pass", "none"),
    ("pass", "fail", "pass", "fail", "none"),
    ("fail", "fail", "fail", "fail", "reject"),
)  # (dkim result, spf result, DMARC dkim, DMARC spf, disposition)


def fill(url: str, messages: int, domains: int, ips: int) -> tuple[int, float, float]:
    """The store as recorders leave it after ``messages`` (rows, seconds, CPU seconds)."""
    started, cpu = time.perf_counter(), time.process_time()
    batch = Batch()
    policy = PublishedPolicy(p=Policy.REJECT, rua=("mailto:d@example.com",))
    observations: dict[tuple[int, int, int], Observation] = {}
    for i in range(messages):
        domain, ip, variant = i % domains, (i * 7919) % ips, (i // ips) % 4
        key = (domain, ip, variant)
        observation = observations.get(key)
        if observation is None:
            dkim_result, spf_result, dmarc_dkim, dmarc_spf, disposition = VARIANTS[variant]
            name = f"d{domain}.example"
            observation = Observation(
                name, f"10.{ip >> 16}.{(ip >> 8) & 255}.{ip & 255}", name, name, "",
                ((name, "s1", dkim_result),), name, "mfrom", spf_result, dmarc_dkim,
                dmarc_spf, disposition, (), policy,
            )  # fmt: skip
            observations[key] = observation
        batch.add(observation, T0 + i % DAY, DAY)
    observations.clear()
    store = open_store(url)
    try:
        write_batch(store, batch)
    finally:
        store.close()
    return len(batch), time.perf_counter() - started, time.process_time() - cpu


def build_all(url: str) -> tuple[int, int, int, float, float, float]:
    """Every closed report built and marked sent: (reports, rows, messages, seconds, CPU
    seconds, peak MiB allocated while building)."""
    store = open_store(url)
    reports = rows = messages = 0
    tracemalloc.start()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        now = T0 + DAY + SETTINGS.grace
        for report in closed_reports(store, SETTINGS, now=now):
            reports += 1
            rows += report.records
            messages += report.messages
            mark_sent(store, report, now=now)
    finally:
        store.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return reports, rows, messages, seconds, cpu, peak / (1 << 20)


def fresh_store(base: str, tmp: Path, name: str) -> str:
    if not base:
        return str(tmp / f"{name}.sqlite")
    import psycopg  # noqa: PLC0415

    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS bench_{name}")
        connection.execute(f"CREATE DATABASE bench_{name}")
    path, _, query = base.partition("?")
    return path.rsplit("/", 1)[0] + f"/bench_{name}" + (f"?{query}" if query else "")


def building(args: argparse.Namespace, tmp: Path) -> None:
    print("1. building aggregate reports (10,000 policy domains, 50,000 source IPs)")
    for messages in sorted({args.messages // 10, args.messages}):
        url = fresh_store(args.store, tmp, f"m{messages}")
        rows, fill_seconds, fill_cpu = fill(url, messages, 10_000, 50_000)
        reports, built_rows, counted, seconds, cpu, peak = build_all(url)
        assert counted == messages and built_rows == rows, (counted, built_rows, rows)
        print(f"  {messages:>9,} messages, {rows:,} rows: store filled in {fill_seconds:.1f} s "
              f"({fill_cpu:.1f} s CPU); {reports:,} reports built, gzipped and marked sent in "
              f"{seconds:.1f} s ({cpu:.1f} s CPU; the store's own I/O waits in the first "
              f"figure only); peak allocated while building {peak:.1f} MiB")  # fmt: skip


# -- 2. the milter with recording on and off ----------------------------------------------


def _message() -> bytes:
    raw = (DEMO / "message.eml").read_bytes()
    unsigned = raw[raw.index(b"From: ") :]
    unsigned += b"The quick brown fox jumps over the lazy dog.\r\n" * 80
    return Signer("example.com", "demo", (DEMO / "demo.key.pem").read_bytes()).sign(unsigned)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def milter(tmp: Path, store: str) -> Iterator[tuple[int, int]]:
    port = _free_port()
    config = tmp / f"milter-{port}.toml"
    reports = f'[reports]\nstore = "{store}"\n' if store else ""
    config.write_text(
        f'listen = "inet:{port}@127.0.0.1"\nauthserv_id = "mx.example.net"\n'
        f'log_format = "text"\n[dns]\nzone_files = ["{DEMO / "example.com.zone"}"]\n{reports}'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailauth", "milter", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )  # fmt: skip
    stderr = process.stderr
    assert stderr is not None
    while b"listening" not in stderr.readline():
        if process.poll() is not None:
            raise RuntimeError("milter did not start")
    # (the per-message log lines go to stderr: drained so that the pipe never fills)
    threading.Thread(target=stderr.read, daemon=True).start()
    try:
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(30)


async def load(port: int, messages: int, connections: int) -> float:
    headers, body = split_message(MESSAGE)
    per_connection = messages // connections

    async def connection(n: int) -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        await client.negotiate()
        for i in range(per_connection):
            await client.message(
                ip=f"192.0.2.{1 + (n * per_connection + i) % 254}", helo="mail.example.com",
                mail_from="alice@example.com", headers=headers, body=body,
            )  # fmt: skip
        await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(connections)))
    return per_connection * connections / (time.perf_counter() - started)


MESSAGE = _message()


def process_cpu(pid: int) -> float:
    """CPU seconds the process used so far, its threads included (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds a PostgreSQL server used so far: the postmaster, its children that have
    ended (their time is added to the postmaster's when it reaps them) and those running."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15])  # (utime, stime, cutime, cstime)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # (a process that ended meanwhile: counted by the postmaster)
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def recording(args: argparse.Namespace, tmp: Path) -> None:
    """The milters (recording off, on SQLite, and on PostgreSQL with ``--store`` or
    ``--postgres``) run at once; loads of ``--milter-messages`` take turns between them,
    in an order rotated each round, so that whatever else the machine does weighs on all
    alike. With ``--postgres``, the server's CPU (all its processes) is measured too: it
    shares the machine with the milter."""
    stores = {"off": "", "sqlite": str(tmp / "milter.sqlite")}
    if args.store:
        stores["postgresql"] = args.store
    kinds = list(stores)
    print(
        f"2. the milter over its socket, 20 connections, {args.milter_messages} messages "
        f"per turn, recording {', '.join(kinds)}, {args.rounds} rounds"
    )
    postmaster: int | None = args.postmaster
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    server: dict[str, list[float]] = {kind: [] for kind in kinds}
    with contextlib.ExitStack() as stack:
        milters = {kind: stack.enter_context(milter(tmp, store)) for kind, store in stores.items()}
        for port, _ in milters.values():
            asyncio.run(load(port, 200, 20))  # (warm: imports, caches)
        time.sleep(args.settle)
        for round_ in range(args.rounds):
            order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
            for kind in order if round_ % 2 == 0 else order[::-1]:
                port, pid = milters[kind]
                before = process_cpu(pid)
                server_before = server_cpu(postmaster) if postmaster else 0.0
                rates[kind].append(asyncio.run(load(port, args.milter_messages, 20)))
                # (the turn's last buffered rows: written by the next periodic flush)
                time.sleep(args.settle)
                cpu[kind].append((process_cpu(pid) - before) * 1000 / args.milter_messages)
                if postmaster:
                    used = server_cpu(postmaster) - server_before
                    server[kind].append(used * 1000 / args.milter_messages)
            parts = [f"{kind} {rates[kind][-1]:,.0f}/s {cpu[kind][-1]:.3f} ms" for kind in kinds]
            line = f"  round {round_ + 1} (messages/s, milter CPU/message): " + "; ".join(parts)
            if postmaster:
                line += "; server CPU/message " + " / ".join(
                    f"{server[kind][-1]:.3f}" for kind in kinds
                )
            print(line)
    cpu_off, server_off = _median(cpu["off"]), _median(server["off"] or [0.0])
    for kind in kinds[1:]:
        ratios = sorted(a / b for a, b in zip(rates[kind], rates["off"], strict=True))
        cpu_on = _median(cpu[kind])
        print(f"  {kind}: throughput on/off {sum(rates[kind]) / sum(rates['off']):.3f} (sum of "
              f"rounds; median round {_median(ratios):.3f}, {ratios[0]:.2f} to "
              f"{ratios[-1]:.2f}); median milter CPU per message off {cpu_off:.3f} ms, on "
              f"{cpu_on:.3f} ms: off/on {cpu_off / cpu_on:.3f}")  # fmt: skip
        if postmaster:
            server_on = _median(server[kind])
            whole = (cpu_off + server_off) / (cpu_on + server_on)
            print(f"    PostgreSQL server CPU per message (median): in the off turns "
                  f"{server_off:.3f} ms, in the {kind} turns {server_on:.3f} ms; milter + "
                  f"server off/on {whole:.3f}")  # fmt: skip
    expected = 200 + args.rounds * args.milter_messages
    for kind in kinds[1:]:
        checked = open_store(stores[kind])
        try:
            query = "SELECT COALESCE(SUM(messages), 0) FROM report_counts"
            (total,) = checked.fetchall(query)[0]
        finally:
            checked.close()
        print(f"  recorded in the {kind} store: {total:,} messages of {expected:,} sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--store", default="", help="a postgresql:// URL (default: SQLite)")
    parser.add_argument(
        "--postgres", action="store_true",
        help="start a throwaway PostgreSQL (tests/pgserver.py) and use it as the store",
    )  # fmt: skip
    parser.add_argument("--milter-messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["build", "record"])
    parser.add_argument(
        "--settle", type=float, default=6.0,
        help="seconds after each turn (the recorder's periodic write lands in its turn)",
    )  # fmt: skip
    args = parser.parse_args()
    args.postmaster = None
    with contextlib.ExitStack() as stack:
        if args.postgres:
            from tests.pgserver import PostgresServer  # noqa: PLC0415

            server = stack.enter_context(PostgresServer())
            args.store = server.new_database()
            pid_file = server.root / "data" / "postmaster.pid"
            args.postmaster = int(pid_file.read_text().split()[0])
        _run(args)


def _run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "record":
            building(args, Path(tmp))
        if args.only != "build":
            recording(args, Path(tmp))


if __name__ == "__main__":
    main()
