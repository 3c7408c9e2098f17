"""``mailauth milter``: run the mail filter until SIGTERM; SIGHUP reloads the configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import ipaddress
import logging
import math
import re
import signal
import sys
import warnings
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path

from mailauth.arc import Sealer
from mailauth.cli import logs
from mailauth.cli.common import (
    CliError,
    DnsUnreachableError,
    Parser,
    add_dns_options,
    dns_args,
    make_resolver,
    resolver_errors,
)
from mailauth.cli.logs import configure_logging, syslog_handler
from mailauth.cli.milter_stop import close_writers, writers_of
from mailauth.cli.milter_workers import make_offloader, spec_of
from mailauth.config import (
    KeySpec,
    MilterConfig,
    config_problems,
    locate_problem,
    parse_socket_mode,
    read_milter_config,
)
from mailauth.dns import DnsCache, Resolver, parse_nameserver
from mailauth.domains import host_name
from mailauth.errors import ConfigError, MailauthError
from mailauth.milter import Metrics, Milter, MilterSettings, parse_listen, start_server
from mailauth.milter.listen import remove_socket_file, socket_file
from mailauth.milter.offload import OffloadError
from mailauth.milter.signing_table import build_signing_policy
from mailauth.pipeline import Authenticator
from mailauth.reports import BackgroundRecorder, Enforcement, RecordingSettings
from mailauth.reports.failure_collect import FailureCollector
from mailauth.reports.store import StoreError
from mailauth.reports.writer_store import open_writer_store

log = logging.getLogger("mailauth.milter")
SWITCH_INTERVAL = 0.002  # seconds (sys.setswitchinterval)


def add_milter_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    milter = commands.add_parser(
        "milter",
        help="run as a mail filter (milter) for Postfix or Sendmail",
        description="Verify every message the MTA passes (SPF, DKIM, ARC, DMARC) and insert "
        "one Authentication-Results field; forged ones with our authserv-id are removed; "
        "mail from trusted senders is DKIM-signed. Options override the --config file. "
        "SIGHUP reloads the file and keys; SIGTERM stops after the messages in progress.",
        epilog="examples:\n  mailauth milter --listen inet:8891@127.0.0.1 --authserv-id "
        "mx.example.org --nameserver 127.0.0.1\n"
        "  mailauth milter --config /etc/mailauth/milter.toml --check-config\n"
        "  mailauth milter --config /etc/mailauth/milter.toml --listen inet:8892@127.0.0.1 "
        "--mode sign\n"
        "  mailauth milter --config /etc/mailauth/milter.toml --arc-seal "
        "example.org:arc2026:/etc/mailauth/keys/arc2026.private --arc-seal-domain "
        "alumni.example.org",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    milter.add_argument("--config", metavar="FILE", help="TOML configuration (docs/milter.md)")
    milter.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    milter.add_argument(
        "--listen", metavar="SOCKET", help="inet:PORT@HOST, inet6:PORT@HOST, unix:PATH"
    )
    milter.add_argument(
        "--mode", choices=["verify", "sign", "both"],
        help="of the --listen socket: verify every message, sign trusted and authenticated "
        "senders' mail only, or both (default; docs/signing.md)",
    )  # fmt: skip
    milter.add_argument("--authserv-id", metavar="ID", help="our authserv-id")
    milter.add_argument("--deadline", type=float, metavar="SECONDS", help="per message (30)")
    milter.add_argument(
        "--idle-timeout", type=float, metavar="SECONDS",
        help="close a connection the MTA leaves silent this long (7210, as libmilter)",
    )  # fmt: skip
    milter.add_argument("--on-error", choices=["accept", "tempfail"], help="default accept")
    milter.add_argument(
        "--dmarc-temperror", choices=["accept", "tempfail"],
        help="DMARC temperror when the policy at stake is one acted on (default tempfail)",
    )  # fmt: skip
    milter.add_argument("--reject-dmarc", action="store_true", help="550 when DMARC says reject")
    milter.add_argument("--quarantine-dmarc", action="store_true", help="quarantine likewise")
    milter.add_argument(
        "--trusted-network", action="append", default=[], metavar="CIDR",
        help="outbound clients: signed, not verified (repeatable; loopback is by default)",
    )  # fmt: skip
    milter.add_argument(
        "--trusted-arc-sealer", action="append", default=[], metavar="DOMAIN",
        help="ARC sealers whose passing chains may override DMARC (repeatable)",
    )  # fmt: skip
    milter.add_argument(
        "--trusted-mailing-list", action="append", default=[], metavar="DOMAIN",
        help="list servers (DKIM or SPF pass at or under DOMAIN) exempt from DMARC "
        "reject/quarantine (repeatable)",
    )  # fmt: skip
    milter.add_argument(
        "--sign", action="append", default=[], metavar="DOMAIN:SELECTOR:KEYFILE",
        help="DKIM-sign outbound mail from DOMAIN (repeat for dual RSA + Ed25519 signing)",
    )  # fmt: skip
    milter.add_argument(
        "--arc-seal", metavar="DOMAIN:SELECTOR:KEYFILE",
        help="ARC-seal verified inbound mail (for forwarders and list servers)",
    )  # fmt: skip
    milter.add_argument(
        "--arc-seal-domain", action="append", default=[], metavar="DOMAIN",
        help="seal only mail with a recipient in DOMAIN, a forwarding domain (repeatable)",
    )  # fmt: skip
    milter.add_argument("--log-format", choices=["json", "text"], help="per-message log line")
    milter.add_argument("--socket-mode", metavar="OCTAL", help="unix socket mode (660)")
    milter.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics"
    )
    add_dns_options(milter)


# The option that sets each configuration key (for the problems of option values).
_OPTIONS = {
    "listen": "--listen",
    "authserv_id": "--authserv-id",
    "socket_mode": "--socket-mode",
    "deadline": "--deadline",
    "idle_timeout": "--idle-timeout",
    "on_error": "--on-error",
    "log_format": "--log-format",
    "metrics_listen": "--metrics-listen",
    "dns.nameservers": "--nameserver",
    "dns.zone_files": "--dns-zone",
    "dns.timeout": "--dns-timeout",
    "inbound.dmarc_temperror": "--dmarc-temperror",
    "inbound.trusted_arc_sealers": "--trusted-arc-sealer",
    "inbound.trusted_mailing_lists": "--trusted-mailing-list",
    "inbound.arc_seal.recipient_domains": "--arc-seal-domain",
    "inbound.arc_seal": "--arc-seal",
    "outbound.keys": "--sign",
    "outbound.trusted_networks": "--trusted-network",
}


def effective_config(args: argparse.Namespace) -> MilterConfig:
    """The file's configuration with the command line's options on top; ConfigError lists
    every problem of the file and of the options, one line each."""
    config, problems = _effective(args)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _effective(args: argparse.Namespace) -> tuple[MilterConfig, list[str]]:
    read, problems = read_milter_config(args.config) if args.config else (MilterConfig(), [])
    config = read or MilterConfig()
    given = _options(args, problems)
    problems += [_as_option(problem) for problem in config_problems(given)]
    config = replace(
        config,
        listen=args.listen or config.listen,
        mode=args.mode or config.mode,
        authserv_id=args.authserv_id or config.authserv_id,
        deadline=config.deadline if args.deadline is None else args.deadline,
        idle_timeout=config.idle_timeout if args.idle_timeout is None else args.idle_timeout,
        on_error=args.on_error or config.on_error,
        dmarc_temperror=args.dmarc_temperror or config.dmarc_temperror,
        reject_dmarc=args.reject_dmarc or config.reject_dmarc,
        quarantine_dmarc=args.quarantine_dmarc or config.quarantine_dmarc,
        trusted_networks=(*config.trusted_networks, *given.trusted_networks),
        trusted_arc_sealers=(*config.trusted_arc_sealers, *args.trusted_arc_sealer),
        trusted_mailing_lists=(*config.trusted_mailing_lists, *args.trusted_mailing_list),
        keys=(*config.keys, *given.keys),
        arc_seal=given.arc_seal or config.arc_seal,
        arc_seal_domains=(*config.arc_seal_domains, *args.arc_seal_domain),
        socket_mode=given.socket_mode if args.socket_mode else config.socket_mode,
        metrics_listen=args.metrics_listen or config.metrics_listen,
        log_format=args.log_format or config.log_format,
    )
    if read is None:  # (not TOML: what it lacks is not known)
        return config, problems
    if config.arc_seal_domains and not config.arc_seal:
        problems.append("--arc-seal-domain needs --arc-seal (or inbound.arc_seal in --config)")
    if not config.listen or not config.authserv_id:
        problems.append("give --listen and --authserv-id (or listen and authserv_id in --config)")
    return config, problems


def _options(args: argparse.Namespace, problems: list[str]) -> MilterConfig:
    """The values the command line gives (defaults elsewhere), so that their problems are
    told apart from the file's."""
    keys = []
    for spec in args.sign:
        try:
            keys.append(_key_spec("--sign", spec))
        except CliError as exc:
            problems.append(str(exc))
    arc_seal = None
    if args.arc_seal:
        try:
            arc_seal = _key_spec("--arc-seal", args.arc_seal)
        except CliError as exc:
            problems.append(str(exc))
    networks = []
    for text in args.trusted_network:
        try:
            networks.append(_network(text))
        except ValueError:
            problems.append(f"--trusted-network: {text!r} is not a CIDR network")
    mode = 0o660
    if args.socket_mode:
        try:
            mode = parse_socket_mode(args.socket_mode)
        except ValueError as exc:
            problems.append(f"--socket-mode: {exc}")
    defaults = MilterConfig()
    return replace(
        defaults,
        listen=args.listen or "",
        authserv_id=args.authserv_id or "",
        deadline=defaults.deadline if args.deadline is None else args.deadline,
        idle_timeout=defaults.idle_timeout if args.idle_timeout is None else args.idle_timeout,
        on_error=args.on_error or defaults.on_error,
        dmarc_temperror=args.dmarc_temperror or defaults.dmarc_temperror,
        trusted_networks=tuple(networks),
        trusted_arc_sealers=tuple(args.trusted_arc_sealer),
        trusted_mailing_lists=tuple(args.trusted_mailing_list),
        keys=tuple(keys),
        arc_seal=arc_seal,
        arc_seal_domains=tuple(args.arc_seal_domain),
        socket_mode=mode,
        metrics_listen=args.metrics_listen or "",
        log_format=args.log_format or defaults.log_format,
        nameservers=tuple(args.nameserver or ()),
        zone_files=tuple(args.dns_zone or ()),
        dns_timeout=args.dns_timeout,
    )


