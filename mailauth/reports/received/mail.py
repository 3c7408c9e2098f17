"""Report e-mails: the parts of a message that hold reports.

RFC 9990 section 4 ("Email"): an aggregate report is an attachment, ``application/gzip``,
``application/zip`` or ``text/xml``, named ``receiver!domain!begin!end[!id].xml[.gz|.zip]``.
Receivers also send them as ``application/x-gzip``, ``application/x-zip-compressed`` or a
generic ``application/octet-stream``: a part is taken when its media type is one of a report,
or its file name ends as a report's does, or (generic types) its content starts as gzip or
zip does. RFC 8460 section 5.3: a TLS report is ``application/tlsrpt+gzip`` or
``application/tlsrpt+json``. A failure report (:mod:`.failure_arf`) is a message/
feedback-report part, or a plain-text report with no such part. A report forwarded as a
message/rfc822 attachment is handed back as an e-mail to read in turn.

The message is parsed by the standard library's ``email`` package (compat32: it never
raises on a malformed message, it records defects). At most ``max_parts`` MIME parts are
looked at; the reported message inside a failure report is never searched for reports.
"""

from __future__ import annotations

import email
import re
from collections import deque
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32

from mailauth.reports.received.containers import GZIP_MAGIC, ZIP_MAGIC, shown_name
from mailauth.reports.received.failure_arf import (
    feedback_part,
    looks_like_failure_report,
    read_arf,
    read_plain,
)
from mailauth.reports.received.limits import DEFAULT_LIMITS, ReadLimits, ReportReadError
from mailauth.reports.received.model import FailureReport

REPORT_TYPES = frozenset({
    "application/gzip", "application/x-gzip", "application/zip", "application/x-zip",
    "application/x-zip-compressed", "text/xml", "application/xml", "application/tlsrpt+gzip",
    "application/tlsrpt+json", "application/json",
})  # fmt: skip
GENERIC_TYPES = frozenset({
    "application/octet-stream", "binary/octet-stream", "application/x-compressed",
    "application/x-gzip-compressed", "application/download", "application/unknown",
})  # fmt: skip
REPORT_SUFFIXES = (".xml", ".xml.gz", ".gz", ".zip", ".json", ".json.gz", ".gzip")
_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/global",
                   "message/global-headers")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part that holds a report (or an e-mail to read in turn: ``message``)."""

    name: str
    media_type: str
    content: bytes
    message: bool = False


@dataclass(frozen=True, slots=True)
class MailContents:
    """What a report e-mail holds: report attachments, or one failure report."""

    attachments: tuple[Attachment, ...] = ()
    failure: FailureReport | None = None


def read_mail(data: bytes, limits: ReadLimits = DEFAULT_LIMITS) -> MailContents:
    """The reports of the e-mail ``data``; ReportReadError when it holds none."""
    _precheck(data, limits)
    try:
        message = email.message_from_bytes(data, policy=compat32)
        leaves = _leaves(message, limits)
    except RecursionError:
        raise ReportReadError("refused: MIME parts nested too deeply") from None
    feedback = feedback_part(leaves)
    original = next((p for p in leaves if p.get_content_type() in _ORIGINAL_TYPES), None)
    if feedback is not None:
        return MailContents(failure=read_arf(message, feedback, _inner(original), data, limits))
    attachments = [a for a in (_attachment(part) for part in leaves) if a is not None]
    if attachments:
        return MailContents(attachments=tuple(attachments))
    body = _body_text(leaves, limits)
    if looks_like_failure_report(message, body):
        return MailContents(failure=read_plain(message, body, _inner(original), data, limits))
    forwarded = [_forwarded(p) for p in leaves if p.get_content_type() == "message/rfc822"]
    if forwarded:
        return MailContents(attachments=tuple(forwarded))
    raise ReportReadError(
        "no report in this e-mail (no aggregate or TLS report attachment, no failure report)"
    )


_HEADER_LINES = 50  # header lines per MIME part allowed for (top-level: Received chains)


def _precheck(data: bytes, limits: ReadLimits) -> None:
    """Refuse a MIME or header flood before Python's parser builds it: the parser makes an
    object of every part and header line of the whole message before ``max_parts`` can be
    counted (200,000 parts in 6 MiB: 23 s, 193 MiB; 1,000,000 header lines in 13 MiB: 16 s,
    319 MiB). Every part starts at a line beginning ``--``, so their count bounds the parts;
    the header lines are counted from each such line (and the start) to the blank line."""
    starts = [0]
    at = data.find(b"\n--")
    while at >= 0:
        if len(starts) > 2 * limits.max_parts + 2:
            raise ReportReadError(f"refused: an e-mail of more than {limits.max_parts} MIME parts")
        starts.append(at + 1)
        at = data.find(b"\n--", at + 1)
    lines = 0
    for start in starts:
        blank = _BLANK.search(data, start)
        lines += data.count(b"\n", start, blank.start() if blank else len(data))
        if lines > _HEADER_LINES * limits.max_parts:
            raise ReportReadError(
                f"refused: more than {_HEADER_LINES * limits.max_parts:,} header lines"
            )


_BLANK = re.compile(rb"\n\r?\n")


def _leaves(message: Message, limits: ReadLimits) -> list[Message]:
    """The parts that are not multipart containers, in order, at most ``max_parts`` looked
    at (message/* parts are leaves: what they hold is not searched)."""
    leaves = []
    queue: deque[Message] = deque([message])
    seen = 0
    while queue:
        part = queue.popleft()
        seen += 1
        if seen > limits.max_parts:
            raise ReportReadError(f"refused: an e-mail of more than {limits.max_parts} MIME parts")
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            queue.extend(p for p in payload if isinstance(p, Message))
        else:
            leaves.append(part)
    return leaves


def _attachment(part: Message) -> Attachment | None:
    media_type = part.get_content_type()
    filename = part.get_filename() or part.get_param("name") or ""
    name = shown_name(str(filename)) if filename else media_type
    named = str(filename).lower().endswith(REPORT_SUFFIXES)
    if media_type not in REPORT_TYPES and media_type not in GENERIC_TYPES and not named:
        return None
    content = part.get_payload(decode=True)
    if not isinstance(content, bytes) or not content.strip():
        return None
    if (
        media_type in GENERIC_TYPES
        and not named
        and not content.startswith((GZIP_MAGIC, *ZIP_MAGIC))
    ):
        return None
    return Attachment(name, media_type, content)


def _inner(part: Message | None) -> Message | None:
    """The reported message (message/rfc822: the message it holds; rfc822-headers: the
    header section parsed as a message)."""
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    content = part.get_payload(decode=True)
    if not isinstance(content, bytes):
        return None
    return email.message_from_bytes(content, policy=compat32)


def _forwarded(part: Message) -> Attachment:
    inner = _inner(part)
    content = inner.as_bytes() if inner is not None else b""
    return Attachment("forwarded message", "message/rfc822", content, message=True)


def _body_text(leaves: list[Message], limits: ReadLimits) -> str:
    for part in leaves:
        if part.get_content_type() == "text/plain":
            content = part.get_payload(decode=True)
            if isinstance(content, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    return content[: limits.max_expanded].decode(charset, "replace")
                except LookupError:
                    return content[: limits.max_expanded].decode("utf-8", "replace")
    return ""
