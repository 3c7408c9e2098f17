"""ARC chain validation (RFC 8617 5.2), a plan over the injected resolver.

Steps: collect the sets (none -> ``none``); the newest seal must not say ``cv=fail``; the
structure must hold (sets 1..N, one field of each kind per set, ``cv=none`` at i=1 and
``pass`` above); the newest ARC-Message-Signature must verify; every ARC-Seal, newest first,
must verify. The keys of the newest AMS and of every seal are asked in one DNS effect. When
the chain passes, the older AMSs are checked to report ``oldest_pass`` (step 5, optional),
their keys asked together, after the seals: a failing chain costs no more lookups.

Work is linear in the size of the chain: the seals' hash inputs share their prefixes (set 1
to i-1 of seal i are those of seal i-1), so one running hash over the sets gives every
seal's digest, and each field is canonicalized once. Each public-key operation is followed by
a checkpoint (:func:`mailauth.plan.checkpoint`).

Results: ``fail`` with its reason for every error in the chain itself. A key lookup that
failed temporarily gives ``temperror`` instead, unless the chain also fails for a reason DNS
cannot change. RFC 8617 5.2.1 treats DNS failures as any other failure; mailauth does not,
because a validator that could not fetch a key has not learnt that the chain is broken, and
a forwarder that sealed ``cv=fail`` on such a result would end the chain for every later hop
(5.1.2): the sealer refuses to seal on ``temperror`` (docs/arc.md).
"""

from __future__ import annotations

import hashlib
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
from mailauth.dkim.body import BodyHashes
from mailauth.dkim.canon import Canonicalization, canonicalize_header_bytes
from mailauth.dkim.signature import Signature
from mailauth.dkim.verify import (
    MIN_RSA_BITS,
    feed_body,
    header_hash_input,
    key_problem,
    key_records,
    verify_digest,
    verify_signature,
)
from mailauth.dns import Lookup, Query, RRType
from mailauth.message import Message
from mailauth.plan import Plan, checkpoint, resolve
from mailauth.results import ArcOutcome, ArcResult, ArcSetInfo, DkimResult

RELAXED = Canonicalization.RELAXED


@dataclass(frozen=True, slots=True)
class _Problem:
    """Why one signature of the chain did not verify; ``temporary``: a DNS failure."""

    reason: str
    temporary: bool = False


@dataclass
class _Keys:
    """Key lookups by name, and the message's body hashes (per canonicalization)."""

    lookups: dict[str, Lookup]
    message: Message
    min_rsa_bits: int
    bodies: dict[Canonicalization, bytes]

    def check(self, name: str, algorithm: str, signature: bytes, data: bytes) -> _Problem | None:
        """None when the key at ``name`` verifies the signature over ``data``."""
        return self._check(name, algorithm, signature, data, digest=False)

    def check_digest(
        self, name: str, algorithm: str, signature: bytes, digest: bytes
    ) -> _Problem | None:
        """As :meth:`check`, for the SHA-256 digest of the data."""
        return self._check(name, algorithm, signature, digest, digest=True)

    def _check(
        self, name: str, algorithm: str, signature: bytes, data: bytes, *, digest: bool
    ) -> _Problem | None:
        records, problem = key_records(self.lookups[name])
        if problem is not None:
            return _Problem(problem[1], temporary=problem[0] is DkimResult.TEMPERROR)
        # One key: the first usable record (decoys cost nothing, mailauth.dkim.verify).
        reasons = [key_problem(r, algorithm, self.min_rsa_bits) for r in records]
        key = next((r for r, why in zip(records, reasons, strict=True) if not why), None)
        if key is None:
            return _Problem(reasons[0])
        check = verify_digest if digest else verify_signature
        return (
            None if check(key, algorithm, signature, data) else _Problem("signature did not verify")
        )

    def body_hash(self, method: Canonicalization) -> Plan[bytes]:
        if method not in self.bodies:
            hashes = BodyHashes()
            hashes.want(method)
            yield from feed_body(hashes, self.message.body)
            self.bodies[method] = hashes.digest(method)
        return self.bodies[method]


