"""Running the audit: one domain as a plan, many domains concurrently under asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor

from mailauth.check.mtasts import MtaStsFetcher, check_mta_sts
from mailauth.check.records import check_bimi, check_dkim, check_dmarc, check_mx, check_tls_rpt
from mailauth.check.report import Area, DomainReport, Finding, Status
from mailauth.check.spf import check_spf
from mailauth.dns import DnsResolver, Query, RRType
from mailauth.domains import host_name, normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.plan import Plan, resolve, run_plan_async

# The record names the audit builds on every domain (a selector's are checked with it).
_FIXED_NAMES = ("_dmarc.", "_mta-sts.", "mta-sts.", "_smtp._tls.", "default._bimi.")


def check_domain(
    domain: str, *, selectors: Sequence[str] = (), fetcher: MtaStsFetcher | None = None
) -> Plan[DomainReport]:
    """Audit one domain. ``fetcher`` None skips fetching the MTA-STS policy over HTTPS."""
    try:
        name = host_name(domain)  # a mail domain: letters, digits, hyphens (RFC 1123 2.1)
    except InvalidDomainError as exc:
        finding = Finding(Area.DOMAIN, "domain.invalid", Status.FAIL, str(exc), "check the name")
        return DomainReport(domain, (finding,))
    try:
        for prefix in _FIXED_NAMES:  # (a property of the name: before asking DNS anything)
            normalize_domain(prefix + name)
        (apex,) = yield from resolve(Query.of(name, RRType.TXT))  # (SPF asks it again: cached)
        if apex.name_does_not_exist:
            # RFC 8020: nothing exists below it either; one finding, not one per area.
            message = f"{name} does not exist in DNS (NXDOMAIN): no record can be published"
            fix = "check the spelling; a domain of yours must be registered and delegated"
            finding = Finding(Area.DOMAIN, "domain.nxdomain", Status.FAIL, message, fix)
            return DomainReport(name, (finding,))
        spf, spf_details = yield from check_spf(name)
        dmarc, dmarc_details = yield from check_dmarc(name)
        dkim, keys = yield from check_dkim(name, selectors)
        mx, mx_details = yield from check_mx(name)
        sts, sts_details = yield from check_mta_sts(name, mx_details["hosts"], fetcher)
        tls_rpt = yield from check_tls_rpt(name)
        bimi = yield from check_bimi(name)
    except InvalidDomainError as exc:
        # A valid name too long for the names built on it (_dmarc., _mta-sts., a selector's
        # ._domainkey.): DNS cannot carry those, so its records cannot be published.
        message = f"a record name built on {name} cannot exist in DNS: {exc}"
        fix = "use a shorter mail domain (or selector)"
        finding = Finding(Area.DOMAIN, "domain.too-long", Status.FAIL, message, fix)
        return DomainReport(name, (finding,))
    details = {
        "spf": spf_details,
        "dmarc": dmarc_details,
        "dkim": {"keys": keys},
        "mx": mx_details,
        "mta_sts": sts_details,
    }
    return DomainReport(name, (*spf, *dmarc, *dkim, *mx, *sts, *tls_rpt, *bimi), details)


async def check_domains(
    domains: Sequence[str],
    resolver: DnsResolver,
    *,
    selectors: Sequence[str] = (),
    fetcher: MtaStsFetcher | None = None,
    concurrency: int = 20,
    executor: Executor | None = None,
) -> AsyncIterator[DomainReport]:
    """Audit many domains, ``concurrency`` at a time; reports come as they complete."""
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(domain: str) -> DomainReport:
        async with limit:
            plan = check_domain(domain, selectors=selectors, fetcher=fetcher)
            return await run_plan_async(plan, resolver, executor)

    tasks = [asyncio.ensure_future(one(d)) for d in domains]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
