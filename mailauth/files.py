"""Reading the files an operator names (keys, configuration, zone files, messages), with a
bound on their size: a path that names a device such as /dev/zero, or the wrong file, gets
a one-line error instead of filling the memory.

Pipes are read as files are (``--key <(vault read ...)`` is a pipe), up to the same bound.
"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO

KEY_LIMIT = 1 << 20  # a 4096-bit RSA key in PEM is about 3.3 KB
CONFIG_LIMIT = 1 << 20
ZONE_LIMIT = 64 << 20
MESSAGE_LIMIT = 256 << 20  # above what mail systems accept (Gmail: 150 MB with encoding)


def read_limited(path: str | os.PathLike[str], limit: int) -> bytes:
    """The file's bytes; OSError (EFBIG) when it holds more than ``limit`` octets."""
    with open(path, "rb") as handle:
        return read_stream(handle, limit)


def read_stream(stream: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` octets of ``stream``; OSError (EFBIG) when it holds more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} octets")
    return data
