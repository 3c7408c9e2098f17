"""``mailauth reports send``: send the aggregate reports that are due (RFC 9990).

The reports come from the report store (``--store``: a SQLite file or a ``postgresql://``
URL), claimed for this run; each goes to its verified rua destinations through the relay,
DKIM-signed for ``--submitter``, and its outcome goes back to the store (retried on the next
run with the same file name and Report-ID when a destination failed temporarily).
``--dry-run --out DIR`` writes each report's file and whole e-mail instead, sends nothing
and asks no DNS. The heavy modules (email, smtplib, the store) load only when the command
runs. The store is reached through :class:`ReportSource`, so that tests (and other stores)
can stand in for it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailauth.cli.common import (
    EXIT_TEMPFAIL,
    CliError,
    DnsUnreachableError,
    Parser,
    add_dns_options,
    make_resolver,
    unix_time_arg,
)
from mailauth.cli.failure_reports import dry_run_failure_reports, send_failure_reports
from mailauth.files import CONFIG_LIMIT, read_limited

if TYPE_CHECKING:
    from mailauth.reports.delivery import PendingReport, ReportSource

_FROM_CONFIG = {  # option -> key of [reports] in --config
    "store": "store",
    "org_name": "org_name",
    "email": "email",
    "submitter": "submitter",
    "extra_contact_info": "extra_contact_info",
    "sign_key": "sign_key",
    "sign_selector": "sign_selector",
    "relay": "relay",
    "relay_tls": "relay_tls",
    "relay_cafile": "relay_cafile",
    "relay_user": "relay_user",
    "relay_password_file": "relay_password_file",
    "relay_password_env": "relay_password_env",
}
_REQUIRED = ("store", "org_name", "email", "submitter", "sign_key", "sign_selector")


SourceFactory = Callable[[str, dict[str, str], float], "ReportSource"]


def add_send_parser(actions: argparse._SubParsersAction[Parser]) -> None:
    send = actions.add_parser(
        "send",
        help="send the aggregate reports that are due and the queued failure reports",
        description="Send each aggregate report that is due to its rua destinations, and "
        "each queued failure report (RFC 9991) to its ruf destinations (mailto: only; "
        "external destinations verified in DNS), from --email, DKIM-signed for --submitter, "
        "through the relay. A report that could not be delivered is retried on a later run "
        "(aggregate: with the same file name and Report-ID; failure: with the same "
        "Message-ID, after a backoff). Options override the [reports] table of --config. "
        "Exit status 75 when some report is to be retried.",
        epilog="examples:\n  mailauth reports send --store /var/lib/mailauth/reports.db "
        "--org-name 'Example Mail' --email dmarc-reports@example.net --submitter "
        "example.net --sign-key /etc/mailauth/rep2026.private --sign-selector rep2026 "
        "--relay 127.0.0.1:25\n  mailauth reports send --config /etc/mailauth/mailauth.toml "
        "--dry-run --out /tmp/reports\n  mailauth reports send --config "
        "/etc/mailauth/mailauth.toml --only failure   # every few minutes (RFC 9991: promptly)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("--store", metavar="STORE", help="SQLite file or postgresql:// URL")
    send.add_argument("--org-name", metavar="NAME", help="the Reporting Organization's name")
    send.add_argument("--email", metavar="ADDR", help="contact address; reports come from it")
    send.add_argument("--submitter", metavar="DOMAIN", help="submitter domain (DKIM d=)")
    send.add_argument(
        "--extra-contact-info", metavar="TEXT", help="RFC 9990 extra_contact_info (optional)"
    )
    send.add_argument("--sign-key", metavar="FILE", help="DKIM private key for the submitter")
    send.add_argument("--sign-selector", metavar="SELECTOR", help="its selector (s=)")
    send.add_argument(
        "--now", type=unix_time_arg, metavar="UNIXTIME", help="close periods ended by then"
    )
    send.add_argument("--dry-run", action="store_true", help="write the reports, send nothing")
    send.add_argument("--out", metavar="DIR", help="where --dry-run writes (required with it)")
    send.add_argument("--config", metavar="FILE", help="TOML file with a [reports] table")
    send.add_argument(
        "--only", choices=["aggregate", "failure"],
        help="send only the aggregate (RFC 9990) or the failure (RFC 9991) reports",
    )  # fmt: skip
    relay = send.add_argument_group("relay")
    relay.add_argument("--relay", metavar="HOST[:PORT]", help="SMTP relay (default 127.0.0.1:25)")
    relay.add_argument(
        "--relay-tls",
        choices=["opportunistic", "required", "none"],
        help="STARTTLS: when offered (default), required, or never",
    )
    relay.add_argument("--relay-cafile", metavar="FILE", help="CAs to check the relay against")
    relay.add_argument(
        "--relay-no-verify", action="store_true", help="do not check the relay's certificate"
    )
    relay.add_argument("--relay-user", metavar="USER", help="AUTH user name")
    relay.add_argument("--relay-password-file", metavar="FILE", help="AUTH password, from a file")
    relay.add_argument("--relay-password-env", metavar="VAR", help="... or an environment variable")
    add_dns_options(send)


def cmd_reports_send(args: argparse.Namespace, open_source: SourceFactory | None = None) -> int:
    from mailauth.dkim import Signer  # noqa: PLC0415 (loaded when the command runs)
    from mailauth.reports.message import Submitter  # noqa: PLC0415

    _apply_config(args)
    missing = [name for name in _REQUIRED if not getattr(args, name)]
    if missing:
        option = "--" + missing[0].replace("_", "-")
        raise CliError(f"{option} is required (or {missing[0]} in [reports] of --config)")
    if args.dry_run != bool(args.out):
        raise CliError("--dry-run and --out go together")
    submitter = Submitter(args.org_name, args.email, args.submitter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signer = Signer(submitter.domain, args.sign_selector, Path(args.sign_key))
    for warning in caught:
        print(f"mailauth: warning: {warning.message}", file=sys.stderr)
    now = args.now if args.now is not None else time.time()
    relay = None if args.dry_run else _relay_settings(args)
    try:
        resolver = None if args.dry_run else make_resolver(args)
    except DnsUnreachableError as exc:  # passing, perhaps: the timer's next run tries again
        print(f"mailauth reports send: error: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    settings = {"org_name": submitter.org_name, "email": submitter.email}
    settings["submitter"] = submitter.domain
    if args.extra_contact_info:
        if not args.extra_contact_info.isprintable():
            raise CliError("--extra-contact-info: control characters")
        settings["extra_contact_info"] = args.extra_contact_info
    retry = False
    # Failure reports first (RFC 9991 asks for them promptly); they live in the store only,
    # so a caller that stands in its own source of aggregate reports has none.
    if args.only != "aggregate" and open_source is None:
        retry = _failure_reports(args, submitter, signer, relay=relay, resolver=resolver, now=now)
        if args.only == "failure":
            return EXIT_TEMPFAIL if retry else 0
    source = (open_source or open_store_source)(args.store, settings, now)
    try:
        if args.dry_run:
            return _dry_run(source, Path(args.out), submitter, signer, now)
        from mailauth.reports.delivery import send_reports  # noqa: PLC0415
        from mailauth.reports.smtp import SmtpRelay  # noqa: PLC0415

        assert relay is not None and resolver is not None
        with SmtpRelay(relay) as connection:
            outcomes = send_reports(
                source.pending(now),
                submitter=submitter,
                signer=signer,
                resolver=resolver,
                transport=connection.send,
                marks=source,
                now=now,
            )
    finally:
        source.close()
    for outcome in outcomes:
        line = f"{outcome.state} {outcome.policy_domain} {outcome.file_name}"
        if outcome.delivered:
            line += " to " + " ".join(outcome.delivered)
        print(line + "".join(f"\n  {p}" for p in outcome.problems))
    retry = retry or any(o.state == "retry" for o in outcomes)
    return EXIT_TEMPFAIL if retry else 0


def _failure_reports(
    args: argparse.Namespace, submitter: Any, signer: Any, *, relay: Any, resolver: Any, now: float
) -> bool:
    """The queued failure reports: sent, or written with --dry-run; whether some report is
    to be retried."""
    if not args.dry_run:
        return send_failure_reports(
            args, submitter, signer, relay=relay, resolver=resolver, now=now
        )
    _out_dir(Path(args.out))
    count = dry_run_failure_reports(args, submitter, signer, Path(args.out), now)
    if count or args.only == "failure":
        print(f"{count} failure report(s) written to {args.out}; nothing sent", file=sys.stderr)
    return False


def _dry_run(source: ReportSource, out: Path, submitter: Any, signer: Any, now: float) -> int:
    from mailauth.reports.delivery import preview_message  # noqa: PLC0415

    _out_dir(out)
    count = 0
    claimed: list[PendingReport] = []
    try:
        # Every due report is claimed once; the claims go back only after the walk (given
        # back during it, the store would hand the same reports out again, without end).
        for report in source.pending(now):
            claimed.append(report)
            name = report.file_name
            if "/" in name or name.startswith("."):
                raise CliError(f"refusing to write a file named {name!r}")
            try:
                raw = preview_message(report, submitter=submitter, signer=signer, now=now)
            except ValueError as exc:  # (a policy domain that is no host name: F1)
                print(f"skipped {report.policy_domain}: {exc}", file=sys.stderr)
                continue
            try:
                (out / name).write_bytes(report.xml_gz)
                (out / f"{name}.eml").write_bytes(raw)
            except OSError as exc:
                raise CliError(f"cannot write to {out}: {exc.strerror or exc}") from None
            print(out / name)
            count += 1
    finally:
        for report in claimed:
            source.release(report, now=now)  # (a dry run leaves every report due)
    print(f"{count} report(s) written to {out}; nothing sent", file=sys.stderr)
    return 0


def _out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out}: {exc.strerror or exc}") from None


def _apply_config(args: argparse.Namespace) -> None:
    """Fill the options not given from the [reports] table of --config."""
    if not args.config:
        return
    try:
        table = tomllib.loads(read_limited(args.config, CONFIG_LIMIT).decode()).get("reports", {})
    except OSError as exc:
        raise CliError(f"cannot read {args.config}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{args.config}: not TOML: {exc}") from None
    if not isinstance(table, dict):
        raise CliError(f"{args.config}: [reports] is not a table")
    for option, key in _FROM_CONFIG.items():
        value = table.get(key)
        if value is not None and getattr(args, option) is None:
            if not isinstance(value, str):
                raise CliError(f"{args.config}: reports.{key} must be a string")
            setattr(args, option, value)
    check = table.get("relay_check_certificate")
    if check is not None and not isinstance(check, bool):
        raise CliError(f"{args.config}: reports.relay_check_certificate must be true or false")
    if check is False:
        args.relay_no_verify = True


def _relay_settings(args: argparse.Namespace) -> Any:
    from mailauth.reports.smtp import RelaySettings, parse_relay  # noqa: PLC0415

    host, port = parse_relay(args.relay or "127.0.0.1:25")
    password = None
    if args.relay_password_file and args.relay_password_env:
        raise CliError("give the relay password by file or by environment, not both")
    if args.relay_password_file:
        try:
            data = read_limited(args.relay_password_file, CONFIG_LIMIT)
            password = data.decode().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.relay_password_file}: {exc}") from None
    elif args.relay_password_env:
        password = os.environ.get(args.relay_password_env)
        if password is None:
            raise CliError(f"environment variable {args.relay_password_env} is not set")
    if password is not None and not args.relay_user:
        raise CliError("a relay password without --relay-user")
    return RelaySettings(
        host,
        port,
        tls=args.relay_tls or "opportunistic",
        check_certificate=not args.relay_no_verify,
        cafile=args.relay_cafile,
        username=args.relay_user,
        password=password,
    )


class _StoreSource:
    """The report store's functions (``mailauth.reports``: open_store, closed_reports,
    mark_delivered, mark_sent, mark_failed; docs/reports.md) behind :class:`ReportSource`."""

    def __init__(self, api: Any, url: str, settings: dict[str, str]) -> None:
        self.api = api
        self.store = api.open_store(url, create=False)
        self.settings = api.ReportSettings(**settings)

    def pending(self, now: float) -> Iterable[PendingReport]:
        return self.api.closed_reports(self.store, self.settings, now=now)  # type: ignore[no-any-return]

    def reached(self, report: PendingReport, delivered: tuple[str, ...]) -> bool:
        return bool(self.api.mark_delivered(self.store, report, delivered))

    def sent(self, report: PendingReport, *, now: float) -> bool:
        return bool(self.api.mark_sent(self.store, report, now=now))

    def failed(
        self,
        report: PendingReport,
        error: str,
        *,
        now: float,
        delivered: tuple[str, ...],
        give_up: bool,
    ) -> bool:
        return bool(
            self.api.mark_failed(
                self.store, report, error, now=now, delivered=delivered, give_up=give_up
            )
        )

    def release(self, report: PendingReport, *, now: float) -> None:
        self.api.release(self.store, report, now=now)

    def close(self) -> None:
        self.store.close()


def open_store_source(url: str, settings: dict[str, str], now: float) -> ReportSource:
    api = importlib.import_module("mailauth.reports")  # (loaded when the command runs)
    return _StoreSource(api, url, settings)
