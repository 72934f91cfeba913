"""Per-window features: log band powers (Welch, median-averaged), SSVEP scores and signal quality."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import welch

BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 60.0),
}
# ADS1299 full scale at gain 24: +-4.5 V / 24 = +-187,500 uV. A sample near it is "railed".
RAILED_UV = 187_500.0


def band_powers(window: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    """log10 band power (uV^2), shape (n_bands, n_channels), bands in ``BANDS`` order."""
    nperseg = min(len(window), int(sample_rate_hz))
    freqs, psd = welch(window, fs=sample_rate_hz, nperseg=nperseg, noverlap=nperseg // 2,
                       average="median", axis=0)
    resolution = freqs[1] - freqs[0]
    powers = []
    for low, high in BANDS.values():
        mask = (freqs >= low) & (freqs < min(high, sample_rate_hz / 2))
        powers.append(psd[mask].sum(axis=0) * resolution)
    return np.log10(np.maximum(np.asarray(powers), 1e-12))


def reference_signals(n_samples: int, sample_rate_hz: float, frequency_hz: float,
                      harmonics: int = 2) -> np.ndarray:
    t = np.arange(n_samples) / sample_rate_hz
    columns = []
    for harmonic in range(1, harmonics + 1):
        columns += [np.sin(2 * np.pi * harmonic * frequency_hz * t),
                    np.cos(2 * np.pi * harmonic * frequency_hz * t)]
    return np.column_stack(columns)


def canonical_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """The largest canonical correlation between the columns of x and y."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    qx, _ = np.linalg.qr(x)
    qy, _ = np.linalg.qr(y)
    return float(np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False)[0], 0.0, 1.0))


def ssvep_scores(window: np.ndarray, sample_rate_hz: float, frequencies: Sequence[float],
                 harmonics: int = 2) -> np.ndarray:
    """CCA correlation of the window with reference sinusoids at each stimulus frequency."""
    return np.array([
        canonical_correlation(window, reference_signals(len(window), sample_rate_hz, f, harmonics))
        for f in frequencies
    ])


def quality(raw_window: np.ndarray, sample_rate_hz: float, railed_uv: float = RAILED_UV,
            flat_uv: float = 0.1) -> dict[str, float]:
    """Railed sample share, mains-to-total power ratio and flat channel count of a raw window."""
    railed = float(np.mean(np.abs(raw_window) >= 0.99 * railed_uv) * 100.0)
    nperseg = min(len(raw_window), int(sample_rate_hz))
    freqs, psd = welch(raw_window - raw_window.mean(axis=0), fs=sample_rate_hz, nperseg=nperseg, axis=0)
    total = psd[(freqs >= 1)].sum(axis=0)
    mains = psd[(freqs >= 58) & (freqs <= 62)].sum(axis=0)
    line_ratio = float(np.median(mains / np.maximum(total, 1e-12)))
    flat = int(np.sum(raw_window.std(axis=0) < flat_uv))
    return {"railed_pct": railed, "line_noise_ratio": line_ratio, "flat_channels": flat}
