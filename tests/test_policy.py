"""Local DMARC override hooks (mailauth.policy): trusted mailing lists.

The trusted-ARC-sealer hook is tested with real ARC chains in test_arc.py.
"""

from __future__ import annotations

import pytest

from mailauth.dmarc import OverrideContext, OverrideType, PolicyOverride, Undecided
from mailauth.policy import trust_mailing_lists
from mailauth.results import (
    DkimOutcome,
    DkimResult,
    DmarcOutcome,
    DmarcResult,
    Policy,
    SpfCheck,
    SpfOutcome,
    SpfResult,
)

FAIL = DmarcOutcome(DmarcResult.FAIL, "example.net", Policy.REJECT, Policy.REJECT)


def _context(
    dkim: tuple[tuple[DkimResult, str], ...], spf: tuple[SpfResult, str] | None
) -> OverrideContext:
    check = SpfCheck(SpfOutcome(spf[0], "mailfrom", spf[1])) if spf else None
    outcomes = tuple(DkimOutcome(r, d, "s1", "ed25519-sha256") for r, d in dkim)
    return OverrideContext("192.0.2.10", "lists.example.org", "", check, outcomes, None, FAIL)


@pytest.mark.parametrize(
    ("dkim", "spf", "comment"),
    [
        (((DkimResult.PASS, "Lists.Example.ORG"),), None,
         "mailing list lists.example.org: dkim=pass header.d=Lists.Example.ORG"),
        (((DkimResult.FAIL, "example.net"), (DkimResult.PASS, "bounce.lists.example.org")),
         None, "mailing list lists.example.org: dkim=pass header.d=bounce.lists.example.org"),
        ((), (SpfResult.PASS, "lists.example.org"),
         "mailing list lists.example.org: spf=pass smtp.mailfrom=lists.example.org"),
        (((DkimResult.FAIL, "lists.example.org"),), (SpfResult.SOFTFAIL, "lists.example.org"),
         None),  # the list server did not authenticate itself
        (((DkimResult.PASS, "example.org"),), (SpfResult.PASS, "notlists.example.org"),
         None),  # a parent domain or a look-alike is not the list
        ((), None, None),
    ],
)  # fmt: skip
def test_trusted_mailing_lists(
    dkim: tuple[tuple[DkimResult, str], ...], spf: tuple[SpfResult, str] | None, comment: str | None
) -> None:
    hook = trust_mailing_lists(["lists.example.org."])
    override = hook(_context(dkim, spf))
    if comment is None:
        assert override is None
    else:
        assert isinstance(override, PolicyOverride)
        assert (override.kind, override.disposition) == (OverrideType.MAILING_LIST, Policy.NONE)
        assert override.comment == comment


def test_a_bad_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="a b"):
        trust_mailing_lists(["a b"])


@pytest.mark.parametrize(
    ("dkim", "spf", "expected"),
    [
        (((DkimResult.TEMPERROR, "lists.example.org"),), None,
         "mailing list lists.example.org: dkim=temperror header.d=lists.example.org"),
        ((), (SpfResult.TEMPERROR, "bounce.lists.example.org"),
         "mailing list lists.example.org: spf=temperror smtp.mailfrom=bounce.lists.example.org"),
        # a pass decides, whatever failed temporarily beside it
        (((DkimResult.TEMPERROR, "lists.example.org"),), (SpfResult.PASS, "lists.example.org"),
         None),
        # a temporary failure of another domain's says nothing about the list
        (((DkimResult.TEMPERROR, "example.net"),), (SpfResult.TEMPERROR, "example.net"), None),
    ],
)  # fmt: skip
def test_a_list_server_whose_authentication_failed_temporarily_is_undecided(
    dkim: tuple[tuple[DkimResult, str], ...],
    spf: tuple[SpfResult, str] | None,
    expected: str | None,
) -> None:
    """The list's key lookup timed out: whether it is the trusted list is not known, so the
    hook cannot decide (DMARC temperror), rather than let the policy reject the list's mail
    that the override lets through when DNS works."""
    override = trust_mailing_lists(["lists.example.org"])(_context(dkim, spf))
    if expected is None:
        assert not isinstance(override, Undecided)
    else:
        assert isinstance(override, Undecided)
        assert override.reason == expected
