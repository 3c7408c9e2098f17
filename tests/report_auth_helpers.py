"""Signed report e-mails for the authentication tests (review finding F4): a test key
published in a zone (mailauth.dns.ZoneResolver, fault pragmas for DNS failures), report
e-mails signed with mailauth.Signer by the reporter, by another domain, or not at all."""

from __future__ import annotations

from pathlib import Path

from mailauth.dkim import Signer, public_key_record, zone_txt_line
from mailauth.dns import ZoneResolver
from tests.dkim_helpers import RSA_KEY

NOW = 1_700_100_000  # (after the reports' periods; signatures are made and checked at it)
SELECTOR = "rpt"
SIGNERS = ("receiver.example", "google.com", "mail.google.com", "evil.example")  # keys published
NO_KEYS = Path(__file__).resolve().parent.parent / "fixtures/dmarc-reports/no-keys.zone"


def zone_text(faults: dict[str, str] | None = None, selectors: tuple[str, ...] = ()) -> str:
    """The test key at ``rpt._domainkey.D`` (and ``S._domainkey.D`` for each of
    ``selectors``) for each of :data:`SIGNERS`; ``faults``: name -> ``timeout`` or
    ``servfail``."""
    record = public_key_record(RSA_KEY)
    names = [f"{s}._domainkey.{d}" for d in SIGNERS for s in (SELECTOR, *selectors)]
    lines = [zone_txt_line(name, record) for name in names]
    lines += [f"; mailauth-fault: {name} {fault}" for name, fault in (faults or {}).items()]
    return "\n".join(lines) + "\n"


def zone_file(directory: Path, faults: dict[str, str] | None = None,
              selectors: tuple[str, ...] = ()) -> Path:  # fmt: skip
    path = directory / "report-keys.zone"
    path.write_text(zone_text(faults, selectors))
    return path


def resolver(faults: dict[str, str] | None = None) -> ZoneResolver:
    return ZoneResolver.from_text(zone_text(faults))


def signed(raw: bytes, domain: str = "receiver.example", selector: str = SELECTOR) -> bytes:
    """``raw`` with a DKIM signature by ``domain`` (its key in :func:`zone_text` under
    :data:`SELECTOR`; another selector: no key, or a fault)."""
    return Signer(domain, selector, RSA_KEY).sign(raw, now=NOW)
