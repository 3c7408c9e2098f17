"""RFC 9991 failure reports on the command line: queued by ``mailauth verify --record`` (with
``failure_reports = true`` in ``[reports]`` of ``--config``), sent by ``mailauth reports
send`` beside the aggregate reports (``--only failure`` for a frequent timer), listed by
``mailauth reports show --failure``. docs/reports.md, "Failure reports"."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from mailauth.cli.common import CliError
from mailauth.config import MilterConfig
from mailauth.reports.delivery import ReportState
from mailauth.reports.failure_claims import (
    claim_failures,
    failure_status,
    new_claim_token,
    release_failure,
)
from mailauth.reports.failure_collect import queue_now
from mailauth.reports.failure_send import preview_failure, send_failures
from mailauth.reports.store import Store, open_store
from mailauth.results import Policy, Verdict


def queue_failure_reports(
    store: Store, config: MilterConfig, verdict: Verdict, raw: bytes, args: argparse.Namespace
) -> None:
    """``verify --record``: queue the reports this evaluation calls for, as the milter
    would (its action from the configuration's ``reject_dmarc``/``quarantine_dmarc``)."""
    dmarc = verdict.dmarc
    action = "continue"
    if dmarc is not None and dmarc.disposition is Policy.REJECT and config.reject_dmarc:
        action = "reject"
    elif dmarc is not None and dmarc.disposition is Policy.QUARANTINE and config.quarantine_dmarc:
        action = "quarantine"
    outcome = queue_now(
        store,
        config.reports.failure,
        verdict,
        raw,
        ip=args.ip,
        mail_from=args.mail_from.strip("<>"),
        recipients=tuple(args.rcpt_to),
        action=action,
        now=args.now if args.now is not None else time.time(),
    )
    if outcome.queued or outcome.rate_limited or outcome.dropped:
        print(
            f"failure reports: {outcome.queued} queued, {outcome.rate_limited} over the rate "
            f"limit, {outcome.dropped} dropped (queue full)",
            file=sys.stderr,
        )


def send_failure_reports(
    args: argparse.Namespace, submitter: Any, signer: Any, *, relay: Any, resolver: Any, now: float
) -> bool:
    """Send the failure reports due; one line per report (and its problems); whether some
    report is to be retried."""
    from mailauth.reports.smtp import SmtpRelay  # noqa: PLC0415

    store = open_store(args.store, create=False)
    try:
        with SmtpRelay(relay) as connection:
            outcomes = send_failures(
                store, submitter=submitter, signer=signer, resolver=resolver,
                transport=connection.send, now=now,
            )  # fmt: skip
    finally:
        store.close()
    for o in outcomes:
        line = f"{o.state} failure {o.policy_domain} {o.auth_failure} {o.id}"
        if o.delivered:
            line += " to " + " ".join(o.delivered)
        print(line + "".join(f"\n  {p}" for p in o.problems))
    return any(o.state is ReportState.RETRY for o in outcomes)


def dry_run_failure_reports(
    args: argparse.Namespace, submitter: Any, signer: Any, out: Path, now: float
) -> int:
    """``--dry-run --out DIR``: each due failure report as ``DIR/failure-<id>.eml``; the
    reports stay due. The number written."""
    store = open_store(args.store, create=False)
    claimed, token = [], new_claim_token()
    try:
        while batch := claim_failures(store, now, token, limit=100):
            claimed.extend(batch)  # (every one claimed once: given back after the walk)
        for report in claimed:
            raw = preview_failure(report, submitter=submitter, signer=signer, now=now)
            path = out / f"failure-{report.id}.eml"
            try:
                path.write_bytes(raw)
            except OSError as exc:
                raise CliError(f"cannot write to {out}: {exc.strerror or exc}") from None
            print(path)
    finally:
        for report in claimed:
            release_failure(store, report)
        store.close()
    return len(claimed)


def show_failure_reports(store_url: str, as_json: bool) -> str:
    """``reports show --failure``: the failure reports waiting, as a table or JSON."""
    import json  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415

    store = open_store(store_url, create=False)
    try:
        status = failure_status(store)
    finally:
        store.close()
    if as_json:
        return json.dumps([s.to_dict() for s in status], indent=2, ensure_ascii=False)
    if not status:
        return "no failure reports waiting"
    lines = [("QUEUED (UTC)", "POLICY DOMAIN", "TYPE", "STATE", "TRIES", "RUF")]
    for s in status:
        when = datetime.fromtimestamp(s.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append((when, s.policy_domain, s.auth_failure, s.state, str(s.attempts),
                      " ".join(s.ruf)))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = ["  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]])
           for line in lines]  # fmt: skip
    out.append(f"{len(status)} failure reports waiting")
    return "\n".join(out)
