"""The one clock every record's ``*_us`` field is read from (kept import-free: the codec, signing and
builders all sit above it)."""

from __future__ import annotations

import time


def now_us() -> int:
    """Wall-clock microseconds since the epoch: the unit of every ``*_us`` field in the records."""
    return time.time_ns() // 1000
