"""The milter under hostile traffic (issue 14): ordinary mail at a steady rate, alone and with
hostile messages mixed in, driven directly over the milter's socket (no Postfix).

Set-up: a DNS server on loopback in another process (tests/dnsserver.py) serves the zones of
tests/hostile.py, over UDP and TCP; its answers about names under hostile.test come 50 ms late,
those about ordinary.test at once. Ordinary records have a TTL of 3600 (the milter caches them
after the first message), hostile ones a TTL of 0 (no cache spares a hostile message its
lookups). The milter is ``mailauth milter`` in a subprocess, with a temporary TOML
configuration: that nameserver, ``on_error = "accept"``, ``deadline`` = --deadline (10 s by
default here; the milter's own default is 30 s), its log in a file.

Steps:

1. Warm-up: a few ordinary messages (the DNS cache and the SPF memo fill).
2. Each hostile kind alone, one message: its end-of-message latency, how it was answered, and
   the DNS questions the server received for it, counted until none came for 1 s (a check
   still running after the deadline goes on asking: those questions count too).
3. Phase "alone": ordinary messages at --rate over --connections connections, --seconds long.
4. Phase "hostile": the same, with hostile messages at --hostile-rate, the five kinds (or
   --kinds) in rotation, each on a new connection of its own (a stalled hostile message does
   not slow the hostile stream down), sent by a second process (as by another MTA process:
   sending 10 MB or 5,000 header fields would otherwise hold this process's event loop, and
   the ordinary replies waiting behind it would seem late).

Ordinary message k is due at k / rate seconds; each connection sends its share in turn, and
one still waiting for its previous reply sends the next as soon as it can (a late start).
After the last one is due, connections go on sending what is due and replies are awaited for
at most deadline + 20 s more; then a message still unanswered counts as not verified, with the
time waited as its (lower-bound) latency, and one never sent counts as not verified too.

Verified or not, from the end-of-message replies: the milter inserts our
Authentication-Results field (authserv-id mx.example.org) for every message it has checked;
for one it could not check in time (deadline passed, or a check failed) on_error = accept
answers CONTINUE alone, with no Authentication-Results. So a message is *verified* when an
insert-header reply carries Authentication-Results with our authserv-id and ``dkim=pass``,
and the reply came within the deadline as measured here (the milter's timer can fire late when
its event loop is busy); *overdue* when it did so after the deadline; *on_error* when the final
reply is CONTINUE with no Authentication-Results; *checked* when it carries our field without
dkim=pass (a hostile message may have no valid signature: spf_tree has none).

Printed: per phase, the ordinary messages sent (of those due) and late starts, the share of
those due that were verified, p50/p99 latency from the EOM packet to the final reply (the
milter's own delay) and from the time a message was due to its final reply (with the wait for
a busy connection: what a sender sees), the outcomes, DNS questions received, the milter's
warnings "not verified" (its log, all messages) and its peak RSS (VmHWM, reset before each
phase through /proc/PID/clear_refs when allowed), the CPU seconds the milter and this process
(the load generator: it must not be the bottleneck) used; the p99 ratios with/without the hostile
stream (issue 14's target: under 2x, with 100 % verified); each hostile kind's outcomes in the
hostile phase; DNS questions per hostile message by kind (step 2).

--verify-cpu: instead, ``mailauth verify`` (the command; zone files in a temporary directory,
--now) on the ordinary and each hostile message, printing the CPU seconds each took (user +
system of the child, the least of --repeat runs), and that minus what ``mailauth --version``
costs (the interpreter's start and imports, most of a second). Issue 14's target: under 1 s
each.

--pin CPU: the milter's process runs on that CPU alone, and this script, the DNS server,
the hostile sender and the milter's worker processes on the others (Linux
``sched_setaffinity``). On a machine of two CPUs, the load generator, DNS server and hostile
sender otherwise take CPU time from the milter at random moments, and what the p99 measures
is partly theirs. The workers go to the other CPUs as they would on an MX of several: the
event loop on one, the workers' checks of hostile mail beside the rest (at nice 10 they
yield to the load generator). --workers-with-milter keeps them on the milter's CPU (how
the figures before 2026-12-05 were measured: the hostile checks then compete with
the loop itself).

--loop-stats: the milter runs with benchmarks/loopstat on its PYTHONPATH (a sitecustomize that
times each turn of its event loop, from leaving the selector to entering it again), and each
phase prints the loop's busy share, its iterations per second, how many per second took over
0.5 / 1 / 2 / 4 ms, and the longest: the milter's side of the latency, apart from the load
generator's (wall-clock times: a turn in which the loop was preempted counts whole).

--rounds N: each phase is run in N parts of --seconds / N, the two phases taking turns (alone
first, then hostile first, ...), and each phase's figures are pooled: on a machine that other
work shares, what it does meanwhile weighs on both phases alike rather than on one.

--remote-nice N: the DNS server and the hostile sender run at nice N. They stand for other
machines (the remote DNS servers, the hostile senders' MTAs) but run on the load generator's
CPU here: at 0 they take CPU from it at random moments, and what the p99 measures is then
partly theirs. But then they get the CPU only when the milter, the load generator and the
workers leave it idle, so the hostile stream slows down when the milter is busiest (which a
remote attacker does not do). So that the load applied shows, whatever the nice level, these
are printed: how late each hostile message was started; per kind, how long each took from its
first packet to its end of message sent (the sender's writing and the milter's reading; beside
the same for the kind alone in step 2), and how many were never sent in full; per phase, how
much later than its 50 ms the DNS server sent each delayed answer once it had read the
question, and how long the DNS server's loop and the hostile sender's waited for a CPU
(schedstat; a question waiting to be read waits there).

Run: python benchmarks/bench_hostile.py [--rate 100] [--hostile-rate 5] [--seconds 20]
     [--connections 20] [--deadline 10] [--kinds spf_tree,...] [--quick] [--pin CPU]
     [--workers-with-milter] [--loop-stats] [--remote-nice N] [--rounds N]
     python benchmarks/bench_hostile.py --verify-cpu [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import concurrent.futures
import contextlib
import functools
import math
import multiprocessing
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mailauth as mailauth_package
from mailauth.milter import protocol as p
from tests import hostile
from tests.dnsserver import Lateness, QuestionCounter, slow_dns_process
from tests.milterclient import MilterClient, split_message
from tests.postfix import free_port

AUTHSERV_ID = "mx.example.org"
DNS_DELAY = 0.05
LOOPSTAT = Path(__file__).resolve().parent / "loopstat"
GRACE = 20.0  # seconds beyond the deadline that replies are awaited after a phase
QUIET = 1.0  # seconds without a DNS question that end a hostile message's count


@dataclass(frozen=True, slots=True)
class Outcome:
    """One message: ``result`` verified / overdue / checked / on_error / refused / unanswered /
    error."""

    kind: str
    result: str
    latency: float  # end of message to final reply (unanswered: the time waited, a bound)
    since_due: float  # from when the message was due to be sent to its final reply (or bound)
    sent: float = float("nan")  # from its first packet to its end of message sent (all taken)


@dataclass
class Phase:
    name: str
    due: int = 0
    late_starts: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    dns_questions: int = 0
    not_verified_logged: int = 0
    peak_rss_mb: float | None = None
    rss_reset: bool = False
    milter_cpu: float = 0.0  # seconds of CPU the milter used during the phase
    milter_waited: float = 0.0  # seconds its event-loop thread was runnable but not running
    client_cpu: float = 0.0  # and this process (the load generator)
    loop: list[list[float]] = field(default_factory=list)  # --loop-stats: whole seconds
    hostile_late: list[float] = field(default_factory=list)  # seconds each hostile one started late
    dns_late: Lateness = field(default_factory=Lateness)  # the DNS server's delayed answers
    dns_waited: float = 0.0  # seconds the DNS server's loop was runnable but not running
    hostile_waited: float = 0.0  # and the hostile sender's

    def ordinary(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "ordinary"]


@functools.cache
def parts(case: hostile.Case) -> tuple[list[tuple[str, str]], bytes]:
    return split_message(case.message)


def classify(replies: list[tuple[bytes, bytes]]) -> str:
    """verified / checked / on_error / refused, from the end-of-message replies."""
    ours = []
    for command, data in replies:
        if command in (p.INSHEADER, p.ADDHEADER):
            name, _, value = data[4 if command == p.INSHEADER else 0 :].partition(b"\0")
            text = value.rstrip(b"\0").decode("utf-8", "replace")
            if name == b"Authentication-Results" and text.strip().startswith(AUTHSERV_ID + ";"):
                ours.append(text)
    if any(re.search(r"\bdkim=pass\b", text) for text in ours):
        return "verified"
    if ours:
        return "checked"
    return "on_error" if replies[-1][0] == p.CONTINUE else "refused"


async def transact(
    client: MilterClient, case: hostile.Case, deadline: float, due: float, started: float
) -> Outcome:
    """One message over an open connection (``due``: when it was due, ``started``: when its
    first packet went, perf_counter time)."""
    headers, body = parts(case)
    replies = await client.message(
        ip=case.ip, helo=case.helo, mail_from=case.mail_from, headers=headers, body=body
    )
    now = time.perf_counter()
    latency = now - client.eom_sent
    result = classify(replies)
    if result == "verified" and latency > deadline:
        result = "overdue"  # verified, but too late to count
    return Outcome(case.name, result, latency, now - due, client.eom_sent - started)


async def recorded(
    client: MilterClient, case: hostile.Case, deadline: float, due: float, into: list[Outcome]
) -> None:
    """One transaction, recorded also when cancelled at the end of a phase (unanswered)."""
    started = time.perf_counter()
    try:
        into.append(await transact(client, case, deadline, due, started))
    except asyncio.CancelledError:
        now = time.perf_counter()
        sent = client.eom_sent >= started
        since = client.eom_sent if sent else started
        written = client.eom_sent - started if sent else float("nan")
        into.append(Outcome(case.name, "unanswered", now - since, now - due, written))
        client.writer.transport.abort()  # (closing would wait for unsent data)
        raise
    except (ConnectionError, asyncio.IncompleteReadError):
        now = time.perf_counter()
        into.append(Outcome(case.name, "error", now - started, now - due))


async def ordinary_connection(
    port: int, number: int, args: argparse.Namespace, start: float, phase: Phase
) -> None:
    client = await MilterClient.connect("127.0.0.1", port)
    await client.negotiate()
    case = hostile.ordinary()
    try:
        for k in range(number, int(args.seconds * args.rate), args.connections):
            due = start + k / args.rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.01:
                phase.late_starts += 1
            await recorded(client, case, args.deadline, due, phase.outcomes)
    finally:
        await client.close()


async def one_hostile(port: int, case: hostile.Case, deadline: float, into: list[Outcome]) -> None:
    due = time.perf_counter()
    client = await MilterClient.connect("127.0.0.1", port)
    try:
        await client.negotiate()
        await recorded(client, case, deadline, due, into)
    finally:
        await client.close()


@functools.cache
def hostile_cases(kinds: tuple[str, ...]) -> list[hostile.Case]:
    """The hostile messages (made once: signing them takes a while)."""
    return [hostile.HOSTILE[kind]() for kind in kinds]


def warm_hostile(kinds: tuple[str, ...], nice: int) -> None:
    os.setpriority(os.PRIO_PROCESS, 0, nice)  # (a remote MTA's: see --remote-nice)
    for case in hostile_cases(kinds):
        parts(case)  # (split once, before the phase: 80 ms for big_aar_chain)


def run_delay(path: str) -> float:
    """Seconds a thread has waited for a CPU while runnable (``/proc/.../schedstat``, Linux;
    0 where not available)."""
    try:
        return int(Path(path).read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def nice_children(nice: int) -> None:
    """Every child process of this one now (the DNS server) at ``nice``."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                os.setpriority(os.PRIO_PROCESS, int(child), nice)


