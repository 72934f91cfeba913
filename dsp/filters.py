"""Causal EEG filters (band-pass + notch) whose state carries across chunks.

One-pass ``scipy.signal.sosfilt(sos, x, axis=0)`` over a whole recording equals
``filter_chunk`` applied chunk by chunk from :func:`initial_state` (zero initial conditions):
that is what lets silver filter a session across Spark micro-batches and still match.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import butter, iirnotch, sosfilt, tf2sos


@dataclass(frozen=True)
class FilterSpec:
    sample_rate_hz: float
    band_low_hz: float = 1.0
    band_high_hz: float = 60.0
    band_order: int = 4
    notch_hz: float | None = 60.0
    notch_q: float = 30.0

    @classmethod
    def at_rate(
        cls, sample_rate_hz: float, band_low_hz: float, band_high_hz: float, notch_hz: float | None
    ) -> FilterSpec:
        """The configured filter fitted to a stream's own rate: a slow board cannot carry a 60 Hz
        edge or notch, so the high edge stops at 0.45 x rate and the notch is left out above Nyquist."""
        return cls(
            sample_rate_hz,
            band_low_hz,
            min(band_high_hz, 0.45 * sample_rate_hz),
            notch_hz=notch_hz if notch_hz and notch_hz < sample_rate_hz / 2 else None,
        )

    def validate(self) -> None:
        nyquist = self.sample_rate_hz / 2
        if not 0 < self.band_low_hz < self.band_high_hz:
            raise ValueError(f"band-pass needs 0 < low < high, got {self.band_low_hz}-{self.band_high_hz} Hz")
        if self.band_high_hz >= nyquist:
            raise ValueError(
                f"band-pass high edge {self.band_high_hz} Hz must be below Nyquist "
                f"({nyquist} Hz at {self.sample_rate_hz} Hz)"
            )
        if self.notch_hz is not None and not 0 < self.notch_hz < nyquist:
            raise ValueError(f"notch {self.notch_hz} Hz must be below Nyquist ({nyquist} Hz)")


@lru_cache(maxsize=64)
def design_sos(spec: FilterSpec) -> np.ndarray:
    """Second-order sections of the band-pass followed by the notch."""
    spec.validate()
    band = butter(
        spec.band_order,
        [spec.band_low_hz, spec.band_high_hz],
        btype="bandpass",
        fs=spec.sample_rate_hz,
        output="sos",
    )
    if spec.notch_hz is None:
        return np.asarray(band)
    b, a = iirnotch(spec.notch_hz, spec.notch_q, fs=spec.sample_rate_hz)
    return np.vstack([band, tf2sos(b, a)])


def initial_state(sos: np.ndarray, n_channels: int) -> np.ndarray:
    """Zero initial conditions, shape ``(n_sections, 2, n_channels)``, as one-pass sosfilt uses."""
    return np.zeros((sos.shape[0], 2, n_channels))


def filter_chunk(sos: np.ndarray, state: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filter ``samples`` (n_samples, n_channels) continuing from ``state``; returns (y, new state)."""
    if samples.shape[0] == 0:
        return samples.astype(np.float64), state
    if state.shape[2] != samples.shape[1]:
        raise ValueError(f"filter state is for {state.shape[2]} channels, chunk has {samples.shape[1]}")
    filtered, new_state = sosfilt(sos, samples, axis=0, zi=state)
    return filtered, new_state


def filter_block(
    sos: np.ndarray, state: np.ndarray | None, expected_index: int | None, first_index: int, samples: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Filter a live block that starts at sample ``first_index``, continuing ``state`` when the block
    follows the previous one (``expected_index``); after a gap or at the start it begins at rest, as
    a one-pass filter over that stretch would. Returns (y, new state)."""
    if state is None or expected_index is None or first_index != expected_index:
        state = initial_state(sos, samples.shape[1])
    return filter_chunk(sos, state, samples)
