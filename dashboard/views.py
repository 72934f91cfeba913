"""What the dashboard draws, as plain numpy/scipy/MNE functions (no Bokeh, no Kafka)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import spectrogram as scipy_spectrogram

from dsp.features import BANDS, band_powers, channel_quality, welch_psd
from dsp.labels import label_windows


def channel_scales(window: np.ndarray, floor_uv: float = 1.0) -> np.ndarray:
    """Per-channel scale for stacked traces: a robust spread (4 x MAD), never below ``floor_uv``."""
    if len(window) == 0:
        return np.ones(window.shape[1])
    centred = window - np.median(window, axis=0)
    return np.maximum(4.0 * 1.4826 * np.median(np.abs(centred), axis=0), floor_uv)


def stack(window: np.ndarray, scales: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Channel k centred, scaled to about +-0.5 and shifted to row ``n_channels - 1 - k`` (first on top)."""
    n = window.shape[1]
    return (window - centres) / scales + (n - 1 - np.arange(n))


def channel_quality_rows(
    raw: np.ndarray,
    names: Sequence[str],
    sample_rate_hz: float,
    line_hz: float | None,
    flat_uv: float,
    line_noise_max: float,
) -> dict[str, list[Any]]:
    """The quality table: per channel its status (ok, FLAT, RAILED, LINE NOISE), spread, railed share
    and mains share, by the same measure gold's quality columns use."""
    if len(raw) < max(2, int(sample_rate_hz / 2)):
        return {"channel": [], "status": [], "sd_uv": [], "railed_pct": [], "line_pct": []}
    q = channel_quality(raw, sample_rate_hz, line_hz=line_hz or 60.0, flat_uv=flat_uv)
    status = []
    for flat, railed, line in zip(q["flat"], q["railed_pct"], q["line_noise_ratio"]):
        if flat:
            status.append("FLAT")
        elif railed > 1.0:
            status.append("RAILED")
        elif line_hz and line > line_noise_max:
            status.append("LINE NOISE")
        else:
            status.append("ok")
    return {
        "channel": list(names),
        "status": status,
        "sd_uv": [round(float(v), 1) for v in raw.std(axis=0)],
        "railed_pct": [round(float(v), 1) for v in q["railed_pct"]],
        "line_pct": [round(float(v) * 100, 1) for v in q["line_noise_ratio"]],
    }


def psd(window: np.ndarray, sample_rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD per channel (uV^2/Hz), frequencies up to Nyquist: (freqs, (n_freqs, n_channels))."""
    return welch_psd(window, sample_rate_hz, min(len(window), int(sample_rate_hz)))


def spectrogram_db(
    signal: np.ndarray, sample_rate_hz: float, max_hz: float = 60.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(freqs, times, power dB (freqs x times)) for one channel, half-second segments."""
    nperseg = max(8, min(len(signal), int(sample_rate_hz // 2)))
    freqs, times, power = scipy_spectrogram(signal, fs=sample_rate_hz, nperseg=nperseg, noverlap=nperseg // 2)
    keep = freqs <= max_hz
    return freqs[keep], times, 10 * np.log10(np.maximum(power[keep], 1e-12))


@lru_cache(maxsize=32)
def scalp_positions(channel_names: tuple[str, ...], montage: str = "standard_1020") -> dict[str, tuple[float, float]]:
    """2-D electrode positions in [-1, 1] from MNE's standard montage (MNE's own EEG layout
    projection); channels the montage does not know are left out."""
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE's deprecation notice for the montage's old name
        known = set(mne.channels.make_standard_montage(montage).ch_names)
        names = [n for n in channel_names if n in known]
        if len(names) < 3:
            return {}
        info = mne.create_info(names, 250.0, "eeg")
        info.set_montage(montage, on_missing="ignore")
        layout = mne.channels.make_eeg_layout(info)
    centres = layout.pos[:, :2] + layout.pos[:, 2:] / 2
    centres = (centres - 0.5) * 2 * 0.85  # inside the head circle
    return {name: (float(x), float(y)) for name, (x, y) in zip(layout.names, centres)}


def prediction_span_us(prediction: Mapping[str, Any], sample_rate_hz: float) -> tuple[int, int]:
    """Lab times of a predicted window's first and last samples, from the window the record names
    (its length and the session's rate travel with the data; no window length is assumed)."""
    last_sample = prediction["window_end_index"] - 1  # the end index is exclusive
    span_us = round((last_sample - prediction["window_start_index"]) / sample_rate_hz * 1e6)
    return int(prediction["window_end_us"]) - span_us, int(prediction["window_end_us"])


def band_power_per_channel(window: np.ndarray, sample_rate_hz: float, band: str) -> np.ndarray:
    """log10 power of one band per channel: gold's ``band_power`` row for the same window."""
    return band_powers(window, sample_rate_hz)[list(BANDS).index(band)]


@lru_cache(maxsize=32)
def _head_geometry(positions: tuple[tuple[float, float], ...], resolution: int) -> tuple[Any, ...]:
    """What depends only on the electrodes: their triangulation, the grid points inside the head, and
    each point's nearest electrode (used outside the electrodes' hull). Computed once per montage."""
    from scipy.spatial import Delaunay, cKDTree

    axis = np.linspace(-1, 1, resolution)
    gx, gy = np.meshgrid(axis, axis)
    inside = gx**2 + gy**2 <= 1.0
    points = np.asarray(positions)
    query = np.column_stack([gx[inside], gy[inside]])
    return Delaunay(points), inside, query, cKDTree(points).query(query)[1]


def topomap_grid(values: np.ndarray, positions: Sequence[tuple[float, float]], resolution: int = 64) -> np.ndarray:
    """Values interpolated over the unit-circle head (cubic inside the electrodes' hull, nearest
    out to the rim), NaN outside the head; shape (resolution, resolution), row 0 at the bottom."""
    from scipy.interpolate import CloughTocher2DInterpolator

    triangulation, inside, query, nearest = _head_geometry(tuple(map(tuple, positions)), resolution)
    values = np.asarray(values, dtype=np.float64)
    cubic = CloughTocher2DInterpolator(triangulation, values)(query)
    grid = np.full(inside.shape, np.nan)
    grid[inside] = np.where(np.isnan(cubic), values[nearest], cubic)
    return grid


def running_accuracy(
    predictions: Sequence[tuple[int, int, str]], trials: Sequence[tuple[int, int, str]]
) -> tuple[float | None, int]:
    """Share of predictions (window start, end, label) matching the trial that holds the window by
    gold's labelling rule (:func:`~dsp.labels.label_windows`); (None, 0) while no window is
    known to lie in a trial."""
    if not predictions or not trials:
        return None, 0
    windows = pd.DataFrame(list(predictions), columns=["window_start_us", "window_end_us", "label"])
    intervals = pd.DataFrame(list(trials), columns=["start_us", "end_us", "label"])
    truth = label_windows(windows.assign(session_id=""), intervals.assign(session_id=""))
    known = pd.notna(truth)
    total = int(known.sum())
    hits = int((truth[known] == windows["label"].to_numpy(object)[known]).sum())
    return (hits / total if total else None), total
