"""The one resolver of a program, from plain settings: zone files, or recursive nameservers
(the system's when none are named) with a timeout, probed once. The command line
(``mailauth.cli.common.make_resolver``) and the milter's worker processes
(``mailauth.milter.worker_spec``) both open theirs here; the messages name the command-line
options, where the only values that reach these checks come from (a configuration file's
are validated when it is read)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mailauth.dns import DnsResolver
from mailauth.dns.cache import DnsCache
from mailauth.dns.resolver import Resolver
from mailauth.dns.zone import ZoneResolver, split_zone_spec
from mailauth.errors import ConfigError, DnsTempError


class ResolverSettingsError(ConfigError):
    """Settings that make no resolver: zone files and nameservers both, a bad timeout."""


class NameserversUnreachableError(DnsTempError):
    """No nameserver answers at all (a local problem, perhaps passing)."""


def open_resolver(
    nameservers: Sequence[str] | None,
    zone_specs: Sequence[str] | None,
    timeout: float,
    cache: DnsCache | None = None,
    *,
    check: bool = True,
) -> DnsResolver:
    """Zone files (``FILE`` or ``FILE:ORIGIN``), or the network (with ``cache``, when given:
    the milter keeps its answers across a configuration reload). ``check``: a network
    resolver whose nameservers do not answer is NameserversUnreachableError."""
    if zone_specs and nameservers:
        raise ResolverSettingsError("--dns-zone and --nameserver exclude each other")
    if zone_specs:
        return ZoneResolver.from_files(split_zone_spec(spec) for spec in zone_specs)
    if not 0 < timeout < math.inf:  # (false for NaN too)
        raise ResolverSettingsError("--dns-timeout must be a positive number of seconds")
    resolver = Resolver(nameservers, timeout=min(2.0, timeout), lifetime=timeout, cache=cache)
    problem = resolver.check_reachable() if check else ""
    if problem:
        raise NameserversUnreachableError(f"DNS unreachable: {problem}")
    return resolver
