"""ARC chain validation (RFC 8617 5.2), a plan over the injected resolver.

Steps: collect the sets (none -> ``none``); the newest seal must not say ``cv=fail``; the
structure must hold (sets 1..N, one field of each kind per set, ``cv=none`` at i=1 and
``pass`` above); the newest ARC-Message-Signature must verify; every ARC-Seal, newest first,
must verify. Older AMSs are checked to report ``oldest_pass`` (step 5). Every error, DNS
failures included, is a permanent ``fail`` (RFC 8617 5.2.1), with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailauth.arc.chain import (
    ArcChain,
    ArcError,
    Seal,
    aar_payload,
    collect_chain,
    parse_message_signature,
    parse_seal,
)
from mailauth.dkim.canon import Canonicalization, hash_body, raw_hash_input
from mailauth.dkim.signature import Signature
from mailauth.dkim.verify import (
    MIN_RSA_BITS,
    header_hash_input,
    key_problem,
    key_records,
    verify_signature,
)
from mailauth.dns import Lookup, Query, RRType
from mailauth.message import Message
from mailauth.plan import Plan, resolve
from mailauth.results import ArcOutcome, ArcResult, ArcSetInfo

RELAXED = Canonicalization.RELAXED


@dataclass
class _Keys:
    """Key lookups by name, and the body hashes already computed (per canonicalization)."""

    lookups: dict[str, Lookup]
    message: Message
    min_rsa_bits: int
    bodies: dict[Canonicalization, bytes]

    def check(self, name: str, algorithm: str, signature: bytes, data: bytes) -> str:
        """ "" when a key at ``name`` verifies the signature, else why not."""
        records, problem = key_records(self.lookups[name])
        if problem is not None:
            return problem[1]
        reasons = [key_problem(r, algorithm, self.min_rsa_bits) for r in records]
        usable = [r for r, why in zip(records, reasons, strict=True) if not why]
        if not usable:
            return reasons[0]
        if any(verify_signature(r, algorithm, signature, data) for r in usable):
            return ""
        return "signature did not verify"

    def body_hash(self, method: Canonicalization) -> bytes:
        if method not in self.bodies:
            self.bodies[method] = hash_body(self.message.body, method)
        return self.bodies[method]


def verify_arc(
    message: Message,
    *,
    min_rsa_bits: int = MIN_RSA_BITS,
    body_hashes: Mapping[Canonicalization, bytes] | None = None,
) -> Plan[ArcOutcome]:
    """Validate the message's ARC chain. ``body_hashes``: SHA-256 body hashes per
    canonicalization already computed from a streamed body (``message`` then holds the
    header fields only)."""
    try:
        chain = collect_chain(message.headers)
        if chain is None:
            return ArcOutcome(ArcResult.NONE)
        seals = [parse_seal(s.seal) for s in chain.sets]
    except ArcError as exc:
        return ArcOutcome(ArcResult.FAIL, str(exc))
    info = tuple(
        ArcSetInfo(s.instance, s.domain, s.selector, s.cv, aar_payload(c.results))
        for s, c in zip(seals, chain.sets, strict=True)
    )
    domains = tuple(s.domain for s in seals)

    def failed(reason: str, oldest: int | None = None) -> ArcOutcome:
        return ArcOutcome(ArcResult.FAIL, reason, oldest, domains, info)

    if seals[-1].cv == "fail":  # step 2
        return failed(f"the newest ARC-Seal (i={seals[-1].instance}) says cv=fail")
    for seal in seals:  # step 3.3
        expected = "none" if seal.instance == 1 else "pass"
        if seal.cv != expected:
            return failed(f"ARC-Seal i={seal.instance} has cv={seal.cv}, not {expected}")
    try:
        newest = parse_message_signature(chain.newest.signature)
    except ArcError as exc:
        return failed(str(exc))
    names = list(dict.fromkeys([newest.key_name] + [s.key_name for s in seals]))
    lookups = yield from resolve(*(Query.of(n, RRType.TXT) for n in names))
    keys = _Keys(
        dict(zip(names, lookups, strict=True)), message, min_rsa_bits, dict(body_hashes or {})
    )
    problem = _check_ams(newest, keys)  # step 4
    if problem:
        return failed(f"ARC-Message-Signature i={len(seals)}: {problem}")
    oldest = yield from _oldest_pass(chain, keys)  # step 5
    for seal in reversed(seals):  # step 6
        problem = keys.check(seal.key_name, seal.algorithm, seal.signature, _seal_data(chain, seal))
        if problem:
            return failed(f"ARC-Seal i={seal.instance}: {problem}", oldest)
    return ArcOutcome(ArcResult.PASS, "", oldest, domains, info)


def _check_ams(sig: Signature, keys: _Keys) -> str:
    if keys.body_hash(sig.body_canon) != sig.body_hash:
        return "body hash did not verify"
    data = header_hash_input(keys.message.headers, sig)
    return keys.check(sig.key_name, sig.algorithm, sig.signature, data)


def _oldest_pass(chain: ArcChain, keys: _Keys) -> Plan[int]:
    """RFC 8617 5.2 step 5: the lowest instance from which every AMS validates (0: all)."""
    for arc_set in reversed(chain.sets[:-1]):
        try:
            sig = parse_message_signature(arc_set.signature)
        except ArcError:
            return arc_set.instance + 1
        if sig.key_name not in keys.lookups:
            (lookup,) = yield from resolve(Query.of(sig.key_name, RRType.TXT))
            keys.lookups[sig.key_name] = lookup
        if _check_ams(sig, keys):
            return arc_set.instance + 1
    return 0


def _seal_data(chain: ArcChain, seal: Seal) -> bytes:
    """What the ARC-Seal of instance i signs (RFC 8617 5.1.1): for sets 1..i, their AAR, AMS
    and AS, relaxed; the seal itself with b= empty and no final CRLF."""
    raws = []
    for arc_set in chain.sets[: seal.instance]:
        raws.append(arc_set.results.raw)
        raws.append(arc_set.signature.raw)
        if arc_set.instance < seal.instance:
            raws.append(arc_set.seal.raw)
    raw = seal.field.raw
    start, end = seal.b_value
    return raw_hash_input(raws, raw[:start] + raw[end:], RELAXED)
