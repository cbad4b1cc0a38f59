"""Identifiers recloop generates."""

from __future__ import annotations

import os
import time
import uuid


def uuid7(now_ns: int | None = None) -> str:
    """A UUID version 7 (RFC 9562): 48-bit Unix milliseconds, then random bits.

    Time-ordered, so generated event ids sort by arrival.

    >>> u = uuid.UUID(uuid7()); u.version, u.variant == uuid.RFC_4122
    (7, True)
    """
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
