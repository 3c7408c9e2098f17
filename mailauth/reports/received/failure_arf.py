"""DMARC failure reports as domain owners receive them: RFC 9991 / RFC 6591 (ARF, RFC 5965)
``auth-failure`` reports, and plain-text ones with no ARF part.

An ARF report is a multipart/report whose message/feedback-report part holds the fields
(Feedback-Type, Auth-Failure, Arrival-Date, Source-IP, Reported-Domain, Original-Mail-From,
Original-Rcpt-To, DKIM-Domain/-Identity/-Selector, SPF-DNS, Identity-Alignment,
Authentication-Results, Delivery-Result, Reporting-MTA, User-Agent), beside the reported
message (message/rfc822) or its header section (text/rfc822-headers). A plain-text report
(some receivers send one) is read for what it names: labelled lines such as ``Sender IP
Address:`` or ``Reported-Domain:``, the ``ip=``/``mail-from=`` words of its subject, and a
header section attached beside it; its ``arf`` is false.

Pure: it takes a parsed message (the standard library's ``email``, compat32, as
:mod:`.mail` parses it) and returns a :class:`FailureReport`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from mailauth.reports.received.limits import DEFAULT_LIMITS, ReadLimits, clip
from mailauth.reports.received.model import FailureReport

Fields = dict[str, list[str]]

_PLAIN_LABELS = {
    "source_ip": ("source-ip", "source ip", "sender ip address", "sender ip", "ip address",
                  "client ip", "source ip address"),
    "reported_domain": ("reported-domain", "reported domain", "sender domain", "domain"),
    "arrival_date": ("arrival-date", "arrival date", "received date", "date received"),
    "original_mail_from": ("original-mail-from", "mail from", "envelope from", "mail-from"),
    "original_rcpt_to": ("original-rcpt-to", "rcpt to", "envelope to", "rcpt-to"),
    "auth_failure": ("auth-failure", "failure type"),
    "delivery_result": ("delivery-result", "delivery result"),
    "feedback_type": ("feedback-type",),
}  # fmt: skip
_LABEL_LINE = re.compile(r"^[ \t]*([A-Za-z][A-Za-z -]{0,40}?)[ \t]*:[ \t]*(\S.*?)[ \t]*$", re.M)
_SUBJECT_IP = re.compile(r"\bip=([0-9A-Fa-f:.]+)")
_SUBJECT_MAIL_FROM = re.compile(r"\bmail-from=([^\s,;)]+)")
_SUBJECT_DOMAIN = re.compile(r"\b(?:for|domain:?)\s+([A-Za-z0-9.-]+\.[A-Za-z]{2,})", re.I)
_FAILURE_SUBJECT = re.compile(r"(dmarc|authentication|forensic).{0,60}(fail|forensic)", re.I)


def feedback_part(parts: Iterable[Message]) -> Message | None:
    """The message/feedback-report part among ``parts``, if any."""
    for part in parts:
        if part.get_content_type() == "message/feedback-report":
            return part
    return None


def looks_like_failure_report(message: Message, body: str) -> bool:
    """A plain-text report names itself a failure report in its subject, or carries ARF's
    field names in its text."""
    subject = _header(message, "subject")
    return bool(_FAILURE_SUBJECT.search(subject)) or "auth-failure" in body.lower()


def read_arf(message: Message, feedback: Message, original: Message | None, raw: bytes,
             limits: ReadLimits = DEFAULT_LIMITS) -> FailureReport:  # fmt: skip
    """The failure report of ``message`` with its message/feedback-report part ``feedback``
    and the reported message (or its header section) ``original``."""
    return _report(message, _arf_fields(feedback), original, raw, limits, arf=True)


def read_plain(message: Message, body: str, original: Message | None, raw: bytes,
               limits: ReadLimits = DEFAULT_LIMITS) -> FailureReport:  # fmt: skip
    """A failure report with no ARF part: the fields its text and subject give."""
    fields: Fields = {}
    labels = {label: name for name, names in _PLAIN_LABELS.items() for label in names}
    for match in _LABEL_LINE.finditer(body[: limits.max_headers * 4]):
        name = labels.get(match.group(1).strip().lower())
        if name:
            fields.setdefault(name.replace("_", "-"), []).append(match.group(2))
    subject = _header(message, "subject")
    for pattern, name in ((_SUBJECT_IP, "source-ip"), (_SUBJECT_MAIL_FROM, "original-mail-from"),
                          (_SUBJECT_DOMAIN, "reported-domain")):  # fmt: skip
        found = pattern.search(subject)
        if found and name not in fields:
            fields[name] = [found.group(1)]
    return _report(message, fields, original, raw, limits, arf=False)


def _arf_fields(feedback: Message) -> Fields:
    payload = feedback.get_payload()
    if isinstance(payload, list):  # (compat32 parses message/* as a message: the fields)
        items = payload[0].items() if payload and isinstance(payload[0], Message) else []
    else:
        text = payload if isinstance(payload, str) else ""
        items = HeaderParser(policy=compat32).parsestr(text.lstrip("\r\n")).items()
    fields: Fields = {}
    for name, value in items:
        fields.setdefault(name.strip().lower(), []).append(_unfold(value))
    return fields


def _report(message: Message, fields: Fields, original: Message | None, raw: bytes,
            limits: ReadLimits, *, arf: bool) -> FailureReport:  # fmt: skip
    def one(name: str, *, lower: bool = False) -> str:
        values = fields.get(name)
        text = clip(values[0].strip(), limits.max_text) if values else ""
        return text.lower() if lower else text

    from_name, from_address = parseaddr(_header(message, "from"))
    del from_name
    reporting_mta = one("reporting-mta").partition(";")[2].strip() or one("reporting-mta")
    reporter = reporting_mta.lower() or from_address.rpartition("@")[2].lower()
    report_id = _header(message, "message-id").strip() or (
        "sha256:" + hashlib.sha256(raw).hexdigest()
    )
    headers, header_from, subject, message_id = _original(original, limits)
    notes = [] if arf else ["no ARF part: the fields were read from the report's text"]
    arrival = _date(one("arrival-date") or one("received-date"))
    if not arrival:
        arrival = _date(_header(message, "date"))
        notes.append("no Arrival-Date: the report's Date is used")
    return FailureReport(
        reporter=clip(reporter, limits.max_text),
        email=clip(from_address.lower(), limits.max_text),
        report_id=clip(report_id, limits.max_text),
        feedback_type=one("feedback-type", lower=True),
        auth_failure=one("auth-failure", lower=True),
        arrival_date=arrival,
        source_ip=_ip(one("source-ip")),
        reported_domain=(one("reported-domain", lower=True) or header_from).rstrip("."),
        identity_alignment=one("identity-alignment", lower=True),
        header_from=header_from,
        original_mail_from=one("original-mail-from").strip("<>"),
        original_rcpt_to=clip(", ".join(fields.get("original-rcpt-to", [])), limits.max_text),
        dkim_domain=one("dkim-domain", lower=True),
        dkim_identity=one("dkim-identity"),
        dkim_selector=one("dkim-selector"),
        spf_dns=one("spf-dns"),
        authentication_results=one("authentication-results"),
        delivery_result=one("delivery-result", lower=True),
        message_id=message_id or one("message-id"),
        subject=subject,
        user_agent=one("user-agent"),
        arf=arf,
        original_headers=headers,
        notes=tuple(notes),
    )


def _original(original: Message | None, limits: ReadLimits) -> tuple[str, str, str, str]:
    """(header section as text, From domain, Subject, Message-ID) of the reported message."""
    if original is None:
        return "", "", "", ""
    lines = [f"{name}: {value}" for name, value in original.items()[:500]]
    text = clip("\n".join(lines), limits.max_headers)
    addresses = getaddresses([_header(original, "from")])
    domain = addresses[0][1].rpartition("@")[2].lower() if addresses else ""
    subject = clip(_header(original, "subject"), limits.max_text)
    message_id = clip(_header(original, "message-id").strip(), limits.max_text)
    return text, clip(domain, limits.max_text), subject, message_id


def _header(message: Message, name: str) -> str:
    """A header field's value, RFC 2047 words decoded, unfolded ("" when absent or broken)."""
    value = message.get(name)
    if value is None:
        return ""
    text = str(value)
    try:
        text = str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError, TypeError):
        pass
    return _unfold(text)


def _unfold(value: object) -> str:
    return " ".join(str(value).split())


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return text


def _date(text: str) -> int:
    if not text:
        return 0
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return max(0, int(moment.timestamp()))
    except (OverflowError, OSError, ValueError):
        return 0
