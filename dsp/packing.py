"""Lossless, smaller pickles of the per-session state that Spark's state store keeps.

The silver/gold stream sends each session's state to its Python worker and back at every batch
(100 sessions x ~140 KB per batch at 100 headsets), and the JVM's share of that transfer was the
largest item left in its profile. Most of the state is float64 arrays whose columns hold float32
values (raw samples, their float32-rounded filtered values, sample indexes): stored as float32
they take half the bytes and come back bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PackedColumns = tuple[np.ndarray, np.ndarray, np.ndarray]


def pack_columns(array: np.ndarray | None) -> np.ndarray | PackedColumns | None:
    """A 2-D float64 array as (which columns float32 holds exactly, those columns as float32, the
    others as float64); anything else as it is."""
    if array is None or array.dtype != np.float64 or array.ndim != 2:
        return array
    narrow = array.astype(np.float32)
    # NaN never equals itself: a column with one stays float64, still lossless.
    exact = (narrow == array).all(axis=0)
    return exact, narrow[:, exact], array[:, ~exact]


def unpack_columns(stored: Any) -> np.ndarray | None:
    """The array :func:`pack_columns` stored (an array stored as it was, from older state, too)."""
    if stored is None or isinstance(stored, np.ndarray):
        return stored
    exact, narrow, wide = stored
    array = np.empty((narrow.shape[0], len(exact)), dtype=np.float64)
    array[:, exact] = narrow
    array[:, ~exact] = wide
    return array