def verify_arc(
    message: Message,
    *,
    min_rsa_bits: int = MIN_RSA_BITS,
    body_hashes: Mapping[Canonicalization, bytes] | None = None,
) -> Plan[ArcOutcome]:
    """Validate the message's ARC chain. ``body_hashes``: SHA-256 body hashes per
    canonicalization already computed (from a streamed body: ``message`` then holds the
    header fields only; or shared with DKIM's pass over the body)."""
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

    def failed(reason: str) -> ArcOutcome:
        return ArcOutcome(ArcResult.FAIL, reason, None, domains, info)

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
    temporary: dict[str, int] = {}  # reason -> instance
    problem = yield from _check_ams(newest, keys)  # step 4
    if problem is not None:
        reason = f"ARC-Message-Signature i={len(seals)}: {problem.reason}"
        if not problem.temporary:
            return failed(reason)
        temporary[reason] = len(seals)
    digests = _seal_digests(chain, seals)
    for seal in reversed(seals):  # step 6
        problem = keys.check_digest(
            seal.key_name, seal.algorithm, seal.signature, digests[seal.instance]
        )
        yield from checkpoint()
        if problem is None:
            continue
        reason = f"ARC-Seal i={seal.instance}: {problem.reason}"
        if not problem.temporary:
            return failed(reason)
        temporary[reason] = seal.instance
    if temporary:
        instances = tuple(sorted(set(temporary.values())))
        reason = "; ".join(temporary)
        return ArcOutcome(ArcResult.TEMPERROR, reason, None, domains, info, instances)
    oldest = yield from _oldest_pass(chain, keys)  # step 5
    return ArcOutcome(ArcResult.PASS, "", oldest, domains, info)


def _check_ams(sig: Signature, keys: _Keys) -> Plan[_Problem | None]:
    body_hash = yield from keys.body_hash(sig.body_canon)
    if body_hash != sig.body_hash:
        return _Problem("body hash did not verify")
    data = header_hash_input(keys.message.headers, sig)
    problem = keys.check(sig.key_name, sig.algorithm, sig.signature, data)
    yield from checkpoint()
    return problem


def _oldest_pass(chain: ArcChain, keys: _Keys) -> Plan[int | None]:
    """RFC 8617 5.2 step 5: the lowest instance from which every AMS validates (0: all);
    None when a key lookup failed temporarily first (whether that AMS validates is not
    known: header.oldest-pass is left out rather than claim it does not).

    The older AMSs' keys are asked together, in one effect: never a lookup per set, one
    after the other, at names the sender chose.
    """
    signatures: list[tuple[int, Signature | None]] = []
    for arc_set in reversed(chain.sets[:-1]):
        try:
            signatures.append((arc_set.instance, parse_message_signature(arc_set.signature)))
        except ArcError:
            signatures.append((arc_set.instance, None))
            break
    names = list(
        dict.fromkeys(
            s.key_name for _, s in signatures if s is not None and s.key_name not in keys.lookups
        )
    )
    lookups = yield from resolve(*(Query.of(n, RRType.TXT) for n in names))
    keys.lookups.update(zip(names, lookups, strict=True))
    for instance, sig in signatures:
        if sig is None:
            return instance + 1
        problem = yield from _check_ams(sig, keys)
        if problem is not None:
            return None if problem.temporary else instance + 1
    return 0


def _seal_digests(chain: ArcChain, seals: list[Seal]) -> dict[int, bytes]:
    """The SHA-256 digest of what each ARC-Seal signs (RFC 8617 5.1.1): for sets 1..i, their
    AAR, AMS and AS, relaxed, but for the seal of set i itself, which comes last with b=
    empty and no final CRLF. One running hash: seal i's input extends seal i-1's."""
    running = hashlib.sha256()
    digests = {}
    for arc_set, seal in zip(chain.sets, seals, strict=True):
        running.update(canonicalize_header_bytes(arc_set.results.raw, RELAXED))
        running.update(canonicalize_header_bytes(arc_set.signature.raw, RELAXED))
        own = running.copy()
        raw = seal.field.raw
        start, end = seal.b_value
        own.update(canonicalize_header_bytes(raw[:start] + raw[end:], RELAXED)[:-2])
        digests[seal.instance] = own.digest()
        running.update(canonicalize_header_bytes(raw, RELAXED))
    return digests
