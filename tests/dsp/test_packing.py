"""Packed state arrays: half the bytes where float32 holds the values, and back bit for bit."""

from __future__ import annotations

import pickle

import numpy as np

from dsp.packing import pack_columns, unpack_columns
from dsp.windows import WindowState


def test_float32_exact_columns_pack_narrow_and_come_back_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(400, 3)).astype(np.float32).astype(np.float64)
    times = 1.7e15 + np.arange(400) * 4000.0  # lab microseconds: float64 only
    with_nan = samples[:, 0].copy()
    with_nan[5] = np.nan
    array = np.column_stack([samples, times, with_nan, -0.0 * np.ones(400)])
    packed = pack_columns(array)
    exact, narrow, wide = packed
    assert exact.tolist() == [True, True, True, False, False, True]
    assert narrow.dtype == np.float32 and wide.dtype == np.float64
    back = unpack_columns(pickle.loads(pickle.dumps(packed)))
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back.view(np.int64), array.view(np.int64))


def test_other_arrays_and_older_state_pass_as_they_are() -> None:
    ints = np.arange(6).reshape(3, 2)
    assert pack_columns(ints) is ints
    assert pack_columns(None) is None
    one_d = np.ones(4)
    assert pack_columns(one_d) is one_d
    assert unpack_columns(one_d) is one_d  # a state pickled before packing
    empty = np.empty((0, 5))
    assert unpack_columns(pack_columns(empty)).shape == (0, 5)


def test_a_window_state_pickles_in_half_the_bytes() -> None:
    buffer = np.random.default_rng(1).normal(size=(400, 34)).astype(np.float32).astype(np.float64)
    state = WindowState(np.column_stack([buffer, np.arange(400) * 4000.0 + 1.7e15]), 100, 500)
    pickled = pickle.dumps(state, protocol=5)
    assert len(pickled) < 0.55 * state.buffer.nbytes
    back = pickle.loads(pickled)
    assert (back.buffer_start, back.next_start) == (100, 500)
    np.testing.assert_array_equal(back.buffer, state.buffer)
    older = WindowState.__new__(WindowState)
    older.__setstate__({"buffer": state.buffer, "buffer_start": 1, "next_start": 2})
    np.testing.assert_array_equal(older.buffer, state.buffer)
