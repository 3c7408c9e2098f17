"""[signing] (mailauth.config_signing, mailauth.milter.signing_table): patterns, the
SigningTable's first match with wildcards, case and IDN, dual signing, the identity
sources, users bound to what they may sign, the signature settings (each one visible in
the DKIM-Signature, verified by mailauth and by dkimpy), and the configuration's problems
one line each."""

from __future__ import annotations

import re
import time
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from mailauth.config import KeySpec, load_milter_config
from mailauth.config_signing import (
    NamedKey,
    SignatureSettings,
    SigningConfig,
    TableEntry,
    match_pattern,
    normalize_pattern,
)
from mailauth.dkim import Signer, public_key_record, sign_dkim
from mailauth.dkim.keys import private_key_pem
from mailauth.errors import ConfigError
from mailauth.message import Message
from mailauth.milter.signing_table import (
    SigningPolicy,
    SigningRule,
    build_signing_policy,
    choose_signers,
)
from tests.dkim_helpers import ED_KEY, MESSAGE, RSA_KEY, dkimpy_dns, verify, zone

RSA_SIGNER = Signer("example.com", "rsa1", RSA_KEY)
ED_SIGNER = Signer("example.com", "ed1", ED_KEY)
OTHER = Signer("example.net", "net1", ED_KEY)
RECORDS = {
    "rsa1._domainkey.example.com": public_key_record(RSA_KEY),
    "ed1._domainkey.example.com": public_key_record(ED_KEY),
}


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("*", "*"),
        ("example.com", "example.com"),
        ("*@Example.COM", "example.com"),
        ("*.example.com", "*.example.com"),
        ("*@*.example.com", "*.example.com"),
        ("Alice@Example.com", "alice@example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*@*.bücher.example", "*.xn--bcher-kva.example"),
        ("info@bücher.example", "info@xn--bcher-kva.example"),
    ],
)
def test_patterns_have_one_written_form(written: str, normalized: str) -> None:
    assert normalize_pattern(written) == normalized