async def hostile_stream(port: int, args: argparse.Namespace, start: float, phase: Phase) -> None:
    cases = hostile_cases(tuple(args.kinds))
    tasks = []
    for k in range(int(args.seconds * args.hostile_rate)):
        wait = start + k / args.hostile_rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        phase.hostile_late.append(time.perf_counter() - (start + k / args.hostile_rate))
        case = cases[k % len(cases)]
        tasks.append(asyncio.ensure_future(one_hostile(port, case, args.deadline, phase.outcomes)))
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()


async def run_phase(port: int, args: argparse.Namespace, phase: Phase, with_hostile: bool) -> None:
    phase.due = int(args.seconds * args.rate)
    limit = 0.5 + args.seconds + args.deadline + GRACE
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    ) as hostile_process:
        loop = asyncio.get_running_loop()
        if with_hostile:  # (started and its messages made before the phase begins)
            await loop.run_in_executor(
                hostile_process, warm_hostile, tuple(args.kinds), args.remote_nice
            )
        start = time.perf_counter() + 0.5  # (connections open before the first one is due)
        streams: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(ordinary_connection(port, n, args, start, phase))
            for n in range(args.connections)
        ]
        if with_hostile:
            # In a process of its own, as a second MTA would be: writing a 10 MB message or
            # 5,000 header fields takes this process's loop 50-170 ms at a time, which would
            # count as latency of the ordinary messages waiting for their replies here.
            call = functools.partial(hostile_in_process, port, args, start, limit)
            streams.append(loop.run_in_executor(hostile_process, call))
        done, pending = await asyncio.wait(streams, timeout=limit + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise RuntimeError(f"a stream failed: {task.exception()!r}")
        result = task.result()
        if isinstance(result, tuple):  # the hostile process's outcomes and CPU seconds
            phase.outcomes.extend(result[0])
            phase.client_cpu += result[1]
            phase.hostile_late.extend(result[2])
            phase.hostile_waited += result[3]


def hostile_in_process(
    port: int, args: argparse.Namespace, start: float, limit: float
) -> tuple[list[Outcome], float, list[float], float]:
    """The hostile stream in a process of its own (perf_counter is CLOCK_MONOTONIC on
    Linux: ``start`` means the same instant here); its outcomes, CPU seconds, how late each
    message started, and how long its loop waited for a CPU."""
    phase = Phase("hostile")
    cpu, waited = time.process_time(), run_delay("/proc/thread-self/schedstat")

    async def stream() -> None:
        task = asyncio.ensure_future(hostile_stream(port, args, start, phase))
        done, _ = await asyncio.wait([task], timeout=limit)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(stream())
    waited = run_delay("/proc/thread-self/schedstat") - waited
    return phase.outcomes, time.process_time() - cpu, phase.hostile_late, waited


async def one_alone(port: int, case: hostile.Case, deadline: float) -> Outcome:
    into: list[Outcome] = []
    await one_hostile(port, case, deadline, into)
    return into[0]


def wait_quiet(questions: QuestionCounter, limit: float = 60.0) -> None:
    """Until the DNS server has heard no question for QUIET seconds (at most ``limit``)."""
    last, since, ends = questions.total, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < ends:
        time.sleep(0.1)
        if questions.total != last:
            last, since = questions.total, time.monotonic()
        elif time.monotonic() - since >= QUIET:
            return


@dataclass
class Milter:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    loop_stats: Path | None = None

    def loop_seconds(self, start: float, end: float) -> list[list[float]]:
        """--loop-stats: the milter's loop, each whole second within [start, end]
        (time.monotonic) as benchmarks/loopstat writes it."""
        if self.loop_stats is None or not self.loop_stats.exists():
            return []
        text = self.loop_stats.read_text()
        lines = [[float(v) for v in line.split()] for line in text.splitlines() if line]
        return [line for line in lines if start <= line[0] and line[0] + 1 <= end]

    def peak_rss_mb(self) -> float | None:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux: 5 > /proc/PID/clear_refs)."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def not_verified_logged(self) -> int:
        return self.log.read_bytes().count(b"not verified")

    def run_queue_seconds(self) -> float:
        """Seconds the event-loop (main) thread has waited for a CPU while runnable."""
        return run_delay(f"/proc/{self.process.pid}/schedstat")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def place_workers(pid: int, cpus: set[int], stop: threading.Event) -> None:
    """Until ``stop``: every child process of the milter (its workers, started and restarted
    whenever it wants) runs on ``cpus`` (checked every 0.1 s)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    while not stop.wait(0.1):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                with contextlib.suppress(OSError):  # (ended meanwhile)
                    if os.sched_getaffinity(int(child)) != cpus:
                        os.sched_setaffinity(int(child), cpus)


@contextlib.contextmanager
def milter(
    directory: Path,
    nameserver: str,
    deadline: float,
    pin: int | None = None,
    workers_on: set[int] | None = None,
    *,
    loop_stats: bool = False,
) -> Iterator[Milter]:
    port = free_port()
    config = directory / "milter.toml"
    config.write_text(
        f'listen = "inet:{port}@127.0.0.1"\nauthserv_id = "{AUTHSERV_ID}"\n'
        f'deadline = {deadline}\non_error = "accept"\n\n[dns]\nnameservers = ["{nameserver}"]\n'
    )
    log = directory / "milter.log"
    with log.open("wb") as sink:
        command = [sys.executable, "-m", "mailauth", "milter", "--config", str(config)]
        env, stats = None, None
        if loop_stats:
            stats = directory / "loop.txt"
            env = {**os.environ, "MAILAUTH_LOOPSTAT": str(stats)}
            paths = [str(LOOPSTAT), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        process = subprocess.Popen(command, stderr=sink, env=env)
    if pin is not None:  # (its worker processes, started later, inherit it...)
        os.sched_setaffinity(process.pid, {pin})
    stop = threading.Event()
    if workers_on:  # (... unless placed elsewhere)
        placing = threading.Thread(target=place_workers, args=(process.pid, workers_on, stop))
        placing.start()
    try:
        ends = time.monotonic() + 30
        while b"listening" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > ends:
                raise RuntimeError(f"the milter did not start: {log.read_bytes()!r}")
            time.sleep(0.05)
        yield Milter(process, port, log, stats)
    finally:
        stop.set()
        process.terminate()
        try:
            process.wait(timeout=deadline + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_alone(m: Milter, questions: QuestionCounter, args: argparse.Namespace) -> list[str]:
    """Each hostile kind alone: its latency, outcome and DNS questions (printed lines)."""
    lines = []
    for kind in args.kinds:
        case = hostile.HOSTILE[kind]()
        parts(case)  # (split before it is sent, as in the hostile phase)
        before_udp, before_tcp = questions.udp, questions.tcp
        outcome = asyncio.run(one_alone(m.port, case, args.deadline))
        at_reply = questions.total
        wait_quiet(questions)
        udp, tcp = questions.udp - before_udp, questions.tcp - before_tcp
        lines.append(
            f"  {case.name:<20} {outcome.latency:7.2f} s  {outcome.result:<10} "
            f"{udp + tcp:5d} DNS questions ({tcp} over TCP, "
            f"{questions.total - at_reply} after the reply); sent in {ms(outcome.sent)}"
        )
    return lines


def run_phase_measured(
    m: Milter, questions: QuestionCounter, args: argparse.Namespace, with_hostile: bool
) -> Phase:
    phase = Phase(f"with hostile {args.hostile_rate:g}/s" if with_hostile else "alone")
    phase.rss_reset = m.reset_peak()
    asked, logged, answers = questions.total, m.not_verified_logged(), questions.restart_worst()
    milter_cpu, client_cpu, waited = m.cpu_seconds(), time.process_time(), m.run_queue_seconds()
    dns_schedstat = f"/proc/{questions.pid.value}/schedstat"
    dns_waited = run_delay(dns_schedstat)
    began = time.monotonic()
    asyncio.run(run_phase(m.port, args, phase, with_hostile))
    ended = time.monotonic()
    wait_quiet(questions, limit=5)  # (answers still going out are this phase's)
    phase.dns_waited = run_delay(dns_schedstat) - dns_waited
    phase.loop = m.loop_seconds(began, ended)
    phase.milter_cpu = m.cpu_seconds() - milter_cpu
    phase.milter_waited = m.run_queue_seconds() - waited
    phase.client_cpu += time.process_time() - client_cpu
    phase.dns_questions = questions.total - asked
    phase.dns_late = questions.lateness(since=answers)
    phase.not_verified_logged = m.not_verified_logged() - logged
    phase.peak_rss_mb = m.peak_rss_mb()
    return phase


def alternating(m: Milter, questions: QuestionCounter, args: argparse.Namespace) -> list[Phase]:
    """The two phases, alone and with the hostile stream; with --rounds N, each in N runs of
    --seconds / N taking turns (alone first in odd rounds, hostile first in even ones), pooled:
    whatever else the machine does meanwhile weighs on both alike."""
    rounds = max(1, args.rounds)
    short = argparse.Namespace(**{**vars(args), "seconds": args.seconds / rounds})
    pooled = [Phase("alone"), Phase(f"with hostile {args.hostile_rate:g}/s")]
    for index in range(rounds):
        for with_hostile in (False, True) if index % 2 == 0 else (True, False):
            run, into = run_phase_measured(m, questions, short, with_hostile), pooled[with_hostile]
            into.due += run.due
            into.late_starts += run.late_starts
            into.outcomes += run.outcomes
            into.dns_questions += run.dns_questions
            into.not_verified_logged += run.not_verified_logged
            into.rss_reset = run.rss_reset
            into.peak_rss_mb = max(into.peak_rss_mb or 0.0, run.peak_rss_mb or 0.0) or None
            into.milter_cpu += run.milter_cpu
            into.milter_waited += run.milter_waited
            into.client_cpu += run.client_cpu
            into.loop += run.loop
            into.hostile_late += run.hostile_late
            into.dns_late += run.dns_late
            into.dns_waited += run.dns_waited
            into.hostile_waited += run.hostile_waited
    return pooled


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def loop_lines(phase: Phase) -> list[str]:
    """--loop-stats: what the milter's event loop did in the phase's whole seconds."""
    if not phase.loop:
        return []
    seconds = len(phase.loop)
    total = [sum(line[k] for line in phase.loop) for k in range(1, 7)]
    worst = max(line[7] for line in phase.loop)
    return [
        f"    event loop ({seconds} s): busy {100 * total[1] / seconds:.0f} %, "
        f"{total[0] / seconds:.0f} iterations/s; per second, iterations over 0.5 / 1 / 2 / 4 "
        f"ms: {total[2] / seconds:.1f} / {total[3] / seconds:.1f} / {total[4] / seconds:.2f} / "
        f"{total[5] / seconds:.2f}; longest {ms(worst)}"
    ]


def phase_lines(phase: Phase) -> list[str]:
    ordinary = phase.ordinary()
    verified = sum(o.result == "verified" for o in ordinary)
    latency = [o.latency for o in ordinary]
    since_due = [o.since_due for o in ordinary]
    rss = f"{phase.peak_rss_mb:.0f} MB" if phase.peak_rss_mb is not None else "?"
    return [
        f"  {phase.name}: {len(ordinary)} of {phase.due} due sent ({phase.late_starts} late); "
        f"verified {verified} = {100 * verified / max(1, phase.due):.1f} % of due",
        f"    end-of-message latency p50 {ms(percentile(latency, 50))}, p99 "
        f"{ms(percentile(latency, 99))}; from due to reply p50 {ms(percentile(since_due, 50))}, "
        f"p99 {ms(percentile(since_due, 99))}",
        f"    ordinary: {outcome_counts(ordinary)}",
        *loop_lines(phase),
        *stand_in_lines(phase),
        f"    DNS questions {phase.dns_questions}; milter 'not verified' warnings "
        f"{phase.not_verified_logged}; peak RSS {rss}{'' if phase.rss_reset else ' (not reset)'}",
        f"    CPU: milter {phase.milter_cpu:.1f} s, load generator {phase.client_cpu:.1f} s; "
        f"the milter's event loop waited {phase.milter_waited:.2f} s for a CPU",
    ]


def stand_in_lines(phase: Phase) -> list[str]:
    """Whether the stand-ins for other machines did what they stand for, no slower: the DNS
    server's delayed answers (about hostile.test), how much later than their delay after
    the server read the question they went out; how long its loop, and the hostile sender's,
    waited for a CPU (time a question waited to be read is in the first)."""
    late = phase.dns_late
    lines = []
    if late.answers:
        lines.append(
            f"    DNS answers delayed {DNS_DELAY * 1000:.0f} ms: {late.answers}, sent later than "
            f"that after the question was read by {ms(late.seconds / late.answers)} on average, "
            f"{ms(late.worst)} at most; {late.over_5ms} over 5 ms"
        )
    hostile_wait = (
        f", the hostile sender's {phase.hostile_waited:.2f} s" if phase.hostile_late else ""
    )
    lines.append(f"    waited for a CPU: the DNS server {phase.dns_waited:.2f} s{hostile_wait}")
    return lines


def outcome_counts(outcomes: list[Outcome]) -> str:
    counts = Counter(o.result for o in outcomes)
    return ", ".join(f"{n} {result}" for result, n in counts.most_common())


def report(alone: list[str], phases: list[Phase], args: argparse.Namespace) -> None:
    print(f"hostile kinds alone, one message each (deadline {args.deadline:g} s):")
    print("\n".join(alone))
    print(
        f"ordinary messages ({hostile.ordinary().description}), {args.rate:g}/s over "
        f"{args.connections} connections, {args.seconds:g} s per phase"
        + (f" (in {args.rounds} rounds, taking turns):" if args.rounds > 1 else ":")
    )
    for phase in phases:
        print("\n".join(phase_lines(phase)))
    if len(phases) == 2:
        for what in ("latency", "since_due"):
            p99 = [percentile([getattr(o, what) for o in ph.ordinary()], 99) for ph in phases]
            label = "end-of-message" if what == "latency" else "from due to reply"
            print(f"p99 {label}, with / without hostile traffic: {p99[1] / p99[0]:.1f}x")
        print("(issue 14's target: under 2x, and 100 % verified)")
        late = phases[1].hostile_late or [float("nan")]
        print(
            f"hostile stream: {len(phases[1].hostile_late)} started, late by p50 "
            f"{ms(percentile(late, 50))}, max {ms(max(late))} (DNS server and hostile sender "
            f"at nice {args.remote_nice})"
        )
        print(
            "hostile messages in the hostile phase (end-of-message latency p50, max; from its "
            "first packet to its end of message sent, p50, max: until the milter had taken it "
            "all, the sender's writing and the milter's reading; and how many never got so far):"
        )
        for name in args.kinds:
            mine = [o for o in phases[1].outcomes if o.kind == name]
            times = [o.latency for o in mine] or [float("nan")]
            sent = [o.sent for o in mine if not math.isnan(o.sent)]
            taken = (
                f"{ms(statistics.median(sent))}, {ms(max(sent))}" if sent else "none"
            ) + f" ({len(mine) - len(sent)} not sent in full)"
            print(
                f"  {name:<20} {len(mine):3d} sent: {outcome_counts(mine):<40} "
                f"{statistics.median(times):7.2f} s {max(times):7.2f} s; sent in {taken}"
            )


def child_cpu(command: list[str]) -> tuple[float, str]:
    """CPU seconds (user + system) of one run of ``command``, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, capture_output=True, check=True).stdout.decode()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, output


