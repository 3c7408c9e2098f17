"""The ``mailauth`` command line.

Only this package (and the milter) reads files, the environment, or writes to stdout/stderr.
Every failure a user can cause ends with one line on stderr and exit status 2; no traceback.
Commands: ``verify`` here, ``sign``/``keygen`` in :mod:`.signing`, ``check`` in
:mod:`.audit`, ``milter`` in :mod:`.serve`, ``reports`` in :mod:`.reporting` (``reports
send`` in :mod:`.report_send`), ``config import`` in :mod:`.config_import`; shared parts in
:mod:`.common`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from mailauth.cli.audit import add_check_parser, cmd_check
from mailauth.cli.common import (
    EXIT_USAGE,
    CliError,
    Parser,
    UsageError,
    add_dns_options,
    make_resolver,
    read_input,
    reverse_path_arg,
    unix_time_arg,
)
from mailauth.cli.config_import import add_config_parser, cmd_config
from mailauth.cli.failure_reports import queue_failure_reports
from mailauth.cli.reporting import add_reports_parser, cmd_reports, store_of
from mailauth.cli.serve import add_milter_parser, cmd_milter, recording_settings
from mailauth.cli.signing import add_keygen_parser, add_sign_parser, cmd_keygen, cmd_sign
from mailauth.config import MilterConfig
from mailauth.dkim import DkimPolicy
from mailauth.dkim.verify import DEFAULT_MAX_SIGNATURES
from mailauth.errors import MailauthError
from mailauth.pipeline import Authenticator
from mailauth.reports import DirectRecorder, open_store

__all__ = ["CliError", "main", "make_resolver"]


def _version() -> str:
    try:
        return version("mailauth")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mailauth",
        description="Authenticate email: SPF, DKIM, ARC, DMARC, Authentication-Results.",
    )
    parser.add_argument("--version", action="version", version=f"mailauth {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    verify = commands.add_parser(
        "verify",
        help="authenticate a message and print its Authentication-Results",
        description="Authenticate one message as a receiving MTA would, and print the "
        "Authentication-Results header field (or the whole verdict with --json).",
        epilog="example:\n  mailauth verify message.eml --ip 192.0.2.10 "
        "--helo mail.example.com --mail-from alice@example.com --dns-zone example.zone\n"
        "example, recording for DMARC aggregate reports as the milter would:\n"
        "  mailauth verify message.eml --ip 192.0.2.10 --mail-from alice@example.com "
        "--rcpt-to bob@example.net --record reports.sqlite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("file", nargs="?", default="-", help="the message (default: stdin)")
    verify.add_argument("--ip", required=True, help="the SMTP client's IP address")
    verify.add_argument("--helo", default="", help="the HELO/EHLO name the client gave")
    verify.add_argument(
        "--mail-from",
        default="",
        type=reverse_path_arg,
        metavar="ADDR",
        help="the MAIL FROM address, local-part@domain (empty or <> if null)",
    )
    verify.add_argument(
        "--authserv-id",
        default="localhost",
        metavar="ID",
        help="the authserv-id of the Authentication-Results field (default: localhost)",
    )
    verify.add_argument(
        "--now",
        type=unix_time_arg,
        metavar="UNIXTIME",
        help="judge signatures at this time (default: now)",
    )
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.add_argument(
        "--reject-partial-body",
        action="store_true",
        help="a DKIM signature whose l= leaves part of the body unsigned is policy, not pass",
    )
    verify.add_argument(
        "--max-signatures",
        type=_signature_cap,
        default=DEFAULT_MAX_SIGNATURES,
        metavar="N",
        help=f"DKIM signatures verified at most (default {DEFAULT_MAX_SIGNATURES}; more: policy)",
    )
    recording = verify.add_argument_group("recording for DMARC aggregate reports")
    recording.add_argument(
        "--record", nargs="?", const="", metavar="STORE",
        help="record this evaluation as the milter would: into STORE (a SQLite file path or "
        "a postgresql:// URL), or without STORE into [reports] store of --config",
    )  # fmt: skip
    recording.add_argument(
        "--config", metavar="FILE",
        help="the milter's TOML configuration: [reports], reject_dmarc, quarantine_dmarc",
    )  # fmt: skip
    recording.add_argument(
        "--rcpt-to", action="append", default=[], metavar="ADDR",
        help="an envelope recipient (repeatable; recorded when [reports] record_envelope_to)",
    )  # fmt: skip
    add_dns_options(verify)
    add_sign_parser(commands)
    add_keygen_parser(commands)
    add_check_parser(commands)
    add_milter_parser(commands)
    add_reports_parser(commands)
    add_config_parser(commands)
    return parser


def _cmd_verify(args: argparse.Namespace) -> int:
    raw = read_input(args.file)
    resolver = make_resolver(args)
    policy = DkimPolicy(
        max_signatures=args.max_signatures, reject_partial_body=args.reject_partial_body
    )
    store, config = None, MilterConfig()
    if args.record is not None:
        args.store = args.record
        url, config = store_of(args)
        store = open_store(url)
    try:
        recorder = DirectRecorder(store, recording_settings(config)) if store else None
        authenticator = Authenticator(
            authserv_id=args.authserv_id, resolver=resolver, dkim_policy=policy, recorder=recorder
        )
        verdict = authenticator.verify(
            raw, ip=args.ip, helo=args.helo, mail_from=args.mail_from, now=args.now,
            recipients=args.rcpt_to,
        )  # fmt: skip
        if store is not None and config.reports.failure.enabled:
            queue_failure_reports(store, config, verdict, raw, args)
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(verdict.authentication_results.replace("\r\n", "\n"))
    return 0


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line, every usage error one line that names the command it is about."""
    args, extra = parser.parse_known_args(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if extra:  # (what the command's parser left: a second file name, say)
        named = commands.choices[args.command] if args.command else parser
        named.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.error(f"give a command ({', '.join(commands.choices)})")
    return args


def _signature_cap(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1000")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = _parse(parser, sys.argv[1:] if argv is None else list(argv))
        if args.command == "verify":
            return _cmd_verify(args)
        if args.command == "sign":
            return cmd_sign(args)
        if args.command == "keygen":
            return cmd_keygen(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "milter":
            return cmd_milter(args)
        if args.command == "reports":
            return cmd_reports(args, parser)
        if args.command == "config":
            return cmd_config(args)
        raise AssertionError(f"no handler for {args.command!r}")  # (argparse chose it)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except (CliError, MailauthError, ValueError) as exc:
        for line in str(exc).splitlines() or [""]:  # (a configuration: one per problem)
            print(f"mailauth: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (mailauth check ... | head): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit-time flush stays quiet
        return 0
