"""Display-frame timing maths: the refresh a page actually gets, its jitter and dropped frames, and
the flicker frequency a sequence of drawn frames achieved. Pure numpy: the presenter uses it on the
frame times its page reports, the benchmark and tests on the frames they read back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A frame interval this many refresh periods long or more means frames were missed.
DROP_THRESHOLD = 1.5


@dataclass(frozen=True)
class FrameTiming:
    frames: int
    refresh_hz: float  # from the median interval: what the display runs at, drops aside
    interval_ms: float
    jitter_ms: float  # standard deviation of the intervals that are not drops
    jitter_p95_ms: float  # 95th percentile of |interval - median| over those intervals
    dropped: int  # frames the display showed that no callback drew (intervals / period - 1)


def frame_timing(times_ms: np.ndarray) -> FrameTiming:
    """Timing of consecutive frame times (milliseconds, e.g. requestAnimationFrame timestamps)."""
    times = np.asarray(times_ms, dtype=np.float64)
    if times.size < 3:
        return FrameTiming(int(times.size), float("nan"), float("nan"), float("nan"), float("nan"), 0)
    intervals = np.diff(times)
    period = float(np.median(intervals))
    long = intervals >= DROP_THRESHOLD * period
    steady = intervals[~long]
    dropped = int(np.sum(np.rint(intervals[long] / period) - 1)) if long.any() else 0
    deviation = np.abs(steady - period)
    return FrameTiming(
        frames=int(times.size),
        refresh_hz=1000.0 / period,
        interval_ms=period,
        jitter_ms=float(np.std(steady)) if steady.size else float("nan"),
        jitter_p95_ms=float(np.percentile(deviation, 95)) if steady.size else float("nan"),
        dropped=dropped,
    )


@dataclass(frozen=True)
class SinusoidFit:
    hz: float
    phase: float  # radians at t = 0
    amplitude: float
    offset: float
    rms_residual: float


def _fit_at(t: np.ndarray, y: np.ndarray, hz: float) -> tuple[np.ndarray, float]:
    design = np.column_stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t), np.ones_like(t)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return coef, float(residual @ residual)


def fit_sinusoid(times_s: np.ndarray, values: np.ndarray, near_hz: float, search_hz: float = 0.5) -> SinusoidFit:
    """The sinusoid (least squares, frequency included) that best explains ``values`` drawn at
    ``times_s`` (seconds, any spacing), searched within ``near_hz`` +- ``search_hz``.

    A 5 mHz grid finds the basin (a peak is ~1/duration wide); a golden-section search then refines
    the frequency to ~1e-6 Hz.
    """
    t = np.asarray(times_s, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if t.size < 4:
        raise ValueError(f"a sinusoid fit needs at least 4 frames, got {t.size}")
    grid = np.arange(max(near_hz - search_hz, 1e-3), near_hz + search_hz, 5e-3)
    costs = np.array([_fit_at(t, y, float(f))[1] for f in grid])
    best = int(np.argmin(costs))
    low, high = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, grid.size - 1)])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    cost_a, cost_b = _fit_at(t, y, a)[1], _fit_at(t, y, b)[1]
    for _ in range(40):
        if cost_a < cost_b:
            high, b, cost_b = b, a, cost_a
            a = low + (1 - ratio) * (high - low)
            cost_a = _fit_at(t, y, a)[1]
        else:
            low, a, cost_a = a, b, cost_b
            b = low + ratio * (high - low)
            cost_b = _fit_at(t, y, b)[1]
    hz = (low + high) / 2
    (sin_c, cos_c, offset), cost = _fit_at(t, y, hz)
    return SinusoidFit(
        hz=float(hz),
        phase=float(np.arctan2(cos_c, sin_c)),
        amplitude=float(np.hypot(sin_c, cos_c)),
        offset=float(offset),
        rms_residual=float(np.sqrt(cost / t.size)),
    )
