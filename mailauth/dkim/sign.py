"""DKIM signing (RFC 6376 5, RFC 8463): one signer per key, several signers in one pass.

The output is the input with the new DKIM-Signature field(s) put on top; not one byte of the
original message changes. Defaults follow current practice: relaxed/relaxed, no ``l=``
(RFC 6376 8.2), a header list that covers the fields a reader sees, with From, To, Cc,
Subject, Date, Reply-To, Message-ID and the MIME fields over-signed (listed once more than
they occur, so none can be added in transit: RFC 6376 5.4.2, 8.15).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from mailauth.dkim.body import hash_body
from mailauth.dkim.canon import canonicalization_pair, hash_input
from mailauth.dkim.keys import PrivateKey, key_file_warning, load_private_key
from mailauth.dkim.signature import MAX_TIME, tag_domain, unix_time
from mailauth.errors import SigningError
from mailauth.message import Message

DEFAULT_HEADERS = (
    "from", "reply-to", "subject", "date", "to", "cc", "message-id", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-id", "content-description", "sender", "resent-date", "resent-from",
    "resent-sender", "resent-to", "resent-cc", "resent-message-id", "list-id",
    "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
    "list-archive", "list-unsubscribe-post",
)  # fmt: skip
OVERSIGNED = frozenset(
    {
        "from", "to", "cc", "subject", "date", "reply-to", "message-id",
        "mime-version", "content-type", "content-transfer-encoding",
    }
)  # fmt: skip
LINE_WIDTH = 78  # RFC 5322 2.1.1
_B64_CHUNK = 72
_FIELD_NAME = re.compile(r"[!-9<-~]+")  # RFC 5322 ftext, without ';' (the h= separator)


class InsecureKeyFileWarning(UserWarning):
    """A private key file is readable by group or others."""


class Signer:
    """Signs with one key for one ``d=``/``s=`` pair.

    ``private_key``: PEM (PKCS#1 or PKCS#8) or raw base64 Ed25519 bytes, a key object, or a
    path (``str`` or ``PathLike``). ``algorithm`` defaults to the key's (rsa-sha256 or
    ed25519-sha256). ``headers`` replaces the default list; From is required in it.
    ``oversign`` replaces :data:`OVERSIGNED` (fields listed once more than they occur; they
    join the list if missing); ``skip`` names fields never signed (not From).
    ``expire`` adds ``x=`` that many seconds after ``t=``. Raises :class:`SigningError`.
    """

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key: bytes | str | os.PathLike[str] | PrivateKey,
        algorithm: str | None = None,
        *,
        canonicalization: str = "relaxed/relaxed",
        headers: Sequence[str] | None = None,
        expire: int | None = None,
        identity: str | None = None,
        oversign: Sequence[str] | None = None,
        skip: Sequence[str] = (),
    ) -> None:
        self.key, self.algorithm = signing_key(private_key, algorithm)
        self.domain, self.selector = signing_identity(domain, selector)
        pair = canonicalization_pair(canonicalization)
        if pair is None:
            raise SigningError(f"unknown canonicalization {canonicalization!r}")
        self.header_canon, self.body_canon = pair
        self.headers, self.oversign = signed_header_lists(headers, oversign, skip)
        if expire is not None and not 0 < expire < MAX_TIME:
            raise SigningError("expire must be a positive number of seconds (x= has 12 digits)")
        self.expire = expire
        self.identity = identity

    @property
    def canonicalization(self) -> str:
        return f"{self.header_canon}/{self.body_canon}"

    def sign(self, message: bytes, *, now: float | None = None) -> bytes:
        """The message with this signer's DKIM-Signature field on top."""
        return sign_dkim(message, [self], now=now)

    def signature_field(self, message: Message, body_hash: bytes, now: float) -> bytes:
        """The DKIM-Signature field (with its line ending) for a parsed message."""
        counts = Counter(field.lname for field in message.headers)
        if not counts["from"]:
            raise SigningError("message has no From field")
        over = self.oversign
        signed = [n for n in self.headers for _ in range(counts[n] + (n in over))]
        tags = [
            "v=1",
            f"a={self.algorithm}",
            f"c={self.canonicalization}",
            f"d={self.domain}",
            f"s={self.selector}",
        ]
        if self.identity:
            tags.append(f"i={self.identity}")
        timestamp = int(now)
        tags.append(f"t={timestamp}")
        if self.expire:
            if timestamp + self.expire >= MAX_TIME:  # RFC 6376 3.5: x= is 1*12DIGIT
                raise SigningError(f"x={timestamp + self.expire} would have more than 12 digits")
            tags.append(f"x={timestamp + self.expire}")
        eol = message.line_ending
        lines = _fold_tags(tags, signed, base64.b64encode(body_hash).decode())
        prefix = "\r\n".join(lines).encode()
        data = hash_input(message.headers, signed, prefix + b"\r\n", self.header_canon)
        value = base64.b64encode(self._sign(data)).decode()
        text = _append_folded(lines, value)
        return "\r\n".join(text).encode().replace(b"\r\n", eol) + eol

    def _sign(self, data: bytes) -> bytes:
        return sign_data(self.key, data)


