"""DMARC, DKIM, MX, TLS-RPT and BIMI audits, on the project's own record parsers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mailauth.check.report import Area, Finding, Status, dns_error
from mailauth.dkim.keys import KeyRecordError, parse_key_record
from mailauth.dkim.signature import tag_domain
from mailauth.dkim.verify import key_problem
from mailauth.dmarc import organizational_domain, tree_walk
from mailauth.dmarc.record import DmarcRecord
from mailauth.dns import DnsStatus, Query, RRType
from mailauth.domains import at_or_under, name_problem, normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.plan import Plan, resolve, resolve_names
from mailauth.results import Policy

COMMON_SELECTORS = (
    "default",
    "dkim",
    "mail",
    "smtp",
    "selector1",
    "selector2",
    "google",
    "k1",
    "k2",
    "s1",
    "s2",
    "mxvault",
    "key1",
    "sig1",
    "dk",
    "everlytickey1",
)  # the usual provider defaults (Microsoft 365, Google, Mailchimp, Everlytic...)
_STRENGTH = {Policy.NONE: 0, Policy.QUARANTINE: 1, Policy.REJECT: 2}
# RFC 8460 3: tlsrpt-extension = name "=" value, beside the one required rua=.
_TLSRPT_EXTENSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}=[!-:<>-~]+\Z")
# URIs are printable ASCII (RFC 3986 2: anything else is percent-encoded); "," separates them
# in rua= (RFC 8460 3), and a mailto: local part has no "@".
_HTTPS_OR_MAILTO = re.compile(
    r"(?:mailto:[!-+\--?A-~]+@[!-+\--~]+|https://[!-+\--~]+)\Z", re.IGNORECASE
)
_HTTPS = re.compile(r"https://[!-~]+\Z", re.IGNORECASE)
_NULL_MX = ("", ".")  # RFC 7505: the exchange of a null MX is the root


def _finding(area: Area, fid: str, status: Status, message: str, fix: str = "") -> Finding:
    return Finding(area, fid, status, message, fix)


def check_dmarc(domain: str) -> Plan[tuple[list[Finding], dict[str, Any]]]:
    """The DMARC record that applies to ``domain`` (its own, or found by the tree walk)."""
    found: list[Finding] = []
    walk = yield from tree_walk(domain)
    details: dict[str, Any] = {"record": None, "policy": None, "record_domain": None}
    if walk.tempfail:
        fix = "check the domain's nameservers, then run the check again"
        found.append(_finding(Area.DMARC, "dmarc.dns-error", Status.FAIL, walk.tempfail, fix))
        return found, details
    for note in walk.notes:
        found.append(_finding(Area.DMARC, "dmarc.multiple", Status.FAIL, note, "keep one record"))
    own = walk.record_at(domain)
    org = organizational_domain(walk)
    record_domain = domain if own else org
    record = own or walk.record_at(org)
    if record is None:
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.missing",
                Status.FAIL,
                f"no DMARC record at _dmarc.{domain} or above it",
                f'publish "_dmarc.{domain} TXT v=DMARC1; p=none; rua=mailto:...", '
                "then move to p=reject",
            )
        )
        return found, details
    text = next((f.text for f in walk.records if f.domain == record_domain), "")
    details = {"record": text, "policy": str(record.policy) if record.policy else None}
    details["record_domain"] = record_domain
    if own is None:
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.inherited",
                Status.PASS,
                f"{domain} has no record of its own: _dmarc.{record_domain} applies (sp=/np=)",
            )
        )
    for warning in record.warnings:
        found.append(_finding(Area.DMARC, "dmarc.syntax", Status.WARN, warning, "correct the tag"))
    found.extend(_policy_findings(record, domain))
    external = yield from _external_destinations(record, record_domain)
    found.extend(external)
    if not any(f.status is not Status.PASS for f in found):
        found.append(_finding(Area.DMARC, "dmarc.ok", Status.PASS, f"p={record.policy}"))
    return found, details


def _policy_findings(record: DmarcRecord, domain: str) -> list[Finding]:
    found = []
    if not record.policy_valid:
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.no-policy",
                Status.FAIL,
                "no valid p= (RFC 9989 4.10.1: p=none only if rua= is valid, else ignored)",
                "add p=none, then quarantine, then reject",
            )
        )
    elif record.policy is Policy.NONE:
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.policy-none",
                Status.WARN,
                "p=none: failing mail is not quarantined or rejected (monitoring only)",
                "move to p=quarantine, then p=reject, once reports look clean",
            )
        )
    if record.pct < 100:
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.pct",
                Status.WARN,
                f"pct={record.pct}: RFC 7489 receivers apply the policy to part of the mail only",
                "remove pct= (RFC 9989 dropped it)",
            )
        )
    if record.testing:
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.testing",
                Status.WARN,
                "t=y: the policy is in test mode",
                "remove t=y when ready",
            )
        )
    base = record.policy or Policy.NONE
    for tag, value in (("sp", record.subdomain_policy), ("np", record.nonexistent_policy)):
        if value is not None and _STRENGTH[value] < _STRENGTH[base]:
            found.append(
                _finding(
                    Area.DMARC,
                    f"dmarc.{tag}-weaker",
                    Status.WARN,
                    f"{tag}={value} is weaker than p={base}: subdomains are easier to spoof",
                    f"set {tag}={base} or remove it",
                )
            )
    if not record.rua:
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.no-rua",
                Status.WARN,
                "no valid rua=: no aggregate reports will tell you who sends as this domain",
                "add rua=mailto:dmarc-reports@" + domain,
            )
        )
    return found


def _external_destinations(record: DmarcRecord, domain: str) -> Plan[list[Finding]]:
    """RFC 7489 7.1 / RFC 9990: a report destination outside the domain must authorise it at
    <domain>._report._dmarc.<destination>."""
    found: list[Finding] = []
    destinations = []
    for uri in (*record.rua, *record.ruf):
        if uri.scheme != "mailto":
            continue
        try:
            host = normalize_domain(uri.uri.rpartition("@")[2].split("?")[0])
        except InvalidDomainError:
            continue
        if not at_or_under(host, domain) and host not in destinations:
            destinations.append(host)
    # (A name too long for DNS cannot hold the authorisation: reported as lacking it.)
    names = (f"{domain}._report._dmarc.{d}" for d in destinations)
    lookups = yield from resolve_names(RRType.TXT, *names)
    for destination, lookup in zip(destinations, lookups, strict=True):
        authorised = any(t.startswith(b"v=DMARC1") for t in lookup.texts)
        if lookup.status is DnsStatus.TEMPFAIL:  # (was skipped: the record looked fine)
            found.append(dns_error(Area.DMARC, lookup, f"reports to {destination}"))
            continue
        found.append(
            _finding(
                Area.DMARC,
                "dmarc.external-report-authorized"
                if authorised
                else "dmarc.external-report-unauthorized",
                Status.PASS if authorised else Status.FAIL,
                f"reports to {destination} "
                + (
                    "are authorised"
                    if authorised
                    else f"lack {domain}._report._dmarc.{destination}"
                ),
                "" if authorised else f'ask {destination} to publish "v=DMARC1" at that name',
            )
        )
    return found


def check_dkim(domain: str, selectors: Sequence[str]) -> Plan[tuple[list[Finding], list[Any]]]:
    """Keys at the given selectors and the common ones; the given ones must exist.

    The given selectors are asked together with ``_domainkey.<domain>`` itself: when that
    name does not exist (NXDOMAIN), nothing exists below it (RFC 8020), so the common
    selectors are not guessed at, which saves most of a domain's queries.
    """
    given = list(dict.fromkeys(s.lower() for s in selectors))
    # A selector is a domain name's labels (RFC 6376 3.1): one that makes no name is reported,
    # not asked (it used to end the whole audit as domain.too-long).
    invalid = [s for s in given if tag_domain(f"{s}._domainkey.{domain}") is None]
    given = [s for s in given if s not in invalid]
    subtree, *lookups = yield from resolve(
        Query.of(f"_domainkey.{domain}", RRType.TXT),
        *(Query.of(f"{s}._domainkey.{domain}", RRType.TXT) for s in given),
    )
    names = list(given)
    # (A CNAME there to a name that does not exist proves nothing about the names below.)
    pruned = subtree.name_does_not_exist
    if not pruned:
        common = [s for s in COMMON_SELECTORS if s not in given]
        lookups += yield from resolve(
            *(Query.of(f"{s}._domainkey.{domain}", RRType.TXT) for s in common)
        )
        names += common
    found = [
        _finding(
            Area.DKIM,
            "dkim.selector-invalid",
            Status.FAIL,
            f"selector {s!r}: {s}._domainkey.{domain} is not a domain name",
            "name the selector as published (letters, digits, hyphens; 63 octets a label)",
        )
        for s in invalid
    ]
    keys: list[Any] = []
    failed = [lookup for lookup in lookups if lookup.status is DnsStatus.TEMPFAIL]
    if failed:  # one finding (a DNS outage fails all 17 names alike)
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        found.append(dns_error(Area.DKIM, failed[0], f"TXT {failed[0].name}{more}"))
    for selector, lookup in zip(names, lookups, strict=True):
        if lookup.status is DnsStatus.TEMPFAIL:
            continue
        if not lookup.texts:
            if selector in given:
                found.append(
                    _finding(
                        Area.DKIM,
                        "dkim.selector-missing",
                        Status.FAIL,
                        f"no key at {selector}._domainkey.{domain}"
                        + (f" ({lookup.reason})" if lookup.reason else ""),
                        "publish the key record (mailauth keygen prints it)",
                    )
                )
            continue
        found.extend(_key_findings(domain, selector, lookup.texts[0], lookup.canonical_name, keys))
    if not keys and not given and not invalid and not failed:
        found.append(
            _finding(
                Area.DKIM,
                "dkim.none-found",
                Status.WARN,
                f"no DKIM key at {len(names)} common selectors"
                if names
                else f"no DKIM key: _domainkey.{domain} does not exist",
                "name your selectors with --selector; sign outgoing mail (mailauth keygen, sign)",
            )
        )
    return found, keys


def _key_findings(
    domain: str, selector: str, text: bytes, canonical: str, keys: list[Any]
) -> list[Finding]:
    name = f"{selector}._domainkey.{domain}"
    info: dict[str, Any] = {"selector": selector, "record": text.decode("utf-8", "replace")}
    if canonical and canonical != name:
        info["cname"] = canonical
    keys.append(info)
    try:
        record = parse_key_record(text)
    except KeyRecordError as exc:
        return [
            _finding(
                Area.DKIM,
                "dkim.key-invalid",
                Status.FAIL,
                f"{name}: {exc}",
                "republish the key record",
            )
        ]
    info.update(key_type=record.key_type, bits=record.bits, testing=record.testing)
    if record.key is None:
        return [
            _finding(
                Area.DKIM,
                "dkim.key-revoked",
                Status.WARN,
                f"{name}: revoked (p= empty)",
                "remove the record once no mail signed with it is in flight",
            )
        ]
    found = []
    bits = record.bits or 0
    if record.key_type == "rsa" and bits < 1024:
        found.append(
            _finding(
                Area.DKIM,
                "dkim.key-too-small",
                Status.FAIL,
                f"{name}: RSA {bits} bits (RFC 8301: at least 1024)",
                "generate a 2048-bit key",
            )
        )
    elif record.key_type == "rsa" and bits < 2048:
        found.append(
            _finding(
                Area.DKIM,
                "dkim.key-1024",
                Status.WARN,
                f"{name}: RSA {bits} bits (2048 recommended)",
                "rotate to a 2048-bit key",
            )
        )
    # What a verifier refuses beyond the size (checked above): h= without sha256, s=
    # without email (RFC 6376 3.6.1); signatures made with this key could never pass.
    problem = key_problem(record, f"{record.key_type}-sha256", min_rsa_bits=0)
    if problem:
        found.append(
            _finding(
                Area.DKIM,
                "dkim.key-unusable",
                Status.FAIL,
                f"{name}: {problem}",
                "publish the key with h=sha256 (or no h=) and s=email (or no s=)",
            )
        )
    if record.testing:
        found.append(
            _finding(Area.DKIM, "dkim.testing", Status.WARN, f"{name}: t=y (testing)", "remove t=y")
        )
    if not found:
        found.append(
            _finding(
                Area.DKIM, "dkim.key-ok", Status.PASS, f"{name}: {record.key_type} {bits} bits"
            )
        )
    return found


def check_mx(domain: str) -> Plan[tuple[list[Finding], dict[str, Any]]]:
    (answer,) = yield from resolve(Query.of(domain, RRType.MX))
    found: list[Finding] = []
    hosts = [(mx.preference, mx.exchange) for mx in answer.exchanges]
    details: dict[str, Any] = {"hosts": [h for _, h in sorted(hosts)]}
    if answer.status is DnsStatus.TEMPFAIL:
        return [dns_error(Area.MX, answer)], details
    if not hosts:
        return [
            _finding(
                Area.MX,
                "mx.missing",
                Status.WARN,
                f"{domain} has no MX record: mail goes to its address, if any",
                "publish MX records, or a null MX (RFC 7505) if it takes no mail",
            )
        ], details
    if len(hosts) == 1 and hosts[0][1] in _NULL_MX:
        return [
            _finding(
                Area.MX,
                "mx.null",
                Status.PASS,
                f"{domain} publishes a null MX (RFC 7505): it accepts no mail",
            )
        ], details
    # RFC 7505 3: a domain with a null MX MUST NOT publish any other MX.
    if any(host in _NULL_MX for _, host in hosts):
        found.append(
            _finding(
                Area.MX,
                "mx.null-mixed",
                Status.FAIL,
                f"{domain} publishes a null MX (RFC 7505) beside {len(hosts) - 1} other MX "
                "record(s): senders cannot tell whether it takes mail",
                "keep either the null MX alone or the real MX hosts",
            )
        )
    for _, host in sorted(hosts):
        if host not in _NULL_MX:
            found.extend((yield from _mx_host(host)))
    if not any(f.status is not Status.PASS for f in found):
        found.append(_finding(Area.MX, "mx.ok", Status.PASS, f"{len(hosts)} MX host(s) resolve"))
    return found, details


def _mx_host(host: str) -> Plan[list[Finding]]:
    if re.fullmatch(r"[0-9.]+|.*:.*", host):
        return [
            _finding(
                Area.MX,
                "mx.ip-literal",
                Status.FAIL,
                f"MX {host} is an address, not a host name (RFC 5321 5.1)",
                "point the MX at a host name with A/AAAA records",
            )
        ]
    problem = name_problem(host)
    if problem:
        return [
            _finding(Area.MX, "mx.bad-name", Status.FAIL, f"MX {host}: {problem}", "correct the MX")
        ]
    answers = yield from resolve(Query.of(host, RRType.A), Query.of(host, RRType.AAAA))
    if any(a.canonical_name and a.canonical_name != a.name for a in answers):
        return [
            _finding(
                Area.MX,
                "mx.cname",
                Status.FAIL,
                f"MX {host} is a CNAME (RFC 2181 10.3: MUST NOT)",
                "point the MX at the canonical name",
            )
        ]
    if not any(a.hosts for a in answers):
        failed = next((a for a in answers if a.status is DnsStatus.TEMPFAIL), None)
        if failed is not None:  # not known to have no address
            return [dns_error(Area.MX, failed, f"MX {host} {failed.rdtype}")]
        return [
            _finding(
                Area.MX,
                "mx.host-unresolvable",
                Status.FAIL,
                f"MX {host} has no A or AAAA record",
                "fix or remove the MX",
            )
        ]
    return []


def check_tls_rpt(domain: str) -> Plan[list[Finding]]:
    (lookup,) = yield from resolve(Query.of(f"_smtp._tls.{domain}", RRType.TXT))
    if lookup.status is DnsStatus.TEMPFAIL:
        return [dns_error(Area.TLS_RPT, lookup)]
    records = [t.decode("utf-8", "replace") for t in lookup.texts if t.startswith(b"v=TLSRPTv1")]
    name = f"_smtp._tls.{domain}"
    if not records:
        fix = f'publish "{name} TXT v=TLSRPTv1; rua=mailto:tls-reports@{domain}"'
        message = f"no TLS-RPT record at {name}"
        return [_finding(Area.TLS_RPT, "tls-rpt.missing", Status.WARN, message, fix)]
    if len(records) > 1:
        return [
            _finding(
                Area.TLS_RPT,
                "tls-rpt.multiple",
                Status.FAIL,
                f"{len(records)} TLS-RPT records at {name}",
                "keep one",
            )
        ]
    uris = _tlsrpt_uris(records[0])
    if not uris or not all(_HTTPS_OR_MAILTO.match(u) for u in uris):
        return [
            _finding(
                Area.TLS_RPT,
                "tls-rpt.syntax",
                Status.FAIL,
                f"{name}: {records[0]!r} is not v=TLSRPTv1; rua=<mailto: or https: URIs>",
                "correct the record (RFC 8460 3)",
            )
        ]
    return [_finding(Area.TLS_RPT, "tls-rpt.ok", Status.PASS, f"reports go to {', '.join(uris)}")]


def _tlsrpt_uris(record: str) -> list[str]:
    """The rua= URIs of a TLS-RPT record (RFC 8460 3: "v=TLSRPTv1", then fields separated by
    ";" with optional WSP: rua= once, extensions beside it); [] when it is malformed."""
    version, *fields = record.split(";")
    if version.rstrip(" \t") != "v=TLSRPTv1":
        return []
    fields = [f.strip(" \t") for f in fields]
    if fields and not fields[-1]:
        fields.pop()  # a final ";" is allowed
    ruas = [f[4:] for f in fields if f.startswith("rua=")]
    others = [f for f in fields if not f.startswith("rua=")]
    if len(ruas) != 1 or not all(_TLSRPT_EXTENSION.match(f) for f in others):
        return []
    return [u.strip(" \t") for u in ruas[0].split(",")]


def check_bimi(domain: str) -> Plan[list[Finding]]:
    name = f"default._bimi.{domain}"
    (lookup,) = yield from resolve(Query.of(name, RRType.TXT))
    if lookup.status is DnsStatus.TEMPFAIL:
        return [dns_error(Area.BIMI, lookup)]
    records = [t.decode("utf-8", "replace") for t in lookup.texts if t.startswith(b"v=BIMI1")]
    if not records:
        return [
            _finding(
                Area.BIMI,
                "bimi.missing",
                Status.WARN,
                f"no BIMI record at {name}",
                "optional: v=BIMI1; l=<https SVG>; a=<https VMC>, with DMARC enforcing",
            )
        ]
    tags: dict[str, str] = {}
    for spec in records[0].split(";"):
        key, _, value = spec.strip().partition("=")
        if key:
            tags[key.strip().lower()] = value.strip()
    problems = [
        f"{tag}= must be an https URL"
        for tag in ("l", "a")
        if tags.get(tag) and not _HTTPS.match(tags[tag])
    ]
    if "l" not in tags:
        problems.append("l= is required")
    if len(records) > 1 or problems:
        return [
            _finding(
                Area.BIMI,
                "bimi.syntax",
                Status.FAIL,
                f"{name}: {'; '.join(problems) or 'several records'}",
                "correct the record",
            )
        ]
    return [_finding(Area.BIMI, "bimi.ok", Status.PASS, f"logo at {tags['l'] or '(declined)'}")]
