"""Which keys sign an outbound message, and whether its SMTP-authenticated sender may have it
signed: OpenDKIM's SigningTable (first match wins, several keys per entry) over the address
chosen by ``identity`` (From, Sender or the Return-Path, in the configured order), and
mailauth's binding of each ``{auth_authen}`` user to the addresses it may sign for, so that
one compromised account cannot get mail signed for every hosted domain. Patterns are
mailauth.config_signing's; the format is in docs/signing.md.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mailauth.address import AddressError, parse_address_list
from mailauth.config import KeySpec
from mailauth.config_signing import (
    NamedKey,
    SignatureSettings,
    SigningConfig,
    fold_login,
    match_pattern,
)
from mailauth.dkim import Signer
from mailauth.domains import name_and_parents, normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.message import Message


@dataclass(frozen=True, slots=True)
class SigningRule:
    """A SigningTable entry: a normalised pattern and its signers (none: not signed)."""

    pattern: str
    signers: tuple[Signer, ...]


@dataclass(frozen=True, slots=True)
class SigningPolicy:
    """The table, the identity sources, the user bindings (None: none; SASL login names
    matched in any ASCII case) and what happens to a message a user may not have signed:
    ``refuse`` (550) or ``unsigned``."""

    rules: tuple[SigningRule, ...] = ()
    identity: tuple[str, ...] = ("from",)
    users: Mapping[str, tuple[str, ...]] | None = None
    unauthorized: str = "refuse"
    # Each pattern's first rule: a message's candidates (its address, its domain, each
    # parent's ``*.parent``, ``*``) are looked up, the earliest wins -- first match in a
    # few dictionary lookups, whatever the table's size (a scan of 10,000 entries took 9 ms).
    first: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.users is not None:  # (logins match in any ASCII case: fold_login)
            folded = {fold_login(user): patterns for user, patterns in self.users.items()}
            object.__setattr__(self, "users", folded)
        first: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            first.setdefault(rule.pattern, index)
        object.__setattr__(self, "first", first)

    def rule_for(self, local: str, domain: str) -> SigningRule | None:
        """The first rule matching ``local@domain`` (as :func:`match_pattern` matches)."""
        candidates = [
            domain,
            "*",
            *(f"*.{p}" for p in itertools.islice(name_and_parents(domain), 1, None)),
        ]
        if local:
            candidates.append(f"{local}@{domain}")
        found = [self.first[c] for c in candidates if c in self.first]
        return self.rules[min(found)] if found else None


@dataclass(frozen=True, slots=True)
class Choice:
    """The signers for a message; ``identity`` the address (or ``@domain``) that chose
    them; ``refused`` the domain the authenticated user may not sign for ("" if none)."""

    signers: tuple[Signer, ...] = ()
    identity: str = ""
    refused: str = ""


def choose_signers(policy: SigningPolicy, message: Message, mail_from: str, user: str) -> Choice:
    """The first rule matching the first identity source the message has; when ``user``
    (``{auth_authen}``) is bound, every From address and the identity must be among its
    patterns, else ``refused`` names the first domain outside them."""
    found = _identity(policy.identity, message, mail_from)
    if found is None:
        return Choice()
    local, domain = found
    shown = f"{local}@{domain}" if local else f"@{domain}"
    rule = policy.rule_for(local, domain)
    if rule is None or not rule.signers:
        return Choice(identity=shown)
    if user and policy.users is not None:
        allowed = policy.users.get(fold_login(user), policy.users.get("*", ()))
        author = [(m.local_part.lower(), m.domain) for m in message.author().mailboxes]
        for mailbox, name in [*author, (local, domain)]:
            if not any(match_pattern(p, mailbox, name) for p in allowed):
                return Choice(identity=shown, refused=_shown_domain(name))
    return Choice(rule.signers, shown)


def _identity(sources: tuple[str, ...], message: Message, mail_from: str) -> tuple[str, str] | None:
    """(local part lowercased or "", domain) of the first source present and usable."""
    for source in sources:
        if source == "from":
            author = message.author()
            if author.field_count != 1 or author.error or len(author.domains) != 1:
                continue  # several From fields, author domains (or none): not on its account
            if not author.domains[0]:
                continue
            boxes = author.mailboxes
            return (boxes[0].local_part.lower() if len(boxes) == 1 else ""), boxes[0].domain
        if source == "sender":
            fields = message.get_all("Sender")
            if len(fields) != 1:
                continue
            try:
                sender = parse_address_list(fields[0].value.decode("utf-8", "replace"))
            except AddressError:
                continue
            if len(sender) == 1 and sender[0].domain:
                return sender[0].local_part.lower(), sender[0].domain
        elif source == "return-path":
            local, at, domain = mail_from.strip().strip("<>").rpartition("@")
            if not (at and local and domain):
                continue  # the null reverse-path (bounces) has no identity
            try:
                return local.lower(), normalize_domain(domain)
            except InvalidDomainError:
                continue
    return None


def _shown_domain(name: str) -> str:
    """A domain for a reply text: normalised already; anything unusual taken out."""
    return re.sub(r"[^A-Za-z0-9.\-_]", "", name)[:253] or "this domain"


def build_signing_policy(signing: SigningConfig, legacy: Sequence[KeySpec] = ()) -> SigningPolicy:
    """The policy of ``[signing]``, with the ``[[outbound.keys]]`` after its table: each
    key's ``sign_for`` (or its domain) as entries, exact names first, then ``*.parent``
    nearest first -- the order in which first-match gives their documented meaning (an
    exact name wins, then the nearest parent; all keys of the winning entry sign). Loads
    the keys (SigningError when one is unusable)."""
    named = {key.name: _signer(key, key.settings) for key in signing.keys}
    rules = [SigningRule(e.pattern, tuple(named[n] for n in e.keys)) for e in signing.table]
    grouped: dict[str, tuple[Signer, ...]] = {}
    for spec in legacy:
        signer = _signer(NamedKey("", spec.domain, spec.selector, spec.key), signing.settings)
        for pattern in spec.sign_for or (signer.domain,):
            grouped[pattern] = (*grouped.get(pattern, ()), signer)
    exact = [p for p in grouped if not p.startswith("*.")]
    parents = sorted((p for p in grouped if p.startswith("*.")), key=lambda p: -p.count("."))
    rules += [SigningRule(p, grouped[p]) for p in [*exact, *parents]]
    return SigningPolicy(
        rules=tuple(rules),
        identity=signing.identity,
        users=dict(signing.users) if signing.users is not None else None,
        unauthorized=signing.unauthorized,
    )


def _signer(key: NamedKey, settings: SignatureSettings) -> Signer:
    return Signer(
        key.domain,
        key.selector,
        key.key,
        canonicalization=settings.canonicalization,
        headers=settings.headers,
        oversign=settings.oversign,
        skip=settings.skip_headers,
        expire=settings.expire or None,
    )
