"""The silver/gold stateful step without Spark: its function fed as ``applyInPandasWithState`` feeds
it (a bucket's pandas rows and its group state), one session's failure kept to itself, the
state carried so that batches in any grouping make the rows one batch makes, the gap wait ended by
a processing-time timeout or the bucket's next call, and a checkpoint keyed by session carried over."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dsp.session import ProcessorConfig, SessionState
from streaming_jobs.silver_gold import (
    ROWS_ARROW,
    STREAM_ROWS_ARROW,
    StreamContext,
    from_ipc,
    process_session,
    process_sessions,
    read_rebuild_state,
    rebuild_state_path,
    save_rebuild_state,
)

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


def _run(frames: list[pd.DataFrame], state: GroupState, context: StreamContext | None = None) -> dict[str, pa.Table]:
    """One call of the bucketed step (one bucket: the sessions' rows in ``frames``)."""
    context = context or StreamContext(CONFIG, "/nonexistent-rebuilds")
    out = pd.concat(list(process_sessions(context, (0,), iter(frames), state)))
    return {name: from_ipc(rows) for name, rows in zip(out["table"], out["rows"])}


def _sessions(state: GroupState) -> dict[str, Any]:
    return {session_id: pickle.loads(stored) for session_id, stored in pickle.loads(state.get[0])["states"].items()}


def test_a_failing_session_is_recorded_with_its_state_kept_and_the_others_go_on() -> None:
    bucket = GroupState()
    bucket.update(
        (pickle.dumps({"states": {"broken": pickle.dumps("not a session state")}, "deadlines": {}, "seen": {}}),)
    )
    out = _run([pd.concat([_rows("broken", range(4)), _rows("good", range(40))])], bucket)
    assert out["silver.session_errors"].column("session_id").to_pylist() == ["broken"]
    assert out["silver.eeg_samples"].column("sample_index").to_pylist() == list(range(40 * 25))
    assert set(out["silver.eeg_samples"].column("session_id").to_pylist()) == {"good"}
    assert set(out["gold.eeg_windows"].column("session_id").to_pylist()) == {"good"}
    sessions = _sessions(bucket)
    assert sessions["broken"] == "not a session state"
    assert sessions["good"].next_index == 40 * 25


def test_batches_in_any_grouping_make_the_rows_one_batch_makes() -> None:
    rows = pd.concat([_rows("s", range(40)), _rows("t", range(30))], ignore_index=True)
    whole = _run([rows], GroupState())
    state = GroupState()
    first = _run([rows.iloc[:18]], state)  # s's session record and blocks 0..16
    second = _run([rows.iloc[18:50], rows.iloc[50:]], state)  # s's rest, then t's
    for table in ("silver.eeg_samples", "gold.eeg_windows"):
        parts = pa.concat_tables([first[table], second[table]]) if table in first else second[table]
        assert _by_session(parts).equals(_by_session(whole[table])), table


def _by_session(table: pa.Table) -> pa.Table:
    key = "sample_index" if "sample_index" in table.column_names else "window_start_us"
    return table.drop_columns(["date"]).sort_by([("session_id", "ascending"), (key, "ascending")])


def test_a_gap_waits_and_a_processing_time_timeout_ends_the_wait() -> None:
    state = GroupState(now_ms=1_000)
    before = _run([_rows("g", [*range(10), *range(12, 20)])], state)
    assert before["silver.eeg_samples"].num_rows == 10 * 25  # the blocks after the gap wait
    assert state.timeout_ms == CONFIG.gap_wait_ms + 1
    state.now_ms += CONFIG.gap_wait_ms + 1
    state.hasTimedOut = True
    after = _run([], state)
    samples = after["silver.eeg_samples"]
    assert samples.column("sample_index").to_pylist() == list(range(12 * 25, 20 * 25))
    assert samples.column("gap_before").to_pylist()[0] == 2 * 25
    assert pickle.loads(state.get[0])["deadlines"] == {}


def test_a_wait_that_is_due_ends_when_another_session_of_its_bucket_brings_rows() -> None:
    state = GroupState(now_ms=1_000)
    _run([_rows("g", [*range(10), *range(12, 20)])], state)
    state.now_ms += CONFIG.gap_wait_ms + 1  # the wait is over; Spark calls the bucket for h's rows
    after = _run([_rows("h", range(4))], state)
    samples = after["silver.eeg_samples"]
    g = samples.filter(pc.equal(samples.column("session_id"), "g"))
    assert g.column("sample_index").to_pylist() == list(range(12 * 25, 20 * 25))
    assert samples.num_rows == g.num_rows + 4 * 25
    assert state.timeout_ms is not None and pickle.loads(state.get[0])["deadlines"] == {}


def test_a_session_carried_over_from_a_session_keyed_checkpoint_goes_on_from_its_state(tmp_path: Path) -> None:
    """Its state left as a rebuild state, its gap wait handed to its bucket's first call."""
    old = GroupState(now_ms=1_000)
    _run_by_session("g", [_rows("g", [*range(10), *range(12, 20)])], old)
    save_rebuild_state(tmp_path, "g", "carried-test", pickle.loads(old.get[0]))
    deadline = 1_000 + CONFIG.gap_wait_ms + 1
    context = StreamContext(CONFIG, str(tmp_path), carried_deadlines={0: {"g": deadline}})
    bucket = GroupState(now_ms=deadline)
    bucket.hasTimedOut = True  # as if no block came: the carried wait still ends
    samples = _run([], bucket, context)["silver.eeg_samples"]
    assert samples.column("sample_index").to_pylist() == list(range(12 * 25, 20 * 25))
    assert _sessions(bucket)["g"].rebuild_id == "carried-test"


def _run_by_session(session_id: str, frames: list[pd.DataFrame], state: GroupState) -> dict[str, pa.Table]:
    context = StreamContext(CONFIG, "/nonexistent-rebuilds")
    out = pd.concat(list(process_session(context, (session_id,), iter(frames), state)))
    return {name: from_ipc(rows) for name, rows in zip(out["table"], out["rows"])}


def test_the_session_keyed_step_makes_the_rows_the_bucketed_step_makes() -> None:
    rows = _rows("s", [*range(10), *range(12, 30)])
    by_session, bucketed = GroupState(), GroupState()
    old = _run_by_session("s", [rows], by_session)
    new = _run([rows], bucketed)
    assert old.keys() == new.keys()
    for table in old:
        assert old[table].drop_columns(["date"]).equals(new[table].drop_columns(["date"])), table
    assert by_session.timeout_ms == bucketed.timeout_ms
    assert pickle.loads(by_session.get[0]).next_index == _sessions(bucketed)["s"].next_index


def test_an_idle_session_is_parked_beside_the_checkpoint_and_taken_up_again_when_its_blocks_come(
    tmp_path: Path,
) -> None:
    context = StreamContext(CONFIG, str(tmp_path), park_after_ms=60_000)
    rows = _rows("s", range(40))
    whole = _run([rows], GroupState(), context=StreamContext(CONFIG, str(tmp_path / "other")))
    bucket = GroupState(now_ms=1_000)
    first = _run([rows.iloc[:21]], bucket, context)  # the session record and blocks 0..19
    bucket.now_ms += 60_001
    _run([_rows("t", range(2))], bucket, context)  # another session's rows: s has been idle too long
    assert set(_sessions(bucket)) == {"t"}
    left = read_rebuild_state(rebuild_state_path(tmp_path, "s"), "s")
    assert left is not None and left.rebuild_id == "parked-61001" and left.state().next_index == 20 * 25
    bucket.now_ms += 1_000
    second = _run([rows.iloc[21:]], bucket, context)
    for table in ("silver.eeg_samples", "gold.eeg_windows"):
        parts = pa.concat_tables([first[table], second[table]]).drop_columns(["date"])
        assert parts.equals(whole[table].drop_columns(["date"])), table
    assert _sessions(bucket)["s"].rebuild_id == "parked-61001"


def test_parking_leaves_a_rebuild_the_stream_has_not_taken_up_in_place(tmp_path: Path) -> None:
    context = StreamContext(CONFIG, str(tmp_path), park_after_ms=60_000)
    bucket = GroupState(now_ms=1_000)
    _run([_rows("s", range(4))], bucket, context)
    rebuilt = _sessions(bucket)["s"]
    rebuilt.next_index = 12_345
    save_rebuild_state(tmp_path, "s", "a-rebuild", rebuilt)  # while the stream was stopped
    bucket.now_ms += 60_001
    bucket.hasTimedOut = True
    _run([], bucket, context)
    left = read_rebuild_state(rebuild_state_path(tmp_path, "s"), "s")
    assert left is not None and left.rebuild_id == "a-rebuild" and left.state().next_index == 12_345


def test_a_rebuild_state_file_written_before_the_split_header_still_reads(tmp_path: Path) -> None:
    state = SessionState(next_index=7)
    path = rebuild_state_path(tmp_path, "s")
    path.write_bytes(pickle.dumps(("s", "old-rebuild", state), protocol=5))
    left = read_rebuild_state(path, "s")
    assert left is not None and left.rebuild_id == "old-rebuild" and left.state().next_index == 7
    with pytest.raises(RuntimeError, match="holds 's', not 'other'"):
        read_rebuild_state(path, "other")
