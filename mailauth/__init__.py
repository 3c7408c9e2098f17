"""mailauth: email authentication for Python (SPF, DKIM, ARC, DMARC, Authentication-Results).

The public API is what ``__all__`` lists; ``mailauth.dns`` holds the resolvers and
``mailauth.dkim`` the DKIM building blocks (streaming verification, keys);
``mailauth.reports`` the DMARC report store and recorders (docs/reports.md).
"""

from __future__ import annotations

from mailauth.arc import Sealer
from mailauth.dkim import DkimPolicy, Signer, sign_dkim
from mailauth.errors import (
    ConfigError,
    DnsTempError,
    InvalidDomainError,
    MailauthError,
    MessageParseError,
    RecordSyntaxError,
    SigningError,
)
from mailauth.message import Author, HeaderField, Message
from mailauth.pipeline import Authenticator, VerdictRecorder
from mailauth.results import (
    ArcOutcome,
    ArcResult,
    ArcSetInfo,
    DkimOutcome,
    DkimResult,
    DmarcOutcome,
    DmarcResult,
    Policy,
    PublishedPolicy,
    SpfCheck,
    SpfOutcome,
    SpfResult,
    Verdict,
)

__all__ = [
    "ArcOutcome",
    "ArcResult",
    "ArcSetInfo",
    "Authenticator",
    "Author",
    "ConfigError",
    "DkimOutcome",
    "DkimPolicy",
    "DkimResult",
    "DmarcOutcome",
    "DmarcResult",
    "DnsTempError",
    "HeaderField",
    "InvalidDomainError",
    "MailauthError",
    "Message",
    "MessageParseError",
    "Policy",
    "PublishedPolicy",
    "RecordSyntaxError",
    "Sealer",
    "Signer",
    "SigningError",
    "SpfCheck",
    "SpfOutcome",
    "SpfResult",
    "Verdict",
    "VerdictRecorder",
    "sign_dkim",
]
