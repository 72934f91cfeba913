"""The lake's row builders: every column typed as its table's schema says, dates by UTC day, and
empty outputs made once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dsp.session import BlockNote, Output
from schemas.catalog import SILVER_SKIPPED_BLOCKS
from streaming_jobs.lake_rows import (
    BLOCK_NOTES_SCHEMA,
    WINDOWS_SCHEMA,
    empty_table,
    utc_dates,
    windows_table,
)
from streaming_jobs.silver_gold import SessionTables

DAY_US = 86_400_000_000
# 2026-12-07 00:00 UTC
DEC_7_US = 1_796_601_600_000_000


def test_dates_are_utc_days_within_one_day_and_across_midnight_in_any_order() -> None:
    assert utc_dates(np.array([], dtype=np.int64)).equals(pa.array([], pa.string()))
    one_day = utc_dates(DEC_7_US + np.arange(5) * 4000)
    assert one_day.type == pa.string() and one_day.to_pylist() == ["2026-12-07"] * 5
    across = utc_dates(np.array([DEC_7_US - 1, DEC_7_US, DEC_7_US + DAY_US, DEC_7_US - 1]))
    assert across.to_pylist() == ["2026-12-06", "2026-12-07", "2026-12-08", "2026-12-06"]


def _window(start: int, channels: int = 3) -> dict:  # type: ignore[type-arg]
    return {
        "device_id": "dev",
        "window_start_index": start,
        "window_end_index": start + 500,
        "window_start_us": DEC_7_US + start * 4000,
        "window_end_us": DEC_7_US + (start + 500) * 4000,
        "band_power": np.arange(5 * channels, dtype=np.float64).reshape(5, channels) + start,
        "ssvep_hz": (8.0, 10.0),
        "ssvep_score": np.array([0.25, 0.5]),
        "railed_pct": np.float64(1.5),
        "line_noise_ratio": 0.125,
        "flat_channels": np.int64(2),
        "samples_lost": 0,
    }


def test_window_rows_are_typed_as_gold_says_with_their_labels() -> None:
    table = windows_table("s", [_window(0), _window(100)], labels=[None, "flicker_8hz"])
    assert table.schema == WINDOWS_SCHEMA
    rows = table.to_pylist()
    assert [r["window_start_index"] for r in rows] == [0, 100]
    assert rows[1]["band_power"][4] == [112.0, 113.0, 114.0]
    assert rows[0]["ssvep_score"] == [0.25, 0.5] and rows[0]["flat_channels"] == 2
    assert [r["label"] for r in rows] == [None, "flicker_8hz"]
    assert {r["session_id"] for r in rows} == {"s"} and {r["date"] for r in rows} == {"2026-12-07"}
    assert windows_table("s", []).schema == WINDOWS_SCHEMA


def test_an_empty_table_is_made_once_per_schema() -> None:
    assert empty_table(BLOCK_NOTES_SCHEMA) is empty_table(BLOCK_NOTES_SCHEMA)
    assert empty_table(BLOCK_NOTES_SCHEMA).equals(BLOCK_NOTES_SCHEMA.empty_table())


def test_a_session_without_rows_adds_no_tables_and_every_output_keeps_its_schema() -> None:
    made = SessionTables.empty()
    made.add("quiet", "dev", Output(), -1, DEC_7_US)
    assert (made.samples, made.beats, made.windows, made.notes) == ([], [], [], [])
    made.add("late", "dev", Output(late=[BlockNote(3, 75, 25, "after its gap")]), 7, DEC_7_US)
    tables = made.tables()
    notes = tables.pop(SILVER_SKIPPED_BLOCKS)
    assert notes.column("kind").to_pylist() == ["late"] and notes.column("batch_id").to_pylist() == [7]
    assert all(table.num_rows == 0 for table in tables.values())