def sign_dkim(message: bytes, signers: Sequence[Signer], *, now: float | None = None) -> bytes:
    """Sign with every signer in one pass (dual signing); the first signer's field is on top.

    Each body canonicalization is hashed once, whatever the number of signers.
    """
    if not signers:
        raise SigningError("no signer given")
    parsed = Message.parse(message)
    when = unix_time(now)
    hashes_by_canon = {c: hash_body(parsed.body, c) for c in {s.body_canon for s in signers}}
    fields = b"".join(
        s.signature_field(parsed, hashes_by_canon[s.body_canon], when) for s in signers
    )
    start = message.find(b"\n") + 1 if message.startswith(b"From ") else 0
    return message[:start] + fields + message[start:]


def signed_header_lists(
    headers: Sequence[str] | None, oversign: Sequence[str] | None, skip: Sequence[str] = ()
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The fields to sign (``h=``, in order) and those over-signed (RFC 6376 5.4.2): the
    given lists lowercased, the ``skip`` fields taken out of both. By default
    (:data:`DEFAULT_HEADERS`, and :data:`OVERSIGNED` for the fields of the list that are in
    it); a field given in ``oversign`` but missing from the list joins it. SigningError when
    a name is not a field name or From would not be signed."""
    skipped = set(_field_names(skip))
    if "from" in skipped:
        raise SigningError("From cannot be skipped: it must be signed (RFC 6376 5.4)")
    names = [n for n in _field_names(headers or DEFAULT_HEADERS) if n not in skipped]
    if oversign is None:
        over: tuple[str, ...] = tuple(n for n in names if n in OVERSIGNED)
    else:
        over = _field_names(oversign)
        names += [n for n in over if n not in names and n not in skipped]
    if "from" not in names:
        raise SigningError("the signed header list must include From (RFC 6376 5.4)")
    return tuple(names), frozenset(n for n in over if n not in skipped)


def _field_names(names: Sequence[str] | frozenset[str]) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(n.strip().lower() for n in names))
    bad = [n for n in found if not _FIELD_NAME.fullmatch(n)]
    if bad:
        raise SigningError(
            "header names must be field names: printable ASCII without ':', ';' or spaces "
            f"(not {bad[0]!r})"
        )
    return found


def signing_key(
    source: bytes | str | os.PathLike[str] | PrivateKey, algorithm: str | None
) -> tuple[PrivateKey, str]:
    """Load a signing key (warning when its file is readable by others) and its a= value."""
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and not source.lstrip().startswith("-----BEGIN")
    ):
        warning = key_file_warning(source)
        if warning:
            warnings.warn(warning, InsecureKeyFileWarning, stacklevel=3)
    key = load_private_key(source)
    return key, algorithm_for_key(key, algorithm)


def signing_identity(domain: str, selector: str) -> tuple[str, str]:
    """d= normalised and s= checked by the rule verifiers apply (RFC 6376 3.5: d= and the
    key name ``selector._domainkey.d`` are domain names; letters, digits, hyphens, and the
    underscores selectors use)."""
    normalized = tag_domain(domain)
    if normalized is None:
        raise SigningError(f"bad signing domain {domain!r}: not a domain name")
    if tag_domain(f"{selector}._domainkey.{normalized}") is None:
        raise SigningError(f"bad selector {selector!r}: not a domain name label")
    return normalized, selector


def sign_data(key: PrivateKey, data: bytes) -> bytes:
    """The signature of the header hash input, through OpenSSL."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(hashlib.sha256(data).digest())  # RFC 8463 3: PureEdDSA of the SHA-256
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def algorithm_for_key(key: PrivateKey, requested: str | None = None) -> str:
    """a= for a key (rsa-sha256 or ed25519-sha256); raises SigningError on a mismatch."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        natural = "ed25519-sha256"
    else:
        if not 1024 <= key.key_size <= 4096:
            raise SigningError(f"RSA key of {key.key_size} bits: use 1024 to 4096 (RFC 8301)")
        natural = "rsa-sha256"
    if requested is not None and requested.lower() != natural:
        raise SigningError(f"algorithm {requested} does not match the key ({natural})")
    return natural


def _fold_tags(tags: list[str], signed: list[str], body_hash: str) -> list[str]:
    """Lines of the field up to and including ``b=``, each under 78 columns."""
    lines = ["DKIM-Signature: " + "; ".join(tags[:3]) + ";"]
    for tag in tags[3:]:
        _add(lines, tag + ";")
    parts = [f"h={signed[0]}", *signed[1:]]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        piece = part + (";" if last else ":")
        if len(lines[-1]) + len(piece) + (1 if i == 0 else 0) > LINE_WIDTH - 1:
            lines.append("\t" + piece)
        else:
            lines[-1] += (" " if i == 0 else "") + piece
    _add(lines, f"bh={body_hash};")
    _add(lines, "b=")
    return lines


def _add(lines: list[str], item: str) -> None:
    if len(lines[-1]) + 1 + len(item) > LINE_WIDTH - 1:
        lines.append("\t" + item)
    else:
        lines[-1] += " " + item


def _append_folded(lines: list[str], value: str) -> list[str]:
    out = list(lines)
    room = max(LINE_WIDTH - 1 - len(out[-1]), 0)
    out[-1] += value[:room]
    out.extend("\t" + value[i : i + _B64_CHUNK] for i in range(room, len(value), _B64_CHUNK))
    return out
