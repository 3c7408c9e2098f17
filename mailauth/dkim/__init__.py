"""DKIM (RFC 6376, RFC 8301, RFC 8463): verification, signing, keys.

Modules: :mod:`~mailauth.dkim.tags` (tag lists), :mod:`~mailauth.dkim.canon` (header
canonicalization), :mod:`~mailauth.dkim.body` (the streaming body hash),
:mod:`~mailauth.dkim.signature` (DKIM-Signature parsing), :mod:`~mailauth.dkim.keys` (key
records and key files), :mod:`~mailauth.dkim.verify` and :mod:`~mailauth.dkim.sign`. ARC
reuses them.
"""

from __future__ import annotations

from mailauth.dkim.body import BodyHasher, BodyHashes
from mailauth.dkim.canon import Canonicalization
from mailauth.dkim.keys import (
    KeyRecord,
    KeyRecordError,
    generate_private_key,
    load_private_key,
    parse_key_record,
    public_key_record,
    zone_txt_line,
)
from mailauth.dkim.sign import InsecureKeyFileWarning, Signer, sign_dkim
from mailauth.dkim.signature import Signature, SignatureError, parse_signature, unix_time
from mailauth.dkim.verify import DkimPolicy, DkimVerification, verify_dkim

__all__ = [
    "BodyHasher",
    "BodyHashes",
    "Canonicalization",
    "DkimPolicy",
    "DkimVerification",
    "InsecureKeyFileWarning",
    "KeyRecord",
    "KeyRecordError",
    "Signature",
    "SignatureError",
    "Signer",
    "generate_private_key",
    "load_private_key",
    "parse_key_record",
    "parse_signature",
    "public_key_record",
    "sign_dkim",
    "unix_time",
    "verify_dkim",
    "zone_txt_line",
]
