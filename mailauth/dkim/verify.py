"""DKIM verification (RFC 6376 6, RFC 8301, RFC 8463) as a plan over the injected resolver.

:class:`DkimVerification` takes the header fields first, then the body in chunks as they
arrive (the milter's order), and :meth:`DkimVerification.finish` looks up the keys and checks
every signature. :func:`verify_dkim` does the three steps for a parsed message.

Results (RFC 8601 2.7.1): ``pass``; ``fail`` when the body hash or the signature does not
verify; ``neutral`` for a signature with syntax errors; ``permerror`` for a signature that
cannot be evaluated (unsupported or refused algorithm, key missing, revoked, malformed, too
small or unsuitable, expired, ...); ``temperror`` when the key lookup failed temporarily;
``policy`` for signatures beyond the cap, and (when asked) for an ``l=`` shorter than the
body. Each outcome carries its reason. Out of scope: ADSP/ATPS, DomainKeys (RFC 4870).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils

from mailauth.dkim.body import BodyHashes
from mailauth.dkim.canon import hash_input
from mailauth.dkim.keys import KeyRecord, KeyRecordError, parse_key_record
from mailauth.dkim.signature import Signature, SignatureError, check_signature_time, parse_signature
from mailauth.dkim.tags import TagSyntaxError, parse_tag_list, remove_whitespace
from mailauth.dns import DnsStatus, Lookup, Query, RRType
from mailauth.message import HeaderField, Message
from mailauth.plan import Plan, checkpoint, resolve
from mailauth.results import DkimOutcome, DkimResult

DEFAULT_MAX_SIGNATURES = 10
MIN_RSA_BITS = 1024  # RFC 8301 3.2: smaller keys MUST NOT be considered valid
DEFAULT_CLOCK_SKEW = 300  # seconds of tolerance for t= in the future and x= in the past
MAX_KEY_RECORDS = 4  # TXT records parsed at one selector name
# A whole body is fed in slices of this size, with a checkpoint after each: under asyncio
# no message holds the event loop for more than one slice (about a millisecond per 256 KiB
# and canonicalization in use).
BODY_SLICE = 1 << 18


@dataclass(frozen=True, slots=True)
class DkimPolicy:
    """Local choices a receiver makes (none of them weakens an RFC MUST).

    ``max_signatures``: signatures beyond it are reported as ``policy`` and not verified.
    ``clock_skew``: seconds allowed between our clock and the signer's for t= and x=.
    ``reject_partial_body``: a signature whose ``l=`` leaves part of the body unsigned gets
    ``policy`` instead of ``pass`` (RFC 6376 8.2).
    ``required_headers``: header fields (lower case) a signature's ``h=`` must name, or it
    gets ``policy`` instead of ``pass`` (RFC 6376 6.1.1: a verifier MAY refuse a signature
    that does not sign the fields it views as essential; From is always required, 5.4).

    ``min_rsa_bits`` and ``allow_rsa_sha1`` exist for reading archives of old mail and for
    test corpora: lowering the first below 1024 or setting the second breaks RFC 8301 and
    must not be done on live mail.
    """

    max_signatures: int = DEFAULT_MAX_SIGNATURES
    clock_skew: int = DEFAULT_CLOCK_SKEW
    reject_partial_body: bool = False
    required_headers: tuple[str, ...] = ()
    min_rsa_bits: int = MIN_RSA_BITS
    allow_rsa_sha1: bool = False


_DEFAULT_POLICY = DkimPolicy()
_PKCS1, _SHA256, _SHA1 = padding.PKCS1v15(), hashes.SHA256(), hashes.SHA1()  # noqa: S303
_PREHASHED_SHA256 = asym_utils.Prehashed(hashes.SHA256())


class DkimVerification:
    """One message's DKIM verification: header fields, then body chunks, then finish.

    ``body``: the body hashes to share with other verifiers of the same message (ARC); the
    caller then feeds that object, not :meth:`update`.
    """

    def __init__(
        self,
        headers: Sequence[HeaderField],
        *,
        now: float,
        policy: DkimPolicy | None = None,
        body: BodyHashes | None = None,
    ) -> None:
        self.headers = tuple(headers)
        self.now = now
        self.policy = policy or _DEFAULT_POLICY
        self.body = body if body is not None else BodyHashes()
        self._entries: list[Signature | DkimOutcome] = []
        self._wants_body = False
        fields = [f for f in self.headers if f.lname == "dkim-signature"]
        cap = self.policy.max_signatures
        # Signatures beyond the cap get one outcome for them all, not one each: a message
        # can carry 100,000 signature fields, and parsing and reporting each (one
        # Authentication-Results clause apiece) would cost more than the cap saves.
        self._beyond_cap: DkimOutcome | None = None
        if len(fields) > cap:
            beyond = len(fields) - cap
            reason = f"not verified: {beyond} more signature field(s) than the cap of {cap}"
            self._beyond_cap = DkimOutcome(DkimResult.POLICY, "", "", "", reason)
            fields = fields[:cap]
        for field in fields:
            try:
                sig = parse_signature(field)
            except SignatureError as exc:
                self._entries.append(_outcome_from_field(field, exc.result, exc.reason))
                continue
            reason = self._refusal(sig)
            if reason:
                self._entries.append(_outcome(sig, DkimResult.PERMERROR, reason))
                continue
            self._entries.append(sig)
            # One canonicalization pass and one hash pass serve every l= (mailauth.dkim.body).
            self.body.want(sig.body_canon, sig.hash_name, sig.body_length)
            self._wants_body = True

    def _refusal(self, sig: Signature) -> str:
        """Why a well-formed signature is refused before any lookup, or ""."""
        if sig.algorithm == "rsa-sha1" and not self.policy.allow_rsa_sha1:
            # RFC 8301 3.1: verifiers MUST NOT consider rsa-sha1 signatures valid.
            return "rsa-sha1 is not accepted (RFC 8301 3.1)"
        # RFC 6376 6.1.1: an expired signature, or one from the future, is PERMFAIL.
        return check_signature_time(sig, self.now, self.policy.clock_skew)

    @property
    def wants_body(self) -> bool:
        """False when no signature needs the body (nothing to hash)."""
        return self._wants_body

    def update(self, chunk: bytes | memoryview) -> None:
        """Feed the next body chunk."""
        self.body.update(chunk)

    def finish(self) -> Plan[tuple[DkimOutcome, ...]]:
        """Look up the keys (all at once) and check each signature, top to bottom, one
        public-key operation per step (a checkpoint after each)."""
        signatures = [e for e in self._entries if isinstance(e, Signature)]
        names = list(dict.fromkeys(sig.key_name for sig in signatures))
        lookups = yield from resolve(*(Query.of(name, RRType.TXT) for name in names))
        by_name = dict(zip(names, lookups, strict=True))
        checked: list[DkimOutcome] = []
        for entry in self._entries:
            if isinstance(entry, DkimOutcome):
                checked.append(entry)
                continue
            checked.append(self._check(entry, by_name[entry.key_name]))
            yield from checkpoint()
        if self._beyond_cap is not None:
            checked.append(self._beyond_cap)
        return tuple(checked)

    def _check(self, sig: Signature, lookup: Lookup) -> DkimOutcome:
        records, problem = key_records(lookup)
        if problem is not None:
            return _outcome(sig, *problem)
        min_bits = self.policy.min_rsa_bits
        key = next((r for r in records if not _key_unusable(sig, r, min_bits)), None)
        if key is None:
            first = records[0]
            reason = _key_unusable(sig, first, min_bits)
            return _outcome(sig, DkimResult.PERMERROR, reason, first.bits, first.testing)
        body_hash = self.body.digest(sig.body_canon, sig.hash_name, sig.body_length)
        length = self.body.length(sig.body_canon)
        bits, testing = key.bits, key.testing
        # RFC 6376 6.1.3: the body hash is compared before the signature is checked.
        if sig.body_length is not None and sig.body_length > length:
            reason = f"l={sig.body_length} exceeds the body length"
            return _outcome(sig, DkimResult.FAIL, reason, bits, testing)
        if body_hash != sig.body_hash:
            return _outcome(sig, DkimResult.FAIL, "body hash did not verify", bits, testing)
        data = header_hash_input(self.headers, sig)
        if not verify_signature(key, sig.algorithm, sig.signature, data):
            return _outcome(sig, DkimResult.FAIL, "signature did not verify", bits, testing)
        unsigned_fields = [n for n in self.policy.required_headers
                           if n not in sig.signed_headers]  # fmt: skip
        if unsigned_fields:
            reason = f"h= does not sign {', '.join(unsigned_fields)}"
            return _outcome(sig, DkimResult.POLICY, reason, bits, testing)
        if sig.body_length is not None and sig.body_length < length:
            unsigned = length - sig.body_length
            reason = f"l={sig.body_length} leaves {unsigned} body octets unsigned"
            result = DkimResult.POLICY if self.policy.reject_partial_body else DkimResult.PASS
            return _outcome(sig, result, reason, bits, testing)
        return _outcome(sig, DkimResult.PASS, "", bits, testing)


def verify_dkim(
    message: Message, *, now: float, policy: DkimPolicy | None = None
) -> Plan[tuple[DkimOutcome, ...]]:
    """Verify every DKIM-Signature of ``message`` (an empty tuple when there is none)."""
    verification = DkimVerification(message.headers, now=now, policy=policy)
    if verification.wants_body:
        yield from feed_body(verification.body, message.body)
    return (yield from verification.finish())


def feed_body(hashes: BodyHashes, body: bytes | memoryview) -> Plan[None]:
    """Feed a whole body in slices, with a checkpoint after each but the last."""
    view = memoryview(body)
    for start in range(0, len(view), BODY_SLICE):
        if start:
            yield from checkpoint()
        hashes.update(view[start : start + BODY_SLICE])


def header_hash_input(headers: Sequence[HeaderField], sig: Signature) -> bytes:
    """The data the signature covers (RFC 6376 3.7): signed fields, then the signature field
    itself with the b= value removed and without its final CRLF."""
    raw = sig.field.raw
    start, end = sig.b_value
    return hash_input(headers, sig.signed_headers, raw[:start] + raw[end:], sig.header_canon)


def verify_signature(record: KeyRecord, algorithm: str, signature: bytes, data: bytes) -> bool:
    """The public-key check, through OpenSSL."""
    key = record.key
    try:
        if algorithm == "rsa-sha256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _PKCS1, _SHA256)
            return True
        if algorithm == "rsa-sha1" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _PKCS1, _SHA1)
            return True
        if algorithm == "ed25519-sha256" and isinstance(key, ed25519.Ed25519PublicKey):
            # RFC 8463 3: PureEdDSA over the SHA-256 digest of the data.
            key.verify(signature, hashlib.sha256(data).digest())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def verify_digest(record: KeyRecord, algorithm: str, signature: bytes, digest: bytes) -> bool:
    """:func:`verify_signature` for data already hashed with SHA-256 (``*-sha256`` only):
    for callers that hash many inputs sharing a prefix (ARC seals)."""
    key = record.key
    try:
        if algorithm == "rsa-sha256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, _PKCS1, _PREHASHED_SHA256)
            return True
        if algorithm == "ed25519-sha256" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)  # RFC 8463 3: the SHA-256 digest is what is signed
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def key_records(
    lookup: Lookup,
) -> tuple[list[KeyRecord], tuple[DkimResult, str] | None]:
    """The key records at the selector that parse, in a fixed order, or the result and
    reason why there are none.

    RFC 6376 3.6.2.2: several TXT records at one selector give undefined results; 6.1.2
    lets the verifier choose one or cycle through them. mailauth parses up to
    MAX_KEY_RECORDS, in sorted order, and callers check the signature with the first one
    that can be used for it (key type, h=, s=, size): a name stuffed with decoy keys costs
    one public-key operation, never one per record.
    """
    if lookup.status is DnsStatus.TEMPFAIL:  # RFC 6376 6.1.2: TEMPFAIL (key unavailable)
        return [], (DkimResult.TEMPERROR, f"key lookup failed: {lookup.reason or 'DNS error'}")
    texts = sorted(lookup.texts)
    if not texts:  # NXDOMAIN or NODATA: PERMFAIL (no key for signature)
        return [], (DkimResult.PERMERROR, f"no key for signature at {lookup.name}")
    records: list[KeyRecord] = []
    errors: list[str] = []
    for text in texts[:MAX_KEY_RECORDS]:
        try:
            records.append(parse_key_record(text))
        except KeyRecordError as exc:
            errors.append(str(exc))
    if not records:
        return [], (DkimResult.PERMERROR, errors[0])
    return records, None


def _key_unusable(sig: Signature, record: KeyRecord, min_rsa_bits: int) -> str:
    """RFC 6376 6.1.2 checks of a key against the signature; "" when the key may be used."""
    problem = key_problem(record, sig.algorithm, min_rsa_bits)
    if not problem and record.strict_identity and sig.identity_domain != sig.domain:
        return "key t=s requires the i= domain to equal d="
    return problem


def key_problem(record: KeyRecord, algorithm: str, min_rsa_bits: int = MIN_RSA_BITS) -> str:
    """Why a key cannot check a signature of ``algorithm`` (RFC 6376 6.1.2, RFC 8301), or ""."""
    if record.key is None:
        return "key revoked (empty p=)"
    key_type, _, hash_name = algorithm.partition("-")
    if record.key_type != key_type:
        return f"key type k={record.key_type} does not match a={algorithm}"
    bits = record.bits or 0
    if key_type == "rsa" and bits < min_rsa_bits:
        return f"RSA key of {bits} bits is too small (RFC 8301 3.2: at least {min_rsa_bits})"
    if record.hash_algorithms is not None and hash_name not in record.hash_algorithms:
        return f"key h= does not allow {hash_name}"
    if "*" not in record.services and "email" not in record.services:
        return "key s= does not allow email"
    return ""


def _outcome(
    sig: Signature,
    result: DkimResult,
    reason: str,
    key_bits: int | None = None,
    testing: bool = False,
) -> DkimOutcome:
    # RFC 6008: header.b carries the first characters of b= (9 octets = 12 base64 characters).
    prefix = base64.b64encode(sig.signature[:9]).decode()
    return DkimOutcome(
        result=result,
        domain=sig.domain,
        selector=sig.selector,
        algorithm=sig.algorithm,
        reason=reason,
        identity="" if sig.identity == f"@{sig.domain}" else sig.identity,
        key_bits=key_bits,
        signature_prefix=prefix,
        testing=testing,
        body_length=sig.body_length,
    )


def _outcome_from_field(field: HeaderField, result: DkimResult, reason: str) -> DkimOutcome:
    """An outcome for a signature that did not parse, with what can be read of its tags."""
    try:
        tags = parse_tag_list(field.value)
    except TagSyntaxError:
        tags = {}

    def tag(name: str) -> str:
        return tags[name].value if name in tags else ""

    return DkimOutcome(
        result=result,
        domain=tag("d").lower(),
        selector=tag("s"),
        algorithm=tag("a").lower(),
        reason=reason,
        signature_prefix=remove_whitespace(tag("b"))[:12],
    )
