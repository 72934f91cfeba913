"""The silver/gold stateful step without Spark: its function fed as ``applyInPandasWithState`` feeds
it (a session's pandas rows and its group state), one session's failure kept to itself, the
state carried so that batches in any grouping make the rows one batch makes, and the gap wait
ended by a processing-time timeout."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dsp.session import ProcessorConfig
from streaming_jobs.silver_gold import ROWS_ARROW, STREAM_ROWS_ARROW, StreamContext, from_ipc, process_session

CONFIG = ProcessorConfig()
CHANNELS = 4
RATE = 250.0


class GroupState:
    """The part of Spark's ``GroupState`` the step uses, kept in memory between calls (Spark's own
    state store runs in the integration tests)."""

    def __init__(self, now_ms: int = 1_000) -> None:
        self.value: tuple[Any, ...] | None = None
        self.hasTimedOut = False
        self.now_ms = now_ms
        self.timeout_ms: int | None = None

    @property
    def exists(self) -> bool:
        return self.value is not None

    @property
    def get(self) -> tuple[Any, ...]:
        assert self.value is not None
        return self.value

    def update(self, value: tuple[Any, ...]) -> None:
        self.value = value

    def getCurrentProcessingTimeMs(self) -> int:
        return self.now_ms

    def setTimeoutDuration(self, duration_ms: int) -> None:
        self.timeout_ms = duration_ms


def _rows(session_id: str, seqs: range | list[int], block: int = 25, with_session: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    if with_session:
        rows.append(
            {
                **dict.fromkeys(ROWS_ARROW.names),
                "kind": "session",
                "session_id": session_id,
                "device_id": f"dev-{session_id}",
                "sample_rate_hz": RATE,
                "channel_names": [f"C{i}" for i in range(CHANNELS)],
                "channel_types": ["eeg"] * CHANNELS,
                "metadata": [],
            }
        )
    for seq in seqs:
        first = seq * block
        rows.append(
            {
                **dict.fromkeys(ROWS_ARROW.names),
                "kind": "block",
                "session_id": session_id,
                "device_id": f"dev-{session_id}",
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
            }
        )
    # Through Arrow, as PySpark hands them over: the session, and each row as a struct made a dict.
    table = pa.Table.from_pylist([{"session_id": row["session_id"], "row": row} for row in rows], STREAM_ROWS_ARROW)
    return pd.DataFrame({name: table.column(name).to_pylist() for name in table.column_names})


def _run(session_id: str, frames: list[pd.DataFrame], state: GroupState) -> dict[str, pa.Table]:
    context = StreamContext(CONFIG, "/nonexistent-rebuilds")
    out = pd.concat(list(process_session(context, (session_id,), iter(frames), state)))
    return {name: from_ipc(rows) for name, rows in zip(out["table"], out["rows"])}


def test_a_failing_session_is_recorded_with_its_state_kept_and_the_others_go_on() -> None:
    broken = GroupState()
    broken.update((pickle.dumps("not a session state"),))
    errors = _run("broken", [_rows("broken", range(4))], broken)
    assert list(errors) == ["silver.session_errors"]
    assert errors["silver.session_errors"].column("session_id").to_pylist() == ["broken"]
    assert pickle.loads(broken.get[0]) == "not a session state"

    good = _run("good", [_rows("good", range(40))], GroupState())
    assert good["silver.eeg_samples"].column("sample_index").to_pylist() == list(range(40 * 25))
    assert set(good["gold.eeg_windows"].column("session_id").to_pylist()) == {"good"}


def test_batches_in_any_grouping_make_the_rows_one_batch_makes() -> None:
    rows = _rows("s", range(40))
    whole = _run("s", [rows], GroupState())
    state = GroupState()
    first = _run("s", [rows.iloc[:18]], state)  # the session record and blocks 0..16
    second = _run("s", [rows.iloc[18:30], rows.iloc[30:]], state)
    for table in ("silver.eeg_samples", "gold.eeg_windows"):
        parts = pa.concat_tables([first[table], second[table]]) if table in first else second[table]
        assert parts.drop_columns(["date"]).equals(whole[table].drop_columns(["date"])), table


def test_a_gap_waits_and_a_processing_time_timeout_ends_the_wait() -> None:
    state = GroupState(now_ms=1_000)
    before = _run("g", [_rows("g", [*range(10), *range(12, 20)])], state)
    assert before["silver.eeg_samples"].num_rows == 10 * 25  # the blocks after the gap wait
    assert state.timeout_ms == CONFIG.gap_wait_ms + 1
    state.now_ms += CONFIG.gap_wait_ms + 1
    state.hasTimedOut = True
    after = _run("g", [], state)
    samples = after["silver.eeg_samples"]
    assert samples.column("sample_index").to_pylist() == list(range(12 * 25, 20 * 25))
    assert samples.column("gap_before").to_pylist()[0] == 2 * 25