def verify_cpu(repeat: int) -> None:
    """``mailauth verify`` on each message: CPU seconds of the child process (the least of
    ``repeat`` runs), and beyond what ``mailauth --version`` costs (start-up and imports)."""
    mailauth = [sys.executable, "-m", "mailauth"]
    # As installed (pip writes the bytecode): with PYTHONDONTWRITEBYTECODE set, as on this
    # machine, every run would otherwise compile mailauth's sources again (about 0.15 s).
    compileall.compile_dir(Path(mailauth_package.__file__).parent, quiet=1)
    start_up = min(child_cpu([*mailauth, "--version"])[0] for _ in range(repeat))
    print(f"mailauth verify (zone files, --now), CPU = user + system, least of {repeat} runs;")
    print(f"start-up (mailauth --version): {start_up:.2f} s")
    print("  message              CPU s   beyond start-up   verdict")
    cases = [hostile.ordinary(), *(build() for build in hostile.HOSTILE.values())]
    with tempfile.TemporaryDirectory() as directory:
        for case in cases:
            eml, zone = Path(directory, f"{case.name}.eml"), Path(directory, f"{case.name}.zone")
            eml.write_bytes(case.message)
            zone.write_text(case.zone)
            command = [*mailauth, "verify", str(eml), "--ip", case.ip, "--helo", case.helo]
            command += ["--mail-from", case.mail_from, "--dns-zone", str(zone)]
            command += ["--now", str(int(hostile.NOW)), "--authserv-id", AUTHSERV_ID]
            runs = [child_cpu(command) for _ in range(repeat)]
            cpu = min(seconds for seconds, _ in runs)
            results = Counter(re.findall(r"\b(spf|dkim|arc|dmarc)=([a-z]+)", runs[0][1]))
            summary = " ".join(
                f"{m}={r}" + (f" x{n}" if n > 1 else "") for (m, r), n in results.items()
            )
            print(f"  {case.name:<20} {cpu:5.2f}   {cpu - start_up:15.2f}   {summary}")


