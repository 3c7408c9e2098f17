"""DNS data and messages for the failure-report tests: the demo domain with a DMARC record
that asks for failure reports, a spoof of it, and verdicts made by the real pipeline."""

from __future__ import annotations

from pathlib import Path

from mailauth.dns import ZoneResolver
from mailauth.pipeline import Authenticator
from mailauth.results import Verdict

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
DEMO_ZONE = (DEMO / "example.com.zone").read_text()
DMARC_LINE = '_dmarc          IN TXT  "v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.com"'
RUF = "mailto:ruf@example.com"
EXTERNAL = "mailto:ruf@reports.example.net"
# reports.example.net agrees to receive example.com's failure reports (RFC 9991 5)
AGREES = 'example.com._report._dmarc.reports.example.net. IN TXT "v=DMARC1"\n'
ARRIVAL = 1_796_000_000.0  # (after the demo signature's t=)

# The demo message from its own server passes SPF and DKIM, aligned; the spoof from another
# network, with an envelope of its own, fails DMARC; SPOOF_ALIGNED_SPF uses example.com in
# MAIL FROM (an aligned identity that fails SPF).
DEMO_MESSAGE = (DEMO / "message.eml").read_bytes()
GOOD = {"ip": "192.0.2.10", "helo": "mail.example.com", "mail_from": "alice@example.com"}
SPOOF = (
    b"Received: from mail.evil.example ([198.51.100.66])\r\n"
    b"From: CEO <ceo@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: urgent wire transfer\r\n"
    b"Message-ID: <fake-1@evil.example>\r\n"
    b"\r\n"
    b"Please send the money to account 1234.\r\n"
)
BAD = {"ip": "198.51.100.66", "helo": "mail.evil.example", "mail_from": "x@evil.example"}
BAD_ALIGNED_SPF = {**BAD, "mail_from": "ceo@example.com"}


def dmarc_record(tags: str) -> str:
    """``v=DMARC1; p=reject; <tags>``."""
    return f"v=DMARC1; p=reject; {tags}"


def zone_text(record: str = dmarc_record(f"ruf={RUF}; fo=1"), extra: str = "") -> str:
    """The demo zone with ``record`` at _dmarc.example.com."""
    assert DMARC_LINE in DEMO_ZONE
    return DEMO_ZONE.replace(DMARC_LINE, f'_dmarc IN TXT "{record}"') + extra


def resolver(record: str = dmarc_record(f"ruf={RUF}; fo=1"), extra: str = "") -> ZoneResolver:
    return ZoneResolver.from_text(zone_text(record, extra))


def verdict_of(
    raw: bytes, envelope: dict[str, str], record: str = dmarc_record(f"ruf={RUF}; fo=1")
) -> Verdict:
    auth = Authenticator("mx.example.org", resolver(record))
    return auth.verify(raw, **envelope, now=ARRIVAL)
