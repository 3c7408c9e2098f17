"""ARC (RFC 8617): chain validation and sealing, on DKIM's canonicalization, keys and crypto.

Modules: :mod:`~mailauth.arc.chain` (parsing the ARC fields into sets, pure),
:mod:`~mailauth.arc.verify` (chain validation) and :mod:`~mailauth.arc.seal` (sealing).
"""

from __future__ import annotations

from mailauth.arc.chain import ArcChain, ArcError, collect_chain
from mailauth.arc.seal import Sealer, merge_authentication_results, results_payload
from mailauth.arc.verify import verify_arc

__all__ = [
    "ArcChain",
    "ArcError",
    "Sealer",
    "collect_chain",
    "merge_authentication_results",
    "results_payload",
    "verify_arc",
]
