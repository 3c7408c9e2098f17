"""Finding DMARC records and Organizational Domains.

RFC 9989 4.10 (the DNS Tree Walk): :func:`walk_names` lists the names a walk may query (at
most 8, however long the domain); :func:`tree_walk` queries them, the first alone and the rest
together, and keeps the valid records up to the first one with ``psd=y`` or ``psd=n``;
:func:`organizational_domain` applies the selection rules of 4.10.2 to a walk.

RFC 7489 3.2 (the Public Suffix List): :func:`psl_organizational_domain`, for receivers that
keep the RFC 7489 behaviour, on the ``publicsuffixlist`` package (its bundled list, or one
passed in).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailauth.dmarc.record import DmarcRecord, NotDmarcRecord, parse_dmarc_record
from mailauth.dns import DnsStatus, Lookup, RRType
from mailauth.plan import Plan, resolve_names

MAX_QUERIES = 8  # RFC 9989 4.10: "no more than eight DNS queries"


@dataclass(frozen=True, slots=True)
class FoundRecord:
    """A valid DMARC record and the domain it was published for."""

    domain: str
    record: DmarcRecord
    text: str = ""


@dataclass(frozen=True, slots=True)
class TreeWalk:
    """What a walk found: valid records, longest name first; ``tempfail`` names a query that
    failed temporarily ("" when none did); ``notes`` say why a name's records were set aside."""

    start: str
    records: tuple[FoundRecord, ...]
    queried: tuple[str, ...]
    tempfail: str = ""
    notes: tuple[str, ...] = ()

    def record_at(self, domain: str) -> DmarcRecord | None:
        return next((f.record for f in self.records if f.domain == domain), None)


def walk_names(domain: str) -> list[str]:
    """The names (without ``_dmarc.``) a walk from ``domain`` queries, in order (4.10)."""
    labels = domain.split(".")
    names = [domain]
    # Step 4: a name of 8 or more labels is cut to its last 7 labels after the first query.
    count = min(len(labels) - 1, MAX_QUERIES - 1)
    names.extend(".".join(labels[-n:]) for n in range(count, 0, -1))
    return names


def dmarc_lookups(*domains: str) -> Plan[tuple[Lookup, ...]]:
    """The TXT records at ``_dmarc.<domain>`` for each domain, asked together.

    A valid domain of 247 to 253 octets makes a name that DNS cannot carry once ``_dmarc.``
    is added: no record can exist there, so it is answered as NXDOMAIN without a query (the
    walk then goes on to the shorter names, as it would past any name without a record).
    """
    return (yield from resolve_names(RRType.TXT, *(f"_dmarc.{d}" for d in domains)))


def select_records(domain: str, lookup: Lookup) -> tuple[FoundRecord | None, str]:
    """The one valid record at a name, or None with a note (4.10 steps 2 and 6)."""
    records: list[FoundRecord] = []
    for text in lookup.texts:
        try:
            records.append(
                FoundRecord(domain, parse_dmarc_record(text), text.decode("utf-8", "replace"))
            )
        except NotDmarcRecord:
            continue  # not a DMARC record: discarded
    if len(records) > 1:
        return None, f"{len(records)} DMARC records at _dmarc.{domain}: all discarded"
    return (records[0] if records else None), ""


def tree_walk(domain: str, *, skip_first: Lookup | None = None) -> Plan[TreeWalk]:
    """Walk from ``domain`` towards the root. ``skip_first``: the first query's answer, when
    the caller already has it (policy discovery asks it alone first)."""
    names = walk_names(domain)
    if skip_first is None:
        (first,) = yield from dmarc_lookups(domain)
    else:
        first = skip_first
    lookups = [first]
    head, _ = select_records(domain, first)
    if first.status is not DnsStatus.TEMPFAIL and not (head and head.record.psd in ("y", "n")):
        rest = yield from dmarc_lookups(*names[1:])
        lookups.extend(rest)
    found: list[FoundRecord] = []
    notes: list[str] = []
    queried: list[str] = []
    for name, lookup in zip(names, lookups, strict=False):
        queried.append(name)
        if lookup.status is DnsStatus.TEMPFAIL:
            reason = f"_dmarc.{name}: {lookup.reason or 'temporary DNS failure'}"
            return TreeWalk(domain, tuple(found), tuple(queried), reason, tuple(notes))
        selected, note = select_records(name, lookup)
        if note:
            notes.append(note)
        if selected is not None:
            found.append(selected)
            if selected.record.psd in ("y", "n"):
                break  # steps 2 and 6: stop
    return TreeWalk(domain, tuple(found), tuple(queried), "", tuple(notes))


def organizational_domain(walk: TreeWalk) -> str:
    """The Organizational Domain a walk determines (RFC 9989 4.10.2)."""
    for found in walk.records:  # longest to shortest
        if found.record.psd == "n":  # rule 1
            return found.domain
        if found.record.psd == "y" and found.domain != walk.start:  # rule 2: one label below
            labels = walk.start.split(".")
            return ".".join(labels[-(found.domain.count(".") + 2) :])
    if walk.records:  # rule 3: the record at the name with the fewest labels
        return walk.records[-1].domain
    return walk.start  # nothing found: the domain itself


@functools.lru_cache(maxsize=1)
def _bundled_list() -> PublicSuffixList:
    return PublicSuffixList()  # the list publicsuffixlist ships (updated with the package)


def psl_organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str:
    """RFC 7489 3.2: the public suffix plus one label; a public suffix is its own."""
    found = (psl or _bundled_list()).privatesuffix(domain)
    return str(found) if found else domain
