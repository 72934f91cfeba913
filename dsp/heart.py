"""Heart rate from a pulse (PPG) channel: beat detection with find_peaks, moving-average BPM."""

from __future__ import annotations

import numpy as np
from scipy.signal import find_peaks

MIN_BEAT_INTERVAL_S = 0.33  # 180 bpm
PROMINENCE_FRACTION = 0.3


def detect_beats(pulse: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    """Sample indices of beats (systolic peaks)."""
    if len(pulse) < 3:
        return np.empty(0, dtype=np.int64)
    span = float(np.percentile(pulse, 95) - np.percentile(pulse, 5))
    if span <= 0:
        return np.empty(0, dtype=np.int64)
    peaks, _ = find_peaks(
        pulse,
        distance=max(1, int(MIN_BEAT_INTERVAL_S * sample_rate_hz)),
        prominence=PROMINENCE_FRACTION * span,
    )
    return np.asarray(peaks, dtype=np.int64)


def heart_rate_bpm(beats: np.ndarray, sample_rate_hz: float, average_over: int = 5) -> np.ndarray:
    """BPM at each beat after the first, the moving average of the last ``average_over`` intervals."""
    if len(beats) < 2:
        return np.empty(0)
    intervals = np.diff(beats) / sample_rate_hz
    instantaneous = 60.0 / intervals
    kernel = np.ones(average_over)
    sums = np.convolve(instantaneous, kernel)[: len(instantaneous)]
    counts = np.convolve(np.ones_like(instantaneous), kernel)[: len(instantaneous)]
    return sums / counts
