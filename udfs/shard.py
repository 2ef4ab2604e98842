"""Stable virtual shards: the same id maps to the same shard in every process and run.

(Python's built-in ``hash`` of a string is salted per process, so it cannot be used.)
"""

from __future__ import annotations

import zlib


def shard_of(key: str, shards: int) -> int:
    """The shard in ``0..shards-1`` that owns ``key``."""
    return zlib.crc32(key.encode("utf-8")) % shards
