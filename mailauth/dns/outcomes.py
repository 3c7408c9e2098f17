"""From dnspython's responses and exceptions to :class:`~mailauth.dns.types.Lookup`, written
once for both front ends (docs/dns.md, "Outcomes").

NXDOMAIN and NODATA only when a server said so in a consistent response (RFC 2308); every
other way a query can end is a temporary failure, with a reason fit for an
Authentication-Results field (what the servers said, not which servers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import cast

import dns.exception
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from mailauth.dns.types import DnsStatus, Lookup, MxRecord, Query, Record


def records_from_rrset(rrset: dns.rrset.RRset) -> tuple[Record, ...]:
    """Convert dnspython rdata to mailauth's record values."""
    out: list[Record] = []
    for rdata in rrset:
        rdtype = rdata.rdtype
        if rdtype == dns.rdatatype.TXT:
            out.append(b"".join(rdata.strings))
        elif rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            out.append(str(rdata.address))
        elif rdtype == dns.rdatatype.MX:
            exchange = rdata.exchange.to_text(omit_final_dot=True).lower()
            out.append(MxRecord(int(rdata.preference), exchange))
        else:  # PTR, CNAME, NS
            out.append(rdata.target.to_text(omit_final_dot=True).lower())
    return tuple(out)


def _negative(
    response: dns.message.Message | None, name: str, status: DnsStatus
) -> tuple[int, str, str]:
    """What a negative response proves: its TTL (RFC 2308 5: min(SOA TTL, SOA MINIMUM), and
    no longer than a CNAME on the way; 0 without an SOA, which RFC 2308 5 says not to
    cache), the name where the CNAME chain ended, and why it proves nothing ("" when it
    does), from one walk of the response.

    A negative response proves nothing when its answer section holds records that are not
    the CNAME chain (records of another type or class: a broken server or middlebox
    answering another question; an answer beside NXDOMAIN), or when an empty NOERROR
    response is a referral (NS records and no SOA in the authority section, RFC 2308 2.2.1:
    a server that does not recurse, or a lame one). RFC 2308 2.2 calls the first NODATA
    ("no relevant answers"); mailauth does not take a broken server's word that a DKIM key
    or a DMARC record is absent, since that absence is a verdict (``permerror``,
    ``none``): both are temporary failures.
    """
    if response is None:
        return 0, name, ""
    end, ttl = name, 0x7FFFFFFF  # (RFC 2181 8: TTLs fit in 31 bits)
    if response.answer:
        try:
            chain = cast(dns.message.QueryMessage, response).resolve_chaining()
        except dns.exception.DNSException as exc:  # an answer beside NXDOMAIN, a long chain
            return 0, name, f"inconsistent response: {exc}"
        for rrset in response.answer:
            if rrset.rdtype not in _CHAIN_TYPES and not any(rrset is c for c in chain.cnames):
                what = f"{dns.rdataclass.to_text(rrset.rdclass)} "
                what += f"{dns.rdatatype.to_text(rrset.rdtype)} at {rrset.name}"
                return 0, name, f"the answer holds {what}: a broken server"
        owner, end = chain.canonical_name, chain.canonical_name.to_text(omit_final_dot=True)
        ttl = min((rrset.ttl for rrset in chain.cnames), default=ttl)
    else:  # no CNAME on the way (the common case): the SOA says it all
        owner = response.question[0].name if response.question else dns.name.root
    soa = next((r for r in response.authority if _is_soa_above(r, owner)), None)
    if soa is None:
        referral = any(r.rdtype == dns.rdatatype.NS for r in response.authority)
        if referral and status is DnsStatus.NODATA:
            return 0, name, "a referral, not an answer: the server does not recurse"
        return 0, end.lower(), ""
    return min(ttl, soa.ttl, next(iter(soa)).minimum), end.lower(), ""


# In an answer section beside a CNAME chain: DNAMEs (RFC 6672 synthesises the CNAMEs) and
# DNSSEC signatures (sent by some servers even without the DO bit) say nothing against it.
_CHAIN_TYPES = (dns.rdatatype.DNAME, dns.rdatatype.RRSIG)


