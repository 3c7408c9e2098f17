"""The milter's worker processes as the command line sets them up: the plain settings of
their Authenticator (:class:`~mailauth.milter.worker_spec.AuthenticatorSpec`, made here from
the configuration and the DNS options) and the :class:`~mailauth.milter.offload.Offloader`."""

from __future__ import annotations

import argparse

from mailauth.config import MilterConfig
from mailauth.milter.offload import Offloader, OffloadStats, default_workers
from mailauth.milter.worker_spec import AuthenticatorSpec


def spec_of(config: MilterConfig, dns: argparse.Namespace) -> AuthenticatorSpec:
    """``dns``: the DNS options in effect (``nameserver``, ``dns_zone``, ``dns_timeout``)."""
    return AuthenticatorSpec(
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
