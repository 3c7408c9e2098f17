"""What the aggregate reports a domain owner received say about one domain
(``mailauth reports summary``, docs/reports.md "Summaries"): per source IP, the messages,
the share with aligned SPF, aligned DKIM and DMARC pass, the dispositions the receivers
applied, the reporters; sources grouped by sending organisation; and a readiness verdict for
a stricter policy.

The counting is SQL in the store (``received_records``, written by ``reports import``:
one row per aggregate report record, its policy domain and dates beside it): a few ``GROUP
BY`` queries over one index range, whatever the number of records; Python sees only the
groups. What the reporters said is taken as said (their ``policy_evaluated``): DMARC passes
when the reporter found aligned DKIM or aligned SPF passing (RFC 9989 4.7); a message that
fails it is what ``p=reject`` would reject and ``p=quarantine`` quarantine.

Only *authenticated* reports count (:mod:`mailauth.reports.received.authenticate`: the
report e-mail's aligned DKIM signature passed for the reporter's own organisational
domain; the store keeps each report's ``trust``): anyone can send a report naming any
reporter, and a forged one must not move the verdict. Unauthenticated reports (bare files,
unsigned or forged e-mails, those imported before schema version 5) are counted apart and
shown ("unauthenticated reports: N, M messages"); ``include_unauthenticated`` counts them
too, except the copies of reports that are stored authenticated (``superseded``).

The counting is here; the values it fills (per source, per organisation, the verdict, what
was left out, the reporters) and their JSON and text are :mod:`.summary_values`'s,
re-exported here.

Everything read from reports is attacker-controlled text (any receiver may send a report):
it is carried as data and never interpreted; the renderers escape it.
"""

from __future__ import annotations

import dataclasses
import functools
import json

from mailauth.dmarc.discovery import psl_organizational_domain
from mailauth.domains import name_problem, normalize_domain
from mailauth.reports.received.model import Trust
from mailauth.reports.reverse import NOT_ASKED, ReverseName
from mailauth.reports.store import Store
from mailauth.reports.summary_values import (
    UNKNOWN_ORG,
    OrganisationSummary,
    Readiness,
    Reporter,
    SourceSummary,
    Summary,
    Unauthenticated,
)

__all__ = [
    "DAY",
    "DISPOSITIONS",
    "LARGEST",
    "MAX_REPORTERS",
    "UNKNOWN_ORG",
    "OrganisationSummary",
    "Readiness",
    "Reporter",
    "SourceSummary",
    "Summary",
    "Unauthenticated",
    "daily_pass_rate",
    "organisation_of",
    "readiness",
    "reporter_of",
    "summarize",
    "with_reverse_names",
]

DISPOSITIONS = ("none", "pass", "quarantine", "reject")  # RFC 9990 ActionDispositionType
MAX_REPORTERS = 20  # reporters listed per source (the most messages first)
LARGEST = 5  # sources named in the readiness verdict
DAY = 86_400


@functools.lru_cache(maxsize=4096)
def reporter_of(org_name: str, auth_domain: str, trust: str) -> tuple[str, bool]:
    """(name, verified) of a report's reporter (:class:`Reporter`)."""
    if trust == Trust.AUTHENTICATED and auth_domain and not name_problem(auth_domain):
        return psl_organizational_domain(normalize_domain(auth_domain)), True
    return org_name, False