def kinds_arg(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in hostile.HOSTILE]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"not a hostile kind: {', '.join(unknown) or text!r}")
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="ordinary messages/s (100)")
    parser.add_argument("--hostile-rate", type=float, default=5.0, help="hostile messages/s (5)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of a phase (20)")
    parser.add_argument("--connections", type=int, default=20, help="for ordinary mail (20)")
    parser.add_argument("--deadline", type=float, default=10.0, help="the milter's, s (10)")
    parser.add_argument(
        "--kinds",
        type=kinds_arg,
        default=list(hostile.HOSTILE),
        help=f"hostile kinds to send, comma-separated (all: {','.join(hostile.HOSTILE)})",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (3 s, 50/s)")
    parser.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="run the milter (and its workers) on this CPU only, and this script, its DNS "
        "server and hostile sender on the others: the milter's latency apart from the load "
        "generator's on a small machine; its worker processes run on the others unless "
        "--workers-with-milter",
    )
    parser.add_argument(
        "--workers-with-milter",
        action="store_true",
        help="with --pin: the worker processes on the milter's CPU too (sharing it)",
    )
    parser.add_argument(
        "--verify-cpu", action="store_true", help="only: CPU of mailauth verify per message"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="each phase in N runs of --seconds / N, alone and hostile taking turns (1)",
    )
    parser.add_argument(
        "--loop-stats",
        action="store_true",
        help="the milter's event-loop iterations per phase (benchmarks/loopstat)",
    )
    parser.add_argument(
        "--remote-nice",
        type=int,
        default=0,
        help="nice value of the DNS server and the hostile sender (0)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per message (--verify-cpu)")
    args = parser.parse_args()
    if args.verify_cpu:
        verify_cpu(args.repeat)
        return
    if args.quick:
        args.seconds, args.rate, args.connections = 3.0, 50.0, 10
    if args.pin is not None:
        others = os.sched_getaffinity(0) - {args.pin}
        if args.pin not in os.sched_getaffinity(0) or not others:
            parser.error(f"--pin {args.pin}: not one of several CPUs this process may use")
        os.sched_setaffinity(0, others)  # (before the DNS server's process starts)
    workers_on = others if args.pin is not None and not args.workers_with_milter else None
    cases = [hostile.ordinary(), *(build() for build in hostile.HOSTILE.values())]
    questions = QuestionCounter()
    zone = hostile.zone_file(cases)
    with (
        slow_dns_process(zone, DNS_DELAY, slow_under="hostile.test", questions=questions) as ns,
        tempfile.TemporaryDirectory() as directory,
    ):
        nice_children(args.remote_nice)  # (the DNS server: the milter is not started yet)
        with milter(
            Path(directory), ns, args.deadline, args.pin, workers_on, loop_stats=args.loop_stats
        ) as m:
            warm = argparse.Namespace(**{**vars(args), "seconds": 1.0, "rate": 40.0})
            asyncio.run(run_phase(m.port, warm, Phase("warm-up"), with_hostile=False))
            alone = measure_alone(m, questions, args)
            phases = alternating(m, questions, args)
    pinned = "" if args.pin is None else f"; the milter on CPU {args.pin}, the rest on the others"
    if args.pin is not None:
        pinned += " (its workers on the others)" if workers_on else " (its workers on its CPU)"
    print(f"DNS answers about hostile.test {DNS_DELAY * 1000:.0f} ms late; milter deadline "
          f"{args.deadline:g} s, on_error = accept; {os.cpu_count()} CPUs{pinned}")  # fmt: skip
    report(alone, phases, args)


if __name__ == "__main__":
    main()
