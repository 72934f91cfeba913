"""Dejittered sample times: a running least-squares line through (sample index, host time).

BrainFlow stamps each sample with the host time it was read, which jitters with USB and scheduling
(the old lab's chunked timestamps). The sampling clock itself is steady, so the best time for
sample i is a line a + b*i fitted to the stamps seen so far. The fit is updated once per block, in
block order, so the result does not depend on how blocks are grouped into micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DejitterState:
    # Sums over samples of x = index - origin_index, y = time - origin_time - x * nominal_period.
    origin_index: int = -1
    origin_time_us: int = 0
    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0


def dejitter_block(
    state: DejitterState,
    first_index: int,
    device_times_us: np.ndarray,
    sample_rate_hz: float,
    forgetting: float = 0.9999,
) -> tuple[np.ndarray, DejitterState]:
    """Dejittered times (int64 microseconds, device clock) for one block, and the new state.

    ``forgetting`` (per sample) lets the fit follow slow clock drift; 0.9999 remembers ~40 s at
    250 Hz.
    """
    n_samples = len(device_times_us)
    if n_samples == 0:
        return np.empty(0, np.int64), state
    period = 1e6 / sample_rate_hz
    if state.origin_index < 0:
        state = DejitterState(origin_index=first_index, origin_time_us=int(device_times_us[0]))
    x = (first_index - state.origin_index) + np.arange(n_samples, dtype=np.float64)
    y = (device_times_us - state.origin_time_us).astype(np.float64) - x * period
    decay = forgetting**n_samples
    weights = forgetting ** np.arange(n_samples - 1, -1, -1, dtype=np.float64)
    n = state.n * decay + weights.sum()
    sx = state.sx * decay + (weights * x).sum()
    sy = state.sy * decay + (weights * y).sum()
    sxx = state.sxx * decay + (weights * x * x).sum()
    sxy = state.sxy * decay + (weights * x * y).sum()
    new_state = DejitterState(state.origin_index, state.origin_time_us, n, sx, sy, sxx, sxy)
    denominator = n * sxx - sx * sx
    if n < 2 or abs(denominator) < 1e-9:
        slope, intercept = 0.0, sy / n
    else:
        slope = (n * sxy - sx * sy) / denominator
        intercept = (sy - slope * sx) / n
    fitted = state.origin_time_us + x * period + intercept + slope * x
    return np.rint(fitted).astype(np.int64), new_state
