"""The signing table (mailauth.milter.signing_table) against a sender who shapes its From
fields: a message with more than one From field (RFC 5322 3.6: exactly one) is never
signed, whatever the second one holds (an empty group shows as a display name alone)."""

from __future__ import annotations

import pytest

from mailauth.message import Message
from mailauth.milter.signing_table import SigningPolicy, SigningRule, choose_signers
from tests.test_signing_table import RSA_SIGNER

POLICY = SigningPolicy(
    rules=(SigningRule("example.com", (RSA_SIGNER,)),),
    users={"alice": ("alice@example.com",)},
)


@pytest.mark.parametrize(
    "fields",
    [
        "From: Victim CEO:;\r\nFrom: alice@example.com\r\n",  # an empty group: a name alone
        "From: alice@example.com\r\nFrom: Victim CEO:;\r\n",
        "From: (ceo@victim.example)\r\nFrom: alice@example.com\r\n",
        "From:\r\nFrom: alice@example.com\r\n",
        "From: alice@example.com\r\nFrom: alice@example.com\r\n",
    ],
)
@pytest.mark.parametrize("user", ["alice", ""])
def test_two_from_fields_are_not_signed(fields: str, user: str) -> None:
    message = Message.parse(f"{fields}Subject: s\r\n\r\nbody\r\n".encode())
    choice = choose_signers(POLICY, message, "<alice@example.com>", user)
    assert choice.signers == ()


def test_one_from_field_is_signed() -> None:
    message = Message.parse(b"From: Alice <alice@example.com>\r\nSubject: s\r\n\r\nbody\r\n")
    assert choose_signers(POLICY, message, "<alice@example.com>", "alice").signers
