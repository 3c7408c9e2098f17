"""Aggregate reports ready to send, claimed under the store's lock (the delivery side's
interface: docs/reports.md, "For the delivery side").

A period is *closed* once ``grace`` seconds have passed since its end (so that batches the
recorders still held at midnight are in). :func:`closed_reports` claims the closed, unsent
reports of policy domains that asked for them (``rua=``), a few at a time, and yields each
with its XML built and gzipped; the sender calls :func:`mark_delivered` as each destination
is reached, then :func:`mark_sent` or :func:`mark_failed`. A claim is a lease: a row in
``outgoing_reports`` set to ``claimed`` with the claimer's token and an expiry, taken in a
write transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two runs never take the same
row; SQLite: ``BEGIN IMMEDIATE``, one claimer at a time). Leases run on the store's clock
on PostgreSQL and on the wall clock (``clock``) on SQLite (:mod:`.leases`), never on the
run's ``now`` (``reports send --now`` in the past or future must not shorten or stretch
them), and each is renewed as its report is handed out (a run slower than a lease over its
batch skips the ones another run took meanwhile). A claim not concluded by its expiry (the
sender crashed) is free again; claims not handed out when the run ends by an exception
are given back (:func:`~.leases.give_back`). A report once ``sent`` is never claimed
again. The Report-ID and file name are fixed at the first claim and reused by every retry
(RFC 9990 "Email": a re-sent report keeps its file name).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mailauth.reports.aggregate import (
    PolicyColumns,
    ReportMetadata,
    ReportTooLarge,
    gzip_pieces,
    render_report,
)
from mailauth.reports.leases import Clock, give_back, lease_now
from mailauth.reports.store import Store

MEDIA_TYPE = "application/gzip"  # RFC 9990 "Email": gzip-compressed XML

GRACE = 600  # seconds after a period's end before its report is built (ReportSettings)


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """Who reports (RFC 9990 report_metadata; ``submitter``: the receiver's domain in file
    names and Subject fields), and the timing of claims: ``grace`` seconds after a period's
    end before its report is built, ``lease`` seconds a claim lasts; ``max_report_bytes``:
    the largest gzipped XML built (a larger report is abandoned: it would not pass most
    relays, whose limit is about 10 MB with base64, and building it takes memory)."""

    org_name: str
    email: str
    submitter: str
    extra_contact_info: str = ""
    generator: str = "mailauth"
    grace: int = GRACE
    lease: int = 3600
    max_report_bytes: int = 25_000_000


@dataclass(frozen=True, slots=True)
class PendingReport:
    """One claimed aggregate report, ready to deliver to each of ``rua`` (as published,
    unverified; ``delivered``: those an earlier attempt reached)."""

    policy_domain: str
    begin: int
    end: int
    rua: tuple[str, ...]
    report_id: str
    file_name: str
    xml_gz: bytes
    records: int
    messages: int
    attempts: int
    delivered: tuple[str, ...]
    claim: str
    submitter: str

    @property
    def media_type(self) -> str:
        return MEDIA_TYPE

    @property
    def subject(self) -> str:
        """RFC 9990 dmarc-subject."""
        return (
            f"Report Domain: {self.policy_domain} Submitter: {self.submitter} "
            f"Report-ID: <{self.report_id}>"
        )


_POLICY_COLUMNS = "p, sp, np, adkim, aspf, testing, psd, fo, discovery, rua, ruf"
_ROW_COLUMNS = """source_ip, header_from, envelope_from, envelope_to, dkim, spf_domain,
    spf_scope, spf_result, dmarc_dkim, dmarc_spf, disposition, reasons, messages"""


def file_name(submitter: str, policy_domain: str, begin: int, end: int, unique: str) -> str:
    """RFC 9990 "Email": receiver!policy-domain!begin!end!unique-id.xml.gz."""
    return f"{submitter}!{policy_domain}!{begin}!{end}!{unique}.xml.gz"


def open_reports(store: Store, settings: ReportSettings, now: float) -> int:
    """Give every closed period of a policy domain with ``rua=`` its outgoing report
    (Report-ID, file name, state ``pending``); the number added."""
    closed = store.fetchall(
        """SELECT p.policy_domain, p.period_begin, p.period_end FROM report_policies p
        WHERE p.period_end + ? <= ? AND p.rua <> '' AND NOT EXISTS (
            SELECT 1 FROM outgoing_reports o
            WHERE o.policy_domain = p.policy_domain AND o.period_begin = p.period_begin)""",
        (settings.grace, int(now)),
    )
    rows = []
    for domain, begin, end in closed:
        unique = uuid.uuid4().hex
        name = file_name(settings.submitter, domain, begin, end, unique)
        rows.append((domain, begin, end, unique, name, "pending", 0, "", 0, "", "", int(now), 0))
    with store.write():
        store.executemany(
            """INSERT INTO outgoing_reports (policy_domain, period_begin, period_end,
            report_id, file_name, state, attempts, claimed_by, claimed_until, delivered,
            last_error, created, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (policy_domain, period_begin) DO NOTHING""",
            rows,
        )
    return len(rows)


def claim_reports(
    store: Store,
    settings: ReportSettings,
    now: float,
    token: str,
    limit: int,
    *,
    clock: Clock = time.time,
) -> list[tuple[Any, ...]]:
    """Claim up to ``limit`` reports that are pending or whose claim expired: their
    (policy domain, begin, end, report_id, file_name, attempts, delivered) and their
    policy's columns (PostgreSQL: only the outgoing rows are locked, never the policies
    the recorders update). ``now`` is not used: leases run on the leases' clock
    (:mod:`.leases`: the store's on PostgreSQL, ``clock`` on SQLite)."""
    with store.write():
        wall, at = lease_now(store, clock)
        rows = store.fetchall(
            """SELECT o.policy_domain, o.period_begin, o.period_end, o.report_id,
            o.file_name, o.attempts, o.delivered, """  # noqa: S608 - constant text
            + ", ".join(f"p.{c}" for c in _POLICY_COLUMNS.split(", "))
            + f""" FROM outgoing_reports o JOIN report_policies p
            ON p.policy_domain = o.policy_domain AND p.period_begin = o.period_begin
            WHERE o.state = 'pending' OR (o.state = 'claimed' AND o.claimed_until <= {wall})
            ORDER BY o.period_begin, o.policy_domain LIMIT ?"""
            + store.skip_locked,
            (*at, limit),
        )
        store.executemany(
            f"""UPDATE outgoing_reports SET state = 'claimed', claimed_by = ?,
            claimed_until = {wall} + ?, attempts = attempts + 1
            WHERE policy_domain = ? AND period_begin = ?""",  # noqa: S608 - constant text
            [(token, *at, settings.lease, r[0], r[1]) for r in rows],
        )
    return rows


def closed_reports(
    store: Store,
    settings: ReportSettings,
    now: float,
    *,
    batch: int = 20,
    clock: Clock = time.time,
) -> Iterator[PendingReport]:
    """Claim and build every report whose period is closed at ``now`` and not yet sent,
    ``batch`` claims at a time; each is the caller's to :func:`mark_sent` or
    :func:`mark_failed` (a report left unmarked is claimable again when its lease ends; one
    claimed but not yet yielded when the caller stops is released at once)."""
    open_reports(store, settings, now)
    token = uuid.uuid4().hex
    while True:
        claimed = claim_reports(store, settings, now, token, batch, clock=clock)
        if not claimed:
            return
        for index, row in enumerate(claimed):
            try:
                report = _hand_out(store, settings, row, token, now=now, clock=clock)
            except BaseException:  # (the store gone, an interrupt: this one not handed out)
                give_back(store, functools.partial(_release, claimed=claimed[index:], token=token))
                raise
            if report is None:
                continue
            try:
                yield report
            except GeneratorExit:
                give_back(store, functools.partial(_release, claimed=claimed[index + 1 :],
                                                   token=token))  # fmt: skip
                raise


def _hand_out(
    store: Store,
    settings: ReportSettings,
    row: tuple[Any, ...],
    token: str,
    *,
    now: float,
    clock: Clock,
) -> PendingReport | None:
    """A claimed report built and its claim renewed, or None: abandoned (too large, no
    records), or its claim lost (its lease ended while earlier ones were sent: another
    run's)."""
    domain, begin, end, report_id, name, attempts, delivered = row[:7]
    policy = PolicyColumns(domain, *row[7:])
    what = (domain, begin, end, report_id, name)
    try:
        report = _build(store, settings, what, policy, token)
    except ReportTooLarge as exc:  # (abandoned: memory stays bounded, the run goes on)
        _finish(store, (domain, begin), token, "abandoned", error=str(exc), now=now)
        return None
    if report is None:  # (no rows: nothing to send)
        _finish(store, (domain, begin), token, "abandoned", error="no records", now=now)
        return None
    if not _renew(store, (domain, begin), token, settings.lease, clock):
        return None
    return _with(report, attempts + 1, tuple(delivered.split()))


def _with(report: PendingReport, attempts: int, delivered: tuple[str, ...]) -> PendingReport:
    return PendingReport(
        report.policy_domain, report.begin, report.end, report.rua, report.report_id,
        report.file_name, report.xml_gz, report.records, report.messages, attempts,
        delivered, report.claim, report.submitter,
    )  # fmt: skip


def _build(
    store: Store,
    settings: ReportSettings,
    what: tuple[Any, ...],
    policy: PolicyColumns,
    token: str,
) -> PendingReport | None:
    domain, begin, end, report_id, name = what
    metadata = ReportMetadata(
        settings.org_name, settings.email, report_id, begin, end,
        settings.extra_contact_info, settings.generator,
    )  # fmt: skip
    totals = [0, 0]

    def rows() -> Iterator[Any]:
        for row in store.stream(
            f"SELECT {_ROW_COLUMNS} FROM report_counts WHERE policy_domain = ? "  # noqa: S608
            "AND period_begin = ? ORDER BY source_ip, row_key",
            (domain, begin),
        ):
            totals[0] += 1
            totals[1] += row[-1]
            yield row

    try:
        xml_gz = gzip_pieces(
            render_report(metadata, policy, rows()), limit=settings.max_report_bytes
        )
    except ReportTooLarge as exc:
        raise ReportTooLarge(f"not sent: report {exc} after {totals[0]} records") from None
    if not totals[0]:
        return None
    return PendingReport(
        domain, begin, end, tuple(policy.rua.split()), report_id, name, xml_gz,
        totals[0], totals[1], 0, (), token, settings.submitter,
    )  # fmt: skip


def mark_sent(store: Store, report: PendingReport, now: float) -> bool:
    """The report reached every destination: never sent again. False when the claim was
    lost (its lease ended and another run took it)."""
    where = (report.policy_domain, report.begin)
    return _finish(store, where, report.claim, "sent", error="", now=now)


def mark_delivered(store: Store, report: PendingReport, delivered: Sequence[str]) -> bool:
    """Record the URIs that have the report so far (told as each one is reached, so that
    a run that dies in the middle does not send to them again). False when the claim was
    lost."""
    changed = store.execute(
        """UPDATE outgoing_reports SET delivered = ? WHERE policy_domain = ?
            AND period_begin = ? AND state = 'claimed' AND claimed_by = ?""",
        (" ".join(delivered), report.policy_domain, report.begin, report.claim),
    )
    return changed == 1


def mark_failed(
    store: Store,
    report: PendingReport,
    error: str,
    now: float,
    *,
    delivered: Sequence[str] = (),
    give_up: bool = False,
) -> bool:
    """The report could not be delivered (to all of ``rua``): claimable again by the next
    run with the same Report-ID and file name (``delivered``: the destinations it did reach,
    kept so that a retry skips them), or ``abandoned`` with ``give_up``. False when the
    claim was lost."""
    reached = " ".join(dict.fromkeys((*report.delivered, *delivered)))
    state = "abandoned" if give_up else "pending"
    changed = store.execute(
        """UPDATE outgoing_reports SET state = ?, claimed_by = '', claimed_until = 0,
            delivered = ?, last_error = ? WHERE policy_domain = ? AND period_begin = ?
            AND state = 'claimed' AND claimed_by = ?""",
        (state, reached, error[:1000], report.policy_domain, report.begin, report.claim),
    )
    return changed == 1


def release(store: Store, report: PendingReport, now: float) -> bool:
    """Give a claim back as if no attempt had been made (``reports send --dry-run``): the
    report stays due, its attempts unchanged. False when the claim was lost."""
    changed = store.execute(
        """UPDATE outgoing_reports SET state = 'pending', claimed_by = '', claimed_until = 0,
            attempts = attempts - 1 WHERE policy_domain = ? AND period_begin = ?
            AND state = 'claimed' AND claimed_by = ?""",
        (report.policy_domain, report.begin, report.claim),
    )
    return changed == 1


def _finish(
    store: Store, where: tuple[str, int], token: str, state: str, *, error: str, now: float
) -> bool:
    """Conclude a claim ``token`` still holds: one UPDATE, atomic by itself (its row lock
    decides on PostgreSQL, the database's write lock on SQLite)."""
    domain, begin = where
    changed = store.execute(
        """UPDATE outgoing_reports SET state = ?, claimed_by = '', claimed_until = 0,
            last_error = ?, sent_at = ? WHERE policy_domain = ? AND period_begin = ?
            AND state = 'claimed' AND claimed_by = ?""",
        (state, error, int(now), domain, begin, token),
    )
    return changed == 1


def _renew(store: Store, where: tuple[str, int], token: str, lease: int, clock: Clock) -> bool:
    """Extend a claim ``token`` still holds to ``lease`` seconds from now on the leases'
    clock; False when it was lost."""
    domain, begin = where
    wall, at = lease_now(store, clock)
    changed = store.execute(
        f"""UPDATE outgoing_reports SET claimed_until = {wall} + ? WHERE policy_domain = ?
            AND period_begin = ? AND state = 'claimed' AND claimed_by = ?""",  # noqa: S608
        (*at, lease, domain, begin, token),
    )
    return changed == 1


def _release(store: Store, claimed: Sequence[tuple[Any, ...]], token: str) -> None:
    """Give back claims not yielded (their attempt did not happen)."""
    if not claimed:
        return
    with store.write():
        store.executemany(
            """UPDATE outgoing_reports SET state = 'pending', claimed_by = '',
            claimed_until = 0, attempts = attempts - 1
            WHERE policy_domain = ? AND period_begin = ? AND claimed_by = ?""",
            [(row[0], row[1], token) for row in claimed],
        )
