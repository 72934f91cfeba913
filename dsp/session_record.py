"""What makes a session record usable: the checks bronze runs on every session record (on the
executors, per record) and the processor runs before it uses one. Plain Python, no numpy or scipy:
importing it costs a Python worker nothing (the session processor's scipy import took 3 s)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

MAX_SAMPLE_RATE_HZ = 100_000.0
MAX_CHANNELS = 1024


def is_finite_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and math.isfinite(value)


class SessionRecordError(ValueError):
    """A session record the processor cannot use; the message names the field."""


def session_record_problem(record: Mapping[str, Any]) -> str | None:
    """Why a session record cannot describe its blocks, or None. Bronze quarantines such records."""
    rate = record.get("sample_rate_hz")
    if not is_finite_number(rate) or not 0 < rate <= MAX_SAMPLE_RATE_HZ:
        return f"session sample_rate_hz={rate!r}: must be a finite rate in (0, {MAX_SAMPLE_RATE_HZ:g}] Hz"
    names, types = record.get("channel_names") or [], record.get("channel_types") or []
    if not 0 < len(names) <= MAX_CHANNELS:
        return f"session channel_names has {len(names)} entries; 1..{MAX_CHANNELS} expected"
    if len(types) != len(names):
        return f"session channel_types has {len(types)} entries, channel_names {len(names)}: they must match"
    for key, value in (record.get("metadata") or {}).items():
        if key.startswith("stimulus."):
            try:
                hz = float(value)
            except (TypeError, ValueError):
                hz = math.nan
            if not math.isfinite(hz) or hz <= 0:
                return f"session metadata {key}={value!r}: a stimulus frequency must be a positive number of Hz"
    return None
