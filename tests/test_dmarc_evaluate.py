"""DMARC evaluation (RFC 9989 5.3): author domain, policy discovery, alignment, policy,
disposition and local overrides; the RFC 7489 mode; Authentication-Results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import pytest

from mailauth.authresults import render_authentication_results
from mailauth.dmarc import (
    DmarcLocalPolicy,
    DmarcMode,
    OverrideContext,
    OverrideType,
    PolicyOverride,
    evaluate_dmarc,
)
from mailauth.dmarc.memo import DiscoveryMemo
from mailauth.dns import DnsResolver, Record, RRType, ZoneResolver
from mailauth.message import Message
from mailauth.plan import run_plan
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

PASS, FAIL, NONE = DmarcResult.PASS, DmarcResult.FAIL, DmarcResult.NONE
TEMPERROR, PERMERROR = DmarcResult.TEMPERROR, DmarcResult.PERMERROR
REJECT = Policy.REJECT


def make_zone(
    dmarc: Mapping[str, str | list[str]],
    *,
    exists: Iterable[str] = (),
    faults: Mapping[str, str] | None = None,
) -> ZoneResolver:
    data: dict[tuple[str, RRType], tuple[int, tuple[Record, ...]]] = {}
    for name, value in dmarc.items():
        texts = [value] if isinstance(value, str) else value
        data[(f"_dmarc.{name}", RRType.TXT)] = (300, tuple(t.encode() for t in texts))
    for name in exists:
        data[(name, RRType.A)] = (300, ("192.0.2.1",))
    return ZoneResolver(data, faults=faults or {})


def evaluate(
    resolver: DnsResolver,
    from_field: str = "Alice <alice@example.com>",
    *,
    spf: tuple[SpfResult, str] | None = None,
    dkim: Sequence[tuple[DkimResult, str]] = (),
    local: DmarcLocalPolicy | None = None,
    raw_headers: bytes | None = None,
) -> DmarcOutcome:
    headers = raw_headers if raw_headers is not None else f"From: {from_field}\r\n".encode()
    message = Message.parse(headers + b"Subject: t\r\n\r\nbody\r\n")
    spf_check = SpfCheck(SpfOutcome(spf[0], "mailfrom", spf[1])) if spf else None
    outcomes = [DkimOutcome(result, d, "s", "rsa-sha256") for result, d in dkim]
    plan = evaluate_dmarc(message.author(), spf=spf_check, dkim=outcomes, local=local)
    return run_plan(plan, resolver)


ORG = {"example.com": "v=DMARC1; p=reject; rua=mailto:d@example.com"}
STRICT = {"example.com": "v=DMARC1; p=reject; adkim=s; aspf=s"}


@pytest.mark.parametrize(
    ("records", "author", "ids", "result", "why"),
    [
        (ORG, "a@example.com", ((SpfResult.PASS, "example.com"), []), PASS, "SPF identical"),
        (ORG, "a@example.com", ((SpfResult.PASS, "bounce.example.com"), []), PASS, "SPF relaxed"),
        (STRICT, "a@example.com", ((SpfResult.PASS, "bounce.example.com"), []), FAIL, "SPF strict"),
        (ORG, "a@example.com", ((SpfResult.FAIL, "example.com"), []), FAIL, "SPF not pass"),
        (ORG, "a@example.com", ((SpfResult.PASS, "example.net"), []), FAIL, "SPF unaligned"),
        (
            ORG,
            "a@example.com",
            (None, [(DkimResult.PASS, "mail.example.com")]),
            PASS,
            "DKIM relaxed",
        ),
        (
            STRICT,
            "a@example.com",
            (None, [(DkimResult.PASS, "mail.example.com")]),
            FAIL,
            "DKIM strict",
        ),
        (
            STRICT,
            "a@example.com",
            (None, [(DkimResult.PASS, "example.com")]),
            PASS,
            "DKIM strict same",
        ),
        (ORG, "a@example.com", (None, [(DkimResult.FAIL, "example.com")]), FAIL, "DKIM not pass"),
        (
            ORG,
            "a@example.com",
            (
                (SpfResult.FAIL, "example.com"),
                [(DkimResult.FAIL, "example.com"), (DkimResult.PASS, "example.com")],
            ),
            PASS,
            "failing SPF, one aligned passing DKIM signature",
        ),
        (
            ORG,
            "a@news.example.com",
            ((SpfResult.PASS, "example.com"), []),
            PASS,
            "author below org",
        ),
        (
            {"example.co.uk": "v=DMARC1; p=reject"},
            "a@mail.example.co.uk",
            ((SpfResult.PASS, "bounce.example.co.uk"), []),
            PASS,
            "relaxed under a two-label public suffix",
        ),
        (
            {"example.co.uk": "v=DMARC1; p=reject"},
            "a@example.co.uk",
            ((SpfResult.PASS, "other.co.uk"), []),
            FAIL,
            "a sibling under co.uk is another organization",
        ),
        (
            {"example.com": "v=DMARC1; p=reject", "dept.example.com": "v=DMARC1; p=none; psd=n"},
            "a@example.com",
            (None, [(DkimResult.PASS, "x.dept.example.com")]),
            FAIL,
            "psd=n makes dept.example.com its own organization",
        ),
    ],
)
def test_alignment(
    records: dict[str, str],
    author: str,
    ids: tuple[tuple[SpfResult, str] | None, list[tuple[DkimResult, str]]],
    result: DmarcResult,
    why: str,
) -> None:
    spf, dkim = ids
    outcome = evaluate(make_zone(records), author, spf=spf, dkim=dkim)
    assert outcome.result is result, (why, outcome)


def test_pass_reports_which_identifiers_aligned() -> None:
    outcome = evaluate(
        make_zone(ORG),
        spf=(SpfResult.PASS, "example.com"),
        dkim=[(DkimResult.PASS, "example.com"), (DkimResult.PASS, "example.net")],
    )
    assert outcome.spf_aligned
    assert outcome.dkim_aligned == ("example.com",)
    assert (outcome.policy, outcome.disposition, outcome.policy_tag) == (
        Policy.REJECT,
        Policy.NONE,
        "p",
    )


def test_fail_with_p_reject_is_disposition_reject() -> None:
    outcome = evaluate(make_zone(ORG), spf=(SpfResult.PASS, "example.net"))
    assert (outcome.result, outcome.policy, outcome.disposition) == (
        FAIL,
        Policy.REJECT,
        Policy.REJECT,
    )
    assert (outcome.policy_domain, outcome.org_domain) == ("example.com", "example.com")


SUB = {"example.com": "v=DMARC1; p=reject; sp=quarantine; np=none"}


def test_rfc9989_4_10_1_existing_subdomain_gets_sp() -> None:
    outcome = evaluate(make_zone(SUB, exists=["news.example.com"]), "a@news.example.com")
    assert (outcome.policy, outcome.policy_tag, outcome.policy_domain) == (
        Policy.QUARANTINE,
        "sp",
        "example.com",
    )
    assert outcome.disposition is Policy.QUARANTINE


def test_rfc9989_4_10_1_nonexistent_subdomain_gets_np() -> None:
    outcome = evaluate(make_zone(SUB), "a@ghost.example.com")
    assert (outcome.policy, outcome.policy_tag) == (Policy.NONE, "np")
    assert outcome.disposition is Policy.NONE


def test_subdomain_with_its_own_record_uses_its_p() -> None:
    records = {**SUB, "news.example.com": "v=DMARC1; p=none"}
    outcome = evaluate(make_zone(records, exists=["news.example.com"]), "a@news.example.com")
    assert (outcome.policy, outcome.policy_tag, outcome.policy_domain) == (
        Policy.NONE,
        "p",
        "news.example.com",
    )
    assert outcome.org_domain == "example.com"


def test_psd_record_applies_when_the_organization_has_none() -> None:
    resolver = make_zone(
        {"example": "v=DMARC1; p=reject; np=quarantine; psd=y"}, exists=["shop.brand.example"]
    )
    outcome = evaluate(
        resolver, "a@shop.brand.example", dkim=[(DkimResult.PASS, "mail.brand.example")]
    )
    assert outcome.result is PASS  # same organizational domain: brand.example
    assert (outcome.org_domain, outcome.policy_domain) == ("brand.example", "example")
    failing = evaluate(resolver, "a@shop.brand.example")
    assert (failing.policy, failing.disposition) == (Policy.REJECT, Policy.REJECT)
    ghost = evaluate(resolver, "a@ghost.brand.example")
    assert (ghost.policy, ghost.policy_tag) == (Policy.QUARANTINE, "np")


@pytest.mark.parametrize(
    ("p", "disposition"), [("reject", Policy.QUARANTINE), ("quarantine", Policy.NONE)]
)
def test_rfc9989_4_7_test_mode_applies_one_step_below(p: str, disposition: Policy) -> None:
    outcome = evaluate(make_zone({"example.com": f"v=DMARC1; p={p}; t=y"}))
    assert outcome.result is FAIL
    assert outcome.testing
    assert outcome.disposition is disposition
    assert outcome.override == "policy_test_mode"


def test_no_record_means_dmarc_does_not_apply() -> None:
    outcome = evaluate(make_zone({}))
    assert (outcome.result, outcome.reason) == (NONE, "no DMARC policy record")


def test_rfc9989_4_10_1_record_without_valid_p() -> None:
    with_rua = evaluate(make_zone({"example.com": "v=DMARC1; rua=mailto:d@example.com"}))
    assert (with_rua.result, with_rua.policy, with_rua.disposition) == (
        FAIL,
        Policy.NONE,
        Policy.NONE,
    )
    assert "treated as p=none" in with_rua.reason
    without = evaluate(make_zone({"example.com": "v=DMARC1; p=bogus"}))
    assert without.result is NONE
    assert "no valid p=" in without.reason
    bad_sp = evaluate(
        make_zone({"example.com": "v=DMARC1; p=reject; sp=x; rua=mailto:d@example.com"})
    )
    assert bad_sp.disposition is Policy.NONE


@pytest.mark.parametrize(
    ("faults", "records", "author", "spf", "expected"),
    [
        ({"_dmarc.example.com": "timeout"}, {}, "a@example.com", None, TEMPERROR),
        # the author has no record and the walk above it fails
        ({"_dmarc.example.com": "servfail"}, {}, "a@x.example.com", None, TEMPERROR),
        # the policy is known but relaxed alignment needs the organizational domain
        (
            {"_dmarc.com": "timeout"},
            ORG,
            "a@example.com",
            (SpfResult.PASS, "b.example.com"),
            TEMPERROR,
        ),
        # identical domains need no organizational domain
        ({"_dmarc.com": "timeout"}, ORG, "a@example.com", (SpfResult.PASS, "example.com"), PASS),
        # np= needs to know whether the author domain exists
        ({"ghost.example.com": "timeout"}, SUB, "a@ghost.example.com", None, TEMPERROR),
    ],
)
def test_dns_failures(
    faults: dict[str, str],
    records: dict[str, str],
    author: str,
    spf: tuple[SpfResult, str] | None,
    expected: DmarcResult,
) -> None:
    outcome = evaluate(make_zone(records, faults=faults), author, spf=spf)
    assert outcome.result is expected, outcome
    if expected is TEMPERROR:
        assert (
            "timeout" in outcome.reason
            or "SERVFAIL" in outcome.reason
            or "unknown" in outcome.reason
        )


def test_policy_discovery_for_a_twelve_label_author_asks_at_most_eight_questions() -> None:
    resolver = make_zone({})
    outcome = evaluate(resolver, "a@a.b.c.d.e.f.g.h.i.j.k.example")
    assert outcome.result is NONE
    assert len(resolver.queries) <= 8


@pytest.mark.parametrize("mode", [DmarcMode.RFC9989, DmarcMode.RFC7489])
def test_an_author_domain_too_long_for_a_dmarc_name_is_walked_past(mode: DmarcMode) -> None:
    """A valid domain of 247-253 octets: _dmarc.<it> exceeds DNS's 253, so no record can be
    there. Found by fuzzing: the query raised InvalidDomainError out of Authenticator.verify.
    Now that name counts as NXDOMAIN (unasked) and the walk goes on to example.com."""
    long = ".".join(["a" * 61] * 3 + ["a" * 51]) + ".example.com"  # 249 octets
    resolver = make_zone(ORG, exists=[long])
    outcome = evaluate(resolver, f"alice@{long}", local=DmarcLocalPolicy(mode=mode))
    assert (outcome.result, outcome.policy_domain) == (FAIL, "example.com")
    assert outcome.disposition is Policy.REJECT  # sp= absent: p= applies, the name exists
    assert f"_dmarc.{long}" not in [query.name for query in resolver.queries]


@pytest.mark.parametrize(
    ("headers", "result", "reason"),
    [
        (b"To: b@example.org\r\n", NONE, "no From field"),
        (b"From: <<a@@>\r\n", PERMERROR, "unparseable"),
        (b"From: undisclosed-recipients:;\r\n", PERMERROR, "no address"),
        (b"From: a@[192.0.2.1]\r\n", NONE, "domain literal"),
    ],
)
def test_rfc9989_5_3_1_author_domain_problems(
    headers: bytes, result: DmarcResult, reason: str
) -> None:
    outcome = evaluate(make_zone(ORG), raw_headers=headers)
    assert outcome.result is result
    assert reason in outcome.reason


def test_every_author_domain_is_evaluated_and_the_strictest_failing_policy_applies() -> None:
    """RFC 9989 security considerations, "Denial of DMARC Processing Attacks" (RFC 7489
    6.6.1): a From field naming several domains must not escape a policy. It used to be
    "none: DMARC not applied", so From: ceo@bank, x@elsewhere evaded p=reject."""
    evasion = evaluate(make_zone(ORG), raw_headers=b"From: a@example.com, b@example.net\r\n")
    assert (evasion.result, evasion.domain, evasion.disposition) == (FAIL, "example.com", REJECT)
    assert evasion.reason.startswith(
        "2 author domains (example.com, example.net): the strictest failing policy applies"
    )
    both = {"example.com": "v=DMARC1; p=quarantine", "example.net": "v=DMARC1; p=reject"}
    strictest = evaluate(make_zone(both), "a@example.com, b@example.net")
    assert (strictest.result, strictest.domain, strictest.disposition) == (
        FAIL, "example.net", REJECT,
    )  # fmt: skip
    literal = evaluate(make_zone(ORG), "a@[192.0.2.1], b@example.com")  # a literal hides none
    assert (literal.result, literal.domain, literal.disposition) == (FAIL, "example.com", REJECT)
    signed = [(DkimResult.PASS, "example.com"), (DkimResult.PASS, "example.net")]
    passing = evaluate(make_zone(both), "a@example.com, b@example.net", dkim=signed)
    assert (passing.result, passing.domain) == (PASS, "example.com")
    assert passing.reason == "2 author domains (example.com, example.net)"
    one_without_policy = evaluate(make_zone(ORG), "a@example.net, b@example.com", dkim=signed)
    assert (one_without_policy.result, one_without_policy.domain) == (PASS, "example.com")
    # Several From fields break RFC 5322 (permerror), but must not hide a failing domain.
    two_fields = b"From: a@example.com\r\nFrom: b@example.com\r\n"
    hidden = evaluate(make_zone(ORG), raw_headers=two_fields)
    assert (hidden.result, hidden.domain, hidden.disposition) == (FAIL, "example.com", REJECT)
    assert hidden.reason.startswith(
        "2 From fields (RFC 5322 allows one); 1 author domain (example.com): the strictest"
    )
    malformed = evaluate(make_zone(ORG), raw_headers=two_fields, dkim=signed)
    assert (malformed.result, malformed.reason) == (
        PERMERROR,
        "2 From fields (RFC 5322 allows one)",
    )


@pytest.mark.parametrize(
    "from_field",
    [
        "ceo@example.com <ceo@example.com>",  # an address as display name, unquoted
        "CEO <ceo@example.com",  # unterminated angle address
        "ceo@example.com (CEO",  # unterminated comment
        '"CEO <ceo@example.com>',  # unterminated quoted string
        "ceo@@example.com",
        "Bank <ceo@EXAMPLE.com.>, <<x",
        "ceo@example.com, x@" + "a" * 64 + ".example",  # parses; one domain is invalid
        # Control characters (not atext, RFC 5322 3.2.3) gave dmarc=none: the domain asked
        # for a policy was "example.com\x7f". Mail readers show them as nothing.
        "CEO <ceo@example.com\x7f>",
        "ceo@example.com\x1b",
        "ceo@exam\x01ple.com",
        "ceo@example\x08.com",
        "ceo@example.com\x00",
    ],
)
def test_a_from_field_that_does_not_parse_still_fails_for_the_domain_it_shows(
    from_field: str,
) -> None:
    """Mail readers display these fields with the domain in them; permerror alone (what
    they gave) is a result no policy acts on, so a spoof escaped p=reject by breaking the
    syntax. The domains after an "@" are salvaged: a failing one gives fail; otherwise the
    field stays a permerror."""
    outcome = evaluate(make_zone(ORG), from_field)
    assert (outcome.result, outcome.domain, outcome.disposition) == (FAIL, "example.com", REJECT)
    assert outcome.reason.startswith(("unparseable From field: ", "invalid author domain: "))
    signed = evaluate(make_zone(ORG), from_field, dkim=[(DkimResult.PASS, "example.com")])
    assert signed.result is PERMERROR
    assert signed.reason.startswith(("unparseable From field: ", "invalid author domain: "))


def test_author_domains_beyond_the_limit_leave_the_evaluation_incomplete() -> None:
    zone = make_zone({"c.example": "v=DMARC1; p=reject"})
    local = DmarcLocalPolicy(max_author_domains=2)
    hidden = evaluate(zone, "x@a.example, y@b.example, z@c.example", local=local)
    assert hidden.result is PERMERROR  # not pass: c.example was not checked
    assert hidden.reason == (
        "3 author domains (a.example, b.example, c.example): only the first 2 checked, "
        "none of them failing"
    )
    found = evaluate(zone, "z@c.example, x@a.example, y@b.example", local=local)
    assert (found.result, found.domain, found.disposition) == (FAIL, "c.example", REJECT)
    before = len(zone.queries)
    evaluate(zone, ", ".join(f"u@d{i}.example" for i in range(1000)))  # the default limit, 5
    assert len(zone.queries) - before <= 5 * 8


def test_a_from_field_is_read_up_to_100_mailboxes() -> None:
    """75,000 mailboxes (0.9 MiB) took 3.8 s to read whole. The first 100 are read; more is
    malformed as "too many author domains" is incomplete: a failing domain among those read
    gives fail, otherwise permerror, never pass."""
    rest = ", ".join(f"u{i}@d{i}.example" for i in range(75_000))
    spoof = evaluate(make_zone(ORG), f"ceo@example.com, {rest}")
    assert (spoof.result, spoof.domain, spoof.disposition) == (FAIL, "example.com", REJECT)
    assert spoof.reason.startswith(
        "unparseable From field: more than 100 mailboxes (the rest not read); 100 author"
    )
    signed = [(DkimResult.PASS, "example.com")]
    passing = evaluate(make_zone(ORG), f"ceo@example.com, {rest}", dkim=signed)
    assert (passing.result, passing.reason) == (
        PERMERROR,
        "unparseable From field: more than 100 mailboxes (the rest not read)",
    )


def test_several_addresses_of_one_domain_and_u_labels() -> None:
    same = evaluate(make_zone(ORG), raw_headers=b"From: a@example.com, b@EXAMPLE.com\r\n")
    assert (same.result, same.domain) == (FAIL, "example.com")
    idn = evaluate(make_zone({"xn--bcher-kva.example": "v=DMARC1; p=none"}), "a@bücher.example")
    assert idn.domain == "xn--bcher-kva.example"
    assert idn.result is FAIL


def test_rfc7489_mode_uses_the_psl_and_pct() -> None:
    records = {"example.co.uk": "v=DMARC1; p=reject; pct=50; t=y; np=none"}
    resolver = make_zone(records)
    sampled = DmarcLocalPolicy(mode=DmarcMode.RFC7489, sampler=lambda: 0.2)
    not_sampled = DmarcLocalPolicy(mode=DmarcMode.RFC7489, sampler=lambda: 0.7)
    hit = evaluate(resolver, "a@ghost.mail.example.co.uk", local=sampled)
    assert (hit.policy_domain, hit.org_domain) == ("example.co.uk", "example.co.uk")
    assert (hit.policy_tag, hit.disposition) == ("p", Policy.REJECT)  # t= and np= are RFC 9989
    miss = evaluate(resolver, "a@ghost.mail.example.co.uk", local=not_sampled)
    assert (miss.disposition, miss.override) == (Policy.QUARANTINE, "sampled_out")
    aligned = evaluate(
        resolver, "a@example.co.uk", spf=(SpfResult.PASS, "x.example.co.uk"), local=sampled
    )
    assert aligned.result is PASS
    queries = [q.name for q in resolver.queries]
    assert "_dmarc.co.uk" not in queries  # no tree walk in RFC 7489 mode


def test_local_override_changes_the_disposition_not_the_result() -> None:
    seen: list[OverrideContext] = []

    def mailing_lists(context: OverrideContext) -> PolicyOverride | None:
        seen.append(context)
        if context.outcome.domain == "example.com":
            return PolicyOverride(OverrideType.MAILING_LIST, "list.example.org is trusted")
        return None

    local = DmarcLocalPolicy(overrides=(mailing_lists,))
    outcome = evaluate(make_zone(ORG), local=local)
    assert (outcome.result, outcome.disposition) == (FAIL, Policy.NONE)
    assert (outcome.override, outcome.override_comment) == (
        "mailing_list",
        "list.example.org is trusted",
    )
    assert seen[0].outcome.disposition is Policy.REJECT
    evaluate(make_zone(ORG), spf=(SpfResult.PASS, "example.com"), local=local)
    assert len(seen) == 1  # not asked about a pass


def test_authentication_results_clause() -> None:
    outcome = evaluate(make_zone(ORG))
    header = render_authentication_results("mx.example.org", dmarc=outcome)
    assert header.replace("\r\n ", " ") == (
        "Authentication-Results: mx.example.org; dmarc=fail (p=reject dis=reject) "
        "header.from=example.com policy.dmarc=reject"
    )
    none = evaluate(make_zone({}))
    text = render_authentication_results("mx.example.org", dmarc=none).replace("\r\n ", " ")
    assert text.endswith('dmarc=none reason="no DMARC policy record" header.from=example.com')


# RFC 9989 "Determine Handling Policy": no aligned pass, and an aligned identifier failed
# temporarily -> no DMARC failure can be concluded and no policy is applied.
@pytest.mark.parametrize("mode", [DmarcMode.RFC9989, DmarcMode.RFC7489])
@pytest.mark.parametrize(
    ("spf", "dkim", "result", "named"),
    [
        ((SpfResult.TEMPERROR, "example.com"), [], TEMPERROR, "smtp.mailfrom=example.com"),
        ((SpfResult.TEMPERROR, "bounce.example.com"), [], TEMPERROR, "bounce.example.com"),
        (None, [(DkimResult.TEMPERROR, "example.com")], TEMPERROR, "header.d=example.com"),
        (None, [(DkimResult.TEMPERROR, "mail.example.com")], TEMPERROR, "mail.example.com"),
        (
            (SpfResult.TEMPERROR, "example.com"),
            [(DkimResult.TEMPERROR, "example.com")],
            TEMPERROR,
            "spf=temperror",
        ),
        (
            (SpfResult.FAIL, "example.com"),
            [(DkimResult.FAIL, "example.com"), (DkimResult.TEMPERROR, "example.com")],
            TEMPERROR,
            "dkim=temperror",
        ),
        # Not aligned: the temporary error cannot change the outcome.
        ((SpfResult.TEMPERROR, "example.net"), [], FAIL, ""),
        (None, [(DkimResult.TEMPERROR, "example.net")], FAIL, ""),
        # An aligned pass decides: a temporary error elsewhere does not matter.
        ((SpfResult.TEMPERROR, "example.com"), [(DkimResult.PASS, "example.com")], PASS, ""),
        ((SpfResult.PASS, "example.com"), [(DkimResult.TEMPERROR, "example.com")], PASS, ""),
    ],
)
def test_rfc9989_temperror_of_an_aligned_identifier_is_not_a_failure(
    mode: DmarcMode,
    spf: tuple[SpfResult, str] | None,
    dkim: list[tuple[DkimResult, str]],
    result: DmarcResult,
    named: str,
) -> None:
    outcome = evaluate(
        make_zone(ORG), "a@example.com", spf=spf, dkim=dkim, local=DmarcLocalPolicy(mode=mode)
    )
    assert outcome.result is result
    assert named in outcome.reason
    if result is TEMPERROR:  # no disposition; the policy at stake is kept (docs/milter.md)
        assert outcome.disposition is Policy.NONE
        assert outcome.policy is REJECT
        assert not outcome.override


def test_rfc9989_temperror_of_a_strictly_unaligned_identifier_is_a_failure() -> None:
    outcome = evaluate(
        make_zone(STRICT),
        "a@example.com",
        spf=(SpfResult.TEMPERROR, "bounce.example.com"),
        dkim=[(DkimResult.TEMPERROR, "mail.example.com")],
    )
    assert outcome.result is FAIL
    assert outcome.disposition is REJECT


# --- DNS faults are never a verdict (issue 14): every other path, zone pragmas and the wire -

PSD = {"example": "v=DMARC1; p=reject; psd=y"}


@pytest.mark.parametrize(
    ("faults", "records", "author", "local", "expected"),
    [
        # RFC 7489 mode: the PSL Organizational Domain's record cannot be read
        ({"_dmarc.example.com": "timeout"}, {}, "a@x.example.com", DmarcMode.RFC7489, TEMPERROR),
        ({}, ORG, "a@x.example.com", DmarcMode.RFC7489, FAIL),
        # the author's own record cannot be read, though the org domain's can
        (
            {"_dmarc.x.example.com": "servfail"},
            ORG,
            "a@x.example.com",
            DmarcMode.RFC7489,
            TEMPERROR,
        ),
        # PSD (RFC 9989 4.10.2): the walk fails between the author and the PSD's record
        ({"_dmarc.x.example": "timeout"}, PSD, "a@y.x.example", DmarcMode.RFC9989, TEMPERROR),
        ({"_dmarc.x.example": "timeout"}, PSD, "a@x.example", DmarcMode.RFC9989, TEMPERROR),
        # ... and without the fault, the PSD's policy applies
        ({}, PSD, "a@y.x.example", DmarcMode.RFC9989, FAIL),
    ],
)
def test_dns_failures_in_policy_discovery(
    faults: dict[str, str],
    records: dict[str, str],
    author: str,
    local: DmarcMode,
    expected: DmarcResult,
) -> None:
    outcome = evaluate(make_zone(records, faults=faults), author, local=DmarcLocalPolicy(local))
    assert outcome.result is expected, outcome
    assert outcome.disposition is (REJECT if expected is FAIL else Policy.NONE)


def test_a_malformed_from_field_with_a_dns_failure_is_temperror_not_permerror() -> None:
    """Several From fields are permerror unless a domain fails; when DNS keeps a domain's
    result unknown, it may fail: temperror (on_error), not a permerror the policy ignores."""
    two_fields = b"From: a@x.example.com\r\nFrom: b@x.example.com\r\n"
    fine, zone = make_zone(ORG), make_zone(ORG, faults={"_dmarc.x.example.com": "timeout"})
    assert evaluate(fine, raw_headers=two_fields).disposition is REJECT
    outcome = evaluate(zone, raw_headers=two_fields)
    assert (outcome.result, outcome.disposition) == (TEMPERROR, Policy.NONE)
    assert outcome.reason.startswith("2 From fields (RFC 5322 allows one); 1 author domain")
    assert "timeout" in outcome.reason
    assert evaluate(fine, "CEO <ceo@x.example.com").disposition is REJECT
    assert evaluate(zone, "CEO <ceo@x.example.com").result is TEMPERROR


def test_several_author_domains_with_a_dns_failure() -> None:
    """A failing domain still decides (a fault elsewhere does not hide it); otherwise the
    domain DNS could not settle makes the whole temperror, not none or pass."""
    zone = make_zone(
        {"example.com": "v=DMARC1; p=reject", "example.net": "v=DMARC1; p=reject"},
        faults={"_dmarc.example.org": "servfail"},
    )
    signed = [(DkimResult.PASS, "example.com")]
    unknown = evaluate(zone, "a@example.com, b@example.org", dkim=signed)
    assert (unknown.result, unknown.domain) == (TEMPERROR, "example.org")
    failing = evaluate(zone, "a@example.org, b@example.net", dkim=signed)
    assert (failing.result, failing.domain, failing.disposition) == (FAIL, "example.net", REJECT)


def test_rfc6604_an_author_domain_owning_a_cname_exists() -> None:
    """np= is for names that do not exist; an NXDOMAIN at the end of a CNAME the author
    domain owns speaks of the target (RFC 6604 3), so sp= applies, not np=."""
    zone = ZoneResolver(
        {
            ("_dmarc.example.com", RRType.TXT): (300, (b"v=DMARC1; p=reject; sp=none; np=reject",)),
            ("alias.example.com", RRType.CNAME): (300, ("gone.example.net",)),
        }
    )
    outcome = evaluate(zone, "a@alias.example.com")
    assert (outcome.policy_tag, outcome.disposition) == ("sp", Policy.NONE)
    assert evaluate(zone, "a@ghost.example.com").policy_tag == "np"


def test_an_unknown_organizational_domain_is_walked_once() -> None:
    """The author's policy is known but the walk above it failed: relaxed alignment of each
    identifier needs the Organizational Domain; the failed walk is not asked again for
    every identifier (with a silent server, each walk would cost the DNS lifetime)."""
    zone = make_zone(ORG, faults={"_dmarc.com": "timeout"})
    dkim = [(DkimResult.PASS, f"s{i}.example.com") for i in range(5)]
    outcome = evaluate(zone, "a@example.com", dkim=dkim)
    assert outcome.result is TEMPERROR and "organizational domain" in outcome.reason
    assert [q.name for q in zone.queries].count("_dmarc.com") == 1


LOOPBACK_ZONE = """
$ORIGIN example.com.
$TTL 300
@       IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60
_dmarc  IN TXT "v=DMARC1; p=reject; sp=none; np=reject"
news    IN A   192.0.2.1
alias   IN CNAME gone.example.net.
"""
WIRE_FAULTS = ["silent", "servfail", "truncate_tcp_refused"]


@pytest.mark.parametrize("fault", WIRE_FAULTS)
@pytest.mark.parametrize(
    ("name", "author", "raw"),
    [
        pytest.param("_dmarc.example.com", "a@example.com", None, id="policy-record"),
        pytest.param("_dmarc.example.com", "a@x.example.com", None, id="org-domain-in-walk"),
        pytest.param("ghost.example.com", "a@ghost.example.com", None, id="np-existence"),
        pytest.param(
            "_dmarc.example.com",
            "",
            b"From: a@example.com\r\nFrom: b@example.com\r\n",
            id="two-from-fields",
        ),
    ],
)
def test_dns_failures_on_the_wire_are_temperror(
    fault: str, name: str, author: str, raw: bytes | None
) -> None:
    """Through dnspython and a real server: a timeout, SERVFAIL, or a truncated answer whose
    TCP retry is refused. Without the fault, each of these messages is rejected."""
    from tests.dnsserver import LoopbackDnsServer

    for faults in ({}, {name: fault}):
        with LoopbackDnsServer(LOOPBACK_ZONE, faults=faults) as server:
            outcome = evaluate(server.resolver(), author, raw_headers=raw)
        if not faults:
            assert (outcome.result, outcome.disposition) == (FAIL, REJECT), outcome
        else:
            assert (outcome.result, outcome.disposition) == (TEMPERROR, Policy.NONE), outcome


def test_a_cname_owner_exists_on_the_wire() -> None:
    from tests.dnsserver import LoopbackDnsServer

    with LoopbackDnsServer(LOOPBACK_ZONE) as server:
        outcome = evaluate(server.resolver(), "a@alias.example.com")
    assert (outcome.result, outcome.policy_tag, outcome.disposition) == (FAIL, "sp", Policy.NONE)


def _remembering(zone: ZoneResolver, memo: DiscoveryMemo) -> Callable[[], tuple[DmarcOutcome, int]]:
    """An evaluation of a@example.com (DKIM pass for example.com) with ``memo``: its outcome
    and how many questions it asked."""
    author = Message.parse(b"From: a@example.com\r\n\r\n").author()
    dkim = [DkimOutcome(DkimResult.PASS, "example.com", "s", "rsa-sha256")]

    def run() -> tuple[DmarcOutcome, int]:
        zone.queries.clear()
        outcome = run_plan(evaluate_dmarc(author, spf=None, dkim=dkim, memo=memo), zone)
        return outcome, len(zone.queries)

    return run


def test_policy_discovery_is_remembered_while_its_answers_are_valid() -> None:
    """An Author Domain seen moments ago: its discovery is reused, no question asked, the
    same outcome; until its shortest TTL (300 s here) or the memo's age limit runs out."""
    clock = [1000.0]
    zone = make_zone({"example.com": "v=DMARC1; p=reject; psd=n"})  # (psd=n: a walk of one)
    run = _remembering(zone, DiscoveryMemo(lambda: clock[0], max_age=600))
    first, asked = run()
    assert first.result is PASS and first.policy is Policy.REJECT and asked == 1
    assert run() == (first, 0)
    clock[0] += 299
    assert run() == (first, 0)
    clock[0] += 2
    assert run() == (first, 1)  # the answer's TTL ran out: asked again
    short = _remembering(zone, DiscoveryMemo(lambda: clock[0], max_age=60))
    assert short() == (first, 1)
    clock[0] += 61
    assert short() == (first, 1)  # older than max_age


def test_policy_discovery_after_a_temporary_failure_or_uncacheable_answer_is_not_kept() -> None:
    clock = [1000.0]
    failing = make_zone({}, faults={"_dmarc.example.com": "timeout"})
    run = _remembering(failing, DiscoveryMemo(lambda: clock[0]))
    outcome, asked = run()
    assert outcome.result is DmarcResult.TEMPERROR and asked == 1
    assert run() == (outcome, 1)
    # The walk goes on to _dmarc.com: NXDOMAIN with no negative TTL (RFC 2308 5: not cached).
    walking = make_zone(ORG)
    memo = DiscoveryMemo(lambda: clock[0])
    run = _remembering(walking, memo)
    outcome, asked = run()
    assert outcome.result is PASS and asked == 2
    assert run() == (outcome, 2) and len(memo) == 0
