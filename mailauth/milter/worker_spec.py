"""What the milter's Authenticator is made of, as plain values (:class:`AuthenticatorSpec`):
the milter builds its own from it, and so does each worker process that checks SPF and heavy
messages (:mod:`mailauth.milter.offload`), which receives ``spec.build`` pickled. It lives
below ``mailauth.cli`` so that unpickling it in a worker imports only what building an
Authenticator needs, not the command line (the command line makes it from the configuration:
``mailauth.cli.milter_workers``)."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from mailauth.dkim import DkimPolicy
from mailauth.dmarc import DmarcLocalPolicy
from mailauth.dns import DnsCache
from mailauth.dns.opening import open_resolver
from mailauth.pipeline import Authenticator, MessageLimits, VerdictRecorder
from mailauth.policy import trust_mailing_lists


@dataclass(frozen=True, slots=True)
class AuthenticatorSpec:
    authserv_id: str
    nameservers: tuple[str, ...] | None
    zone_files: tuple[str, ...] | None
    dns_timeout: float
    trusted_arc_sealers: tuple[str, ...]
    trusted_mailing_lists: tuple[str, ...]
    max_dkim_signatures: int
    reject_partial_body: bool
    deadline: float

    def build(
        self,
        cache: DnsCache | None = None,
        executor: Executor | None = None,
        recorder: VerdictRecorder | None = None,
    ) -> Authenticator:
        """The Authenticator (its resolver opened and probed now: ``open_resolver``'s errors
        when it cannot be)."""
        resolver = open_resolver(
            list(self.nameservers) if self.nameservers else None,
            list(self.zone_files) if self.zone_files else None,
            self.dns_timeout,
            cache,
        )
        lists = self.trusted_mailing_lists
        return Authenticator(
            authserv_id=self.authserv_id,
            resolver=resolver,
            trusted_arc_sealers=self.trusted_arc_sealers,
            executor=executor,
            dmarc_policy=DmarcLocalPolicy(overrides=(trust_mailing_lists(lists),))
            if lists
            else None,
            dkim_policy=DkimPolicy(
                max_signatures=self.max_dkim_signatures,
                reject_partial_body=self.reject_partial_body,
            ),
            limits=MessageLimits.within(self.deadline),  # the checks end before the deadline
            recorder=recorder,
        )
