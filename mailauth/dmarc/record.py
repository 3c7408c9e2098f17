"""The DMARC Policy Record (RFC 9989 4.7, 4.8): parsing, pure and reusable.

:func:`parse_dmarc_record` turns TXT text into a :class:`DmarcRecord` or raises
:class:`NotDmarcRecord` when the text is not a DMARC record at all (no leading
``v=DMARC1``: RFC 9989 4.7 says such records are ignored). Everything else is lenient as
4.8 requires: unknown tags are ignored, a tag with a bad value falls back to its default,
and each such problem is kept in ``warnings`` for ``mailauth check``. Whether a record
without a valid ``p=`` still applies is the evaluator's decision (RFC 9989 4.10.1), made
from ``policy_valid``/``subdomain_policies_valid``/``rua``.

RFC 7489 tags that RFC 9989 removed (``pct``, ``rf``, ``ri``) are parsed too: ``pct`` is
honoured in RFC 7489 mode, and the domain checker reports all three.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mailauth.errors import RecordSyntaxError
from mailauth.results import Policy

_TAG = re.compile(r"[A-Za-z]+\Z")  # RFC 9989 4.8: dmarc-tag = 1*ALPHA equals 1*dmarc-value
_VALUE = re.compile(r"[\x20-\x3a\x3c-\x7e]+\Z")  # printing characters but semicolon
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s,!]+\Z")  # RFC 3986 3.1 scheme ":" ...
_SIZE = re.compile(r"([0-9]{1,15})([kmgt]?)\Z")  # (a size no mailbox reaches: refused)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_POLICIES = {p.value: p for p in Policy}
_KNOWN = frozenset({"v", "p", "sp", "np", "adkim", "aspf", "t", "psd", "pct", "rua", "ruf"})
_KNOWN |= {"fo", "rf", "ri"}


class NotDmarcRecord(RecordSyntaxError):
    """TXT text that is not a DMARC record (RFC 9989 4.7: it MUST be ignored)."""


@dataclass(frozen=True, slots=True)
class ReportUri:
    """A reporting URI (RFC 9989 4.6) and its obsolete ``!size`` limit in octets, if any."""

    uri: str
    max_size: int | None = None

    @property
    def scheme(self) -> str:
        return self.uri.partition(":")[0].lower()


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed DMARC Policy Record; absent or invalid tags hold their defaults."""

    policy: Policy | None = None  # p=; None when absent or invalid
    subdomain_policy: Policy | None = None  # sp=
    nonexistent_policy: Policy | None = None  # np= (RFC 9989)
    adkim: str = "r"
    aspf: str = "r"
    testing: bool = False  # t=y (RFC 9989 4.7)
    psd: str = "u"  # y / n / u (RFC 9989 4.7)
    pct: int = 100  # RFC 7489 only
    rua: tuple[ReportUri, ...] = ()
    ruf: tuple[ReportUri, ...] = ()
    fo: tuple[str, ...] = ("0",)
    rf: str = "afrf"  # RFC 7489 only
    ri: int = 86400  # RFC 7489 only
    policy_valid: bool = False  # p= present with a valid value
    subdomain_policies_valid: bool = True  # sp= and np= absent or valid
    warnings: tuple[str, ...] = ()

    def policy_for(self, *, subdomain: bool, exists: bool) -> tuple[Policy, str]:
        """The policy that applies and the tag it came from (RFC 9989 4.7, 4.10.1)."""
        if not subdomain:
            return self.policy or Policy.NONE, "p"
        if not exists and self.nonexistent_policy is not None:
            return self.nonexistent_policy, "np"
        if self.subdomain_policy is not None:
            return self.subdomain_policy, "sp"
        return self.policy or Policy.NONE, "p"


