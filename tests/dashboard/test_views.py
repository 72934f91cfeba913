from __future__ import annotations

import numpy as np

from dashboard import views


def test_stacked_traces_put_each_channel_on_its_own_row() -> None:
    rng = np.random.default_rng(0)
    window = rng.normal(size=(500, 3)) * [1.0, 50.0, 1000.0] + [0, 100, -5000]
    stacked = views.stack(window, views.channel_scales(window), np.median(window, axis=0))
    assert np.allclose(np.median(stacked, axis=0), [2, 1, 0], atol=0.05)
    assert np.all(np.percentile(np.abs(stacked - [2, 1, 0]), 99, axis=0) < 0.75)  # autoscaled alike


def test_the_quality_table_flags_flat_railed_and_mains_channels() -> None:
    t = np.arange(500) / 250.0
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 10, 500)
    railed = np.where(np.arange(500) % 50 < 25, 187_500.0, -187_500.0)  # pinned at both rails
    window = np.column_stack([clean, np.zeros(500), railed, clean + 200 * np.sin(2 * np.pi * 50 * t)])
    rows = views.channel_quality_rows(window, ["O1", "O2", "Cz", "Pz"], 250.0, 50.0, flat_uv=0.5, line_noise_max=0.5)
    assert rows["status"] == ["ok", "FLAT", "RAILED", "LINE NOISE"]
    assert rows["railed_pct"][2] == 100.0
    # Mains at 50 Hz is only noise where the lab's mains is 50 Hz (never assume 60).
    assert views.channel_quality_rows(window, ["O1", "O2", "Cz", "Pz"], 250.0, 60.0, 0.5, 0.5)["status"][3] == "ok"


def test_scalp_positions_come_from_the_mne_montage() -> None:
    positions = views.scalp_positions(("Fp1", "O1", "C3", "not-an-electrode"))
    assert set(positions) == {"Fp1", "O1", "C3"}
    assert positions["Fp1"][1] > positions["C3"][1] > positions["O1"][1]  # front to back
    assert all(x * x + y * y < 1 for x, y in positions.values())


def test_topomap_is_blank_outside_the_head_and_exact_at_electrodes() -> None:
    positions = [(-0.5, 0.5), (0.5, 0.5), (0.0, -0.5), (0.0, 0.0)]
    grid = views.topomap_grid(np.array([1.0, 2.0, 3.0, 4.0]), positions, resolution=65)
    assert np.isnan(grid[0, 0]) and np.isnan(grid[-1, -1])
    assert abs(grid[32, 32] - 4.0) < 1e-6


def test_running_accuracy_counts_windows_inside_trials_only() -> None:
    trials = [(0, 4_000_000, "a"), (6_000_000, 10_000_000, "b")]
    predictions = [
        (0, 2_000_000, "a"),
        (1_000_000, 3_000_000, "b"),
        (3_000_000, 5_000_000, "a"),
        (7_000_000, 9_000_000, "b"),
    ]
    assert views.running_accuracy(predictions, trials) == (2 / 3, 3)
    assert views.running_accuracy([], trials) == (None, 0)


def test_psd_finds_a_sinusoid() -> None:
    t = np.arange(500) / 250.0
    freqs, power = views.psd(np.sin(2 * np.pi * 12 * t)[:, None], 250.0)
    assert freqs[np.argmax(power[:, 0])] == 12.0


def test_the_head_map_shows_golds_band_power_for_the_same_window(tmp_path) -> None:
    """The dashboard filters what it receives and takes band power of its newest window; for the
    window gold ends at the same sample, every band and channel must agree with gold's row."""
    from core.settings import SimulationSettings, load_settings
    from dashboard.feed import SessionBuffer
    from dsp.features import BANDS
    from dsp.filters import FilterSpec, design_sos
    from dsp.session import Block, ProcessorConfig, SessionInfo, SessionState, process
    from edge_producers.devices.simulated import SimulatedEeg, layout_for

    fs = 200.0  # not 250: the rate travels with the data
    lake = load_settings(environ={}, cwd=tmp_path).lake
    simulation = SimulationSettings(seed=4, sample_rate_hz=fs, n_eeg_channels=8)
    layout = layout_for(simulation)
    data = SimulatedEeg(simulation).generate(int(12 * fs))
    config = ProcessorConfig(lake.band_low_hz, lake.band_high_hz, lake.notch_hz, lake.window_s)
    info = SessionInfo("dev", layout.channel_names, layout.channel_types, fs, (8.0, 10.0, 12.0, 15.0))
    buffer = SessionBuffer(
        "s",
        "dev",
        layout.channel_names,
        layout.channel_types,
        fs,
        "standard_1020",
        len(data),
        design_sos(FilterSpec.at_rate(fs, lake.band_low_hz, lake.band_high_hz, lake.notch_hz)),
    )
    blocks = [
        Block("dev", i // 20, i, data[i : i + 20], (1_700_000_000_000_000 + (i + np.arange(20)) * 5000), 0, fs)
        for i in range(0, len(data), 20)
    ]
    output, _ = process(SessionState(), blocks, 0, config, info)
    for block in blocks:
        buffer.append(block.first_sample_index, block.samples, 0)
    newest = output.windows[-1]
    assert newest["window_end_index"] == len(data)
    eeg = buffer.eeg_columns
    recent = buffer.filtered[:, eeg].astype(np.float64)[-int(lake.window_s * fs) :]
    for row, band in enumerate(BANDS):
        np.testing.assert_allclose(
            views.band_power_per_channel(recent, fs, band), newest["band_power"][row], rtol=1e-5, atol=1e-6
        )


def test_a_prediction_spans_the_window_its_record_names() -> None:
    prediction = {"window_start_index": 1000, "window_end_index": 1500, "window_end_us": 10_000_000}
    assert views.prediction_span_us(prediction, 250.0) == (10_000_000 - 1_996_000, 10_000_000)
    short = {"window_start_index": 0, "window_end_index": 128, "window_end_us": 5_000_000}
    assert views.prediction_span_us(short, 128.0) == (5_000_000 - 992_188, 5_000_000)


def test_running_accuracy_ignores_a_window_that_a_later_trial_starts_inside() -> None:
    # Gold leaves such a window unlabelled; the dashboard's accuracy must not count it either.
    trials = [(0, 4_000_000, "a"), (1_500_000, 5_000_000, "b")]
    assert views.running_accuracy([(0, 2_000_000, "a")], trials) == (None, 0)
