"""The DKIM-Signature field (RFC 6376 3.5): parsing and the tag checks of RFC 6376 6.1.1.

Pure: a :class:`~mailauth.message.HeaderField` in, a :class:`Signature` out, or a
:class:`SignatureError` carrying the RFC 8601 result and reason. Time checks (``t=``, ``x=``)
take ``now`` as an argument.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

from mailauth.dkim.canon import Canonicalization, canonicalization_pair
from mailauth.dkim.tags import Tag, TagSyntaxError, decode_base64, parse_tag_list, split_list
from mailauth.domains import at_or_under, normalize_domain
from mailauth.errors import InvalidDomainError, MailauthError
from mailauth.message import HeaderField
from mailauth.results import DkimResult

SUPPORTED_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
LEGACY_ALGORITHMS = ("rsa-sha1",)  # parsed, refused by the verifier (RFC 8301 3.1)
REQUIRED_TAGS = ("v", "a", "b", "bh", "d", "h", "s")  # RFC 6376 3.5
_DIGITS = re.compile(r"[0-9]{1,76}\Z")  # RFC 6376 3.5: 1*76DIGIT (l=); t=, x= 1*12DIGIT
_FIELD = r"[!-9;-~]+"  # RFC 5322 ftext
_HEADER_LIST = re.compile(rf"{_FIELD}(?:[ \t\r\n]*:[ \t\r\n]*{_FIELD})*\Z")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\Z")
_QP = re.compile(rb"=([0-9A-F]{2})")
_FWS = re.compile(r"[ \t\r\n]")
MAX_TIME = 10**12  # RFC 6376 3.5: t= and x= have at most 12 digits


def unix_time(now: float | None) -> float:
    """The moment to sign or judge at: ``now`` (Unix seconds), or the clock when None.

    Raises ValueError for a time that t= cannot carry (RFC 6376 3.5: 1*12DIGIT): negative,
    from 10^12 on, infinite or NaN. NaN would be the worst: every comparison with it is
    false, so no signature would ever look expired.
    """
    if now is None:
        return time.time()
    value = float(now)
    if not 0 <= value < MAX_TIME:  # (false for NaN too)
        raise ValueError(f"now must be a Unix time from 0 to 10^12 seconds, not {now!r}")
    return value


class SignatureError(MailauthError):
    """A signature that cannot be evaluated; ``result`` is NEUTRAL or PERMERROR."""

    def __init__(self, result: DkimResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _syntax(reason: str) -> SignatureError:
    # RFC 8601 2.7.1: "neutral: ... the signature or signatures contained syntax errors".
    return SignatureError(DkimResult.NEUTRAL, reason)


def _unusable(reason: str) -> SignatureError:
    # RFC 6376 6.1.1 PERMFAIL that is not a syntax error -> RFC 8601 "permerror".
    return SignatureError(DkimResult.PERMERROR, reason)


@dataclass(frozen=True, slots=True)
class Signature:
    """A well-formed DKIM-Signature, with values decoded and domains normalised."""

    field: HeaderField
    algorithm: str
    domain: str
    selector: str
    signed_headers: tuple[str, ...]  # h=, lowercased, in order
    body_hash: bytes
    signature: bytes
    header_canon: Canonicalization
    body_canon: Canonicalization
    identity: str  # i=, decoded; "@" + d= when absent
    body_length: int | None
    timestamp: int | None
    expiration: int | None
    b_value: tuple[int, int]  # where the b= value lies in field.raw

    @property
    def identity_domain(self) -> str:
        return self.identity.rpartition("@")[2].lower()

    @property
    def hash_name(self) -> str:
        """The hash function of ``a=`` (hashlib name)."""
        return self.algorithm.rpartition("-")[2]

    @property
    def key_name(self) -> str:
        """The DNS name of the key record (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"


def parse_signature(field: HeaderField) -> Signature:
    """Parse and check one DKIM-Signature field; raises :class:`SignatureError`."""
    value_offset = field.raw.index(b":") + 1
    try:
        tags = parse_tag_list(field.value)
    except TagSyntaxError as exc:
        raise _syntax(f"signature syntax error: {exc}") from None
    missing = [name for name in REQUIRED_TAGS if name not in tags]
    if missing:  # RFC 6376 6.1.1 "signature missing required tag"
        raise _syntax(f"signature missing required tag {'=, '.join(missing)}=")
    if tags["v"].value != "1":  # RFC 6376 6.1.1 "incompatible version"
        raise _unusable(f"incompatible version v={tags['v'].value}")
    algorithm = _algorithm(tags["a"].value.lower())
    domain = _domain(tags["d"].value, "d")
    selector = tags["s"].value
    _domain(f"{selector}._domainkey.{domain}", "s")
    header_canon, body_canon = _canonicalization(tags)
    h = tags["h"].value
    if not _HEADER_LIST.match(h):  # RFC 6376 3.5: h= is field-names separated by ":"
        raise _syntax("h= has an empty or malformed field name")
    signed = tuple("".join(h.split()).lower().split(":"))
    if "from" not in signed:  # RFC 6376 5.4, 6.1.1: From MUST be signed
        raise _unusable("h= does not include From")
    identity = _identity(tags, domain)
    if "q" in tags and "dns/txt" not in split_list(tags["q"].value):  # RFC 6376 3.5 q=
        raise _unusable(f"unsupported query method q={tags['q'].value}")
    b = tags["b"]
    try:
        signature = decode_base64(b.value, "b")
        body_hash = decode_base64(tags["bh"].value, "bh")
    except TagSyntaxError as exc:
        raise _syntax(str(exc)) from None
    if not signature:
        raise _syntax("b= is empty")
    timestamp = _number(tags, "t")
    expiration = _number(tags, "x")
    if timestamp is not None and expiration is not None and expiration < timestamp:
        raise _unusable("x= is earlier than t= (RFC 6376 3.5)")
    return Signature(
        field=field,
        algorithm=algorithm,
        domain=domain,
        selector=selector,
        signed_headers=signed,
        body_hash=body_hash,
        signature=signature,
        header_canon=header_canon,
        body_canon=body_canon,
        identity=identity,
        body_length=_number(tags, "l"),
        timestamp=timestamp,
        expiration=expiration,
        b_value=(value_offset + b.start, value_offset + b.end),
    )


def check_signature_time(sig: Signature, now: float, clock_skew: int) -> str:
    """ "" when ``t=``/``x=`` are acceptable at ``now``, otherwise the reason (RFC 6376 3.5)."""
    if sig.expiration is not None and sig.expiration + clock_skew < now:
        return f"signature expired (x={sig.expiration})"
    if sig.timestamp is not None and sig.timestamp > now + clock_skew:
        return f"signature timestamp t={sig.timestamp} is in the future"
    return ""


def _algorithm(value: str) -> str:
    if value not in SUPPORTED_ALGORITHMS + LEGACY_ALGORITHMS:
        raise _unusable(f"unsupported algorithm a={value}")
    return value


@functools.lru_cache(maxsize=4096)
def tag_domain(value: str) -> str | None:
    """A d= (or selector + d=) value as a normalised domain name, or None when it is none.

    RFC 6376 3.5: sub-domains (RFC 5321: letters, digits, hyphens; U-labels allowed by
    RFC 8616, compared as A-labels). Underscores are tolerated in selectors.
    """
    try:
        name = normalize_domain(value)
    except InvalidDomainError:
        return None
    return name if _HOSTNAME.match(name) else None


def _domain(value: str, tag: str) -> str:
    name = tag_domain(value)
    if name is None:
        raise _syntax(f"{tag}= is not a valid domain name")
    return name


def _canonicalization(tags: dict[str, Tag]) -> tuple[Canonicalization, Canonicalization]:
    value = tags["c"].value if "c" in tags else "simple/simple"  # RFC 6376 3.5 c= default
    pair = canonicalization_pair(value)
    if pair is None:
        raise _unusable(f"unknown canonicalization c={value}")
    return pair


def _identity(tags: dict[str, Tag], domain: str) -> str:
    if "i" not in tags:
        return f"@{domain}"  # RFC 6376 3.5 i=: default "@" + d=
    # i= is dkim-quoted-printable (RFC 6376 2.11): =XX escapes, FWS ignored.
    raw = _QP.sub(lambda m: bytes([int(m.group(1), 16)]), _FWS.sub("", tags["i"].value).encode())
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _syntax("i= is not UTF-8 after quoted-printable decoding") from None
    local, at, idomain = text.rpartition("@")
    if not at:
        raise _syntax("i= has no @")
    try:
        idomain = normalize_domain(idomain)
    except InvalidDomainError:
        raise _syntax("i= domain is not a valid domain name") from None
    # RFC 6376 6.1.1: the i= domain must be the same as, or a subdomain of, d=.
    if not at_or_under(idomain, domain):
        raise _unusable(f"i= domain {idomain} is not d= {domain} or under it")
    return f"{local}@{idomain}"


def _number(tags: dict[str, Tag], name: str) -> int | None:
    if name not in tags:
        return None
    value = tags[name].value
    if not _DIGITS.match(value):
        raise _syntax(f"{name}= is not a number")
    return int(value)