def summarize(
    store: Store,
    domain: str,
    since: int,
    until: int,
    reverse: dict[str, ReverseName] | None = None,
    *,
    include_unauthenticated: bool = False,
) -> Summary:
    """The summary of ``domain``'s aggregate reports whose period begins in [since, until),
    of the authenticated ones (and the unauthenticated ones when
    ``include_unauthenticated``). ``reverse``: reverse names found for (some of) the
    sources (:mod:`.reverse`)."""
    domain = normalize_domain(domain)
    params = (domain, since, until)
    counted = _counted(include_unauthenticated)
    sources: dict[str, SourceSummary] = {}
    totals: dict[tuple[str, str, bool], int] = {}
    for (
        ip,
        org_name,
        auth_domain,
        disposition,
        dkim,
        spf,
        auth_dkim,
        auth_spf,
        trust,
        messages,
    ) in store.fetchall(
        "SELECT source_ip, org_name, auth_domain, disposition, dkim, spf, auth_dkim, auth_spf, "
        "trust, SUM(messages) FROM received_records "
        "WHERE policy_domain = ? AND date_begin >= ? AND date_begin < ? "
        "GROUP BY source_ip, org_name, auth_domain, disposition, dkim, spf, auth_dkim, "
        "auth_spf, trust",
        params,
    ):  # (one scan of index received_records_sources, its groups in its order)
        if trust not in counted:
            continue
        source = sources.setdefault(ip, SourceSummary(ip))
        count = int(messages)
        for name in _passing_domains(auth_dkim):
            source.dkim_domains[name] += count
        for name in _passing_domains(auth_spf):
            source.spf_domains[name] += count
        source.messages += count
        source.spf_aligned += count if spf == "pass" else 0
        source.dkim_aligned += count if dkim == "pass" else 0
        source.dmarc_pass += count if "pass" in (spf, dkim) else 0
        word = disposition if disposition in DISPOSITIONS else "other"
        source.dispositions[word] = source.dispositions.get(word, 0) + count
        name, verified = reporter_of(str(org_name), str(auth_domain), str(trust))
        totals[ip, name, verified] = totals.get((ip, name, verified), 0) + count
    # (the most messages first; of the same, verified first, then by name)
    for (ip, name, verified), count in sorted(
        totals.items(), key=lambda i: (i[0][0], -i[1], not i[0][2], i[0][1])
    ):
        if len(sources[ip].reporters) < MAX_REPORTERS:
            sources[ip].reporters.append(Reporter(name, count, verified))
    ordered = tuple(sorted(sources.values(), key=lambda s: (-s.messages, s.ip)))
    reports, reporters, unauthenticated = _report_counts(store, params, counted)
    left = dataclasses.replace(unauthenticated, included=include_unauthenticated)
    found = Summary(domain, since, until, reports, reporters, ordered, (), readiness(ordered), left)
    return with_reverse_names(found, reverse or {})


def _counted(include_unauthenticated: bool) -> tuple[str, ...]:
    """The ``trust`` words of the reports a summary counts."""
    if include_unauthenticated:
        return (Trust.AUTHENTICATED.value, Trust.UNAUTHENTICATED.value)
    return (Trust.AUTHENTICATED.value,)


def _report_counts(
    store: Store, params: tuple[str, int, int], counted: tuple[str, ...]
) -> tuple[int, int, Unauthenticated]:
    """(reports counted, their distinct reporters (:func:`reporter_of`), the unauthenticated
    reports)."""
    reports, reporters, left = 0, set(), Unauthenticated()
    for trust, org_name, auth_domain, n, messages in store.fetchall(
        "SELECT trust, org_name, auth_domain, COUNT(*), SUM(messages) FROM received_aggregate "
        "WHERE policy_domain = ? AND date_begin >= ? AND date_begin < ? "
        "GROUP BY trust, org_name, auth_domain",
        params,
    ):
        if trust in counted:
            reports += int(n)
            reporters.add(reporter_of(str(org_name), str(auth_domain), str(trust)))
        if trust != Trust.AUTHENTICATED:
            superseded = int(n) if trust == Trust.SUPERSEDED else 0
            left = Unauthenticated(left.reports + int(n), left.messages + int(messages or 0),
                                   left.superseded + superseded)  # fmt: skip
    return reports, len(reporters), left


def with_reverse_names(found: Summary, reverse: dict[str, ReverseName]) -> Summary:
    """``found`` with the sources' reverse names (those not in ``reverse``: not asked), and
    the organisations and verdict that follow from them (no store needed)."""
    for source in found.sources:
        source.reverse = reverse.get(source.ip, NOT_ASKED)
        source.organisation, source.organisation_from = organisation_of(source, found.domain)
    return dataclasses.replace(
        found, organisations=_organisations(found.sources), readiness=readiness(found.sources)
    )


