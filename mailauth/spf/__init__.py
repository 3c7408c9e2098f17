"""SPF (RFC 7208) for the MAIL FROM and HELO identities, as a plan over the injected resolver.

check_host() is mailauth's own (:mod:`mailauth.spf.evaluate`), on the one record parser
that ``mailauth check`` uses too (:mod:`mailauth.spf.record`). This module picks the
identities and the senders, and offers the plans (:func:`evaluate_spf`,
:func:`evaluate_spf_identity`, for the pipeline) and blocking front ends over them
(:func:`check_spf`, :func:`check_spf_identity`).

Identities (RFC 7208 2.3, 2.4): HELO is checked when it is a domain name (not an address
literal); a null reverse-path is checked as ``postmaster@<HELO>``; a sender without a
local-part (``@domain``, or a domain alone as pyspf reads it) is ``postmaster`` at its
domain (4.3); a single label without "@" (an unqualified ``postmaster``) is a local-part
with no domain, not a domain: ``none``, never ``postmaster@postmaster``. The two
identities are evaluated side by side (:func:`mailauth.plan.parallel`), each within its own
budget when the caller gives them: the HELO check never holds up nor starves the MAIL FROM
one.

The client address (RFC 7208 5): an IPv4-mapped IPv6 address is the IPv4 client it maps;
an IPv6 zone index names an interface of this host and is dropped.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import time
from dataclasses import replace
from typing import Any

from mailauth.dns import DnsResolver
from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.plan import Budget, Plan, bounded, parallel, run_plan
from mailauth.results import SpfCheck, SpfOutcome, SpfResult
from mailauth.spf.evaluate import check_host

__all__ = [
    "check_spf",
    "check_spf_identity",
    "client_ip",
    "evaluate_spf",
    "evaluate_spf_identity",
    "is_helo_domain",
]


def is_helo_domain(helo: str) -> bool:
    """RFC 7208 2.3: HELO is checked only when it is a domain name, not an address literal."""
    text = helo.strip().strip("[]")
    if not text or "." not in text.rstrip("."):
        return False
    if ":" not in text and not text.replace(".", "").isdigit():
        return True  # letters and no colon: no address literal (and no exception to raise)
    try:
        ipaddress.ip_address(text.removeprefix("IPv6:"))
    except ValueError:
        return True
    return False


@functools.lru_cache(maxsize=4096)
def client_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The SMTP client's address as SPF sees it; raises ValueError when ``text`` is none.

    RFC 7208 5: an IPv4-mapped IPv6 address is the IPv4 client it maps. An IPv6 zone index
    (``fe80::1%eth0``, RFC 4007 11) names an interface of this host, not part of the
    client's address: it is dropped. (Memoised: a pure function, and clients come back.)
    """
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(address.packed)
    return address


def evaluate_spf_identity(
    *,
    ip: str,
    sender: str,
    helo: str,
    identity: str = "mailfrom",
    default_explanation: str | None = None,
    receiver: str = "unknown",
    now: float | None = None,
) -> Plan[SpfOutcome]:
    """check_host() for one identity (RFC 7208 4) as a plan. ``sender`` is
    ``local@domain``, a domain (local-part ``postmaster``, 4.3), or "" for
    ``postmaster@<helo>`` (2.4). ``receiver`` and ``now`` are the macros r and t (7.3).
    Raises ValueError for a malformed ``ip``."""
    address = client_ip(ip)
    if not sender:
        sender = f"postmaster@{helo}"
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = "", sender
    local = local or "postmaster"
    clock = int(time.time() if now is None else now)
    outcome = yield from check_host(
        address,
        domain,
        local=local,
        sender_domain=domain,
        helo=helo,
        receiver=receiver,
        now=clock,
        default_explanation=default_explanation or "",
    )
    checked = domain.removesuffix(".").lower()
    with contextlib.suppress(InvalidDomainError):  # A-labels, as DMARC compares (RFC 8616)
        checked = normalize_domain(domain)
    explanation = outcome.explanation if outcome.result is SpfResult.FAIL else ""
    return SpfOutcome(
        outcome.result, identity, checked, f"{local}@{domain}", outcome.reason, explanation
    )


