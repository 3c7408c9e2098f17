"""ARC sealing for forwarders and mailing lists (RFC 8617 5.1).

:class:`Sealer` adds one ARC Set on top of a message: the ARC-Authentication-Results (the
receiver's Authentication-Results payload with ``i=N``), the ARC-Message-Signature (a DKIM
signature with ``i=N``, relaxed/relaxed) and the ARC-Seal over every set (``cv=`` from the
validation of the incoming chain). A chain whose newest seal already says ``cv=fail`` gets no
new set (5.1 step 2); a chain that fails validation is sealed with ``cv=fail`` and a seal that
covers the new set only (5.1.2); a chain whose validation failed temporarily (``temperror``,
a key lookup that timed out) is not sealed at all: :class:`SigningError`, so that the caller
retries later rather than end the chain over a local fault. Fields use the "standardized"
layout of the ValiMail suite: tags in alphabetical order, one space after each ``;``, folded
at tag boundaries and inside ``b=``, so that relaxed canonicalization of the field equals the
unfolded text.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence

from mailauth.arc.chain import MAX_SETS, ArcError, instance_of, is_arc_field
from mailauth.dkim.body import hash_body
from mailauth.dkim.canon import Canonicalization, raw_hash_input, select_headers
from mailauth.dkim.keys import PrivateKey
from mailauth.dkim.sign import DEFAULT_HEADERS, sign_data, signing_identity, signing_key
from mailauth.dkim.signature import unix_time
from mailauth.errors import SigningError
from mailauth.message import HeaderField, Message
from mailauth.results import ArcOutcome, ArcResult

RELAXED = Canonicalization.RELAXED
LINE_WIDTH = 78
_WSP = re.compile(r"[ \t\r\n]+")
# RFC 8617 4.1.2: ARC fields and Authentication-Results never go into an AMS; DKIM-Signature
# fields already present SHOULD.
DEFAULT_AMS_HEADERS = (*DEFAULT_HEADERS, "dkim-signature")


class Sealer:
    """Seals with one key for one ``d=``/``s=`` pair (``private_key`` as for :class:`Signer`)."""

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key: bytes | str | os.PathLike[str] | PrivateKey,
        algorithm: str | None = None,
        *,
        headers: Sequence[str] | None = None,
    ) -> None:
        self.key, self.algorithm = signing_key(private_key, algorithm)
        self.domain, self.selector = signing_identity(domain, selector)
        names = [h.strip().lower() for h in headers or DEFAULT_AMS_HEADERS]
        forbidden = {"arc-seal", "arc-message-signature", "arc-authentication-results"}
        if forbidden & set(names) or "authentication-results" in names:
            raise SigningError("an ARC-Message-Signature never signs ARC or A-R fields")
        self.headers = tuple(dict.fromkeys(names))

    def seal(
        self,
        message: bytes,
        *,
        authentication_results: str,
        chain: ArcOutcome,
        now: float | None = None,
    ) -> bytes:
        """The message with a new ARC Set on top (or unchanged when the chain already failed).

        ``authentication_results``: the receiver's Authentication-Results payload
        (``authserv-id; method=result ...``), as :func:`results_payload` makes it;
        ``chain``: the validation of the incoming chain (:func:`verify_arc`).
        """
        parsed = Message.parse(message)
        fields = self.seal_fields(
            parsed,
            hash_body(parsed.body, RELAXED),
            authentication_results=authentication_results,
            chain=chain,
            now=now,
        )
        start = message.find(b"\n") + 1 if message.startswith(b"From ") else 0
        # A message whose header section is empty without an empty line (its first line is
        # no field): the fields on top get the empty line, so that its body stays the body.
        bare = fields and not parsed.headers and parsed.body_offset == start
        separator = parsed.line_ending if bare else b""
        return message[:start] + b"".join(f.raw for f in fields) + separator + message[start:]

    def seal_fields(
        self,
        message: Message,
        body_hash: bytes,
        *,
        authentication_results: str,
        chain: ArcOutcome,
        now: float | None = None,
    ) -> list[HeaderField]:
        """The new ARC Set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results, in
        the order they go on top), from the header fields and the relaxed SHA-256 body hash;
        empty when no set may be added. For callers that stream the body (the milter)."""
        existing = [f for f in message.headers if is_arc_field(f)]
        instances = _instances(existing)
        if _newest_seal_cv(existing, instances) == "fail":
            return []  # RFC 8617 5.1 step 2: a failed chain is not continued
        instance = max(instances, default=0) + 1
        if instance > MAX_SETS:
            return []  # no room for a 51st set
        if chain.result is ArcResult.NONE and instance > 1:
            raise SigningError("the chain given does not belong to this message")
        if chain.result is ArcResult.TEMPERROR:
            # Sealing cv=fail would end the chain for every later hop (RFC 8617 5.1.2) over
            # a local fault; the message is to be retried, and sealed once it validates.
            raise SigningError(f"ARC chain not validated (temporary failure): {chain.reason}")
        cv = {ArcResult.NONE: "none", ArcResult.PASS: "pass"}.get(chain.result, "fail")
        when = int(unix_time(now))
        eol = message.line_ending.decode()
        payload = f"i={instance}; {_unfold(authentication_results)}"
        # Folded only at its own spaces: unfolding gives back the one-line text exactly.
        aar_text = _wrap("ARC-Authentication-Results:", payload.split(" "), eol)
        aar = HeaderField("ARC-Authentication-Results", aar_text.encode())
        ams = self._message_signature(
            message, aar, body_hash, {"i": str(instance), "t": str(when), "eol": eol}
        )
        tags = {"a": self.algorithm, "cv": cv, "d": self.domain}
        tags |= {"i": str(instance), "s": self.selector, "t": str(when)}
        seal = self._seal(existing if cv != "fail" else [], (aar, ams), tags)
        return [seal, ams, aar]

    def _message_signature(
        self, message: Message, aar: HeaderField, body_hash: bytes, where: dict[str, str]
    ) -> HeaderField:
        """The AMS over the message's fields and the body hash; ``where``: i, t and eol."""
        instance, when, eol = where["i"], where["t"], where["eol"]
        counts: dict[str, int] = {}
        for field in message.headers:
            counts[field.name.lower()] = counts.get(field.name.lower(), 0) + 1
        signed = [n for n in self.headers for _ in range(counts.get(n, 0))]
        tags = {
            "a": self.algorithm,
            "bh": base64.b64encode(body_hash).decode(),
            "c": "relaxed/relaxed",
            "d": self.domain,
            "h": ":".join(signed),
            "i": instance,
            "s": self.selector,
            "t": when,
        }
        chosen = select_headers((aar, *message.headers), signed)
        raws = [field.raw for field in chosen if field is not None]
        return self._signed_field("ARC-Message-Signature", tags, raws, eol)

    def _seal(
        self, covered: list[HeaderField], new_set: tuple[HeaderField, ...], tags: dict[str, str]
    ) -> HeaderField:
        # RFC 8617 5.1.1: sets 1..N in increasing order, AAR, AMS, AS within each; with cv=fail
        # only the new set (5.1.2).
        kinds = {"arc-authentication-results": 0, "arc-message-signature": 1, "arc-seal": 2}
        ordered = sorted(covered, key=lambda f: (instance_of(f), kinds[f.name.lower()]))
        raws = [f.raw for f in (*ordered, *new_set)]
        eol = "\r\n" if new_set[0].raw.endswith(b"\r\n") else "\n"
        return self._signed_field("ARC-Seal", tags, raws, eol)

    def _signed_field(
        self, name: str, tags: dict[str, str], raws: list[bytes], eol: str
    ) -> HeaderField:
        """Sign: the fields ``raws``, then this field with ``b=`` empty, are hashed (relaxed);
        then b= is filled in."""
        items = sorted({**tags, "b": ""}.items())
        unsigned = f"{name}: " + "; ".join(f"{k}={v}" for k, v in items)
        hashed = raw_hash_input(raws, unsigned.encode() + b"\r\n", RELAXED)
        value = base64.b64encode(sign_data(self.key, hashed)).decode()
        text = _fold(name, [(k, value if k == "b" else v) for k, v in items], eol)
        return HeaderField(name, text.encode())


