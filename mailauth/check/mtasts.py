"""MTA-STS audit (RFC 8461): the ``_mta-sts`` record, the policy fetched over HTTPS, and its
mx patterns against the domain's MX hosts.

The policy host's address comes from the injected resolver (never the system's); the HTTPS
request goes to that address with the policy host as SNI and Host, the certificate verified
against it, redirects refused (RFC 8461 3.3), the body capped at 64 KiB, one deadline for it all.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import Any

from mailauth.check.report import Area, Finding, Status, dns_error
from mailauth.dns import DnsStatus, Query, RRType
from mailauth.plan import Plan, offload, resolve

MAX_POLICY = 64 * 1024  # RFC 8461 3.3: a policy larger than this SHOULD NOT be accepted
MAX_AGE = 31_557_600  # RFC 8461 3.2: max_age at most one year
_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_MAX_AGE = re.compile(r"[0-9]{1,10}\Z")  # RFC 8461 3.2: 1*10DIGIT


@dataclass(frozen=True, slots=True)
class MtaStsFetcher:
    """How policies are fetched: ``verify`` is True (system CAs), a CA file or an SSL
    context; ``port`` is 443 except in tests."""

    verify: ssl.SSLContext | str | bool = True
    port: int = 443
    timeout: float = 10.0

    def fetch(self, host: str, address: str) -> tuple[str, str]:
        """(policy text, "") or ("", why it could not be fetched). Blocking; at most
        ``timeout`` seconds in all, however slowly the server sends (httpx's own timeouts
        bound each read, not the whole exchange)."""
        return asyncio.run(self._fetch_within(host, address))

    async def _fetch_within(self, host: str, address: str) -> tuple[str, str]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(host, address)
        except TimeoutError:
            return "", f"no complete answer within {self.timeout:g} s"

    async def _fetch(self, host: str, address: str) -> tuple[str, str]:
        literal = f"[{address}]" if ":" in address else address
        url = f"https://{literal}:{self.port}/.well-known/mta-sts.txt"
        import httpx  # noqa: PLC0415 - (here: the rest of mailauth does not pay for it)

        try:
            verify = self.verify
            if isinstance(verify, str):
                verify = ssl.create_default_context(cafile=verify)
            async with httpx.AsyncClient(verify=verify, timeout=self.timeout) as client:
                request = client.build_request(
                    "GET", url, headers={"Host": host}, extensions={"sni_hostname": host}
                )
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        return "", f"HTTP {response.status_code} redirect (RFC 8461 3.3: refused)"
                    if response.status_code != 200:
                        return "", f"HTTP {response.status_code}"
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_POLICY:
                            return "", "policy larger than 64 KiB"
                    kind = response.headers.get("content-type", "").split(";")[0].strip()
                finally:
                    await response.aclose()
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            return "", f"{type(exc).__name__}: {exc}"
        if kind.lower() != "text/plain":
            return body.decode("utf-8", "replace"), f"content type {kind or 'missing'}"
        return body.decode("utf-8", "replace"), ""


def parse_policy(text: str) -> tuple[dict[str, Any], list[str]]:
    """RFC 8461 3.2: ``key: value`` lines; mx may repeat. Returns the policy and problems."""
    policy: dict[str, Any] = {"mx": []}
    problems = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not colon:
            problems.append(f"line {line[:40]!r} is not key: value")
        elif key == "mx":
            policy["mx"].append(value.lower())
        else:
            policy.setdefault(key, value)
    if policy.get("version") != "STSv1":
        problems.append("version is not STSv1")
    if policy.get("mode") not in ("enforce", "testing", "none"):
        problems.append(f"mode {policy.get('mode')!r} is not enforce/testing/none")
    age = str(policy.get("max_age", ""))
    if not _MAX_AGE.match(age) or int(age) > MAX_AGE:
        problems.append(f"max_age {age!r} is not 0-{MAX_AGE}")
    if policy.get("mode") in ("enforce", "testing") and not policy["mx"]:
        problems.append("no mx: pattern")
    return policy, problems


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: exact, or ``*.`` matching exactly one leftmost label."""
    pattern, host = pattern.rstrip(".").lower(), host.rstrip(".").lower()
    if pattern.startswith("*."):
        return host.count(".") >= pattern.count(".") and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def check_mta_sts(
    domain: str, mx_hosts: list[str], fetcher: MtaStsFetcher | None
) -> Plan[tuple[list[Finding], dict[str, Any]]]:
    name = f"_mta-sts.{domain}"
    (lookup,) = yield from resolve(Query.of(name, RRType.TXT))
    records = [t.decode("utf-8", "replace") for t in lookup.texts if t.startswith(b"v=STSv1")]
    details: dict[str, Any] = {"record": records[0] if records else None, "policy": None}
    if lookup.status is DnsStatus.TEMPFAIL:
        return [dns_error(Area.MTA_STS, lookup)], details
    if not records:
        return [
            Finding(
                Area.MTA_STS,
                "mta-sts.missing",
                Status.WARN,
                f"no MTA-STS record at {name}: senders may deliver without TLS",
                "publish _mta-sts TXT v=STSv1; id=... and a policy at mta-sts." + domain,
            )
        ], details
    specs = (spec.partition("=") for spec in records[0].split(";"))
    tags = {k.strip(): v.strip() for k, _, v in specs if k.strip()}
    if len(records) > 1 or not _ID.match(tags.get("id", "")):
        problem = "several records" if len(records) > 1 else f"id={tags.get('id', '')!r}"
        return [
            Finding(
                Area.MTA_STS,
                "mta-sts.record-syntax",
                Status.FAIL,
                f"{name}: {problem} (RFC 8461 3.1: v=STSv1; id=<1-32 letters/digits>)",
                "correct the record",
            )
        ], details
    if fetcher is None:
        return [
            Finding(Area.MTA_STS, "mta-sts.record-ok", Status.PASS, f"id={tags['id']}")
        ], details
    host = f"mta-sts.{domain}"
    answers = yield from resolve(Query.of(host, RRType.A), Query.of(host, RRType.AAAA))
    addresses = [a for answer in answers for a in answer.hosts]
    failed = next((a for a in answers if a.status is DnsStatus.TEMPFAIL), None)
    if not addresses and failed is not None:  # not known to have no address
        return [dns_error(Area.MTA_STS, failed, f"policy host {host} {failed.rdtype}")], details
    tried = f" (at {addresses[0]})" if addresses else ""  # (the address asked: which one?)
    if not addresses:
        text, error = "", f"{host} has no address"
    else:
        text, error = yield from offload(lambda: fetcher.fetch(host, addresses[0]))
    if error and not text:
        return [
            Finding(
                Area.MTA_STS,
                "mta-sts.policy-fetch",
                Status.FAIL,
                f"https://{host}/.well-known/mta-sts.txt{tried}: {error}",
                "serve the policy over HTTPS with a valid certificate for " + host,
            )
        ], details
    policy, problems = parse_policy(text)
    details["policy"] = policy
    if error:
        problems.append(error)
    findings = [
        Finding(Area.MTA_STS, "mta-sts.policy-syntax", Status.FAIL, p, "correct the policy")
        for p in problems
    ]
    return findings + _policy_findings(policy, mx_hosts), details


def _policy_findings(policy: dict[str, Any], mx_hosts: list[str]) -> list[Finding]:
    found = []
    mode = policy.get("mode")
    if mode in ("testing", "none"):
        found.append(
            Finding(
                Area.MTA_STS,
                f"mta-sts.mode-{mode}",
                Status.WARN,
                f"mode: {mode}: senders do not enforce TLS",
                "switch to mode: enforce once TLS-RPT reports are clean",
            )
        )
    unmatched = [h for h in mx_hosts if not any(mx_matches(p, h) for p in policy["mx"])]
    if mode in ("enforce", "testing") and unmatched:
        found.append(
            Finding(
                Area.MTA_STS,
                "mta-sts.mx-mismatch",
                Status.FAIL,
                f"MX host(s) {', '.join(unmatched)} match no mx: pattern of the policy",
                "add them to the policy's mx: lines",
            )
        )
    if not found:
        found.append(Finding(Area.MTA_STS, "mta-sts.ok", Status.PASS, f"mode: {mode}"))
    return found
