"""The pure signal maths: chunked equals one pass, and each function measures what it claims."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import sosfilt, welch

from core.settings import SimulationSettings
from dsp.dejitter import DejitterState, dejitter_block
from dsp.features import (
    BANDS,
    band_powers,
    canonical_correlation,
    quality,
    reference_signals,
    ssvep_scores,
    welch_psd,
    window_quality,
)
from dsp.filters import FilterSpec, design_sos, filter_chunk, initial_state
from dsp.heart import detect_beats, heart_rate_bpm
from dsp.windows import WindowSpec, initial_window_state, windows_from_chunk
from edge_producers.devices.simulated import SimulatedEeg

FS = 250.0


def _chunks(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < n:
        size = min(int(rng.integers(1, 300)), n - total)
        sizes.append(size)
        total += size
    return sizes


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    return SimulatedEeg(SimulationSettings(seed=5)).generate(int(60 * FS)).astype(np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_filter_equals_one_pass_sosfilt(recording: np.ndarray, seed: int) -> None:
    sos = design_sos(FilterSpec(FS))
    expected = sosfilt(sos, recording, axis=0)
    state, parts, at = initial_state(sos, recording.shape[1]), [], 0
    for size in _chunks(len(recording), seed):
        out, state = filter_chunk(sos, state, recording[at : at + size])
        parts.append(out)
        at += size
    np.testing.assert_allclose(np.vstack(parts), expected, atol=1e-5, rtol=0)


def test_filter_removes_mains_and_drift() -> None:
    t = np.arange(int(10 * FS)) / FS
    signal = (50 * np.sin(2 * np.pi * 60 * t) + 10 * np.sin(2 * np.pi * 10 * t) + 200 * t)[:, None]
    sos = design_sos(FilterSpec(FS))
    out, _ = filter_chunk(sos, initial_state(sos, 1), signal)
    settled = out[int(4 * FS) :, 0]
    assert np.std(settled) == pytest.approx(10 / np.sqrt(2), rel=0.1)


def test_filter_spec_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="below Nyquist"):
        design_sos(FilterSpec(100.0))
    with pytest.raises(ValueError, match="0 < low < high"):
        design_sos(FilterSpec(250.0, band_low_hz=30, band_high_hz=10))


def test_dejitter_recovers_the_sampling_clock_and_ignores_batching() -> None:
    rng = np.random.default_rng(0)
    n = 25 * 400
    true_times = 1_700_000_000_000_000 + np.arange(n) * (1e6 / 250.02)  # a slightly fast board
    stamps = (true_times + rng.normal(0, 2000, n)).astype(np.int64)  # 2 ms jitter
    state, fitted = DejitterState(), []
    for start in range(0, n, 25):
        times, state = dejitter_block(state, start, stamps[start : start + 25], 250.0)
        fitted.append(times)
    fitted = np.concatenate(fitted)
    late = slice(n // 2, None)
    assert np.abs(fitted[late] - true_times[late]).max() < 500  # well under the 2 ms jitter
    assert np.std(np.diff(fitted[late])) < 5


def test_windows_are_aligned_and_chunk_invariant(recording: np.ndarray) -> None:
    spec = WindowSpec.from_seconds(FS, 2.0, 0.8)
    assert (spec.length, spec.hop) == (500, 100)
    state, starts = initial_window_state(recording.shape[1]), []
    at = 0
    for size in _chunks(len(recording), 3):
        windows, state, lost = windows_from_chunk(spec, state, at, recording[at : at + size])
        assert lost == 0
        for window in windows:
            np.testing.assert_array_equal(window.samples, recording[window.start_index : window.end_index])
        starts += [w.start_index for w in windows]
        at += size
    assert starts == list(range(0, len(recording) - 500 + 1, 100))


def test_a_gap_restarts_windows_at_the_next_boundary() -> None:
    spec = WindowSpec(length=10, hop=5)
    state = initial_window_state(1)
    windows, state, _ = windows_from_chunk(spec, state, 0, np.zeros((12, 1)))
    assert [w.start_index for w in windows] == [0]
    windows, state, lost = windows_from_chunk(spec, state, 20, np.zeros((16, 1)))
    assert lost == 8
    assert [w.start_index for w in windows] == [20, 25]


def test_band_powers_find_alpha() -> None:
    t = np.arange(500) / FS
    rng = np.random.default_rng(0)
    window = np.column_stack([20 * np.sin(2 * np.pi * 10 * t), rng.normal(0, 1, 500)])
    powers = band_powers(window + rng.normal(0, 1, (500, 2)), FS)
    assert powers.shape == (len(BANDS), 2)
    alpha = list(BANDS).index("alpha")
    assert powers[:, 0].argmax() == alpha
    assert powers[alpha, 0] > powers[alpha, 1] + 1.5


@pytest.mark.parametrize("n, nperseg, fs", [(500, 250, 250.0), (500, 125, 125.0), (640, 255, 255.0), (97, 97, 1000.0)])
@pytest.mark.parametrize("average", ["mean", "median"])
def test_welch_psd_equals_scipy(n: int, nperseg: int, fs: float, average: str) -> None:
    x = np.random.default_rng(n).normal(0, 10, (n, 3)) + 5.0
    freqs, psd = welch_psd(x, fs, nperseg, average=average)
    expected_freqs, expected = welch(x, fs=fs, nperseg=nperseg, noverlap=nperseg // 2, average=average, axis=0)
    np.testing.assert_allclose(freqs, expected_freqs)
    np.testing.assert_allclose(psd, expected, rtol=1e-10)


def test_ssvep_scores_equal_plain_cca_with_each_reference() -> None:
    x = np.random.default_rng(3).normal(0, 1, (500, 4))
    expected = [canonical_correlation(x, reference_signals(500, FS, f)) for f in (8.0, 12.0)]
    np.testing.assert_allclose(ssvep_scores(x, FS, [8.0, 12.0]), expected, rtol=1e-12)
    np.testing.assert_allclose(ssvep_scores(x, FS, [8.0, 12.0]), expected, rtol=1e-12)  # cached bases


def test_ssvep_scores_pick_the_flicker() -> None:
    t = np.arange(500) / FS
    rng = np.random.default_rng(1)
    window = np.column_stack([3 * np.sin(2 * np.pi * 12 * t + 0.3) + rng.normal(0, 5, 500) for _ in range(4)])
    scores = ssvep_scores(window, FS, [8, 10, 12, 15])
    assert scores.argmax() == 2 and 0 <= scores.min() and scores.max() <= 1


def test_a_stack_of_windows_gives_each_window_s_own_features() -> None:
    # Gold computes a run's windows in one stack; a replay or another chunking stacks them
    # differently, so each window's features must not depend on its neighbours, bit for bit.
    windows = np.random.default_rng(5).normal(0, 10, (3, 500, 4))
    windows[1, :50, 2] = 187_500
    powers = band_powers(windows, FS)
    scores = ssvep_scores(windows, FS, [8.0, 12.0])
    stacked_quality = window_quality(windows, FS)
    for number, window in enumerate(windows):
        np.testing.assert_array_equal(powers[number], band_powers(window, FS))
        np.testing.assert_array_equal(scores[number], ssvep_scores(window, FS, [8.0, 12.0]))
        single = quality(window, FS)
        assert {key: stacked_quality[key][number] for key in single} == single


def test_quality_flags() -> None:
    rng = np.random.default_rng(2)
    window = rng.normal(0, 10, (500, 3))
    window[:, 1] = 0.0  # flat
    window[:100, 2] = 187_500  # railed
    q = quality(window, FS)
    assert q["flat_channels"] == 1
    assert q["railed_pct"] == pytest.approx(100 * 100 / 1500)
    t = np.arange(500) / FS
    noisy = rng.normal(0, 1, (500, 2)) + 30 * np.sin(2 * np.pi * 60 * t)[:, None]
    assert quality(noisy, FS)["line_noise_ratio"] > 0.8


def test_heart_rate_from_the_simulated_pulse() -> None:
    settings = SimulationSettings(seed=2)
    generator = SimulatedEeg(settings)
    pulse = generator.generate(int(30 * FS))[:, -1].astype(np.float64)
    beats = detect_beats(pulse, FS)
    bpm = heart_rate_bpm(beats, FS)
    expected = generator.heart_hz * 60
    assert len(beats) == pytest.approx(30 * generator.heart_hz, abs=2)
    assert np.median(bpm) == pytest.approx(expected, rel=0.03)
