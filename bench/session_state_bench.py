"""The silver/gold stream's per-session state and Welch median, against what they were.

Spark hands each session's state (``dsp.session.SessionState``, pickled) to the Python worker at
every micro-batch and takes it back; the JVM's part of that transfer grows with the bytes. This bench
runs a simulated headset's session through the processor in 2 s batches, as the stream does, and
prints the state's pickled size and pickle + unpickle time with its float arrays packed
(``dsp.packing``, what the stream stores) against the same state pickled with plain float64 arrays
(as before 2026-12-06), per montage. Then the median over a 2 s window's three Welch segments, as
gold's band powers take it (``dsp.features.segment_median``), against ``np.median``, for a batch of
five windows (one session's share of a micro-batch). Last, a bucket's output tables for one
micro-batch (``SessionTables``: 17 sessions' second of rows, what each stateful call builds), and an
empty table of each output schema, as pyarrow makes it (``Schema.empty_table``, what each session's
notes were at every batch before stop 48) against ``lake_rows.empty_table`` (made once).

    python bench/session_state_bench.py
"""

from __future__ import annotations

import functools
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from core.settings import Settings, SimulationSettings
from dsp.features import segment_median
from dsp.session import ProcessorConfig, SessionState, info_from_session_record, process
from streaming_jobs.lake_rows import BLOCK_NOTES_SCHEMA, SAMPLES_SCHEMA, WINDOWS_SCHEMA, empty_table
from streaming_jobs.silver_gold import SessionTables

MONTAGES = {
    "simulated (16 EEG + pulse, 250 Hz)": "simulated",
    "cyton (8, 250 Hz)": "cyton",
    "cyton_daisy (16, 125 Hz)": "cyton_daisy",
}


def best_of(run: Callable[[], Any], repeats: int = 2000) -> float:
    """Median seconds per call over ``repeats`` calls, in 10 rounds."""
    rounds = []
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(repeats // 10):
            run()
        rounds.append((time.perf_counter() - start) / (repeats // 10))
    return float(np.median(rounds))


def session_state(board: str, seconds: float = 30.0, batch_s: float = 2.0) -> SessionState:
    """A sample-lake session of ``board`` through the processor in ``batch_s`` batches; its final state."""
    settings = Settings()
    settings = settings.model_copy(
        update={"edge": settings.edge.model_copy(update={"simulation": SimulationSettings(board=board)})}
    )
    session = simulate_session(settings, 0, seconds, SESSION_START_US)
    config = ProcessorConfig()
    info = info_from_session_record(session.session_record, config)
    per_batch = int(batch_s * info.sample_rate_hz / len(session.blocks[0].samples))
    state = SessionState()
    for at in range(0, len(session.blocks), per_batch):
        _, state = process(state, session.blocks[at : at + per_batch], 0, config, info)
    return state


def bucket_outputs(sessions: int = 17, seconds: float = 1.0) -> list[Any]:
    """The processor's outputs for ``sessions`` simulated sessions' ``seconds`` after their first 10 s."""
    settings = Settings()
    config = ProcessorConfig()
    outputs = []
    for number in range(sessions):
        session = simulate_session(settings, number, 10.0 + seconds, SESSION_START_US)
        info = info_from_session_record(session.session_record, config)
        first = int(10.0 * info.sample_rate_hz / len(session.blocks[0].samples))
        _, state = process(SessionState(), session.blocks[:first], 0, config, info)
        output, _ = process(state, session.blocks[first:], 0, config, None)
        outputs.append(output)
    return outputs


def bucket_tables(outputs: list[Any]) -> None:
    made = SessionTables.empty()
    for number, output in enumerate(outputs):
        made.add(f"session-{number}", "device", output, -1, SESSION_START_US)
    made.tables()


def round_trip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value, protocol=5))


def plain_float64(state: SessionState) -> dict[str, Any]:
    """The state as pickled before packing: its arrays as they are."""
    assert state.windows is not None
    return {**state.__dict__, "windows": dict(state.windows.__dict__)}


def main() -> None:
    print("per-session state, pickled (protocol 5) after 30 s in 2 s batches")
    for name, board in MONTAGES.items():
        state = session_state(board)
        packed, plain = pickle.dumps(state, protocol=5), pickle.dumps(plain_float64(state), protocol=5)
        packed_s = best_of(functools.partial(round_trip, state))
        plain_s = best_of(functools.partial(round_trip, plain_float64(state)))
        print(
            f"  {name}: packed {len(packed) / 1024:.1f} KB, plain float64 {len(plain) / 1024:.1f} KB "
            f"({len(packed) / len(plain):.2f}x); pickle + unpickle {packed_s * 1e6:.0f} us vs {plain_s * 1e6:.0f} us"
        )
    psd = np.random.default_rng(0).random((5, 3, 126, 16))
    assert np.array_equal(segment_median(psd), np.median(psd, axis=-3))
    ours, numpy_s = best_of(lambda: segment_median(psd)), best_of(lambda: np.median(psd, axis=-3))
    print(
        f"Welch median over 3 segments, 5 windows x 126 frequencies x 16 channels: {ours * 1e6:.0f} us, "
        f"np.median {numpy_s * 1e6:.0f} us ({ours / numpy_s:.2f}x)"
    )
    outputs = bucket_outputs()
    tables_s = best_of(functools.partial(bucket_tables, outputs), repeats=200)
    print(f"a bucket's output tables, {len(outputs)} sessions x 1 s: {tables_s * 1e3:.2f} ms per micro-batch")
    for schema_name, schema in (
        ("samples", SAMPLES_SCHEMA),
        ("windows", WINDOWS_SCHEMA),
        ("block notes", BLOCK_NOTES_SCHEMA),
    ):
        made, cached = best_of(schema.empty_table), best_of(functools.partial(empty_table, schema))
        print(
            f"  an empty {schema_name} table: pyarrow {made * 1e6:.0f} us, made once {cached * 1e6:.2f} us "
            f"({cached / made:.3f}x)"
        )


if __name__ == "__main__":
    main()
