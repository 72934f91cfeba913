"""Live filtering block by block: the same output as one pass, a gap starts from rest."""

from __future__ import annotations

import numpy as np

from dsp.filters import FilterSpec, design_sos, filter_block, filter_chunk, initial_state


def test_live_blocks_continue_the_filter_and_a_gap_restarts_it() -> None:
    sos = design_sos(FilterSpec(250.0))
    x = np.random.default_rng(1).normal(size=(100, 3))
    whole, _ = filter_chunk(sos, initial_state(sos, 3), x)
    first, state = filter_block(sos, None, None, 0, x[:50])
    second, _ = filter_block(sos, state, 50, 50, x[50:])
    np.testing.assert_allclose(np.vstack([first, second]), whole, atol=1e-12)
    after_gap, _ = filter_block(sos, state, 50, 60, x[50:])
    np.testing.assert_allclose(after_gap, filter_chunk(sos, initial_state(sos, 3), x[50:])[0], atol=1e-12)
