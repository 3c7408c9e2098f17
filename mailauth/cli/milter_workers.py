"""What the milter's Authenticator is made of, as plain values: the milter builds its own
from it, and so does each worker process that checks heavy messages
(:mod:`mailauth.milter.offload`), which receives it pickled."""

from __future__ import annotations

import argparse
from concurrent.futures import Executor
from dataclasses import dataclass

from mailauth.cli.common import make_resolver
from mailauth.config import MilterConfig
from mailauth.dkim import DkimPolicy
from mailauth.dmarc import DmarcLocalPolicy
from mailauth.dns import DnsCache
from mailauth.milter.offload import Offloader, OffloadStats, default_workers
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

    @classmethod
    def of(cls, config: MilterConfig, dns: argparse.Namespace) -> AuthenticatorSpec:
        """``dns``: the DNS options in effect (``nameserver``, ``dns_zone``, ``dns_timeout``)."""
        return cls(
            authserv_id=config.authserv_id,
            nameservers=tuple(dns.nameserver) if dns.nameserver else None,
            zone_files=tuple(dns.dns_zone) if dns.dns_zone else None,
            dns_timeout=dns.dns_timeout,
            trusted_arc_sealers=config.trusted_arc_sealers,
            trusted_mailing_lists=config.trusted_mailing_lists,
            max_dkim_signatures=config.max_dkim_signatures,
            reject_partial_body=config.reject_partial_body,
            deadline=config.deadline,
        )

    def build(
        self,
        cache: DnsCache | None = None,
        executor: Executor | None = None,
        recorder: VerdictRecorder | None = None,
    ) -> Authenticator:
        dns = argparse.Namespace(
            nameserver=list(self.nameservers) if self.nameservers else None,
            dns_zone=list(self.zone_files) if self.zone_files else None,
            dns_timeout=self.dns_timeout,
        )
        lists = self.trusted_mailing_lists
        return Authenticator(
            authserv_id=self.authserv_id,
            resolver=make_resolver(dns, cache),
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


def make_offloader(
    config: MilterConfig,
    spec: AuthenticatorSpec,
    *,
    start: bool = True,
    stats: OffloadStats | None = None,
) -> Offloader | None:
    """The worker processes for SPF and heavy messages (``inbound.offload_workers``,
    automatic when not set); None with no workers. ``start``: start them now and wait until
    they are ready (at start-up; a reload lets the first request start them instead, so as
    not to hold the event loop); ``stats``: the counters to add to (a reload's: the
    milter's, so that the metrics go on from where they were)."""
    workers = config.offload_workers if config.offload_workers is not None else default_workers()
    if not workers:
        return None
    offloader = Offloader(spec.build, workers=workers, stats=stats)
    if start:
        offloader.start()
    return offloader
