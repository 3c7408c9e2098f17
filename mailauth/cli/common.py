"""What every command shares: the parser class, errors, DNS options, reading input."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import re
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn

from mailauth.dkim import unix_time
from mailauth.dns import DnsCache, DnsResolver
from mailauth.dns.opening import NameserversUnreachableError, ResolverSettingsError, open_resolver
from mailauth.files import MESSAGE_LIMIT, read_limited, read_stream

if TYPE_CHECKING:
    from mailauth.config import MilterConfig

EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, try again later


class CliError(Exception):
    """A problem reported as one line on stderr, exit status 2."""


class DnsUnreachableError(CliError):
    """No nameserver answers at all (a local problem, perhaps passing)."""


class UsageError(CliError):
    """A command line that argparse refuses: one line that names the command, exit 2."""


_NEGATIVE_NUMBER = re.compile(r"-\.?[0-9]")


class Parser(argparse.ArgumentParser):
    """argparse's parser with one-line errors (``mailauth verify: error: ...; see mailauth
    verify --help``) instead of the usage block, and an unknown option of a command named
    by that command (with the nearest known option), before any missing-option error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}; see {self.prog} --help")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None and self._subparsers is None:  # a command's own parser
            self._refuse_unknown_options(args)
        return super().parse_known_args(args, namespace)

    def _refuse_unknown_options(self, args: Sequence[str]) -> None:
        known = [option for action in self._actions for option in action.option_strings]
        long = [option for option in known if option.startswith("--")]
        for arg in args:
            if arg == "--":
                return
            if not arg.startswith("-") or arg == "-" or _NEGATIVE_NUMBER.match(arg):
                continue
            name = arg.split("=", 1)[0]
            if name in known or (
                name.startswith("--") and any(option.startswith(name) for option in long)
            ):
                continue  # (an abbreviation: argparse takes it, or says it is ambiguous)
            nearest = difflib.get_close_matches(name, long, n=1)
            hint = f" (did you mean {nearest[0]}?)" if nearest else ""
            self.error(f"unrecognized option {name}{hint}")


def unix_time_arg(text: str) -> float:
    """The argparse type of ``--now``: a Unix time that t= can carry (0 to 10^12)."""
    try:
        return unix_time(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a Unix time from 0 to 10^12: {text!r}") from None


def reverse_path_arg(text: str) -> str:
    """The argparse type of ``--mail-from``: ``local-part@domain`` (RFC 5321 4.1.2; the
    local-part may be a quoted string holding "@"), with or without the angle brackets,
    ``@domain`` (RFC 7208 4.3: postmaster at it), or empty / ``<>`` (the null reverse-path).
    Refused: no domain (``a@``, ``@``), a second unquoted "@", one bracket without the other."""
    address = text.strip()
    if address.startswith("<") or address.endswith(">"):
        address = address[1:-1] if address.startswith("<") and address.endswith(">") else "<"
    if address and not _is_mailbox(address):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a reverse-path: give local-part@domain, or '' or '<>' for the "
            "null reverse-path"
        )
    return text


def _is_mailbox(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if local.startswith('"'):  # quoted-string: "@" and "<" may be inside (RFC 5321 4.1.2)
        closing = re.fullmatch(r'"(?:[^"\\]|\\.)*"', local)
        local_ok = closing is not None
    else:
        # (white space is no structure: kept, as MTAs that are not strict pass it on, and
        # the OpenSPF suite's "Macro Error@e8.example.com" asks for a result)
        local_ok = not any(c in local for c in '@<>"')
    domain_ok = bool(domain) and not any(c in domain for c in '@<>" \t')
    return bool(at) and local_ok and domain_ok


def add_dns_options(parser: argparse.ArgumentParser) -> None:
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
        metavar="FILE[:ORIGIN]",
        help="answer DNS from this RFC 1035 zone file only, no network (repeatable); ORIGIN: "
        "the origin of a file without $ORIGIN",
    )
    group.add_argument(
        "--dns-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="overall time for one DNS query (default 5)",
    )


def dns_args(config: MilterConfig, args: argparse.Namespace) -> argparse.Namespace:
    """The DNS options: the configuration file's settings unless the command line gives its
    own."""
    dns = argparse.Namespace(**vars(args))
    if not args.nameserver and not args.dns_zone:
        dns.nameserver = list(config.nameservers) or None
        dns.dns_zone = list(config.zone_files) or None
        if args.dns_timeout == 5.0:
            dns.dns_timeout = config.dns_timeout
    return dns


def make_resolver(
    args: argparse.Namespace, cache: DnsCache | None = None, *, check: bool = True
) -> DnsResolver:
    """The one resolver of a command: zone files, or the network (with ``cache``, when
    given: the milter keeps its answers across a configuration reload). ``check``: a
    network resolver whose nameservers do not answer is DnsUnreachableError."""
    with resolver_errors():
        return open_resolver(args.nameserver, args.dns_zone, args.dns_timeout, cache, check=check)


@contextlib.contextmanager
def resolver_errors() -> Iterator[None]:
    """Opening a resolver (:func:`mailauth.dns.opening.open_resolver`, directly or through
    the milter's AuthenticatorSpec): its errors as the command line's."""
    try:
        yield
    except NameserversUnreachableError as exc:
        raise DnsUnreachableError(str(exc)) from None
    except ResolverSettingsError as exc:
        raise CliError(str(exc)) from None


def read_input(name: str) -> bytes:
    try:
        if name == "-":
            return read_stream(sys.stdin.buffer, MESSAGE_LIMIT)
        return read_limited(name, MESSAGE_LIMIT)
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
