"""``mailauth config import``: an OpenDKIM + OpenDMARC site's configuration as the milter's
TOML (docs/migrating.md). The notes (what is not carried over, or not exactly) and the key
file warnings go to stderr, one line each, and into the file as comments."""

from __future__ import annotations

import argparse
import os
import sys

from mailauth.cli.common import CliError, Parser
from mailauth.migrate import import_site


def add_config_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    config = commands.add_parser(
        "config",
        help="the milter's configuration: import an OpenDKIM/OpenDMARC site's (import)",
        description="Tools for the milter's TOML configuration (docs/milter.md).",
        epilog="example:\n  mailauth config import --opendkim /etc/opendkim.conf "
        "--opendmarc /etc/opendmarc.conf --out /etc/mailauth/milter.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", parser_class=Parser)
    imports = actions.add_parser(
        "import",
        help="write the milter TOML equivalent to an opendkim.conf and/or opendmarc.conf",
        description="Read an opendkim.conf (with the KeyTable, SigningTable, InternalHosts and "
        "other lists it names) and an opendmarc.conf, and write the equivalent milter "
        "configuration. Every setting that has no equivalent, or is not carried over "
        "exactly, is one line on stderr and a comment in the file; key files are named, "
        "never copied. Check the result with mailauth milter --config FILE --check-config.",
        epilog="examples:\n"
        "  mailauth config import --opendkim /etc/opendkim.conf --opendmarc "
        "/etc/opendmarc.conf --out /etc/mailauth/milter.toml\n"
        "  mailauth config import --opendmarc /etc/opendmarc.conf     # to stdout\n"
        "  mailauth milter --config /etc/mailauth/milter.toml --check-config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imports.add_argument("--opendkim", metavar="FILE", help="an opendkim.conf")
    imports.add_argument("--opendmarc", metavar="FILE", help="an opendmarc.conf")
    imports.add_argument(
        "--out", metavar="FILE", help="write the TOML here (default: stdout); not overwritten"
    )
    imports.add_argument("--force", action="store_true", help="overwrite --out FILE if it exists")


def cmd_config(args: argparse.Namespace) -> int:
    if args.config_command != "import":
        raise CliError("say what to do: mailauth config import ...")
    if args.opendkim is None and args.opendmarc is None:
        raise CliError("config import: give --opendkim FILE, --opendmarc FILE or both")
    imported = import_site(args.opendkim, args.opendmarc)
    if args.out:
        _write(args.out, imported.toml, args.force)
    else:
        sys.stdout.write(imported.toml)
    for note in imported.notes:
        print(f"mailauth config import: not carried over: {note}", file=sys.stderr)
    for warning in imported.warnings:
        print(f"mailauth config import: warning: {warning}", file=sys.stderr)
    if args.out:
        print(
            f"mailauth config import: wrote {args.out} ({len(imported.notes)} notes, "
            f"{len(imported.warnings)} warnings); check it: mailauth milter --config "
            f"{args.out} --check-config",
            file=sys.stderr,
        )
    return 0


def _write(path: str, text: str, force: bool) -> None:
    """The file, created with mode 640 (it names key files, holds no secret), whole or
    not at all."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o640)
    except FileExistsError:
        raise CliError(f"{path}: exists; give --force to overwrite it") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
