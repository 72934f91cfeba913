"""The silver/gold executor step without Spark: sessions isolated from each other's failures, files
written for the driver to commit, a replay starting from the state before its batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dsp.session import ProcessorConfig
from infra.delta import WrittenFile
from streaming_jobs.bronze_source import ROWS_ARROW
from streaming_jobs.silver_gold import BatchContext, SessionStateStore, process_partition

CONFIG = ProcessorConfig()
CHANNELS = 4
RATE = 250.0


def _rows(session_id: str, blocks: int = 40, block: int = 25) -> list[dict]:
    rng = np.random.default_rng(0)
    session = {
        "session_id": session_id,
        "device_id": f"dev-{session_id}",
        "channel_names": [f"C{i}" for i in range(CHANNELS)],
        "channel_types": ["eeg"] * CHANNELS,
        "sample_rate_hz": RATE,
        "metadata": {},
    }
    rows = [
        {
            **{n: None for n in ROWS_ARROW.names},
            "kind": "session",
            "session_id": session_id,
            "device_id": session["device_id"],
            "session_json": json.dumps(session),
        }
    ]
    for seq in range(blocks):
        first = seq * block
        rows.append(
            {
                "kind": "block",
                "session_id": session_id,
                "device_id": session["device_id"],
                "seq": seq,
                "first_sample_index": first,
                "n_samples": block,
                "n_channels": CHANNELS,
                "sample_rate_hz": RATE,
                "data": rng.normal(0, 10, (block, CHANNELS)).astype(np.float32).tobytes(),
                "device_times_us": (1_790_000_000_000_000 + (first + np.arange(block)) * 4000)
                .astype(np.int64)
                .tobytes(),
                "clock_offset_us": 0,
                "session_json": None,
            }
        )
    return rows


def _run(tmp_path: Path, rows: list[dict], batch_id: int) -> dict[str, list[dict]]:
    context = BatchContext(batch_id, 1_000, -1, str(tmp_path / "lake"), str(tmp_path / "state"), CONFIG)
    results = pa.Table.from_batches(
        list(process_partition(context, iter(pa.Table.from_pylist(rows, schema=ROWS_ARROW).to_batches())))
    ).to_pylist()
    files: dict[str, list[dict]] = {}
    for result in results:
        if result["kind"] == "file":
            written = WrittenFile.from_json(result["payload"])
            layer, name = result["name"].split(".")
            # The partition column lives in the file's path, as Delta readers see it.
            files.setdefault(result["name"], []).extend(
                {**row, **dict(written.partition_values)}
                for row in pq.read_table(tmp_path / "lake" / layer / name / written.relative_path).to_pylist()
            )
    return files


def test_a_failing_session_is_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    store = SessionStateStore(tmp_path / "state")
    store.save("broken", 0, "not a session state")  # type: ignore[arg-type]
    files = _run(tmp_path, _rows("good") + _rows("broken"), batch_id=1)
    errors = files["silver.session_errors"]
    assert [e["session_id"] for e in errors] == ["broken"]
    assert errors[0]["batch_id"] == 1 and errors[0]["error"] and errors[0]["date"]
    samples = files["silver.eeg_samples"]
    assert {s["session_id"] for s in samples} == {"good"}
    assert sorted(s["sample_index"] for s in samples) == list(range(40 * 25))
    assert {w["session_id"] for w in files["gold.eeg_windows"]} == {"good"}


def test_a_replayed_batch_starts_from_the_state_before_it(tmp_path: Path) -> None:
    rows = _rows("s")
    first = _run(tmp_path, rows[:21], batch_id=0)
    second = _run(tmp_path, rows[21:], batch_id=1)
    replay = _run(tmp_path, rows[21:], batch_id=1)
    index = [sorted(s["sample_index"] for s in f["silver.eeg_samples"]) for f in (first, second, replay)]
    assert index[0] == list(range(20 * 25)) and index[1] == index[2] == list(range(20 * 25, 40 * 25))
    assert second["silver.eeg_samples"][0]["filtered"] == replay["silver.eeg_samples"][0]["filtered"]
