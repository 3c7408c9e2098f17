"""``mailauth sign`` (DKIM, and ARC with --arc) and ``mailauth keygen``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import warnings
from pathlib import Path

from mailauth.arc.seal import Sealer, results_payload
from mailauth.cli.common import (
    EXIT_TEMPFAIL,
    CliError,
    DnsUnreachableError,
    Parser,
    add_dns_options,
    make_resolver,
    read_input,
    reverse_path_arg,
    unix_time_arg,
)
from mailauth.dkim import (
    Signer,
    generate_private_key,
    public_key_record,
    sign_dkim,
    zone_txt_line,
)
from mailauth.dkim.keys import private_key_pem
from mailauth.dkim.sign import signing_identity
from mailauth.pipeline import Authenticator
from mailauth.results import ArcResult


def add_sign_parser(commands: argparse._SubParsersAction[Parser]) -> None:
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
    sign.add_argument("--now", type=unix_time_arg, metavar="UNIXTIME", help="t= (default: now)")
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
    arc.add_argument(
        "--mail-from",
        default="",
        type=reverse_path_arg,
        metavar="ADDR",
        help="the MAIL FROM address",
    )
    add_dns_options(sign)


def add_keygen_parser(commands: argparse._SubParsersAction[Parser]) -> None:
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
    keygen.add_argument(
        "--owner",
        metavar="USER[:GROUP]",
        help="give the two files to this user, e.g. the milter's service user (keygen run "
        "as root); GROUP defaults to the user's own; a directory keygen creates stays root's, "
        "group GROUP, mode 0750",
    )


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


def cmd_sign(args: argparse.Namespace) -> int:
    if args.arc:
        return _cmd_seal(args)
    signers = _signers(args)
    raw = read_input(args.file)
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
    raw = read_input(args.file)
    try:
        resolver = make_resolver(args)
    except DnsUnreachableError as exc:  # passing, perhaps: EX_TEMPFAIL, as below
        print(f"mailauth sign: error: not sealed: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    authenticator = Authenticator(authserv_id=args.authserv_id, resolver=resolver)
    verdict = authenticator.verify(
        raw, ip=args.ip, helo=args.helo, mail_from=args.mail_from, now=args.now
    )
    if verdict.arc is None:  # the pipeline always validates ARC
        raise CliError("internal error: no ARC outcome in the verdict")
    if verdict.arc.result is ArcResult.TEMPERROR:
        # Not sealed: cv=fail would end the chain over a local fault. 75 is EX_TEMPFAIL
        # (sysexits.h): a caller such as a .forward pipe defers and tries again later.
        print(f"mailauth sign: error: not sealed: {verdict.arc.reason}", file=sys.stderr)
        return EXIT_TEMPFAIL
    sealed = sealer.seal(
        raw,
        authentication_results=results_payload(verdict.authentication_results),
        chain=verdict.arc,
        now=args.now,
    )
    sys.stdout.buffer.write(sealed)
    sys.stdout.buffer.flush()
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    domain, selector = signing_identity(args.domain, args.selector)  # also a safe file name
    owner = _owner(args.owner) if args.owner else None  # (a bad name: before any key is made)
    name = f"{selector}._domainkey.{domain}"
    key = generate_private_key(args.algorithm, args.bits)
    out = Path(args.out)
    record = zone_txt_line(name, public_key_record(key))
    files = {
        f"{args.selector}.private": (private_key_pem(key), 0o600),
        f"{args.selector}.txt": ((record + "\n").encode(), 0o644),
    }
    dir_fd = _open_out_dir(out, owner)
    created: list[str] = []  # the clean-up removes only what this run made
    try:
        for file_name, (data, mode) in files.items():
            _write_new_file(
                dir_fd, out, file_name, data=data, mode=mode, owner=owner, created=created
            )
    except BaseException:
        for file_name in created:  # a key the milter cannot read, half a pair: none
            with contextlib.suppress(OSError):
                os.unlink(file_name, dir_fd=dir_fd)
        raise
    finally:
        os.close(dir_fd)
    print(record)
    return 0


def _open_out_dir(out: Path, owner: tuple[int, int] | None) -> int:
    """Open (creating it if missing) the --out directory without following a symlink.

    Run as root, the directory must be one no other user can write to: a service user able
    to plant ``SELECTOR.txt`` there could otherwise point it elsewhere. The directory stays
    root's; a directory created here for --owner is given the owner's group, mode 0750.
    """
    created = False
    try:
        if out.is_symlink():
            raise CliError(f"--out {out}: a symlink; give the directory itself")
        if not out.is_dir():
            if out.exists():
                raise CliError(f"--out {out}: not a directory")
            out.mkdir(mode=0o755, parents=True)
            created = True
        dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileExistsError:
        raise CliError(f"--out {out}: not a directory") from None
    except OSError as exc:
        raise CliError(f"cannot write to {out}: {exc.strerror or exc}") from None
    try:
        if created and owner is not None and os.geteuid() == 0:
            os.fchown(dir_fd, 0, owner[1])
            os.fchmod(dir_fd, 0o750)
        state = os.fstat(dir_fd)
        if os.geteuid() == 0 and (state.st_uid != 0 or state.st_mode & 0o022):
            raise CliError(
                f"--out {out}: writable by a user other than root (keygen run as root "
                "writes only into a directory root alone can write to)"
            )
    except OSError as exc:
        os.close(dir_fd)
        raise CliError(f"cannot write to {out}: {exc.strerror or exc}") from None
    except CliError:
        os.close(dir_fd)
        raise
    return dir_fd


def _write_new_file(
    dir_fd: int,
    out: Path,
    file_name: str,
    *,
    data: bytes,
    mode: int,
    owner: tuple[int, int] | None,
    created: list[str],
) -> None:
    """Create DIR/FILE_NAME (never an existing file, never through a symlink), give it to
    ``owner`` before a byte is written, and note it in ``created``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(file_name, flags, mode, dir_fd=dir_fd)
    except FileExistsError:
        what = "a key" if file_name.endswith(".private") else "it"
        raise CliError(f"{out / file_name} exists; not overwriting {what}") from None
    except OSError as exc:  # ELOOP: a symlink planted there
        raise CliError(f"cannot write to {out}: {exc.strerror or exc}") from None
    created.append(file_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # (the umask may have taken bits of 0644)
            if owner is not None:
                os.fchown(handle.fileno(), *owner)  # (before the key is in it)
            handle.write(data)
    except OSError as exc:
        hint = " (--owner needs root)" if owner is not None and exc.errno == errno.EPERM else ""
        raise CliError(f"cannot write to {out}: {exc.strerror or exc}{hint}") from None


def _owner(text: str) -> tuple[int, int]:
    """``USER[:GROUP]`` (names or numbers) to (uid, gid); the user's own group by default."""
    import grp  # noqa: PLC0415 - (POSIX only, and only keygen --owner needs them)
    import pwd  # noqa: PLC0415

    user, _, group = text.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise CliError(f"--owner {text!r}: no user {user!r}") from None
    if not group:
        return entry.pw_uid, entry.pw_gid
    try:
        gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise CliError(f"--owner {text!r}: no group {group!r}") from None
    return entry.pw_uid, gid