def parse_dmarc_record(text: str | bytes) -> DmarcRecord:
    """Parse DMARC record text; raises :class:`NotDmarcRecord` when it is not one."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> DmarcRecord:
    """(Memoised: a pure function of the text, and the same records come back all day.)"""
    specs = [spec.strip(" \t") for spec in text.split(";")]
    if specs and not specs[-1]:
        specs.pop()  # a final ";" (RFC 9989 4.8: [dmarc-sep])
    version = specs[0].split("=", 1) if specs else []
    # RFC 9989 4.7: v= MUST be the first tag, its value "DMARC1" (case-sensitive).
    if len(version) != 2 or version[0].strip(" \t").lower() != "v":
        raise NotDmarcRecord("not a DMARC record: it does not start with v=DMARC1")
    if version[1].strip(" \t") != "DMARC1":
        raise NotDmarcRecord(f"not a DMARC record: v={version[1].strip()!r}, not DMARC1")
    values: dict[str, str] = {}
    warnings: list[str] = []
    for spec in specs[1:]:
        name, eq, value = spec.partition("=")
        name, value = name.strip(" \t").lower(), value.strip(" \t")
        if not eq or not _TAG.match(name) or not _VALUE.match(value):
            warnings.append(f"malformed tag {spec[:40]!r} ignored")
        elif name in values:
            warnings.append(f"duplicate tag {name}= ignored (the first one counts)")
        elif name not in _KNOWN:
            warnings.append(f"unknown tag {name}= ignored")
        elif name == "v":
            warnings.append("v= repeated later in the record: ignored")
        else:
            values[name] = value
    return _build(values, warnings)


def _build(values: dict[str, str], warnings: list[str]) -> DmarcRecord:
    def choice(tag: str, allowed: tuple[str, ...], default: str) -> str:
        if tag not in values:
            return default
        value = values[tag].lower()
        if value in allowed:
            return value
        warnings.append(f"{tag}={values[tag]} is not one of {'/'.join(allowed)}: using {default}")
        return default

    policy, policy_ok = _policy(values, "p", warnings)
    sp, sp_ok = _policy(values, "sp", warnings)
    np_, np_ok = _policy(values, "np", warnings)
    if "p" not in values:
        warnings.append("no p= tag")
    return DmarcRecord(
        policy=policy,
        subdomain_policy=sp,
        nonexistent_policy=np_,
        adkim=choice("adkim", ("r", "s"), "r"),
        aspf=choice("aspf", ("r", "s"), "r"),
        testing=choice("t", ("y", "n"), "n") == "y",
        psd=choice("psd", ("y", "n", "u"), "u"),
        pct=_number(values, "pct", 100, 100, warnings),
        rua=_uris(values, "rua", warnings),
        ruf=_uris(values, "ruf", warnings),
        fo=_fo(values, warnings),
        rf=choice("rf", ("afrf", "iodef"), "afrf"),
        ri=_number(values, "ri", 86400, 2**32 - 1, warnings),
        policy_valid=policy_ok and policy is not None,
        subdomain_policies_valid=sp_ok and np_ok,
        warnings=tuple(warnings),
    )


def _policy(values: dict[str, str], tag: str, warnings: list[str]) -> tuple[Policy | None, bool]:
    """The policy of p=/sp=/np= and whether the tag is absent-or-valid."""
    if tag not in values:
        return None, True
    policy = _POLICIES.get(values[tag].lower())
    if policy is None:
        warnings.append(f"{tag}={values[tag]} is not none/quarantine/reject")
        return None, False
    return policy, True


def _number(
    values: dict[str, str], tag: str, default: int, maximum: int, warnings: list[str]
) -> int:
    """pct= (0-100) and ri= (seconds): a decimal number up to ``maximum``, else the default."""
    raw = values.get(tag)
    if raw is None:
        return default
    if raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) <= maximum:
        return int(raw)
    warnings.append(f"{tag}={raw} is not a number from 0 to {maximum}: using {default}")
    return default


def _fo(values: dict[str, str], warnings: list[str]) -> tuple[str, ...]:
    raw = values.get("fo")
    if raw is None:
        return ("0",)
    options = tuple(o.strip(" \t").lower() for o in raw.split(":"))
    # RFC 9989 4.8 dmarc-fo: 0, 1, d, s; "0" and "1" exclusive; each at most once.
    if (
        not options
        or any(o not in ("0", "1", "d", "s") for o in options)
        or len(set(options)) != len(options)
        or {"0", "1"} <= set(options)
    ):
        warnings.append(f"fo={raw} is not a valid option list: using 0")
        return ("0",)
    return options


def _uris(values: dict[str, str], tag: str, warnings: list[str]) -> tuple[ReportUri, ...]:
    raw = values.get(tag)
    if raw is None:
        return ()
    uris: list[ReportUri] = []
    for part in raw.split(","):
        item = part.strip(" \t")
        uri, bang, size = item.partition("!")
        max_size = None
        if bang:  # RFC 9989 4.8: obs-dmarc-report-size
            match = _SIZE.match(size.lower())
            if match is None:
                warnings.append(f"{tag}: bad size in {item[:80]!r}: URI ignored")
                continue
            max_size = int(match.group(1)) * _UNITS[match.group(2)]
        if not _SCHEME.match(uri):
            warnings.append(f"{tag}: {item!r} is not a URI: ignored")
            continue
        if uri.lower().startswith("mailto:") and "@" not in uri:
            warnings.append(f"{tag}: {item!r} has no address: ignored")
            continue
        uris.append(ReportUri(uri, max_size))
    return tuple(uris)