def _as_option(problem: str) -> str:
    """``deadline: must be ...`` of an option's value as ``--deadline: must be ...``."""
    key, _, what = problem.partition(": ")
    option = _OPTIONS.get(re.sub(r"\[\d+\]$", "", key))
    return f"{option}: {what}" if option else problem


def _key_spec(option: str, text: str) -> KeySpec:
    domain, selector, key = [*text.split(":", 2), "", ""][:3]
    if not (domain and selector and key):
        raise CliError(f"{option}: {text!r}: use DOMAIN:SELECTOR:KEYFILE")
    return KeySpec(domain, selector, Path(key))


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def build_milter_parts(
    config: MilterConfig,
    args: argparse.Namespace,
    executor: Executor | None = None,
    *,
    previous: Authenticator | None = None,
    recorder: BackgroundRecorder | None = None,
    failures: FailureCollector | None = None,
) -> tuple[Authenticator, MilterSettings]:
    """The Authenticator and settings for ``config``; ``previous`` (on a reload) lends its
    DNS cache when the nameservers stay the same, so that a reload does not start cold;
    ``recorder`` gets every verdict, with the settings of ``config`` (``[reports]``)."""
    dns = _dns_args(config, args)
    made_of = spec_of(config, dns)
    with resolver_errors():  # (as make_resolver's)
        authenticator = made_of.build(_kept_cache(previous, dns), executor, recorder)
    if recorder is not None:
        recorder.settings = _kept_interval(recording_settings(config), recorder.settings)
    if failures is not None:  # (a reload: the new limits and privacy choices)
        failures.config = config.reports.failure
    with warnings.catch_warnings(record=True) as caught:  # key file modes: one line each
        warnings.simplefilter("always")
        # (the [signing] table first, then outbound.keys: docs/signing.md)
        signing = build_signing_policy(config.signing, config.keys)
        seal = config.arc_seal
        sealer = Sealer(seal.domain, seal.selector, seal.key) if seal else None
    for warning in caught:
        if logs.configured():  # (a reload: the loop never writes to stderr itself)
            log.warning("warning: %s", warning.message)
        else:  # (at start, or --check-config: before the handlers exist)
            print(f"mailauth milter: warning: {warning.message}", file=sys.stderr)
    settings = MilterSettings(
        deadline=config.deadline,
        idle_timeout=config.idle_timeout,
        on_error=config.on_error,
        reject_dmarc=config.reject_dmarc,
        quarantine_dmarc=config.quarantine_dmarc,
        dmarc_temperror=config.dmarc_temperror,
        trusted_networks=config.trusted_networks,
        signing=signing,
        mode=config.mode,
        listener_modes={listener.listen: listener.mode for listener in config.listeners},
        daemon_modes=dict(config.daemon_modes),
        sealer=sealer,
        log_format=config.log_format,
        seal_domains=frozenset(map(host_name, config.arc_seal_domains)),
        max_header_size=config.max_header_size,
        max_header_fields=config.max_header_fields,
        record_recipients=recorder is not None and config.reports.record_envelope_to,
        failure_reports=failures,  # (on or off: at a restart)
        inbound=config.inbound,
    )
    return authenticator, settings