def evaluate_spf(
    *,
    ip: str,
    helo: str,
    mail_from: str,
    receiver: str = "unknown",
    now: float | None = None,
    budgets: tuple[Budget, Budget] | None = None,
) -> Plan[SpfCheck]:
    """SPF for a message as a plan: the MAIL FROM identity, and HELO when it is a domain
    name, side by side (neither waits on the other's DNS). A null reverse-path (``mail_from``
    empty) is checked as ``postmaster@<helo>`` (RFC 7208 2.4); without a usable HELO that
    identity is ``none``. ``budgets``: for the MAIL FROM check and for the HELO check, each
    its own, so that a slow or greedy HELO domain cannot hold up or starve the identity DMARC
    uses (the MAIL FROM one; the HELO check then with the MAIL FROM budget when it stands
    for a null reverse-path)."""
    helo_is_domain = is_helo_domain(helo)
    name = helo.strip().rstrip(".")
    common: dict[str, Any] = {"ip": ip, "receiver": receiver, "now": now}
    helo_plan = (
        evaluate_spf_identity(sender=f"postmaster@{name}", helo=name, identity="helo", **common)
        if helo_is_domain
        else None
    )
    mailfrom_plan = (
        _mail_from_plan(helo=helo, mail_from=mail_from, common=common) if mail_from else None
    )
    if budgets is not None:
        mailfrom_budget, helo_budget = budgets
        if mailfrom_plan is not None:
            mailfrom_plan = bounded(mailfrom_plan, mailfrom_budget)
        if helo_plan is not None:
            helo_plan = bounded(helo_plan, helo_budget if mailfrom_plan else mailfrom_budget)
    if helo_plan is None or mailfrom_plan is None:  # one identity (or none)
        helo_outcome = None if helo_plan is None else (yield from helo_plan)
        mailfrom_outcome = None if mailfrom_plan is None else (yield from mailfrom_plan)
    else:
        helo_outcome, mailfrom_outcome = yield from parallel(helo_plan, mailfrom_plan)
    if helo_outcome is None and helo:
        helo_outcome = SpfOutcome(
            SpfResult.NONE, "helo", helo, reason="HELO is not a domain name (RFC 7208 2.3)"
        )
    if mailfrom_outcome is None:
        if helo_outcome is not None and helo_is_domain:
            # RFC 7208 2.4: the null reverse-path's identity is postmaster@<HELO>: the same check
            mailfrom_outcome = replace(helo_outcome, identity="mailfrom")
        else:
            mailfrom_outcome = SpfOutcome(
                SpfResult.NONE, "mailfrom", "", "", reason="null MAIL FROM and no HELO domain"
            )
    return SpfCheck(mailfrom_outcome, helo_outcome)


def _mail_from_plan(*, helo: str, mail_from: str, common: dict[str, Any]) -> Plan[SpfOutcome]:
    local, at, domain = mail_from.rpartition("@")
    if not at and "." not in mail_from.strip().strip("."):
        # A local-part alone (an unqualified "postmaster"): no domain to check, and never
        # "postmaster@postmaster" (RFC 5321 4.1.2: a reverse-path has a domain).
        reason = "MAIL FROM has no domain: not a reverse-path (RFC 5321 4.1.2)"
        return _done(SpfOutcome(SpfResult.NONE, "mailfrom", "", mail_from, reason=reason))
    if not at:
        local, domain = "postmaster", mail_from  # RFC 7208 4.3: no local-part -> postmaster
    if not domain or not domain.strip():
        return _done(
            SpfOutcome(SpfResult.NONE, "mailfrom", "", mail_from, reason="MAIL FROM has no domain")
        )
    quoted = len(local) > 1 and local[0] == '"' and local[-1] == '"' and local[-2] != "\\"
    if "@" in local and not quoted:  # the domain is ambiguous (an unquoted "@" in it)
        reason = "malformed MAIL FROM: several '@'"
        return _done(SpfOutcome(SpfResult.NONE, "mailfrom", "", mail_from, reason=reason))
    return evaluate_spf_identity(sender=f"{local or 'postmaster'}@{domain}", helo=helo, **common)


def _done(outcome: SpfOutcome) -> Plan[SpfOutcome]:
    return outcome
    yield  # (a plan that asks nothing)


def check_spf_identity(
    resolver: DnsResolver,
    *,
    ip: str,
    sender: str,
    helo: str,
    identity: str = "mailfrom",
    default_explanation: str | None = None,
    receiver: str = "unknown",
    now: float | None = None,
) -> SpfOutcome:
    """:func:`evaluate_spf_identity`, blocking: DNS through ``resolver.lookup``."""
    plan = evaluate_spf_identity(
        ip=ip,
        sender=sender,
        helo=helo,
        identity=identity,
        default_explanation=default_explanation,
        receiver=receiver,
        now=now,
    )
    return run_plan(plan, resolver)


def check_spf(
    resolver: DnsResolver,
    *,
    ip: str,
    helo: str,
    mail_from: str,
    receiver: str = "unknown",
    now: float | None = None,
) -> SpfCheck:
    """:func:`evaluate_spf`, blocking: DNS through ``resolver.lookup``."""
    plan = evaluate_spf(ip=ip, helo=helo, mail_from=mail_from, receiver=receiver, now=now)
    return run_plan(plan, resolver)