@pytest.mark.parametrize(
    "bad", ["", "@example.com", "a*@example.com", "alice@*.example.com", "exa mple.com", "*@*"]
)
def test_patterns_that_are_none_of_the_forms(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - (each is a config problem line)
        normalize_pattern(bad)


@pytest.mark.parametrize(
    ("pattern", "local", "domain", "matches"),
    [
        ("*", "", "anything.example", True),
        ("example.com", "alice", "example.com", True),
        ("example.com", "", "example.com", True),
        ("example.com", "alice", "sub.example.com", False),
        ("*.example.com", "alice", "sub.example.com", True),
        ("*.example.com", "alice", "a.b.example.com", True),
        ("*.example.com", "alice", "example.com", False),  # not the parent itself
        ("*.example.com", "alice", "badexample.com", False),
        ("alice@example.com", "alice", "example.com", True),
        ("alice@example.com", "bob", "example.com", False),
        ("alice@example.com", "", "example.com", False),  # no single address known
    ],
)
def test_match_pattern(pattern: str, local: str, domain: str, matches: bool) -> None:
    assert match_pattern(pattern, local, domain) is matches


def _message(from_: str, extra: str = "") -> Message:
    return Message.parse(f"From: {from_}\r\n{extra}To: bob@example.org\r\n\r\nHi.\r\n".encode())


TABLE = SigningPolicy(
    rules=(
        SigningRule("ceo@example.com", (RSA_SIGNER,)),  # first match wins over the next
        SigningRule("example.com", (RSA_SIGNER, ED_SIGNER)),  # dual signing
        SigningRule("nosign.example.com", ()),  # an exemption before the wildcard
        SigningRule("*.example.com", (ED_SIGNER,)),
        SigningRule("xn--bcher-kva.example", (OTHER,)),
    )
)


@pytest.mark.parametrize(
    ("from_", "signers", "identity"),
    [
        ("CEO@Example.COM", (RSA_SIGNER,), "ceo@example.com"),  # case of both parts
        ("Alice <alice@example.com>", (RSA_SIGNER, ED_SIGNER), "alice@example.com"),
        ("alice@news.eu.example.com", (ED_SIGNER,), "alice@news.eu.example.com"),
        ("alice@nosign.example.com", (), "alice@nosign.example.com"),
        ("info@bücher.example", (OTHER,), "info@xn--bcher-kva.example"),  # IDN (RFC 6532)
        ("alice@example.org", (), "alice@example.org"),  # no entry
        ("a@example.com, b@example.com", (RSA_SIGNER, ED_SIGNER), "@example.com"),
        ("a@example.com, b@example.net", (), ""),  # several author domains: unsigned
    ],
)
def test_the_first_matching_entry_signs(
    from_: str, signers: tuple[Signer, ...], identity: str
) -> None:
    choice = choose_signers(TABLE, _message(from_), "<x@example.org>", "")
    assert (choice.signers, choice.identity, choice.refused) == (signers, identity, "")


def test_identity_by_sender_or_return_path() -> None:
    policy = SigningPolicy(
        rules=(SigningRule("example.net", (OTHER,)), SigningRule("example.com", (ED_SIGNER,))),
        identity=("sender", "return-path", "from"),
    )
    with_sender = _message("alice@example.com", "Sender: list@example.net\r\n")
    assert choose_signers(policy, with_sender, "<>", "").signers == (OTHER,)
    # no Sender: the Return-Path (MAIL FROM), then From for a bounce (null reverse-path)
    plain = _message("alice@example.com")
    assert choose_signers(policy, plain, "<bounces@example.net>", "").signers == (OTHER,)
    assert choose_signers(policy, plain, "<>", "").signers == (ED_SIGNER,)
    only_sender = SigningPolicy(rules=policy.rules, identity=("sender",))
    assert choose_signers(only_sender, plain, "<bounces@example.net>", "").signers == ()


def test_an_authenticated_user_signs_only_for_its_addresses() -> None:
    users = {
        "alice": ("example.com", "*.example.com"),
        "bob": ("bob@example.com",),
        "*": ("example.net",),
    }
    policy = SigningPolicy(
        rules=(SigningRule("*.example.com", (ED_SIGNER,)), SigningRule("*", (RSA_SIGNER,))),
        users=users,
    )

    def refused(user: str, from_: str) -> str:
        choice = choose_signers(policy, _message(from_), "<x@example.com>", user)
        assert bool(choice.signers) != bool(choice.refused)
        return choice.refused

    assert refused("alice", "alice@example.com") == ""
    assert refused("alice", "alice@eu.example.com") == ""
    assert refused("alice", "ceo@example.org") == "example.org"  # another hosted domain
    assert refused("bob", "bob@example.com") == ""
    assert refused("bob", "Bob@EXAMPLE.com") == ""
    assert refused("bob", "alice@example.com") == "example.com"  # only its own address
    assert refused("carol", "carol@example.net") == ""  # "*": users not listed
    assert refused("carol", "carol@example.com") == "example.com"
    # Every author address counts, not only the first.
    assert refused("bob", "bob@example.com, ceo@example.com") == "example.com"
    # Not authenticated (a trusted network): no binding.
    assert choose_signers(policy, _message("ceo@example.org"), "", "").signers == (RSA_SIGNER,)
    # Nothing would be signed: nothing to refuse.
    unsigned = SigningPolicy(rules=(), users=users)
    assert choose_signers(unsigned, _message("ceo@example.org"), "", "bob").refused == ""


def test_a_login_matches_its_entry_in_any_ascii_case() -> None:
    """SASL logins as Postfix's reject_sender_login_mismatch compares them (strcasecmp):
    "Bob" and "BOB@Example.NET" are bob's and bob@example.net's, not the "*" entry (which
    grants more here); a character outside ASCII is compared as it is (the Kelvin sign
    is not a "k")."""
    users = {"bob": ("bob@example.com",), "Carol@Example.NET": ("carol@example.net",)}
    policy = SigningPolicy(
        rules=(SigningRule("*", (RSA_SIGNER,)),), users={**users, "*": ("example.com",)}
    )

    def refused(user: str, from_: str) -> str:
        return choose_signers(policy, _message(from_), "<x@example.com>", user).refused

    for login in ("bob", "Bob", "BOB"):
        assert refused(login, "bob@example.com") == ""
        assert refused(login, "alice@example.com") == "example.com"  # bob's, not "*"
    for login in ("carol@example.net", "CAROL@EXAMPLE.NET", "Carol@example.Net"):
        assert refused(login, "carol@example.net") == ""
        assert refused(login, "alice@example.com") == "example.com"
    keyed = SigningPolicy(rules=policy.rules, users={"kate": ("kate@example.net",)})
    assert not choose_signers(keyed, _message("kate@example.net"), "", "KATE").refused
    assert choose_signers(keyed, _message("kate@example.net"), "", "\u212aate").refused


def test_a_users_table_naming_one_login_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "milter.toml"
    path.write_text('[signing.users]\nbob = ["example.com"]\nBOB = ["example.net"]\n')
    with pytest.raises(ConfigError) as refused:
        load_milter_config(path)
    assert "signing.users.BOB: the same login as 'bob' (logins match in any case)" in str(
        refused.value
    )


def test_without_a_users_table_any_user_signs() -> None:
    policy = SigningPolicy(rules=(SigningRule("*", (RSA_SIGNER,)),))
    choice = choose_signers(policy, _message("ceo@example.org"), "", "mallory")
    assert choice.signers == (RSA_SIGNER,) and not choice.refused


def _key_file(tmp_path: Path, name: str, key: object) -> Path:
    path = tmp_path / f"{name}.pem"
    path.write_bytes(private_key_pem(key))  # type: ignore[arg-type]
    path.chmod(0o600)
    return path


def test_outbound_keys_keep_their_meaning_after_the_table(tmp_path: Path) -> None:
    """``[[outbound.keys]]`` with sign_for: an exact name wins over a pattern, the nearest
    parent over a farther one, all keys of the winning entry sign -- as before the table."""
    rsa_file, ed_file = _key_file(tmp_path, "r", RSA_KEY), _key_file(tmp_path, "e", ED_KEY)
    legacy = (
        KeySpec("example.com", "rsa1", rsa_file, ("*.example.com", "example.com")),
        KeySpec("example.com", "ed1", ed_file, ("*.eu.example.com", "example.com")),
    )
    signing = SigningConfig(
        keys=(NamedKey("net", "example.net", "net1", ed_file),),
        table=(TableEntry("example.net", ("net",)),),
    )
    policy = build_signing_policy(signing, legacy)
    assert [r.pattern for r in policy.rules] == [
        "example.net", "example.com", "*.eu.example.com", "*.example.com",
    ]  # fmt: skip

    def selectors(from_: str) -> list[str]:
        return [s.selector for s in choose_signers(policy, _message(from_), "", "").signers]

    assert selectors("a@example.com") == ["rsa1", "ed1"]
    assert selectors("a@news.eu.example.com") == ["ed1"]  # nearest parent
    assert selectors("a@us.example.com") == ["rsa1"]
    assert selectors("a@example.net") == ["net1"]
    no_sign_for = build_signing_policy(SigningConfig(), (KeySpec("Example.COM", "s", ed_file),))
    assert [r.pattern for r in no_sign_for.rules] == ["example.com"]


def _tags(field: bytes) -> dict[str, str]:
    value = field.split(b":", 1)[1].decode()
    unfolded = re.sub(r"\s+", "", value)
    return dict(tag.split("=", 1) for tag in unfolded.split(";") if tag)


DEFAULT_H = (
    "from:from:reply-to:subject:subject:date:date:to:to:cc:message-id:message-id:"
    "mime-version:mime-version:content-type:content-type:content-transfer-encoding"
)
SETTINGS_CASES = [
    (SignatureSettings(), {"c": "relaxed/relaxed", "h": DEFAULT_H}),
    (SignatureSettings(canonicalization="simple/simple"), {"c": "simple/simple"}),
    (SignatureSettings(canonicalization="relaxed/simple"), {"c": "relaxed/simple"}),
    (SignatureSettings(expire=3600), {"x": "t+3600"}),
    (
        SignatureSettings(headers=("from", "to", "subject"), oversign=("from",)),
        {"h": "from:from:to:subject"},
    ),
    (
        SignatureSettings(headers=("from", "subject"), oversign=("from", "reply-to")),
        {"h": "from:from:subject:reply-to"},  # an over-signed field joins the list
    ),
    (
        SignatureSettings(oversign=()),
        {"h": "from:subject:date:to:message-id:mime-version:content-type"},
    ),
    (
        SignatureSettings(skip_headers=("date", "message-id", "to")),
        {"h": "from:from:reply-to:subject:subject:cc:mime-version:mime-version:content-type:"
         "content-type:content-transfer-encoding"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "visible"), SETTINGS_CASES)
@pytest.mark.parametrize("key", ["rsa", "ed"])
def test_signature_settings_show_in_the_signature_and_verify(
    tmp_path: Path, settings: SignatureSettings, visible: dict[str, str], key: str
) -> None:
    """Each setting as the milter builds its signer; the field verifies with mailauth and
    with dkimpy (the oracle)."""
    path = _key_file(tmp_path, key, RSA_KEY if key == "rsa" else ED_KEY)
    selector = "rsa1" if key == "rsa" else "ed1"
    named = NamedKey("k", "example.com", selector, path, settings)
    policy = build_signing_policy(SigningConfig(keys=(named,), table=(TableEntry("*", ("k",)),)))
    (signer,) = policy.rules[0].signers
    now = int(time.time())  # (dkimpy checks x= against the clock)
    signed = sign_dkim(MESSAGE, [signer], now=now)
    tags = _tags(Message.parse(signed).headers[0].raw)
    if "x" in visible:
        visible = {**visible, "x": str(now + settings.expire)}
    assert {tag: tags.get(tag) for tag in visible} == visible
    assert ("x" in tags) == bool(settings.expire)
    (outcome,) = verify(signed, zone(RECORDS), now=now + 10)
    assert outcome.result == "pass", outcome.reason
    assert dkimpy.verify(signed, dnsfunc=dkimpy_dns(RECORDS), minkey=1024)


def test_the_configuration_builds_the_table(tmp_path: Path) -> None:
    rsa_file, ed_file = _key_file(tmp_path, "r", RSA_KEY), _key_file(tmp_path, "e", ED_KEY)
    path = tmp_path / "milter.toml"
    path.write_text(
        f"""listen = "inet:8891@127.0.0.1"
authserv_id = "mx.example.org"
mode = "verify"

[[listeners]]
listen = "inet:8892@127.0.0.1"
mode = "sign"

[daemon_modes]
submission = "sign"
smtpd = "verify"

[signing]
canonicalization = "relaxed/simple"
expire = 604800
min_key_bits = 2048
identity = ["Sender", "from"]
unauthorized = "unsigned"

[signing.keys.rsa]
domain = "Example.COM"
selector = "rsa2026"
key = "{rsa_file}"
headers = ["from", "to", "subject", "date"]

[signing.keys.ed]
domain = "example.com"
selector = "ed2026"
key = "{ed_file}"
canonicalization = "relaxed/relaxed"

[[signing.table]]
from = "*@example.com"
keys = ["rsa", "ed"]

[[signing.table]]
from = "*.example.com"
keys = ["ed"]

[signing.users]
alice = ["example.com", "*.example.com"]
"bob@example.com" = ["bob@example.com"]
"""
    )
    config = load_milter_config(path)
    assert config.mode == "verify" and config.daemon_modes == (
        ("submission", "sign"),
        ("smtpd", "verify"),
    )
    assert [(x.listen, x.mode) for x in config.listeners] == [("inet:8892@127.0.0.1", "sign")]
    signing = config.signing
    assert signing.identity == ("sender", "from") and signing.unauthorized == "unsigned"
    assert signing.table == (
        TableEntry("example.com", ("rsa", "ed")),
        TableEntry("*.example.com", ("ed",)),
    )
    assert signing.users == (
        ("alice", ("example.com", "*.example.com")),
        ("bob@example.com", ("bob@example.com",)),
    )
    rsa_key, ed_key = signing.keys
    assert (rsa_key.domain, rsa_key.settings.canonicalization) == ("example.com", "relaxed/simple")
    assert rsa_key.settings.headers == ("from", "to", "subject", "date")
    assert (rsa_key.settings.expire, ed_key.settings.expire) == (604800, 604800)  # global
    assert ed_key.settings.canonicalization == "relaxed/relaxed"  # its own
    signers = build_signing_policy(signing).rules[0].signers
    assert [s.canonicalization for s in signers] == ["relaxed/simple", "relaxed/relaxed"]
    assert signers[0].headers == ("from", "to", "subject", "date") and signers[0].expire == 604800


def test_every_problem_of_signing_is_one_line(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_file = _key_file(tmp_path, "weak", weak)
    path = tmp_path / "bad.toml"
    path.write_text(
        f"""listen = "inet:8891@127.0.0.1"
authserv_id = "mx.example.org"
mode = "sometimes"

[[listeners]]
listen = "inet:99999@127.0.0.1"
mode = "sign"

[[listeners]]
listen = "inet:8891@127.0.0.1"
colour = "blue"

[daemon_modes]
submission = "signing"

[signing]
canonicalization = "loose/relaxed"
identity = ["envelope"]
unauthorized = "bounce"
expire = -5
min_key_bits = 2048
headers = ["to", "subject"]
colour = "blue"

[signing.keys.weak]
domain = "example.com"
selector = "w"
key = "{weak_file}"

[signing.keys.broken]
domain = "example.com"
selector = "bad selector"
key = "{weak_file}"

[signing.keys.missing]
domain = "example.com"
selector = "m"
key = "{tmp_path}/nonexistent.pem"
skip_headers = ["from"]

[[signing.table]]
from = "alice@*.example.com"
keys = ["weak"]

[[signing.table]]
from = "example.com"
keys = ["nokey"]

[[signing.table]]
keys = ["weak"]

[signing.users]
alice = ["exa mple.com"]
bob = "example.com"
"""
    )
    with pytest.raises(ConfigError) as raised:
        load_milter_config(path)
    lines = str(raised.value).splitlines()
    expected = [
        ":3: mode: 'sometimes' must be verify, sign or both",
        ":6: listeners[0].listen: bad listen socket 'inet:99999@127.0.0.1': port 99999 out of "
        "range 1-65535",
        ":10: listeners[1].listen: 'inet:8891@127.0.0.1' is given twice",
        ":11: listeners[1].colour: unknown key",
        ":14: daemon_modes.submission: 'signing' must be verify, sign or both",
        ":17: signing.canonicalization: 'loose/relaxed' must be HEADER/BODY, each simple or "
        "relaxed",
        ":18: signing.identity: ['envelope'] must list sources among from, sender, return-path",
        ":19: signing.unauthorized: 'bounce' must be refuse or unsigned",
        ":20: signing.expire: must be 0 (no x=) or a positive number of seconds",
        ":22: signing.headers: the signed header list must include From (RFC 6376 5.4)",
        ":23: signing.colour: unknown key",
        ":28: signing.keys.weak.key: ",  # (below)
        ":30: signing.keys.broken: bad selector 'bad selector': not a domain name label",
        ":38: signing.keys.missing.key: cannot read key file",
        ":39: signing.keys.missing.skip_headers: From cannot be skipped",
        ":42: signing.table[0].from: 'alice@*.example.com': an address pattern takes an "
        "exact domain",
        ":47: signing.table[1].keys: 'nokey' is not a key of [signing.keys]",
        ":49: signing.table[2]: needs from (a pattern) and keys (an array of key names)",
        ":53: signing.users.alice: 'exa mple.com' is not a host name",
        ":54: signing.users.bob: must be an array of patterns",
    ]
    assert len(lines) == len(expected), "\n".join(lines)
    for line in lines:
        assert line.startswith(str(path) + ":"), line
    for want in expected:
        assert any(want in line for line in lines), (want, "\n".join(lines))
    assert any("RSA key of 1024 bits, less than min_key_bits 2048" in line for line in lines), lines


def test_min_key_bits_holds_outbound_keys_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_file = _key_file(tmp_path, "weak", weak)
    path = tmp_path / "m.toml"
    path.write_text(
        'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
        f'[signing]\nmin_key_bits = 2048\n[[outbound.keys]]\ndomain = "example.com"\n'
        f'selector = "w"\nkey = "{weak_file}"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_milter_config(path)
    (line,) = str(raised.value).splitlines()
    assert line == (
        f"{path}:5: outbound.keys[0]: {weak_file}: RSA key of 1024 bits, less than "
        "min_key_bits 2048"
    )
    # The milter refuses to start: exit 2, one line.
    from mailauth.cli import main

    assert main(["milter", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"mailauth: error: {line}"]
    # The default (1024) takes it, as before.
    path.write_text(path.read_text().replace("min_key_bits = 2048", ""))
    assert load_milter_config(path).keys[0].key == weak_file


def test_an_existing_configuration_means_what_it_did(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    ed_file = _key_file(tmp_path, "e", ED_KEY)
    path.write_text(
        'listen = "inet:8891@127.0.0.1"\nauthserv_id = "mx.example.org"\n'
        f'[[outbound.keys]]\ndomain = "example.com"\nselector = "ed1"\nkey = "{ed_file}"\n'
    )
    config = load_milter_config(path)
    assert (config.mode, config.listeners, config.daemon_modes) == ("both", (), ())
    assert config.signing == SigningConfig()
    (rule,) = build_signing_policy(config.signing, config.keys).rules
    (signer,) = rule.signers
    assert rule.pattern == "example.com" and signer.canonicalization == "relaxed/relaxed"
    assert (signer.headers, signer.oversign, signer.expire) == (
        Signer("example.com", "ed1", ED_KEY).headers,
        Signer("example.com", "ed1", ED_KEY).oversign,
        None,
    )


_LOCALS = st.sampled_from(["", "alice", "bob"])
_DOMAINS = st.sampled_from(["example.com", "a.example.com", "b.a.example.com", "example.net"])
_PATTERNS = st.sampled_from(
    ["*", "example.com", "*.example.com", "a.example.com", "*.a.example.com", "example.net",
     "alice@example.com", "bob@a.example.com", "*.net", "alice@example.net"]
)  # fmt: skip


@given(st.lists(_PATTERNS, max_size=8), _LOCALS, _DOMAINS)
def test_the_index_finds_the_first_match_of_a_scan(
    patterns: list[str], local: str, domain: str
) -> None:
    """SigningPolicy.rule_for (a few lookups) agrees with reading the table in order."""
    rules = tuple(
        SigningRule(p, (Signer("example.com", f"s{i}", ED_KEY),)) for i, p in enumerate(patterns)
    )
    policy = SigningPolicy(rules=rules)
    scanned = next((r for r in rules if match_pattern(r.pattern, local, domain)), None)
    assert policy.rule_for(local, domain) is scanned


def test_a_large_table_costs_lookups_not_a_scan() -> None:
    rules = tuple(SigningRule(f"d{i}.example", (ED_SIGNER,)) for i in range(10_000))
    policy = SigningPolicy(rules=(*rules, SigningRule("*", (RSA_SIGNER,))))
    message = _message("a@nomatch.example")
    started = time.perf_counter()
    for _ in range(100):
        assert choose_signers(policy, message, "", "").signers == (RSA_SIGNER,)
    assert (time.perf_counter() - started) / 100 < 0.001  # (a scan: about 9 ms)
