"""Silver and gold rows as Arrow tables, built from the session processor's output in bulk.

The processor hands over runs of samples as numpy arrays; here they become Arrow columns without a
Python object per sample (list columns are offsets over one flat buffer). Every writer of these
tables (the stream, a rebuild, an import) goes through these functions and schemas.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from dsp.session import BlockNote

SAMPLES_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("device_id", pa.string()),
        ("sample_index", pa.int64()),
        ("seq", pa.int64()),
        ("time_us", pa.int64()),
        ("device_time_us", pa.int64()),
        ("raw", pa.list_(pa.float32())),
        ("filtered", pa.list_(pa.float32())),
        ("gap_before", pa.int64()),
        ("date", pa.string()),
    ]
)
BEATS_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("device_id", pa.string()),
        ("sample_index", pa.int64()),
        ("time_us", pa.int64()),
        ("bpm", pa.float64()),
        ("date", pa.string()),
    ]
)
WINDOWS_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("device_id", pa.string()),
        ("window_start_index", pa.int64()),
        ("window_end_index", pa.int64()),
        ("window_start_us", pa.int64()),
        ("window_end_us", pa.int64()),
        ("band_power", pa.list_(pa.list_(pa.float32()))),
        ("ssvep_hz", pa.list_(pa.float64())),
        ("ssvep_score", pa.list_(pa.float64())),
        ("railed_pct", pa.float64()),
        ("line_noise_ratio", pa.float64()),
        ("flat_channels", pa.int32()),
        ("samples_lost", pa.int64()),
        ("label", pa.string()),
        ("date", pa.string()),
    ]
)
# Blocks the processor did not turn into rows: late (a rebuild includes them) or rejected.
BLOCK_NOTES_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("device_id", pa.string()),
        ("kind", pa.string()),
        ("seq", pa.int64()),
        ("first_sample_index", pa.int64()),
        ("n_samples", pa.int64()),
        ("reason", pa.string()),
        ("batch_id", pa.int64()),
        ("noted_us", pa.int64()),
        ("date", pa.string()),
    ]
)
# A session whose processing raised: its blocks of that batch wait in bronze for a rebuild.
SESSION_ERRORS_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("batch_id", pa.int64()),
        ("error", pa.string()),
        ("traceback", pa.string()),
        ("noted_us", pa.int64()),
        ("date", pa.string()),
    ]
)

_DAY_US = 86_400_000_000


@functools.cache
def empty_table(schema: pa.Schema) -> pa.Table:
    """``schema.empty_table()``, made once per schema (a table is immutable): pyarrow builds every
    column anew (~60-100 us for a table of the lake), and the stream asked for several per session
    and batch."""
    return schema.empty_table()


def utc_dates(times_us: np.ndarray | pa.Array) -> pa.Array:
    """``YYYY-MM-DD`` (UTC) of each time in microseconds, computed once per distinct day."""
    values = np.asarray(times_us, dtype=np.int64)
    if not len(values):
        return pa.array([], pa.string())
    days = values // _DAY_US
    if (days == days[0]).all():  # a session's second of rows nearly always falls in one day
        return pa.repeat(pa.scalar(_day_name(int(days[0])), pa.string()), len(values))
    distinct, inverse = np.unique(days, return_inverse=True)
    return pa.array(np.array([_day_name(int(d)) for d in distinct], dtype=object)[inverse], pa.string())


@functools.lru_cache(maxsize=64)
def _day_name(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


def _lists(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """Rows of a 2-D array as an Arrow list column, sharing one flat buffer."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32), pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).reshape(-1), value_type))