def _is_soa_above(rrset: dns.rrset.RRset, name: dns.name.Name) -> bool:
    """An SOA of class IN owned by ``name`` or an ancestor of it: the zone that says no."""
    return (
        rrset.rdtype == dns.rdatatype.SOA
        and rrset.rdclass == dns.rdataclass.IN
        and len(rrset) > 0
        and name.is_subdomain(rrset.name)
    )


def lookup_from_answer(query: Query, answer: dns.resolver.Answer) -> Lookup:
    if answer.rrset is None:  # pragma: no cover - dnspython raises NoAnswer instead
        return Lookup(query.name, query.rdtype, DnsStatus.NODATA)
    return lookup_from_chain(query, answer.chaining_result)


def lookup_from_chain(query: Query, chain: dns.message.ChainingResult) -> Lookup:
    """An answer: the records at the end of the CNAME chain (``chain.answer``, not None)."""
    assert chain.answer is not None
    return Lookup(
        query.name,
        query.rdtype,
        DnsStatus.ANSWER,
        records_from_rrset(chain.answer),
        ttl=int(chain.minimum_ttl),
        canonical_name=chain.canonical_name.to_text(omit_final_dot=True).lower(),
    )


def lookup_from_error(query: Query, exc: Exception) -> Lookup:
    """The one map from dnspython's exceptions to outcomes (tested as a table).

    NXDOMAIN and NODATA only when a server said so in a consistent response; every other
    way a query can end (a timeout, SERVFAIL, REFUSED, NOTIMP, FORMERR, YXDOMAIN, a
    truncated answer whose TCP retry failed, a network error) is a temporary failure.
    Anything else is a bug, raised.
    """
    if isinstance(exc, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
        if isinstance(exc, dns.resolver.NXDOMAIN):
            responses = exc.responses()  # type: ignore[no-untyped-call]
            response = next(iter(responses.values()), None) if responses else None
            status = DnsStatus.NXDOMAIN
        else:
            response, status = exc.response(), DnsStatus.NODATA  # type: ignore[no-untyped-call]
        return lookup_from_negative(query, response, status)
    if isinstance(exc, dns.exception.Timeout):
        reason = "DNS timeout"
    elif isinstance(exc, dns.resolver.NoNameservers):
        reason = f"no nameserver answered: {failure_reason(exc.kwargs.get('errors') or [])}"
    elif isinstance(exc, dns.exception.DNSException | OSError | EOFError):
        # (dnspython turns these into NoNameservers; the map stays whole if one escapes.)
        reason = f"DNS error: {str(exc) or type(exc).__name__}"
    else:
        raise exc
    return Lookup(query.name, query.rdtype, DnsStatus.TEMPFAIL, reason=reason)


def lookup_from_negative(
    query: Query, response: dns.message.Message | None, status: DnsStatus
) -> Lookup:
    """NXDOMAIN or NODATA (``status``) if ``response`` proves it, else a temporary failure."""
    ttl, chain_end, problem = _negative(response, query.name, status)
    if not problem:
        return Lookup(query.name, query.rdtype, status, ttl=ttl, canonical_name=chain_end)
    reason = f"{status.upper()} not proven: {problem}"
    return Lookup(query.name, query.rdtype, DnsStatus.TEMPFAIL, reason=reason)


def failure_reason(errors: Sequence[tuple[str, bool, int, object, object]]) -> str:
    """What the servers said, once each: ``SERVFAIL``, ``truncated answer; TCP: Connection
    refused`` (``errors`` as dnspython's resolver keeps them: server, TCP or not, port,
    error, response). Not which server: the reason goes into Authentication-Results fields
    of delivered mail, which need not show the receiver's resolvers."""
    said: list[str] = []
    for _server, tcp, _port, error, _response in errors:
        if isinstance(error, dns.message.Truncated):
            what = "truncated answer"
        elif isinstance(error, OSError):
            # (by its errno: asyncio's "Connect call failed ('192.0.2.53', 53)" names the server)
            text = os.strerror(error.errno) if error.errno else error.strerror
            what = text or str(error) or type(error).__name__
        else:
            what = str(error) or type(error).__name__
        text = f"TCP: {what}" if tcp else what
        if text not in said:
            said.append(text)
    return "; ".join(said) or "no nameserver to ask"