def _dns_args(config: MilterConfig, args: argparse.Namespace) -> argparse.Namespace:
    """The DNS options: the file's settings unless the command line gives its own."""
    return dns_args(config, args)


def recording_settings(config: MilterConfig) -> RecordingSettings:
    """How verdicts are recorded: ``[reports]``, and the dispositions the milter enforces
    (a report says what the receiver applied)."""
    reports = config.reports
    return RecordingSettings(
        interval=reports.interval,
        record_envelope_to=reports.record_envelope_to,
        enforcement=Enforcement(reject=config.reject_dmarc, quarantine=config.quarantine_dmarc),
        flush_seconds=reports.flush_seconds,
        max_rows=reports.max_rows,
    )


def _kept_interval(new: RecordingSettings, running: RecordingSettings) -> RecordingSettings:
    """A reload keeps the reporting interval the recorder runs with: periods of another
    length would overlap those being counted (rows of two periods with one begin merged
    under either's end). One error line; the new interval applies at the next restart."""
    if new.interval == running.interval:
        return new
    log.error(
        "reports.interval: changed from %d to %d s by the reload: kept at %d s until the "
        "milter restarts (the periods being counted would overlap)",
        running.interval, new.interval, running.interval,
    )  # fmt: skip
    return dataclasses.replace(new, interval=running.interval)