@functools.lru_cache(maxsize=4096)
def _passing_domains(text: str) -> tuple[str, ...]:
    """The distinct domains whose result is ``pass`` in a JSON list of [domain, x, result]
    (``auth_dkim``: domain, selector, result; ``auth_spf``: domain, scope, result); names
    that are not domain names are left out."""
    try:
        items = json.loads(text) if text else []
    except ValueError:
        return ()
    found: list[str] = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, list) and len(item) >= 3 and item[2] == "pass":
            name = item[0]
            if isinstance(name, str) and name and not name_problem(name):
                normal = normalize_domain(name)
                if normal not in found:
                    found.append(normal)
    return tuple(found)


def organisation_of(source: SourceSummary, domain: str) -> tuple[str, str]:
    """The sending organisation of a source, and what says so: the organisational domain of
    its verified reverse name; else of a passing DKIM d= other than the owner's own (an
    ESP's signature names the ESP), else of a passing SPF domain other than the owner's;
    else the owner's own when its own DKIM or SPF passed (mail it signs or sends itself);
    else unknown."""
    own = psl_organizational_domain(domain)
    if source.reverse.verified:
        return psl_organizational_domain(source.reverse.name), "ptr"
    for counter, what in ((source.dkim_domains, "dkim"), (source.spf_domains, "spf")):
        for name, _ in sorted(counter.items(), key=lambda item: (-item[1], item[0])):
            org = psl_organizational_domain(name)
            if org != own:
                return org, what
    if source.dkim_domains:
        return own, "dkim"
    if source.spf_domains:
        return own, "spf"
    return UNKNOWN_ORG, ""


def _organisations(sources: tuple[SourceSummary, ...]) -> tuple[OrganisationSummary, ...]:
    groups: dict[str, list[SourceSummary]] = {}
    for source in sources:
        groups.setdefault(source.organisation, []).append(source)
    found = [
        OrganisationSummary(
            name,
            len(members),
            sum(s.messages for s in members),
            sum(s.spf_aligned for s in members),
            sum(s.dkim_aligned for s in members),
            sum(s.dmarc_pass for s in members),
        )
        for name, members in groups.items()
    ]
    return tuple(sorted(found, key=lambda o: (-o.messages, o.name)))


def readiness(sources: tuple[SourceSummary, ...]) -> Readiness:
    failing = sorted((s for s in sources if s.dmarc_fail), key=lambda s: (-s.dmarc_fail, s.ip))
    return Readiness(
        messages=sum(s.messages for s in sources),
        failing=sum(s.dmarc_fail for s in failing),
        failing_sources=len(failing),
        largest=tuple((s.ip, s.organisation, s.dmarc_fail) for s in failing[:LARGEST]),
    )


def daily_pass_rate(
    store: Store, domain: str, since: int, until: int, *, include_unauthenticated: bool = False
) -> list[tuple[int, int, int]]:
    """(UTC day as a Unix time, messages, DMARC pass) per day that has reports, by the day
    each report's period begins (grouped by the period's start in the store, in the order of
    index received_records_days; the starts of one day added up here); the reports
    :func:`summarize` counts."""
    days: dict[int, list[int]] = {}
    counted = _counted(include_unauthenticated)
    for begin, dkim, spf, trust, messages in store.fetchall(
        "SELECT date_begin, dkim, spf, trust, SUM(messages) FROM received_records "
        "WHERE policy_domain = ? AND date_begin >= ? AND date_begin < ? "
        "GROUP BY date_begin, dkim, spf, trust",
        (normalize_domain(domain), since, until),
    ):
        if trust not in counted:
            continue
        counts = days.setdefault(int(begin) - int(begin) % DAY, [0, 0])
        counts[0] += int(messages)
        counts[1] += int(messages) if "pass" in (dkim, spf) else 0
    return [(day, total, passed) for day, (total, passed) in sorted(days.items())]
