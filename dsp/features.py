"""Per-window features: log band powers (Welch, median-averaged), SSVEP scores and signal quality."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.signal import get_window

BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 60.0),
}
# ADS1299 full scale at gain 24: +-4.5 V / 24 = +-187,500 uV. A sample near it is "railed".
RAILED_UV = 187_500.0


@lru_cache(maxsize=32)
def _hann(n: int) -> np.ndarray:
    return np.asarray(get_window("hann", n), dtype=np.float64)


def _median_bias(n_segments: int) -> float:
    # The median of n periodograms underestimates their mean by this factor (Allen et al. 2012, app. B).
    even = 2 * np.arange(1.0, (n_segments - 1) // 2 + 1)
    return float(1 + np.sum(1.0 / (even + 1) - 1.0 / even))


def welch_psd(
    x: np.ndarray, sample_rate_hz: float, nperseg: int, average: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD of ``x`` (samples, channels), or of a stack of windows (..., samples, channels):
    scipy.signal.welch's defaults (periodic Hann, half overlap, constant detrend, one-sided
    density), computed in one batched FFT. The PSD is (..., frequencies, channels).

    scipy's general path costs ~0.7 ms per call on a 2 s window; gold computes two per window per
    headset, which was the largest share of silver/gold CPU at 100 headsets.
    """
    step = nperseg - nperseg // 2
    n_segments = (x.shape[-2] - nperseg) // step + 1
    starts = np.arange(n_segments) * step
    segments = x[..., starts[:, None] + np.arange(nperseg), :]  # (..., segments, nperseg, channels)
    segments = segments - segments.mean(axis=-2, keepdims=True)
    window = _hann(nperseg)
    spectrum = np.fft.rfft(segments * window[:, None], axis=-2)
    psd = (spectrum.real**2 + spectrum.imag**2) / (sample_rate_hz * float(window @ window))
    psd[..., 1 : None if nperseg % 2 else -1, :] *= 2  # one-sided: DC (and Nyquist when even) once
    if average == "median":
        psd = segment_median(psd) / _median_bias(n_segments)
    else:
        psd = psd.mean(axis=-3)
    return np.fft.rfftfreq(nperseg, 1.0 / sample_rate_hz), psd


def segment_median(psd: np.ndarray) -> np.ndarray:
    """``np.median`` over the segment axis (-3). A 2 s window at any rate has three segments, whose
    median is a few element-wise minima and maxima: ~16x cheaper than numpy's partition, per window
    and headset in gold."""
    if psd.shape[-3] != 3:
        return np.asarray(np.median(psd, axis=-3))
    first, second, third = psd[..., 0, :, :], psd[..., 1, :, :], psd[..., 2, :, :]
    return np.asarray(np.maximum(np.minimum(first, second), np.minimum(np.maximum(first, second), third)))


