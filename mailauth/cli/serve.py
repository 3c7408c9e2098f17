"""``mailauth milter``: run the mail filter until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from mailauth.cli.common import CliError, Parser, add_dns_options, make_resolver
from mailauth.dkim import Signer
from mailauth.milter import Milter, MilterSettings, parse_listen, start_server
from mailauth.pipeline import Authenticator


def add_milter_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    milter = commands.add_parser(
        "milter",
        help="run as a mail filter (milter) for Postfix or Sendmail",
        description="Verify every message the MTA passes (SPF, DKIM, ARC, DMARC) and insert "
        "one Authentication-Results field; forged ones with our authserv-id are removed. "
        "SIGTERM stops it after the messages in progress.",
        epilog="example:\n  mailauth milter --listen inet:8891@127.0.0.1 --authserv-id "
        "mx.example.org --nameserver 127.0.0.1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    milter.add_argument(
        "--listen",
        required=True,
        metavar="SOCKET",
        help="inet:PORT@HOST, inet6:PORT@HOST, unix:PATH",
    )
    milter.add_argument("--authserv-id", required=True, metavar="ID", help="our authserv-id")
    milter.add_argument(
        "--deadline", type=float, default=30.0, metavar="SECONDS", help="per message (30)"
    )
    milter.add_argument(
        "--on-error",
        choices=["accept", "tempfail"],
        default="accept",
        help="when checks fail or time out (default accept)",
    )
    milter.add_argument("--reject-dmarc", action="store_true", help="550 when DMARC says reject")
    milter.add_argument(
        "--quarantine-dmarc", action="store_true", help="quarantine when DMARC says so"
    )
    milter.add_argument(
        "--trusted-network", action="append", default=[], metavar="CIDR", help="skip these clients"
    )
    milter.add_argument(
        "--trusted-arc-sealer", action="append", default=[], metavar="DOMAIN",
        help="ARC sealers whose passing chains may override DMARC",
    )  # fmt: skip
    milter.add_argument(
        "--sign",
        action="append",
        default=[],
        metavar="DOMAIN:SELECTOR:KEYFILE",
        help="DKIM-sign mail from trusted or authenticated senders whose From domain is DOMAIN "
        "(repeat for dual signing: RSA and Ed25519)",
    )
    milter.add_argument("--socket-mode", default="660", help="unix socket mode (octal, 660)")
    add_dns_options(milter)


def cmd_milter(args: argparse.Namespace) -> int:
    try:
        parse_listen(args.listen)
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in args.trusted_network)
        mode = int(args.socket_mode, 8)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.deadline <= 0:
        raise CliError("--deadline must be positive")
    authenticator = Authenticator(
        authserv_id=args.authserv_id,
        resolver=make_resolver(args),
        trusted_arc_sealers=args.trusted_arc_sealer,
    )
    signers: dict[str, tuple[Signer, ...]] = {}
    for spec in args.sign:
        domain, selector, key = [*spec.split(":", 2), "", ""][:3]
        if not (domain and selector and key):
            raise CliError(f"--sign {spec!r}: use DOMAIN:SELECTOR:KEYFILE")
        signer = Signer(domain, selector, Path(key))
        signers[signer.domain] = (*signers.get(signer.domain, ()), signer)
    settings = MilterSettings(
        deadline=args.deadline,
        on_error=args.on_error,
        reject_dmarc=args.reject_dmarc,
        quarantine_dmarc=args.quarantine_dmarc,
        trusted_networks=networks,
        signers=signers,
    )
    logging.basicConfig(level=logging.INFO, format="mailauth milter: %(message)s")
    asyncio.run(_serve_milter(Milter(authenticator, settings), args.listen, mode))
    return 0


async def _serve_milter(milter: Milter, listen: str, mode: int) -> None:
    try:
        server = await start_server(milter, listen, mode)
    except OSError as exc:
        raise CliError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"mailauth milter: listening on {listen}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()
        server.close()  # no new connections; the ones in progress finish their message
        for _ in range(int(milter.settings.deadline * 10)):
            if not milter.connections:
                break
            await asyncio.sleep(0.1)
