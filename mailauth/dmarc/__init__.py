"""DMARC (RFC 9989; RFC 7489 behaviour by option): records, discovery, evaluation.

Modules: :mod:`~mailauth.dmarc.record` (the policy record, pure),
:mod:`~mailauth.dmarc.discovery` (DNS Tree Walk, Organizational Domains, the PSL) and
:mod:`~mailauth.dmarc.evaluate` (alignment, result, policy, disposition, local overrides).
"""

from __future__ import annotations

from mailauth.dmarc.discovery import (
    TreeWalk,
    organizational_domain,
    psl_organizational_domain,
    tree_walk,
    walk_names,
)
from mailauth.dmarc.evaluate import (
    DmarcLocalPolicy,
    DmarcMode,
    OverrideContext,
    OverrideHook,
    OverrideType,
    PolicyOverride,
    Undecided,
    evaluate_dmarc,
    extract_author_domains,
)
from mailauth.dmarc.record import DmarcRecord, NotDmarcRecord, ReportUri, parse_dmarc_record

__all__ = [
    "DmarcLocalPolicy",
    "DmarcMode",
    "DmarcRecord",
    "NotDmarcRecord",
    "OverrideContext",
    "OverrideHook",
    "OverrideType",
    "PolicyOverride",
    "ReportUri",
    "TreeWalk",
    "Undecided",
    "evaluate_dmarc",
    "extract_author_domains",
    "organizational_domain",
    "parse_dmarc_record",
    "psl_organizational_domain",
    "tree_walk",
    "walk_names",
]
