"""SPF (RFC 7208) for the MAIL FROM and HELO identities, evaluated by pyspf.

pyspf implements check_host() in full: every mechanism and modifier, macros (section 7,
including %{i} for IPv6 and %{p}), CIDR lengths, the limits of 4.6.4 (10 DNS-querying terms,
2 void lookups, 10 MX / 10 PTR names), record selection (4.5) and syntax errors (permerror).
This module binds it to mailauth's resolver and maps its results at the boundary.

Binding: pyspf asks DNS through its module function ``spf.DNSLookup``. It is replaced once, at
import, by :func:`_lookup`, which answers through the resolver held in a ContextVar that
:func:`check_spf_identity` sets for the duration of one evaluation. Concurrent evaluations in
other threads or tasks each see their own resolver; code outside mailauth that uses pyspf
(no resolver set) gets pyspf's own lookup, unchanged.

DNS outcomes (RFC 7208 5, 4.4): NXDOMAIN and NODATA are empty answers (pyspf counts them as
void lookups); a temporary failure raises pyspf's TempError, giving temperror, never pass or
fail. A name DNS cannot carry is an empty answer.

Identities (RFC 7208 2.3, 2.4): HELO is checked when it is a domain name (not an address
literal); a null reverse-path is checked as ``postmaster@<HELO>``.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from dataclasses import replace
from typing import Any

import spf as pyspf

from mailauth.dns import DnsResolver, RRType
from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.results import SpfCheck, SpfOutcome, SpfResult

_RESOLVER: contextvars.ContextVar[DnsResolver | None] = contextvars.ContextVar(
    "mailauth_spf_resolver", default=None
)
_PYSPF_LOOKUP = pyspf.DNSLookup

# The one map from pyspf's result words to ours (RFC 7208 2.6).
RESULTS: dict[str, SpfResult] = {
    "pass": SpfResult.PASS,
    "fail": SpfResult.FAIL,
    "softfail": SpfResult.SOFTFAIL,
    "neutral": SpfResult.NEUTRAL,
    "none": SpfResult.NONE,
    "temperror": SpfResult.TEMPERROR,
    "permerror": SpfResult.PERMERROR,
    "error": SpfResult.TEMPERROR,  # pyspf's RFC 4408 spelling of temperror
    "unknown": SpfResult.PERMERROR,  # pyspf's RFC 4408 spelling of permerror
}


def _lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNSLookup contract: a list of ((name, type), value), or TempError."""
    resolver = _RESOLVER.get()
    if resolver is None:
        return list(_PYSPF_LOOKUP(name, qtype, strict, timeout))
    try:
        rdtype = RRType(qtype)
    except ValueError:
        return []  # type SPF (99) and others: RFC 7208 3.1 queries TXT only
    try:
        lookup = resolver.lookup(name, rdtype)
    except InvalidDomainError:
        return []
    if lookup.is_temporary_failure:
        raise pyspf.TempError(f"{lookup.reason} looking up {name} {qtype}")
    key = (name, qtype)
    if rdtype is RRType.TXT:
        return [(key, (text,)) for text in lookup.texts]
    if rdtype is RRType.MX:
        return [(key, (mx.preference, mx.exchange)) for mx in lookup.exchanges]
    return [(key, host) for host in lookup.hosts]


pyspf.DNSLookup = _lookup


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


def client_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The SMTP client's address as SPF sees it; raises ValueError when ``text`` is none.

    RFC 7208 5: an IPv4-mapped IPv6 address is the IPv4 client it maps. An IPv6 zone index
    (``fe80::1%eth0``, RFC 4007 11) names an interface of this host, not part of the
    client's address: it is dropped.
    """
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(address.packed)
    return address


def check_spf_identity(
    resolver: DnsResolver,
    *,
    ip: str,
    sender: str,
    helo: str,
    identity: str = "mailfrom",
    default_explanation: str | None = None,
) -> SpfOutcome:
    """check_host() for one identity (RFC 7208 4); ``sender`` is ``local@domain`` or a domain.

    Blocking: DNS goes through ``resolver.lookup``. Raises ValueError for a malformed ``ip``.
    """
    address = client_ip(ip)
    token = _RESOLVER.set(resolver)
    try:
        query = pyspf.query(i=str(address), s=sender, h=helo, receiver="", strict=True)
        if default_explanation is not None:
            query.set_default_explanation(default_explanation)
        word, _, text = query.check()
    except (ValueError, UnicodeError) as exc:
        return SpfOutcome(
            SpfResult.PERMERROR, identity, "", sender, reason=f"malformed input: {exc}"
        )
    finally:
        _RESOLVER.reset(token)
    result = RESULTS[word]
    domain = str(query.d or "").lower()
    with contextlib.suppress(InvalidDomainError):  # A-labels, as DMARC compares (RFC 8616)
        domain = normalize_domain(domain)
    sender_checked = f"{query.l}@{query.o}" if query.l and query.o else sender
    reason = ""
    explanation = ""
    if result is SpfResult.FAIL:
        explanation = str(text)
    elif result in (SpfResult.PERMERROR, SpfResult.TEMPERROR):
        reason = str(getattr(query, "prob", "") or text)
    elif result is SpfResult.PASS and query.mechanism:
        reason = f"matched {query.mechanism}"
    return SpfOutcome(result, identity, domain, sender_checked, reason, explanation)


def check_spf(resolver: DnsResolver, *, ip: str, helo: str, mail_from: str) -> SpfCheck:
    """SPF for a message: the MAIL FROM identity, and HELO when it is a domain name.

    A null reverse-path (``mail_from`` empty) is checked as ``postmaster@<helo>``
    (RFC 7208 2.4); without a usable HELO that identity is ``none``.
    """
    helo_is_domain = is_helo_domain(helo)
    helo_outcome: SpfOutcome | None = None
    if helo_is_domain:
        name = helo.strip().rstrip(".")
        helo_outcome = check_spf_identity(
            resolver, ip=ip, sender=f"postmaster@{name}", helo=name, identity="helo"
        )
    elif helo:
        helo_outcome = SpfOutcome(
            SpfResult.NONE, "helo", helo, reason="HELO is not a domain name (RFC 7208 2.3)"
        )
    if mail_from:
        mailfrom_outcome = _check_mail_from(resolver, ip=ip, helo=helo, mail_from=mail_from)
    elif helo_outcome is not None and helo_is_domain:
        # RFC 7208 2.4: the null reverse-path's identity is postmaster@<HELO>: the same check
        mailfrom_outcome = replace(helo_outcome, identity="mailfrom")
    else:
        mailfrom_outcome = SpfOutcome(
            SpfResult.NONE, "mailfrom", "", "", reason="null MAIL FROM and no HELO domain"
        )
    return SpfCheck(mailfrom_outcome, helo_outcome)


def _check_mail_from(resolver: DnsResolver, *, ip: str, helo: str, mail_from: str) -> SpfOutcome:
    local, at, domain = mail_from.rpartition("@")
    if not at:
        local, domain = "postmaster", mail_from  # RFC 7208 4.3: no local-part -> postmaster
    if not domain or not domain.strip():
        return SpfOutcome(
            SpfResult.NONE, "mailfrom", "", mail_from, reason="MAIL FROM has no domain"
        )
    if "@" in local:
        # pyspf splits at the first "@"; a second one makes the domain ambiguous.
        return SpfOutcome(
            SpfResult.NONE, "mailfrom", "", mail_from, reason="malformed MAIL FROM: several '@'"
        )
    return check_spf_identity(
        resolver, ip=ip, sender=f"{local or 'postmaster'}@{domain}", helo=helo
    )
