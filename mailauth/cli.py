"""The ``mailauth`` command line.

Only this module (and the milter) reads files, the environment, or writes to stdout/stderr.
Every failure a user can cause ends with one line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mailauth.dns import DnsResolver, Resolver, ZoneResolver
from mailauth.errors import MailauthError
from mailauth.pipeline import Authenticator

EXIT_USAGE = 2


class CliError(Exception):
    """A problem reported as one line on stderr, exit status 2."""


def _version() -> str:
    try:
        return version("mailauth")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise CliError(message)


def _add_dns_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DNS")
    group.add_argument(
        "--nameserver",
        action="append",
        metavar="HOST[:PORT]",
        help="recursive nameserver to ask (repeatable; IPv6 as [ADDR]:PORT); default: the system's",
    )
    group.add_argument(
        "--dns-zone",
        action="append",
        metavar="FILE",
        help="answer DNS from this RFC 1035 zone file only, no network (repeatable)",
    )
    group.add_argument(
        "--dns-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="overall time for one DNS query (default 5)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mailauth",
        description="Authenticate email: SPF, DKIM, ARC, DMARC, Authentication-Results.",
    )
    parser.add_argument("--version", action="version", version=f"mailauth {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    verify = commands.add_parser(
        "verify",
        help="authenticate a message and print its Authentication-Results",
        description="Authenticate one message as a receiving MTA would, and print the "
        "Authentication-Results header field (or the whole verdict with --json).",
        epilog="example:\n  mailauth verify message.eml --ip 192.0.2.10 "
        "--helo mail.example.com --mail-from alice@example.com --dns-zone example.zone",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("file", nargs="?", default="-", help="the message (default: stdin)")
    verify.add_argument("--ip", required=True, help="the SMTP client's IP address")
    verify.add_argument("--helo", default="", help="the HELO/EHLO name the client gave")
    verify.add_argument(
        "--mail-from",
        default="",
        metavar="ADDR",
        help="the MAIL FROM address (empty or <> if null)",
    )
    verify.add_argument(
        "--authserv-id",
        default="localhost",
        metavar="ID",
        help="the authserv-id of the Authentication-Results field (default: localhost)",
    )
    verify.add_argument(
        "--now", type=float, metavar="UNIXTIME", help="judge signatures at this time (default: now)"
    )
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    _add_dns_options(verify)
    return parser


def make_resolver(args: argparse.Namespace) -> DnsResolver:
    """The one resolver of a command: zone files, or the network."""
    if args.dns_zone and args.nameserver:
        raise CliError("--dns-zone and --nameserver exclude each other")
    if args.dns_zone:
        return ZoneResolver.from_files(args.dns_zone)
    if args.dns_timeout <= 0:
        raise CliError("--dns-timeout must be positive")
    resolver = Resolver(
        args.nameserver, timeout=min(2.0, args.dns_timeout), lifetime=args.dns_timeout
    )
    problem = resolver.check_reachable()
    if problem:
        raise CliError(f"DNS unreachable: {problem}")
    return resolver


def _read_input(name: str) -> bytes:
    try:
        if name == "-":
            return sys.stdin.buffer.read()
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None


def _cmd_verify(args: argparse.Namespace) -> int:
    raw = _read_input(args.file)
    resolver = make_resolver(args)
    authenticator = Authenticator(authserv_id=args.authserv_id, resolver=resolver)
    verdict = authenticator.verify(
        raw, ip=args.ip, helo=args.helo, mail_from=args.mail_from, now=args.now
    )
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(verdict.authentication_results.replace("\r\n", "\n"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "verify":
            return _cmd_verify(args)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except (CliError, MailauthError, ValueError) as exc:
        print(f"mailauth: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
