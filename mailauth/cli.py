"""The ``mailauth`` command line.

Only this module (and the milter) reads files, the environment, or writes to stdout/stderr.
Every failure a user can cause ends with one line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm import tqdm

from mailauth.arc.seal import Sealer, results_payload
from mailauth.check import MtaStsFetcher, check_domains
from mailauth.check.render import render_report
from mailauth.dkim import (
    Signer,
    generate_private_key,
    public_key_record,
    sign_dkim,
    zone_txt_line,
)
from mailauth.dkim.keys import private_key_pem
from mailauth.dns import DnsResolver, Resolver, ZoneResolver
from mailauth.domains import normalize_domain
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
    _add_sign_parser(commands)
    _add_keygen_parser(commands)
    _add_check_parser(commands)
    return parser


def _add_check_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    check = commands.add_parser(
        "check",
        help="audit a domain's SPF, DMARC, DKIM, MX, MTA-STS, TLS-RPT and BIMI records",
        description="Audit the mail-authentication DNS of one or more domains: each finding "
        "is pass, warn or fail, with a fix. Exit status 0 when nothing fails, 1 when "
        "something does, 2 on usage errors. See docs/check.md for the finding ids.",
        epilog="examples:\n  mailauth check example.com --selector s2026\n"
        "  mailauth check --from-file domains.txt --json > report.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("domains", nargs="*", metavar="DOMAIN", help="domains to check")
    check.add_argument("--from-file", metavar="FILE", help="more domains, one per line")
    check.add_argument(
        "--selector", action="append", default=[], help="a DKIM selector to check (repeatable)"
    )
    check.add_argument("--json", action="store_true", help="JSON (one line per domain)")
    check.add_argument("--quiet", action="store_true", help="show only warnings and failures")
    check.add_argument("--concurrency", type=int, default=20, help="domains at once (20)")
    check.add_argument(
        "--no-fetch", action="store_true", help="do not fetch MTA-STS policies over HTTPS"
    )
    check.add_argument("--ca-file", metavar="FILE", help="CA bundle for MTA-STS (default: system)")
    check.add_argument(
        "--progress", action="store_true", help="progress bar on stderr (default: >10 domains)"
    )
    _add_dns_options(check)


def _add_sign_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    sign = commands.add_parser(
        "sign",
        help="DKIM-sign a message (RSA, Ed25519, or both)",
        description="Add DKIM-Signature fields on top of a message and write it to stdout; "
        "the original bytes are kept. Repeat --selector and --key (and --domain, or give it "
        "once) to sign with several keys in one pass.",
        epilog="examples:\n  mailauth sign message.eml --domain example.com --selector "
        "s2026 --key s2026.private > signed.eml\n  mailauth sign message.eml --domain "
        "example.com --selector rsa1 --key rsa1.private --selector ed1 --key ed1.private\n"
        "  mailauth sign --arc message.eml --authserv-id lists.example.org --ip 192.0.2.10 "
        "--mail-from a@example.com --domain example.org --selector arc1 --key arc1.private",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("file", nargs="?", default="-", help="the message (default: stdin)")
    sign.add_argument("--domain", action="append", required=True, help="d= (repeatable)")
    sign.add_argument("--selector", action="append", required=True, help="s= (repeatable)")
    sign.add_argument(
        "--key", action="append", required=True, metavar="FILE", help="private key (repeatable)"
    )
    sign.add_argument(
        "--algorithm",
        action="append",
        choices=["rsa-sha256", "ed25519-sha256"],
        help="a= (default: the key's own)",
    )
    sign.add_argument(
        "--canonicalization",
        default="relaxed/relaxed",
        metavar="HEADER/BODY",
        help="simple or relaxed for each (default: relaxed/relaxed)",
    )
    sign.add_argument(
        "--headers", metavar="NAME:NAME:...", help="fields to sign (default: a standard list)"
    )
    sign.add_argument("--expire", type=int, metavar="SECONDS", help="add x= this far after t=")
    sign.add_argument("--now", type=float, metavar="UNIXTIME", help="t= (default: now)")
    arc = sign.add_argument_group(
        "ARC sealing (RFC 8617)",
        "--arc adds an ARC Set instead of a DKIM-Signature: the message is first verified as "
        "received from --ip (its Authentication-Results becomes the ARC-Authentication-Results, "
        "its ARC chain decides cv=), then sealed with the one --domain/--selector/--key.",
    )
    arc.add_argument("--arc", action="store_true", help="seal (ARC) instead of DKIM-signing")
    arc.add_argument("--authserv-id", metavar="ID", help="our authserv-id (required with --arc)")
    arc.add_argument("--ip", help="the SMTP client's address (required with --arc)")
    arc.add_argument("--helo", default="", help="the client's HELO name")
    arc.add_argument("--mail-from", default="", metavar="ADDR", help="the MAIL FROM address")
    _add_dns_options(sign)


def _add_keygen_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    keygen = commands.add_parser(
        "keygen",
        help="create a DKIM key pair and print its DNS record",
        description="Write a new private key to DIR/SELECTOR.private (mode 0600) and the "
        "DNS TXT record to DIR/SELECTOR.txt, and print the record in zone-file form.",
        epilog="example:\n  mailauth keygen --domain example.com --selector s2026 "
        "--algorithm ed25519 --out /etc/mailauth/keys",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keygen.add_argument("--domain", required=True, help="the signing domain (d=)")
    keygen.add_argument("--selector", required=True, help="the selector (s=)")
    keygen.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    keygen.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    keygen.add_argument("--out", required=True, metavar="DIR", help="directory for the files")


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


def _signers(args: argparse.Namespace) -> list[Signer]:
    keys, selectors = args.key, args.selector
    domains = args.domain * len(keys) if len(args.domain) == 1 else args.domain
    algorithms = args.algorithm or [None]
    algorithms = algorithms * len(keys) if len(algorithms) == 1 else algorithms
    if not len(keys) == len(selectors) == len(domains) == len(algorithms):
        raise CliError("give one --selector (and --domain, --algorithm, or one for all) per --key")
    headers = args.headers.split(":") if args.headers else None
    signers = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for domain, selector, key, algorithm in zip(
            domains, selectors, keys, algorithms, strict=True
        ):
            signers.append(
                Signer(
                    domain,
                    selector,
                    Path(key),
                    algorithm,
                    canonicalization=args.canonicalization,
                    headers=headers,
                    expire=args.expire,
                )
            )
    for warning in caught:
        print(f"mailauth: warning: {warning.message}", file=sys.stderr)
    return signers


def _cmd_sign(args: argparse.Namespace) -> int:
    if args.arc:
        return _cmd_seal(args)
    signers = _signers(args)
    raw = _read_input(args.file)
    signed = sign_dkim(raw, signers, now=args.now)
    sys.stdout.buffer.write(signed)
    sys.stdout.buffer.flush()
    return 0


def _cmd_seal(args: argparse.Namespace) -> int:
    if not (args.authserv_id and args.ip):
        raise CliError("--arc needs --authserv-id and --ip")
    if not len(args.key) == len(args.selector) == len(args.domain) == 1:
        raise CliError("--arc seals with one --domain, --selector and --key")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        algorithm = args.algorithm[0] if args.algorithm else None
        sealer = Sealer(args.domain[0], args.selector[0], Path(args.key[0]), algorithm)
    for warning in caught:
        print(f"mailauth: warning: {warning.message}", file=sys.stderr)
    raw = _read_input(args.file)
    authenticator = Authenticator(authserv_id=args.authserv_id, resolver=make_resolver(args))
    verdict = authenticator.verify(
        raw, ip=args.ip, helo=args.helo, mail_from=args.mail_from, now=args.now
    )
    if verdict.arc is None:  # the pipeline always validates ARC
        raise CliError("internal error: no ARC outcome in the verdict")
    sealed = sealer.seal(
        raw,
        authentication_results=results_payload(verdict.authentication_results),
        chain=verdict.arc,
        now=args.now,
    )
    sys.stdout.buffer.write(sealed)
    sys.stdout.buffer.flush()
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    domains = list(args.domains)
    if args.from_file:
        text = _read_input(args.from_file).decode("utf-8", "replace")
        domains += [d.strip() for d in text.splitlines() if d.strip() and d[0] != "#"]
    if not domains:
        raise CliError("give at least one DOMAIN (or --from-file)")
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    resolver = make_resolver(args)
    fetcher = None if args.no_fetch else MtaStsFetcher(verify=args.ca_file or True)
    show = args.progress or (len(domains) > 10 and sys.stderr.isatty())
    colour = sys.stdout.isatty() and not args.json

    async def run() -> bool:
        failed = False
        with tqdm(total=len(domains), disable=not show, file=sys.stderr, unit="domain") as bar:
            reports = check_domains(
                domains,
                resolver,
                selectors=args.selector,
                fetcher=fetcher,
                concurrency=args.concurrency,
            )
            async for report in reports:
                failed = failed or report.failed
                if args.json:
                    line = json.dumps(report.to_dict(), ensure_ascii=False)
                else:
                    line = render_report(report, colour=colour, verbose=not args.quiet) + "\n"
                bar.write(line, file=sys.stdout)
                bar.update(1)
        return failed

    return 1 if asyncio.run(run()) else 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    try:
        name = normalize_domain(f"{args.selector}._domainkey.{args.domain}")
    except ValueError as exc:
        raise CliError(f"bad domain or selector: {exc}") from None
    key = generate_private_key(args.algorithm, args.bits)
    out = Path(args.out)
    private_path = out / f"{args.selector}.private"
    record = zone_txt_line(name, public_key_record(key))
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_key_pem(key))
        (out / f"{args.selector}.txt").write_text(record + "\n")
    except FileExistsError:
        raise CliError(f"{private_path} exists; not overwriting a key") from None
    except OSError as exc:
        raise CliError(f"cannot write to {out}: {exc.strerror or exc}") from None
    print(record)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "verify":
            return _cmd_verify(args)
        if args.command == "sign":
            return _cmd_sign(args)
        if args.command == "keygen":
            return _cmd_keygen(args)
        if args.command == "check":
            return _cmd_check(args)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except (CliError, MailauthError, ValueError) as exc:
        print(f"mailauth: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (mailauth check ... | head): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit-time flush stays quiet
        return 0