def samples_table(session_id: str, runs: Sequence[dict[str, Any]]) -> pa.Table:
    if not runs:
        return empty_table(SAMPLES_SCHEMA)
    tables = []
    for run in runs:
        n = len(run["sample_index"])
        time_us = np.asarray(run["time_us"], dtype=np.int64)
        tables.append(
            pa.table(
                {
                    "session_id": pa.repeat(pa.scalar(session_id, pa.string()), n),
                    "device_id": pa.repeat(pa.scalar(run["device_id"], pa.string()), n),
                    "sample_index": pa.array(run["sample_index"], pa.int64()),
                    "seq": pa.array(run["seq"], pa.int64()),
                    "time_us": pa.array(time_us, pa.int64()),
                    "device_time_us": pa.array(run["device_time_us"], pa.int64()),
                    "raw": _lists(np.asarray(run["raw"], np.float32), pa.float32()),
                    "filtered": _lists(np.asarray(run["filtered"], np.float32), pa.float32()),
                    "gap_before": pa.array(run["gap_before"], pa.int64()),
                    "date": utc_dates(time_us),
                },
                schema=SAMPLES_SCHEMA,
            )
        )
    return pa.concat_tables(tables)


def beats_table(session_id: str, beats: Sequence[dict[str, Any]]) -> pa.Table:
    if not beats:
        return empty_table(BEATS_SCHEMA)
    times = np.array([b["time_us"] for b in beats], dtype=np.int64)
    return pa.table(
        {
            "session_id": [session_id] * len(beats),
            "device_id": [b["device_id"] for b in beats],
            "sample_index": pa.array([b["sample_index"] for b in beats], pa.int64()),
            "time_us": pa.array(times, pa.int64()),
            "bpm": pa.array([b["bpm"] for b in beats], pa.float64()),
            "date": utc_dates(times),
        },
        schema=BEATS_SCHEMA,
    )


def windows_table(
    session_id: str, windows: Sequence[dict[str, Any]], labels: Sequence[str | None] | None = None
) -> pa.Table:
    """Gold window rows; ``labels`` (one per window) default to null until markers label them.
    Each column is made with its schema's type: inferring the types and casting the table after
    took ~0.3 ms per session and batch, most of a bucket's output tables."""
    if not windows:
        return empty_table(WINDOWS_SCHEMA)
    count = len(windows)
    ends = np.array([w["window_end_us"] for w in windows], dtype=np.int64)
    band = np.stack([np.asarray(w["band_power"], np.float32) for w in windows])  # (w, bands, ch)
    inner = _lists(band.reshape(-1, band.shape[2]), pa.float32())
    band_power = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (count + 1) * band.shape[1], band.shape[1], dtype=np.int32)), inner
    )

    def typed(name: str, values: Sequence[Any] | None = None) -> pa.Array:
        return pa.array([w[name] for w in windows] if values is None else values, WINDOWS_SCHEMA.field(name).type)

    columns = {
        "session_id": pa.repeat(pa.scalar(session_id, pa.string()), count),
        "window_end_us": pa.array(ends, pa.int64()),
        "band_power": band_power,
        "ssvep_hz": typed("ssvep_hz", [list(map(float, w["ssvep_hz"])) for w in windows]),
        "ssvep_score": typed("ssvep_score", [list(map(float, w["ssvep_score"])) for w in windows]),
        "label": typed("label", list(labels) if labels is not None else [None] * count),
        "date": utc_dates(ends),
    }
    return pa.Table.from_arrays(
        [columns[name] if name in columns else typed(name) for name in WINDOWS_SCHEMA.names], schema=WINDOWS_SCHEMA
    )


def notes_table(
    session_id: str, device_id: str, notes: Sequence[BlockNote], batch_id: int, noted_us: int, kind: str
) -> pa.Table:
    """``kind``: "late" (came after its gap was given up; a rebuild includes it) or "rejected"."""
    if not notes:
        return empty_table(BLOCK_NOTES_SCHEMA)
    return pa.table(
        {
            "session_id": [session_id] * len(notes),
            "device_id": [device_id] * len(notes),
            "kind": [kind] * len(notes),
            "seq": [n.seq for n in notes],
            "first_sample_index": [n.first_sample_index for n in notes],
            "n_samples": [n.n_samples for n in notes],
            "reason": [n.reason for n in notes],
            "batch_id": [batch_id] * len(notes),
            "noted_us": [noted_us] * len(notes),
            "date": utc_dates(np.full(len(notes), noted_us)),
        },
        schema=BLOCK_NOTES_SCHEMA,
    )


def concat(tables: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    present = [t for t in tables if t.num_rows]
    return pa.concat_tables(present) if present else empty_table(schema)