def band_powers(window: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    """log10 band power (uV^2), shape (..., n_bands, n_channels), bands in ``BANDS`` order."""
    nperseg = min(window.shape[-2], int(sample_rate_hz))
    freqs, psd = welch_psd(window, sample_rate_hz, nperseg, average="median")
    resolution = freqs[1] - freqs[0]
    powers = []
    for low, high in BANDS.values():
        mask = (freqs >= low) & (freqs < min(high, sample_rate_hz / 2))
        powers.append(psd[..., mask, :].sum(axis=-2) * resolution)
    return np.asarray(np.log10(np.maximum(np.stack(powers, axis=-2), 1e-12)))


def reference_signals(n_samples: int, sample_rate_hz: float, frequency_hz: float, harmonics: int = 2) -> np.ndarray:
    t = np.arange(n_samples) / sample_rate_hz
    columns = []
    for harmonic in range(1, harmonics + 1):
        columns += [np.sin(2 * np.pi * harmonic * frequency_hz * t), np.cos(2 * np.pi * harmonic * frequency_hz * t)]
    return np.column_stack(columns)


def orthonormal_basis(x: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the centred columns of ``x`` (..., samples, columns): CCA's first step."""
    qx, _ = np.linalg.qr(x - x.mean(axis=-2, keepdims=True))
    return qx


@lru_cache(maxsize=256)
def reference_basis(n_samples: int, sample_rate_hz: float, frequency_hz: float, harmonics: int) -> np.ndarray:
    # Every window of a session has the same length, rate and stimulus set: decompose the references once.
    basis = orthonormal_basis(reference_signals(n_samples, sample_rate_hz, frequency_hz, harmonics))
    basis.setflags(write=False)
    return basis


def largest_correlation(qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """The largest canonical correlation between two orthonormal bases (broadcasting over leading axes)."""
    return np.clip(np.linalg.svd(np.swapaxes(qx, -1, -2) @ qy, compute_uv=False)[..., 0], 0.0, 1.0)


def canonical_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """The largest canonical correlation between the columns of x and y."""
    return float(largest_correlation(orthonormal_basis(x), orthonormal_basis(y)))


def ssvep_scores(
    window: np.ndarray, sample_rate_hz: float, frequencies: Sequence[float], harmonics: int = 2
) -> np.ndarray:
    """CCA correlation of the window (samples, channels) with reference sinusoids at each stimulus
    frequency: shape (n_frequencies,), or (..., n_frequencies) for a stack of windows."""
    qx = orthonormal_basis(window)
    n_samples = window.shape[-2]
    return np.stack(
        [
            largest_correlation(qx, reference_basis(n_samples, float(sample_rate_hz), float(f), harmonics))
            for f in frequencies
        ],
        axis=-1,
    )


def channel_quality(
    raw_window: np.ndarray,
    sample_rate_hz: float,
    line_hz: float = 60.0,
    railed_uv: float = RAILED_UV,
    flat_uv: float = 0.1,
) -> dict[str, np.ndarray]:
    """Per channel of a raw window (samples, channels), or of a stack of them: share of railed
    samples (%), mains power (``line_hz`` +- 2 Hz) over the power above 1 Hz, and whether it is flat
    (standard deviation under ``flat_uv``). Each is (..., channels)."""
    railed = np.mean(np.abs(raw_window) >= 0.99 * railed_uv, axis=-2) * 100.0
    nperseg = min(raw_window.shape[-2], int(sample_rate_hz))
    freqs, psd = welch_psd(raw_window, sample_rate_hz, nperseg)  # each segment is detrended
    total = psd[..., freqs >= 1, :].sum(axis=-2)
    mains = psd[..., (freqs >= line_hz - 2) & (freqs <= line_hz + 2), :].sum(axis=-2)
    return {
        "railed_pct": railed,
        "line_noise_ratio": mains / np.maximum(total, 1e-12),
        "flat": raw_window.std(axis=-2) < flat_uv,
    }


def window_quality(
    raw_windows: np.ndarray, sample_rate_hz: float, railed_uv: float = RAILED_UV, flat_uv: float = 0.1
) -> dict[str, np.ndarray]:
    """:func:`quality` of each window of a stack (..., samples, channels): arrays of shape (...)."""
    per_channel = channel_quality(raw_windows, sample_rate_hz, railed_uv=railed_uv, flat_uv=flat_uv)
    return {
        "railed_pct": np.mean(per_channel["railed_pct"], axis=-1),
        "line_noise_ratio": np.median(per_channel["line_noise_ratio"], axis=-1),
        "flat_channels": np.sum(per_channel["flat"], axis=-1),
    }


def quality(
    raw_window: np.ndarray, sample_rate_hz: float, railed_uv: float = RAILED_UV, flat_uv: float = 0.1
) -> dict[str, float]:
    """Railed sample share, mains-to-total power ratio and flat channel count of a raw window."""
    measured = window_quality(raw_window, sample_rate_hz, railed_uv=railed_uv, flat_uv=flat_uv)
    return {
        "railed_pct": float(measured["railed_pct"]),
        "line_noise_ratio": float(measured["line_noise_ratio"]),
        "flat_channels": int(measured["flat_channels"]),
    }
