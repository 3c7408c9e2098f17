"""The Authenticator: runs every method on one message and builds the verdict.

Data flows one way: connection facts (IP, HELO, MAIL FROM) and the raw message go in; each
method's outcome comes out of its own module; DMARC takes the SPF and DKIM outcomes as its
inputs; the verdict and its Authentication-Results field are built last, never revised.
The checks are plans (:mod:`mailauth.plan`), so ``verify`` and ``verify_async`` share them.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, replace

from mailauth.arc import verify_arc
from mailauth.authresults import (
    quote_pvalue,
    render_authentication_results,
    render_received_spf,
)
from mailauth.dkim import DkimPolicy, verify_dkim
from mailauth.dmarc import DmarcLocalPolicy, evaluate_dmarc
from mailauth.dns import DnsResolver
from mailauth.message import Message
from mailauth.plan import Plan, offload, run_plan, run_plan_async
from mailauth.policy import trust_arc_sealers
from mailauth.results import Verdict
from mailauth.spf import check_spf


@dataclass(frozen=True, slots=True)
class Context:
    """The SMTP facts of one message and the message itself, checked and normalised."""

    message: Message
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    helo: str
    mail_from: str
    now: float


def make_context(
    message: bytes | Message, *, ip: str, helo: str, mail_from: str, now: float | None
) -> Context:
    """Validate the caller's arguments; raises ValueError (MessageParseError) on misuse."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise ValueError(f"not an IP address: {ip!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # RFC 7208 5: an IPv4-mapped client is an IPv4 client
    parsed = message if isinstance(message, Message) else Message.parse(message)
    sender = mail_from.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    return Context(
        message=parsed,
        ip=address,
        helo=helo.strip(),
        mail_from=sender,
        now=time.time() if now is None else float(now),
    )


class Authenticator:
    """Verifies messages for one ADMD, identified by ``authserv_id`` (RFC 8601 2.5)."""

    def __init__(
        self,
        authserv_id: str,
        resolver: DnsResolver,
        *,
        executor: Executor | None = None,
        dkim_policy: DkimPolicy | None = None,
        dmarc_policy: DmarcLocalPolicy | None = None,
        trusted_arc_sealers: Iterable[str] = (),
    ) -> None:
        if not authserv_id or quote_pvalue(authserv_id) != authserv_id:
            raise ValueError(
                f"authserv-id must be a plain token such as a host name: {authserv_id!r}"
            )
        self.authserv_id = authserv_id.lower()
        self.resolver = resolver
        self.executor = executor
        self.dkim_policy = dkim_policy or DkimPolicy()
        self.dmarc_policy = dmarc_policy or DmarcLocalPolicy()
        sealers = tuple(trusted_arc_sealers)
        if sealers:  # RFC 8617 7.2.1: a trusted sealer's passing chain may override DMARC
            hooks = (*self.dmarc_policy.overrides, trust_arc_sealers(sealers))
            self.dmarc_policy = replace(self.dmarc_policy, overrides=hooks)

    def verify(
        self,
        message: bytes | Message,
        *,
        ip: str,
        helo: str = "",
        mail_from: str = "",
        now: float | None = None,
    ) -> Verdict:
        """Authenticate one message, blocking; see :meth:`verify_async`."""
        context = make_context(message, ip=ip, helo=helo, mail_from=mail_from, now=now)
        return run_plan(self.plan(context), self.resolver)

    async def verify_async(
        self,
        message: bytes | Message,
        *,
        ip: str,
        helo: str = "",
        mail_from: str = "",
        now: float | None = None,
    ) -> Verdict:
        """Authenticate one message on the running event loop.

        ``ip`` is the SMTP client's address, ``helo`` its HELO/EHLO name, ``mail_from`` the
        reverse-path ("" or "<>" when null), ``now`` the Unix time to judge signatures at.
        Raises ValueError for a malformed ``ip`` or an input that is not a message.
        """
        context = make_context(message, ip=ip, helo=helo, mail_from=mail_from, now=now)
        return await run_plan_async(self.plan(context), self.resolver, self.executor)

    def plan(self, context: Context) -> Plan[Verdict]:
        """The checks, in order. Methods whose modules have not landed are absent."""
        ip = str(context.ip)
        # pyspf is blocking: under asyncio it runs in a worker thread.
        spf = yield from offload(
            lambda: check_spf(self.resolver, ip=ip, helo=context.helo, mail_from=context.mail_from)
        )
        dkim = yield from verify_dkim(context.message, now=context.now, policy=self.dkim_policy)
        arc = yield from verify_arc(context.message)
        dmarc = yield from evaluate_dmarc(
            context.message.author(),
            spf=spf,
            dkim=dkim,
            arc=arc,
            ip=ip,
            helo=context.helo,
            mail_from=context.mail_from,
            local=self.dmarc_policy,
        )
        header = render_authentication_results(
            self.authserv_id, spf=spf, dkim=dkim, arc=arc, dmarc=dmarc, remote_ip=ip
        )
        received_spf = render_received_spf(
            spf.mailfrom, ip=ip, helo=context.helo, receiver=self.authserv_id
        )
        return Verdict(
            authserv_id=self.authserv_id,
            authentication_results=header,
            spf=spf,
            dkim=dkim,
            dmarc=dmarc,
            arc=arc,
            received_spf=received_spf,
        )
