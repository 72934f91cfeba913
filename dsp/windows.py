"""Sliding windows over a sample stream, aligned to the session's sample index.

Window k covers samples [k*hop, k*hop + length): the same windows come out whatever the chunking,
and the live scorer and the lake agree on window boundaries. A gap in the stream (missing samples)
restarts windowing at the next hop boundary after it; no window spans a gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dsp.packing import pack_columns, unpack_columns


@dataclass(frozen=True)
class WindowSpec:
    length: int
    hop: int

    @classmethod
    def from_seconds(cls, sample_rate_hz: float, length_s: float = 2.0, overlap: float = 0.8) -> WindowSpec:
        length = int(round(length_s * sample_rate_hz))
        hop = max(1, int(round(length * (1 - overlap))))
        if length < 2:
            raise ValueError(f"window of {length_s} s at {sample_rate_hz} Hz has under 2 samples")
        return cls(length, hop)


@dataclass(frozen=True)
class Window:
    start_index: int
    end_index: int  # exclusive
    samples: np.ndarray  # (length, n_channels)


@dataclass(frozen=True)
class WindowState:
    buffer: np.ndarray  # samples from buffer_start on, enough for the next window
    buffer_start: int
    next_start: int

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "buffer": pack_columns(self.buffer)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, buffer=unpack_columns(state["buffer"]))


def initial_window_state(n_channels: int) -> WindowState:
    return WindowState(np.empty((0, n_channels)), 0, 0)


def _next_boundary(index: int, hop: int) -> int:
    return -(-index // hop) * hop


def windows_from_chunk(
    spec: WindowSpec, state: WindowState, first_index: int, samples: np.ndarray
) -> tuple[list[Window], WindowState, int]:
    """Windows completed by this chunk, the new state, and the samples found missing before it."""
    buffer_end = state.buffer_start + len(state.buffer)
    lost = 0
    if len(state.buffer) == 0 and state.next_start == 0 and state.buffer_start == 0:
        buffer, buffer_start = samples, first_index
        next_start = _next_boundary(first_index, spec.hop)
    elif first_index != buffer_end:
        lost = max(0, first_index - buffer_end)
        buffer, buffer_start = samples, first_index
        next_start = _next_boundary(first_index, spec.hop)
    else:
        buffer = np.concatenate([state.buffer, samples]) if len(state.buffer) else samples
        buffer_start, next_start = state.buffer_start, state.next_start
    windows = []
    end = buffer_start + len(buffer)
    while next_start + spec.length <= end:
        offset = next_start - buffer_start
        windows.append(Window(next_start, next_start + spec.length, buffer[offset : offset + spec.length]))
        next_start += spec.hop
    keep_from = max(0, next_start - buffer_start)
    new_state = WindowState(buffer[keep_from:].copy(), buffer_start + keep_from, next_start)
    return windows, new_state, lost
