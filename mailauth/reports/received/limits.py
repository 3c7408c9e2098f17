"""What reading one received report may cost, and the one error a report that cannot be read
raises.

Reports come from anyone who can send mail to the ``rua=`` address: every size, count and
depth an attacker controls has a bound here, checked before the work it would cause (an
archive's member count before its directory is read, a decompressed size while it is
decompressed, not after). A report beyond a bound is refused whole, with one line saying
which bound; nothing is ever written to disk from an archive (member names are only shown,
never used as paths, so a ``../`` name is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailauth.errors import MailauthError

MIB = 1 << 20


class ReportReadError(MailauthError, ValueError):
    """A received report that cannot be read, or that is refused: the text is one line that
    says why (the caller adds the file name)."""


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Bounds on one input (a file, or one message of a mailbox).

    - ``max_input``: octets of the input itself (a file, a mailbox message).
    - ``max_expanded``: octets of any one decompressed document (XML, JSON), and of all the
      documents one input expands to together: a gzip or zip bomb stops here.
    - ``max_members``: files in one zip archive (counted from its end record, before its
      directory is read); ``max_parts``: MIME parts in one e-mail.
    - ``max_depth``: containers nested in each other (an e-mail holding a zip holding a
      gzip is 3).
    - ``max_records``: records of one aggregate report, policies or failure details of one
      TLS report.
    - ``max_count``: messages of one aggregate record, sessions of one TLS policy or failure
      detail. No receiver sees 2**32 messages from one address in one report period; a
      larger count is a forged report (meant to drown the real sources in the summary) and,
      added up, would overflow the store's 64-bit integers: refused.
    - ``max_text``: characters of one XML element's text or JSON string (longer is cut, and
      the report says so); ``max_headers``: octets of a failure report's original headers.
    """

    max_input: int = 64 * MIB
    max_expanded: int = 64 * MIB
    max_members: int = 100
    max_parts: int = 200
    max_depth: int = 3
    max_records: int = 100_000
    max_count: int = 1 << 32
    max_text: int = 1024
    max_headers: int = 16 * 1024


DEFAULT_LIMITS = ReadLimits()


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit]


def describe_size(octets: int) -> str:
    """``64 MiB`` or ``1,000 octets``."""
    if octets >= MIB and octets % MIB == 0:
        return f"{octets // MIB} MiB"
    return f"{octets:,} octets"
