"""Live filtering block by block: the same output as one pass, a gap starts afresh; the line filters."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.filters import (
    FilterSpec,
    design_sos,
    filter_block,
    filter_chunk,
    filter_indexed,
    initial_state,
    settled_state,
)


def test_live_blocks_continue_the_filter_and_a_gap_restarts_it() -> None:
    sos = design_sos(FilterSpec(250.0))
    x = np.random.default_rng(1).normal(size=(100, 3))
    whole, _ = filter_chunk(sos, initial_state(sos, 3), x)
    first, state = filter_block(sos, None, None, 0, x[:50])
    second, _ = filter_block(sos, state, 50, 50, x[50:])
    np.testing.assert_allclose(np.vstack([first, second]), whole, atol=1e-12)
    after_gap, _ = filter_block(sos, state, 50, 60, x[50:])
    np.testing.assert_allclose(after_gap, filter_chunk(sos, initial_state(sos, 3), x[50:])[0], atol=1e-12)


def _gain_db(spec: FilterSpec, hz: float) -> float:
    from scipy.signal import sosfreqz

    _, response = sosfreqz(design_sos(spec), worN=[hz], fs=spec.sample_rate_hz)
    return float(20 * np.log10(np.abs(response[0]) + 1e-300))


def test_the_labs_bandstop_is_deeper_than_the_q30_notch_where_mains_wanders() -> None:
    notch = FilterSpec(250.0)
    bandstop = FilterSpec(250.0, line_filter="bandstop", bandstop_width_hz=2.0, bandstop_order=2)
    assert bandstop.bandstop_edges_hz == (59.0, 61.0)
    for hz in (59.8, 59.9, 60.1, 60.2):  # mains is rarely 60.000 Hz
        assert _gain_db(bandstop, hz) < _gain_db(notch, hz) - 10
    assert _gain_db(bandstop, 60.1) < -40 and _gain_db(notch, 60.1) > -25
    assert abs(_gain_db(bandstop, 40.0)) < 0.1  # the EEG band is left alone
    assert design_sos(bandstop).shape == (4 + 2, 6)  # band-pass order 4, band-stop order 2: 2 sections each
    assert "band-stop 59-61 Hz (order 2)" in bandstop.describe() and "notch 60 Hz" in notch.describe()


def test_a_line_filter_that_reaches_nyquist_is_left_out_at_a_slow_rate() -> None:
    spec = FilterSpec.at_rate(125.0, 1.0, 60.0, 60.0, line_filter="bandstop", bandstop_width_hz=8.0)
    assert spec.notch_hz is None and spec.band_high_hz == 0.45 * 125.0
    assert FilterSpec.at_rate(125.0, 1.0, 40.0, 50.0, line_filter="bandstop").bandstop_edges_hz == (49.0, 51.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"line_filter": "bandstop", "bandstop_order": 9}, "band-stop order must be 1-8"),
        ({"line_filter": "bandstop", "bandstop_width_hz": 130.0}, "band-stop -5-125 Hz must lie between 0 and Nyquist"),
        ({"line_filter": "comb"}, "line filter 'comb' is not one of notch, bandstop"),
        ({"notch_q": 0.0}, "notch Q must be positive"),
    ],
)
def test_impossible_line_filters_say_what_is_wrong(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        design_sos(FilterSpec(250.0, **fields))


def test_settled_state_starts_a_stream_without_the_dc_offsets_transient() -> None:
    sos = design_sos(FilterSpec(250.0, line_filter="bandstop"))
    offset = np.array([[25_000.0, -3_000.0]])  # a Cyton's electrode offsets are tens of millivolts
    x = offset + np.random.default_rng(2).normal(size=(500, 2))
    settled, _ = filter_chunk(sos, settled_state(sos, x[0]), x)
    at_rest, _ = filter_chunk(sos, initial_state(sos, 2), x)
    assert np.abs(settled).max() < 20 and np.abs(at_rest[:250]).max() > 1000


@pytest.mark.parametrize("settle", [False, True])
def test_indexed_samples_filter_alike_in_any_chunking_and_each_gap_restarts(settle: bool) -> None:
    sos = design_sos(FilterSpec(250.0, line_filter="bandstop"))
    rng = np.random.default_rng(3)
    indices = np.r_[np.arange(0, 300), np.arange(340, 600)]  # 40 samples lost after 300
    x = rng.normal(size=(len(indices), 3)) + 50.0
    whole, _ = filter_indexed(sos, None, None, indices, x, settle=settle)
    for cuts in ([25, 50, 325, 400], [7, 299, 301, 559], list(range(10, 560, 10))):
        pieces, state, expected = [], None, None
        for start, end in zip([0, *cuts], [*cuts, len(indices)]):
            y, state = filter_indexed(sos, state, expected, indices[start:end], x[start:end], settle=settle)
            pieces.append(y)
            expected = int(indices[end - 1]) + 1
        np.testing.assert_allclose(np.vstack(pieces), whole, atol=1e-9)
    # Each run starts as a one-pass filter over that run alone would.
    start = settled_state(sos, x[300]) if settle else initial_state(sos, 3)
    np.testing.assert_allclose(whole[300:], filter_chunk(sos, start, x[300:])[0], atol=1e-9)
