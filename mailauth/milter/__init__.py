"""``mailauth milter``: the Sendmail/Postfix mail filter (milter protocol 6) on asyncio.

:mod:`~mailauth.milter.protocol` encodes and decodes packets, :mod:`~mailauth.milter.negotiation`
says what the milter asks of the MTA; :mod:`~mailauth.milter.server` runs sessions
(:mod:`~mailauth.milter.session`: their state; :mod:`~mailauth.milter.settings`) and asks the
:class:`~mailauth.pipeline.Authenticator` for verdicts (:mod:`~mailauth.milter.verifying`),
:mod:`~mailauth.milter.replies` turns a verdict into the MTA's replies,
:mod:`~mailauth.milter.outbound` signs and seals; :mod:`~mailauth.milter.listen` opens the
socket, :mod:`~mailauth.milter.logline` writes the line per message,
:mod:`~mailauth.milter.metrics` counts for Prometheus; :mod:`~mailauth.milter.modes` routes a
message (sign, verify, pass) by its socket's or its ``{daemon_name}``'s mode,
:mod:`~mailauth.milter.signing_table` chooses its keys.
"""

from __future__ import annotations

from mailauth.milter.listen import parse_listen, start_server
from mailauth.milter.metrics import Metrics
from mailauth.milter.server import Milter
from mailauth.milter.settings import MilterSettings

__all__ = ["Metrics", "Milter", "MilterSettings", "parse_listen", "start_server"]
