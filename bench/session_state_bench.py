"""The silver/gold stream's per-session state and Welch median, against what they were.

Spark hands each session's state (``dsp.session.SessionState``, pickled) to the Python worker at
every micro-batch and takes it back; the JVM's part of that transfer grows with the bytes. This bench
runs a simulated headset's session through the processor in 2 s batches, as the stream does, and
prints the state's pickled size and pickle + unpickle time with its float arrays packed
(``dsp.packing``, what the stream stores) against the same state pickled with plain float64 arrays
(as before 2026-12-06), per montage. Then the median over a 2 s window's three Welch segments, as
gold's band powers take it (``dsp.features.segment_median``), against ``np.median``, for a batch of
five windows (one session's share of a micro-batch).

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

from core.settings import SimulationSettings
from dsp.features import segment_median
from dsp.session import Block, ProcessorConfig, SessionInfo, SessionState, process
from dsp.simulation import headset_for
from edge_producers.devices.simulated import SimulatedEeg, layout_for

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
    settings = SimulationSettings(board=board)
    generator = SimulatedEeg(settings)
    layout = layout_for(settings)
    rate = headset_for(settings).sample_rate_hz
    data = generator.generate(int(seconds * rate))
    info = SessionInfo("bench", layout.channel_names, layout.channel_types, rate, (8.0, 10.0, 12.0, 15.0))
    block, t0 = 25, 1_790_000_000_000_000
    blocks = [
        Block(
            "bench",
            i // block,
            i,
            data[i : i + block],
            (t0 + (i + np.arange(block)) * 1e6 / rate).astype(np.int64),
            0,
            rate,
        )
        for i in range(0, len(data) - block + 1, block)
    ]
    per_batch = int(batch_s * rate / block)
    state = SessionState()
    for at in range(0, len(blocks), per_batch):
        _, state = process(state, blocks[at : at + per_batch], 0, ProcessorConfig(), info)
    return state


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


if __name__ == "__main__":
    main()
