"""mailauth: email authentication for Python (SPF, DKIM, ARC, DMARC, Authentication-Results).

The public API is what ``__all__`` lists; ``mailauth.dns`` holds the resolvers.
"""

from __future__ import annotations

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
from mailauth.pipeline import Authenticator
from mailauth.results import (
    ArcOutcome,
    ArcResult,
    DkimOutcome,
    DkimResult,
    DmarcOutcome,
    DmarcResult,
    Policy,
    SpfCheck,
    SpfOutcome,
    SpfResult,
    Verdict,
)

__all__ = [
    "ArcOutcome",
    "ArcResult",
    "Authenticator",
    "Author",
    "ConfigError",
    "DkimOutcome",
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
    "RecordSyntaxError",
    "SigningError",
    "SpfCheck",
    "SpfOutcome",
    "SpfResult",
    "Verdict",
]