def results_payload(authentication_results: str) -> str:
    """An Authentication-Results field (as :class:`Verdict` holds it) as an AAR payload:
    ``authserv-id; results``, unfolded."""
    _, colon, value = authentication_results.partition(":")
    return _unfold(value if colon else authentication_results)


def merge_authentication_results(message: Message, authserv_id: str) -> str:
    """The payloads of every Authentication-Results field with this authserv-id, in order,
    merged into one (the AAR carries all of an ADMD's results, RFC 8617 4.1.1)."""
    results = []
    for field in message.get_all("Authentication-Results"):
        ident, _, rest = _unfold(field.value.decode("utf-8", "replace")).partition(";")
        if ident.strip().lower() == authserv_id.lower() and rest.strip():
            results.append(rest.strip())
    return f"{authserv_id}; " + "; ".join(results) if results else f"{authserv_id}; none"


def _unfold(text: str) -> str:
    return _WSP.sub(" ", text).strip()


def _fold(name: str, items: list[tuple[str, str]], eol: str) -> str:
    """``name: k=v; k=v...`` folded only after a ``;``, where a space already is, so that
    unfolding and relaxed canonicalization give back exactly the one-line text that was
    signed. A long b= or h= stays on one line (well under RFC 5322's 998 octets)."""
    last = len(items) - 1
    return _wrap(
        f"{name}:", [f"{k}={v}" + (";" if i < last else "") for i, (k, v) in enumerate(items)], eol
    )


def _wrap(head: str, pieces: list[str], eol: str) -> str:
    """Join ``pieces`` with single spaces after ``head``, breaking lines (CRLF + SP) at those
    spaces before 78 columns where a piece allows it."""
    lines = [head]
    for piece in pieces:
        if lines[-1] != head and len(lines[-1]) + 1 + len(piece) > LINE_WIDTH - 1:
            lines.append(" " + piece)
        else:
            lines[-1] += " " + piece
    return eol.join(lines) + eol


def _instances(fields: list[HeaderField]) -> list[int]:
    found = []
    for field in fields:
        try:
            found.append(instance_of(field))
        except ArcError:  # an unreadable ARC field: the chain cannot be continued
            return [MAX_SETS]
    return found


def _newest_seal_cv(fields: list[HeaderField], instances: list[int]) -> str:
    if not fields:
        return "none"
    newest = max(instances)
    for field, instance in zip(fields, instances, strict=False):
        if field.name.lower() == "arc-seal" and instance == newest:
            match = re.search(rb"(?:^|;)[ \t\r\n]*cv[ \t\r\n]*=[ \t\r\n]*([a-z]+)", field.value)
            return match.group(1).decode() if match else "fail"
    return "fail"
