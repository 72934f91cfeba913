from __future__ import annotations

import numpy as np
import pytest

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
    """A tab filters what it receives with its own filter, by default the lake's, and takes band
    power of its newest window; for the window gold ends at the same sample, every band and
    channel must agree with gold's row."""
    from core.settings import SimulationSettings, load_settings
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
    eeg = [i for i, kind in enumerate(layout.channel_types) if kind == "eeg"]
    tab = views.FilteredHistory(design_sos(FilterSpec.of(lake, fs)), len(data), len(eeg))
    blocks = [
        Block("dev", i // 20, i, data[i : i + 20], (1_700_000_000_000_000 + (i + np.arange(20)) * 5000), 0, fs)
        for i in range(0, len(data), 20)
    ]
    output, _ = process(SessionState(), blocks, 0, config, info)
    for block in blocks:
        tab.push(block.first_sample_index + np.arange(len(block.samples)), block.samples[:, eeg].astype(np.float64))
    newest = output.windows[-1]
    assert newest["window_end_index"] == len(data)
    recent = tab.values[-int(lake.window_s * fs) :]
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


def test_a_tabs_controls_describe_the_lakes_filters_with_one_width() -> None:
    notch = views.trace_filter(1.0, 40.0, "notch", 50.0, 2.5, 2)
    assert notch.notch_hz == 50.0 and notch.line_filter == "notch" and notch.notch_q == 20.0
    spec, _ = views.fitted_filter(views.trace_filter(1.0, 60.0, "bandstop", 60.0, 2.0, 2), 250.0)
    assert spec.bandstop_edges_hz == (59.0, 61.0) and spec.bandstop_order == 2
    assert views.fitted_filter(views.trace_filter(0.5, 30.0, "off", 60.0, 2.0, 2), 250.0)[0].notch_hz is None
    with pytest.raises(ValueError, match="line width must be a positive number of Hz"):
        views.trace_filter(1.0, 40.0, "notch", 50.0, 0.0, 2)
    with pytest.raises(ValueError, match="band-pass needs 0 < low < high"):
        views.fitted_filter(views.trace_filter(30.0, 10.0, "off", 60.0, 2.0, 2), 250.0)
    with pytest.raises(ValueError, match="band-stop order must be 1-8"):
        views.fitted_filter(views.trace_filter(1.0, 40.0, "bandstop", 50.0, 2.0, 12), 250.0)


def test_a_tabs_filtered_history_is_the_same_in_any_chunking_of_its_pushes() -> None:
    from dsp.filters import FilterSpec, design_sos

    sos = design_sos(FilterSpec(250.0, line_filter="bandstop"))
    rng = np.random.default_rng(5)
    indices = np.r_[np.arange(0, 400), np.arange(450, 900)]  # a lost stretch in the middle
    raw = rng.normal(size=(len(indices), 4)) + [3000, -200, 0, 50]
    whole = views.FilteredHistory(sos, 600, 4)
    whole.push(indices, raw)
    pushed = views.FilteredHistory(sos, 600, 4)
    for start in range(0, len(indices), 25):
        pushed.push(indices[start : start + 25], raw[start : start + 25])
    np.testing.assert_array_equal(pushed.indices, indices[-600:])
    np.testing.assert_allclose(pushed.values, whole.values, atol=1e-9)
    assert len(pushed.values) == 600
    # Settled on the first sample of each run: no transient from the electrodes' DC offsets.
    assert np.abs(whole.values).max() < 10


def test_shown_channels_solo_wins_over_the_ticks() -> None:
    assert views.shown_channels(4, [3, 0, 9], None) == [0, 3]
    assert views.shown_channels(4, [0, 1], 2) == [2]
    assert views.shown_channels(4, [], None) == []


def test_the_spectrum_window_sets_the_resolution() -> None:
    t = np.arange(2000) / 250.0
    x = np.sin(2 * np.pi * 10.25 * t)[:, None]
    assert np.diff(views.psd(x, 250.0, 1.0)[0])[0] == 1.0
    freqs, power = views.psd(x, 250.0, 4.0)
    assert np.diff(freqs)[0] == 0.25 and freqs[np.argmax(power[:, 0])] == 10.25


def test_the_fleet_table_shows_what_each_heartbeat_carries() -> None:
    new = {"state": "STREAMING", "session_id": "s1", "sample_rate_hz": 249.96, "losses": 3, "spool_depth": 12,
           "spool_bytes": 2_500_000, "clock_offset_us": -1234, "cpu_pct": 37.4, "memory_pct": 61.2,
           "soc_temperature_c": 55.25, "message": None}  # fmt: skip
    old = {"state": "DEGRADED", "session_id": None, "sample_rate_hz": 125.0, "losses": 0, "spool_depth": 0,
           "clock_offset_us": 0, "message": "camera: no camera"}  # an edge from before device_status v3  # fmt: skip
    rows = views.fleet_rows({"pi-2": (old, 31.0), "pi-1": (new, 0.4)})
    assert rows["device"] == ["pi-1", "pi-2"]
    assert rows["cpu"] == ["37", "-"] and rows["memory"] == ["61", "-"] and rows["soc"] == ["55.2", "-"]
    assert rows["rate"] == ["250.0", "125.0"] and rows["offset"] == ["-1.2", "0.0"] and rows["spool_mb"][0] == "2.50"
    assert rows["heartbeat"] == ["0", "31"] and rows["message"] == ["", "camera: no camera"]


def test_log_rows_newest_first_per_device_and_level() -> None:
    lines = [
        {
            "device_id": "pi-1",
            "timestamp_us": 1_790_000_000_000_000 + i,
            "level": level,
            "logger": "edge",
            "message": f"m{i}",
        }
        for i, level in enumerate(["INFO", "WARNING", "DEBUG", "ERROR"])
    ] + [{"device_id": "pi-2", "timestamp_us": 1_790_000_000_000_009, "level": "ERROR", "logger": "x", "message": "b"}]
    rows = views.log_rows(lines, "pi-1", "WARNING", 10)
    assert rows["message"] == ["m3", "m1"] and rows["time"][0].endswith(".000")
    assert views.log_rows(lines, None, "DEBUG", 2)["message"] == ["b", "m3"]


def test_a_commands_fate_is_said_with_the_devices_text_escaped() -> None:
    waiting = views.command_html("STOP", 0.4, None, None, None, 15.0)
    assert "STOP: sent 0.4 s ago, waiting" in waiting
    ack = {"ok": True, "message": "stopped <b>"}
    assert "STOP: <b>ok</b>: stopped &lt;b&gt; (ack after 45 ms)" in views.command_html("STOP", 1, ack, 0.045, None, 15)
    refused = views.command_html("SET_CONFIG", 1, {"ok": False, "message": "cannot change x live"}, 0.1, None, 15)
    assert "SET_CONFIG: <b>refused</b>: cannot change x live" in refused
    assert "no ack within 15 s" in views.command_html("START", 16, None, None, None, 15)
    assert "not delivered" in views.command_html("START", 1, None, None, "not delivered to Kafka: x", 15)


def test_room_readings_become_time_series_in_lab_time() -> None:
    base = {"clock_offset_us": 2_000_000, "temperature_c": 21.0, "humidity_pct": None, "pressure_hpa": 1000.0,
            "gyro_x_rad_s": 0.3, "gyro_y_rad_s": 0.4, "gyro_z_rad_s": 0.0}  # fmt: skip
    rows = views.sensor_rows([{**base, "measured_us": 10_000_000}, {**base, "measured_us": 10_500_000,
                              "gyro_z_rad_s": None}], started_us=11_000_000)  # fmt: skip
    assert rows["t"] == [1.0, 1.5] and rows["temperature_c"] == [21.0, 21.0]
    assert (
        np.isnan(rows["humidity_pct"]).all() and rows["motion"][0] == pytest.approx(0.5) and np.isnan(rows["motion"][1])
    )


def test_beats_are_found_in_the_simulated_pulse() -> None:
    from core.settings import SimulationSettings
    from edge_producers.devices.simulated import SimulatedEeg

    data = SimulatedEeg(SimulationSettings(seed=1, n_eeg_channels=8)).generate(2500)
    beats, bpm = views.beats_and_bpm(data[:, -1], 250.0)
    assert 8 <= len(beats) <= 14 and bpm is not None and 55 < bpm < 85
    assert views.beats_and_bpm(data[:100, -1], 250.0) == (pytest.approx(np.empty(0)), None)
