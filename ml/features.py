"""Model inputs from window features: one flat, named float column per feature.

Training (from ``gold.eeg_windows``), the live scorer (from the session processor's window dicts)
and the lake scorer all go through :func:`feature_frame`, so a window gets the same inputs on every
path. Column names carry the layout (band, channel number, stimulus frequency): a model trained on
one layout is refused, by its signature, for another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dsp.features import BANDS

BAND_PREFIX = "bp_"
SSVEP_PREFIX = "ssvep_"


class FeatureLayoutError(ValueError):
    pass


def feature_columns(n_channels: int, ssvep_hz: Sequence[float]) -> list[str]:
    bands = [f"{BAND_PREFIX}{band}_ch{c + 1:02d}" for band in BANDS for c in range(n_channels)]
    return bands + [f"{SSVEP_PREFIX}{hz:g}hz" for hz in ssvep_hz]


def _matrix(item: object) -> np.ndarray:
    """A (bands, channels) array from an array, nested lists, or Arrow's object array of arrays."""
    if isinstance(item, np.ndarray) and item.dtype != object:
        return item.astype(np.float64, copy=False)
    return np.stack([np.asarray(row, dtype=np.float64) for row in _rows(item)])


def _rows(item: object) -> Iterable[Any]:
    if not isinstance(item, Iterable):
        raise FeatureLayoutError(f"expected a sequence of values per window, got {type(item).__name__}")
    return item


def feature_frame(
    band_power: Sequence[object], ssvep_hz: Sequence[object], ssvep_score: Sequence[object]
) -> pd.DataFrame:
    """Rows of windows -> a float64 frame. ``band_power`` items are (bands, channels) arrays or
    nested lists; every window must share one layout (channels and stimulus frequencies)."""
    if len(band_power) == 0:
        return pd.DataFrame()
    matrix, columns = feature_matrix(band_power, ssvep_hz, ssvep_score)
    return pd.DataFrame(matrix, columns=columns)


def feature_matrix(
    band_power: Sequence[object], ssvep_hz: Sequence[object], ssvep_score: Sequence[object]
) -> tuple[np.ndarray, list[str]]:
    """:func:`feature_frame`'s values and column names, without pandas (the live scorer's path)."""
    n = len(band_power)
    bp = [_matrix(item) for item in band_power]
    shapes = {b.shape for b in bp}
    hz = {tuple(float(f) for f in _rows(item)) for item in ssvep_hz}
    if len(shapes) != 1 or len(hz) != 1:
        raise FeatureLayoutError(
            f"windows mix layouts (band power shapes {sorted(shapes)}, stimulus frequencies "
            f"{sorted(hz)}); train or score one headset layout at a time"
        )
    (shape,), (frequencies,) = shapes, hz
    if shape[0] != len(BANDS):
        raise FeatureLayoutError(f"band_power has {shape[0]} bands, expected {len(BANDS)} ({list(BANDS)})")
    flat = np.stack(bp).reshape(n, -1)  # band-major, as feature_columns names them
    scores = np.asarray([np.asarray(s, dtype=np.float64) for s in ssvep_score])
    return np.hstack([flat, scores.reshape(n, -1)]), feature_columns(shape[1], frequencies)


def windows_feature_frame(windows: pd.DataFrame) -> pd.DataFrame:
    """:func:`feature_frame` over a frame with band_power, ssvep_hz and ssvep_score columns."""
    return feature_frame(list(windows["band_power"]), list(windows["ssvep_hz"]), list(windows["ssvep_score"]))