def start_recorder(config: MilterConfig) -> BackgroundRecorder | None:
    """The recorder of ``[reports] store``, its schema migrated first. A store that cannot
    work (a bad URL, a SQLite file that cannot be created) is a configuration error: one
    line, exit 2. A PostgreSQL server that does not answer, or a migration that cannot have
    its lock in time (a long reader on a table it alters: REVIEW25B 4), must not stop mail:
    a warning, and the recorder buffers until it can (then migrates it and writes). Bounded
    (:meth:`~mailauth.reports.writer_store.WriterStores.prepare`)."""
    if not config.reports.store:
        return None
    try:
        open_writer_store.prepare(config.reports.store)
    except StoreError as exc:
        if not (exc.unreachable or exc.busy):
            raise
        print(
            f"mailauth milter: warning: {exc}; recording in memory until it can be written",
            file=sys.stderr,
            flush=True,
        )
    return BackgroundRecorder(config.reports.store, recording_settings(config)).start()


def start_failure_collector(config: MilterConfig) -> FailureCollector | None:
    """The collector of RFC 9991 failure reports (``[reports] failure_reports``; the store
    already opened and migrated by :func:`start_recorder`)."""
    reports = config.reports
    if not (reports.store and reports.failure.enabled):
        return None
    collector = FailureCollector(
        reports.store, reports.failure, flush_seconds=reports.flush_seconds
    )
    return collector.start()


def _kept_cache(previous: Authenticator | None, args: argparse.Namespace) -> DnsCache | None:
    old = previous.resolver if previous is not None else None
    if not isinstance(old, Resolver) or args.dns_zone:
        return None
    same = Resolver(args.nameserver, cache=old.cache).nameservers == old.nameservers
    return old.cache if same else None


