"""The exception hierarchy of mailauth.

Checks return outcomes (fail, temperror, permerror with a reason); they raise only when the
caller misuses the API: a malformed IP address, a message that is not a message, an invalid
domain name handed to the resolver. Every exception derives from :class:`MailauthError`.
"""

from __future__ import annotations


class MailauthError(Exception):
    """Root of every exception raised by mailauth."""


class MessageParseError(MailauthError, ValueError):
    """The input is not a message at all: empty, or binary data (an empty header section is
    a message: see :mod:`mailauth.message`)."""


class InvalidDomainError(MailauthError, ValueError):
    """A name that cannot be a DNS domain name (empty label, label over 63 octets, ...)."""


class DnsTempError(MailauthError):
    """A DNS query failed temporarily (timeout, SERVFAIL, REFUSED, network error)."""


class RecordSyntaxError(MailauthError, ValueError):
    """A DNS record (SPF, DKIM key, DMARC policy) does not follow its grammar."""


class SigningError(MailauthError):
    """A message could not be signed (bad key, message without From, ...)."""


class ConfigError(MailauthError, ValueError):
    """A configuration file or option is invalid."""
