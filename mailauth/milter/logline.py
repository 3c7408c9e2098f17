"""The milter's one log line per message (verified, or signed): JSON, or key=value pairs
(logfmt) whose values are quoted whenever they hold a space, a quote, ``=`` or anything not
printable ASCII, so that nothing a client sends (HELO, MAIL FROM) can forge a field or a
line."""

from __future__ import annotations

import json
import re

from mailauth.results import Verdict


def log_line(
    facts: dict[str, str], verdict: Verdict, action: str, seconds: float, form: str
) -> str:
    """Queue id, client, HELO and MAIL FROM (``facts``), results, disposition, time spent."""
    dmarc = verdict.dmarc
    record = {
        **facts,
        "spf": str(verdict.spf.mailfrom.result) if verdict.spf else None,
        "dkim": [f"{d.result}:{d.domain}" for d in verdict.dkim or ()],
        "arc": str(verdict.arc.result) if verdict.arc else None,
        "dmarc": str(dmarc.result) if dmarc else None,
        "disposition": str(dmarc.disposition) if dmarc else None,
        "action": action,
        "ms": round(seconds * 1000, 1),
    }
    if form == "text":
        return " ".join(f"{k}={_logfmt(v)}" for k, v in record.items())
    return json.dumps(record, separators=(",", ":"))


def signed_line(facts: dict[str, str], keys: list[str], seconds: float, form: str) -> str:
    """An outbound message signed: its facts, the keys (``domain:selector:algorithm``)."""
    record = {**facts, "signed": keys, "action": "continue", "ms": round(seconds * 1000, 1)}
    if form == "text":
        return " ".join(f"{k}={_logfmt(v)}" for k, v in record.items())
    return json.dumps(record, separators=(",", ":"))


def unauthorized_line(facts: dict[str, str], domain: str, action: str, form: str) -> str:
    """An authenticated user's message for a domain it may not sign for: its facts (the
    user among them), the domain, and what was done (``reject`` or ``unsigned``)."""
    record = {**facts, "not_authorized_for": domain, "action": action}
    if form == "text":
        return " ".join(f"{k}={_logfmt(v)}" for k, v in record.items())
    return json.dumps(record, separators=(",", ":"))


_PLAIN = re.compile(r"[!#-<>-~]+")  # printable ASCII but space, '"' and '='


def _logfmt(value: object) -> str:
    """A logfmt value: bare when plain, else a JSON string (quotes, escapes, no line breaks)."""
    if isinstance(value, list):
        value = ",".join(map(str, value))
    text = "" if value is None else str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)