def cmd_milter(args: argparse.Namespace) -> int:
    # (SPF is a plan like the other checks: on the event loop, or in the worker processes.)
    if args.check_config:
        config = _check_config(args)
        sealing = f", ARC sealing as {config.arc_seal.domain}" if config.arc_seal else ""
        print(
            f"mailauth milter: configuration valid ({config.listen}, "
            f"{len(config.keys) + len(config.signing.keys)} signing keys{sealing})"
        )
        return 0
    try:
        config = effective_config(args)
        authenticator, settings = build_milter_parts(config, args)
        offloader = make_offloader(config, spec_of(config, _dns_args(config, args)))
    except (ValueError, OffloadError) as exc:
        raise CliError(str(exc)) from None
    if config.reports.store:
        recorder = start_recorder(config)
        failures = start_failure_collector(config)
        parts = build_milter_parts(config, args, recorder=recorder, failures=failures)
        authenticator, settings = parts
    configure_logging(config.logging)  # stderr and/or syslog ([logging])
    metrics = None
    if config.metrics_listen:
        metrics = Metrics()
        host, _, port = config.metrics_listen.rpartition(":")
        try:
            metrics.serve(host.strip("[]") or "127.0.0.1", int(port))
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot serve metrics on {config.metrics_listen}: {exc}") from None
    if metrics is not None and isinstance(authenticator.recorder, BackgroundRecorder):
        metrics.watch_recorder(authenticator.recorder)
    if metrics is not None and settings.failure_reports is not None:
        metrics.watch_failure_reports(settings.failure_reports)
    milter = Milter(authenticator, settings, metrics, offloader)
    if metrics is not None:
        metrics.watch_workers(milter.offload_stats)
    # What start-up made (modules, keys, the configuration) lives as long as the process:
    # out of the cyclic collector's sight, a full collection no longer walks it (tens of
    # milliseconds of a held event loop, every few seconds under load).
    gc.freeze()
    # A thread that parses a long DNS answer (mailauth.dns.udp) or writes reports hands the
    # interpreter back to the event loop after at most this long (Python's default: 5 ms).
    sys.setswitchinterval(SWITCH_INTERVAL)
    asyncio.run(_serve_milter(milter, config, args))
    return 0


def _check_config(args: argparse.Namespace) -> MilterConfig:
    """--check-config: every problem of the file and the options in one run, with what
    only a start would find (the directory of a unix socket, nameservers that answer)."""
    config, problems = _effective(args)
    sockets = [("listen", config.listen)]
    sockets += [(f"listeners[{i}].listen", x.listen) for i, x in enumerate(config.listeners)]
    for key, spec in sockets:
        with contextlib.suppress(ValueError):  # (a bad listen value is among the problems)
            kind, where, _ = parse_listen(spec)
            if kind == "unix" and not Path(str(where)).parent.is_dir():
                # (checked here only: a reload keeps the socket it has, wherever it was made)
                problem = f"{key}: {spec}: missing directory {Path(str(where)).parent}"
                if args.listen and key == "listen":
                    problems.append(_as_option(problem))
                elif args.config:
                    problems.append(locate_problem(args.config, problem))
                else:
                    problems.append(problem)
    unreachable = _unreachable_nameservers(config, args)
    if unreachable:
        problems.append(unreachable)
    if config.logging.syslog and config.logging.syslog_socket.startswith("/"):
        try:
            syslog_handler(config.logging).close()
        except CliError as exc:
            problems.append(str(exc))
    if not problems:
        try:
            build_milter_parts(config, args)
        except (CliError, MailauthError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return config


async def _listen(milter: Milter, config: MilterConfig) -> list[asyncio.Server]:
    """The ``listen`` socket and each of ``[[listeners]]`` (its connections know their
    socket, for its mode); none left open when one cannot be."""
    servers: list[asyncio.Server] = []
    sockets = [(config.listen, ""), *((x.listen, x.listen) for x in config.listeners)]
    for spec, name in sockets:
        handle = functools.partial(milter.handle, listener=name)
        try:
            servers.append(await start_server(handle, spec, config.socket_mode))
        except OSError as exc:
            for server in servers:
                server.close()
            raise CliError(f"cannot listen on {spec}: {exc.strerror or exc}") from None
    return servers


async def _serve_milter(milter: Milter, config: MilterConfig, args: argparse.Namespace) -> None:
    servers = await _listen(milter, config)
    specs = [config.listen, *(listener.listen for listener in config.listeners)]
    # (removed at exit: a stale file confuses the MTA)
    owned = [found for found in map(socket_file, specs) if found is not None]
    stop = asyncio.Event()
    signals: list[str] = []
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop, stop, signals, signum)
    loop.add_signal_handler(signal.SIGHUP, _reload, milter, args, config)
    where = config.listen
    if config.listeners:  # (one line still: each socket with its mode)
        modes = [(config.listen, config.mode), *((x.listen, x.mode) for x in config.listeners)]
        where = ", ".join(f"{spec} ({mode})" for spec, mode in modes)
    log.info("listening on %s", where)  # (to stderr and syslog, as configured)
    if owned and config.socket_mode & 0o002:  # (non-inet clients are trusted)
        log.warning(
            "warning: socket mode %03o lets every local user talk to the milter (and have "
            "mail signed); prefer 660 and the MTA's group",
            config.socket_mode,
        )
    try:
        async with contextlib.AsyncExitStack() as stack:
            for server in servers:
                await stack.enter_async_context(server)
            await stop.wait()
            for server in servers:
                server.close()  # no new connections; those in progress finish their message
            busy = milter.connections
            for _ in range(int(milter.settings.deadline * 10)):
                if not milter.connections:
                    break
                await asyncio.sleep(0.1)
            left = milter.connections
        # SIGTERM: what the report writers hold is written, side by side, one deadline
        await loop.run_in_executor(None, close_writers, writers_of(milter))
    finally:
        for found in owned:
            remove_socket_file(found)
        if milter.offloader is not None:
            milter.offloader.close()
    offloaded = milter.offload_stats.outcomes["message", "answered"]  # (reloads included)
    log.info(
        "stopped on %s: %d MTA connection(s) open, %d closed in time, %d cut off after the "
        "deadline%s",
        signals[0],
        busy,
        busy - left,
        left,
        f"; {offloaded} heavy message(s) checked in worker processes" if offloaded else "",
    )


def _unreachable_nameservers(config: MilterConfig, args: argparse.Namespace) -> str | None:
    """--check-config: ``dns.nameservers: DNS unreachable: ...`` (or ``--nameserver: ...``)
    when the nameservers parse but none answers, reported with every other problem."""
    dns = _dns_args(config, args)
    if not dns.nameserver or dns.dns_zone or not 0 < dns.dns_timeout < math.inf:
        return None
    try:
        for nameserver in dns.nameserver:
            parse_nameserver(nameserver)
        make_resolver(dns)
    except DnsUnreachableError as exc:
        problem = f"dns.nameservers: {exc}"
        if args.nameserver or not args.config:
            return _as_option(problem)
        return locate_problem(args.config, problem)
    except (CliError, ValueError):  # (a bad nameserver or timeout: among the problems)
        return None
    return None


def _reload_offloader(milter: Milter, config: MilterConfig, args: argparse.Namespace) -> None:
    """New worker processes when what they are made of changed: started by their first
    request; the old ones stop once what they hold is past the deadline."""
    old = milter.offloader
    spec = spec_of(config, _dns_args(config, args))
    workers = config.offload_workers
    same = old is not None and getattr(old.factory, "__self__", None) == spec
    if old is not None and same and workers in (None, old.workers):
        return
    milter.offloader = make_offloader(config, spec, start=False, stats=milter.offload_stats)
    if old is not None:
        asyncio.get_running_loop().call_later(milter.settings.deadline + 1, old.close)


def _stop(stop: asyncio.Event, signals: list[str], signum: int) -> None:
    signals.append(signal.Signals(signum).name)
    stop.set()


def _reload(milter: Milter, args: argparse.Namespace, started: MilterConfig) -> None:
    """SIGHUP: new configuration and keys for the next messages; connections stay up; the
    report recorder writes what it holds. The sockets (``listen``, ``socket_mode``,
    ``metrics_listen``) and the report store stay as they were started."""
    old = milter.authenticator
    recorder = old.recorder if isinstance(old.recorder, BackgroundRecorder) else None
    if recorder is not None:
        recorder.request_flush()  # SIGHUP: what is buffered is written now
    failures = milter.settings.failure_reports
    if failures is not None:
        failures.request_flush()
    try:
        config = effective_config(args)
        parts = build_milter_parts(
            config, args, old.executor, previous=old, recorder=recorder, failures=failures
        )
        authenticator, settings = parts
    except (CliError, MailauthError, ValueError) as exc:
        problems = "; ".join(str(exc).splitlines())
        log.error("reload failed, keeping the running configuration: %s", problems)
        return
    milter.authenticator, milter.settings = authenticator, settings
    _reload_offloader(milter, config, args)
    fixed = ("listen", "socket_mode", "metrics_listen", "logging")
    changed = [k for k in fixed if getattr(config, k) != getattr(started, k)]
    if config.reports.store != started.reports.store:
        changed.append("reports.store")
    if [x.listen for x in config.listeners] != [x.listen for x in started.listeners]:
        changed.append("listeners")  # (their modes apply now; their sockets at a restart)
    if config.reports.failure.enabled != (failures is not None):
        changed.append("reports.failure_reports")
    restart = f" ({', '.join(changed)}: at the next restart)" if changed else ""
    log.info("configuration reloaded%s", restart)
