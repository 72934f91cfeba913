"""The per-session processor: grouping-invariant, ordered, gap-aware."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.signal import sosfilt

from core.settings import SimulationSettings
from dsp.filters import FilterSpec, design_sos
from dsp.session import (
    Block,
    ProcessorConfig,
    SessionInfo,
    SessionState,
    process,
)
from edge_producers.devices.simulated import SimulatedEeg, layout_for

FS = 250.0
CONFIG = ProcessorConfig(gap_wait_ms=5_000)


def _blocks(seconds: float = 20, block: int = 25, seed: int = 0) -> tuple[list[Block], np.ndarray, SessionInfo]:
    settings = SimulationSettings(seed=seed)
    stim = lambda t: np.where((t >= 4e6) & (t < 14e6), 12.0, np.nan)  # noqa: E731
    data = SimulatedEeg(settings, stim).generate(int(seconds * FS))
    layout = layout_for(settings)
    info = SessionInfo("dev", layout.channel_names, layout.channel_types, FS, (8.0, 10.0, 12.0, 15.0))
    t0 = 1_700_000_000_000_000
    blocks = [
        Block("dev", i // block, i, data[i : i + block], (t0 + (i + np.arange(block)) * 4000).astype(np.int64), 0, FS)
        for i in range(0, len(data), block)
    ]
    return blocks, data, info


def _run(groups: list[list[Block]], info: SessionInfo, now_step: int = 100):
    state, samples, windows, now = SessionState(), [], [], 0
    for group in groups:
        out, state = process(state, group, now, CONFIG, info)
        samples += out.samples
        windows += out.windows
        now += now_step
    return samples, windows, state


def _concat(samples, key):
    return np.concatenate([s[key] for s in samples])


def test_any_grouping_of_blocks_gives_the_one_pass_result() -> None:
    blocks, data, info = _blocks()
    one_samples, one_windows, _ = _run([blocks], info)
    rng = np.random.default_rng(0)
    groups, at = [], 0
    while at < len(blocks):
        size = int(rng.integers(1, 30))
        groups.append(blocks[at : at + size])
        at += size
    samples, windows, _ = _run(groups, info)
    sos = design_sos(FilterSpec(FS))
    expected = sosfilt(sos, data.astype(np.float64), axis=0)
    np.testing.assert_allclose(_concat(samples, "filtered"), expected, atol=1e-3, rtol=1e-6)
    np.testing.assert_array_equal(_concat(samples, "filtered"), _concat(one_samples, "filtered"))
    np.testing.assert_array_equal(_concat(samples, "sample_index"), np.arange(len(data)))
    assert [w["window_start_index"] for w in windows] == [w["window_start_index"] for w in one_windows]
    for a, b in zip(windows, one_windows):
        np.testing.assert_array_equal(a["band_power"], b["band_power"])
    assert len(windows) == (len(data) - 500) // 100 + 1


def test_out_of_order_and_duplicate_blocks() -> None:
    blocks, data, info = _blocks(seconds=4)
    shuffled = list(blocks)
    np.random.default_rng(1).shuffle(shuffled)
    samples, _, _ = _run([shuffled[:20], shuffled[20:] + blocks[:5]], info)
    np.testing.assert_array_equal(_concat(samples, "sample_index"), np.arange(len(data)))
    np.testing.assert_array_equal(_concat(samples, "raw"), data)


def test_a_gap_waits_then_resets_and_is_recorded() -> None:
    blocks, data, info = _blocks(seconds=8)
    missing = blocks[10:12]
    kept = blocks[:10] + blocks[12:]
    state = SessionState()
    out, state = process(state, kept, 0, CONFIG, info)
    assert _concat(out.samples, "sample_index")[-1] == 249  # holds back after the gap
    assert len(state.pending) == len(blocks) - 12
    # Resent within the wait: filled in, nothing lost.
    out2, state2 = process(state, missing, 1_000, CONFIG, info)
    assert state2.samples_lost == 0 and not state2.pending
    np.testing.assert_array_equal(
        np.concatenate([_concat(out.samples, "sample_index"), _concat(out2.samples, "sample_index")]),
        np.arange(len(data)),
    )
    # Never resent: after the wait the rest goes on, the gap recorded, the filter restarted.
    out3, state3 = process(state, [], CONFIG.gap_wait_ms + 1, CONFIG, info)
    assert state3.samples_lost == 50
    gap_rows = _concat(out3.samples, "gap_before")
    assert gap_rows[0] == 50 and gap_rows[1:].sum() == 0
    assert out3.windows and out3.windows[0]["samples_lost"] == 50


def test_ssvep_window_features_show_the_flicker() -> None:
    blocks, _, info = _blocks(seconds=20)
    _, windows, _ = _run([blocks], info)
    inside = [w for w in windows if 5 * FS <= w["window_start_index"] and w["window_end_index"] <= 13 * FS]
    picks = [w["ssvep_hz"][np.argmax(w["ssvep_score"])] for w in inside]
    assert np.mean(np.array(picks) == 12.0) > 0.9
    assert windows[0]["band_power"].shape == (5, 16)


def test_blocks_wait_for_the_session_record_then_fall_back() -> None:
    blocks, data, _ = _blocks(seconds=2)
    state = SessionState()
    out, state = process(state, blocks, 0, CONFIG, None)
    assert not out.samples and state.pending
    out, state = process(state, [], CONFIG.gap_wait_ms, CONFIG, None)
    assert _concat(out.samples, "sample_index")[-1] == len(data) - 1
    assert state.info is not None and state.info.channel_types == ("eeg",) * 17


def test_state_through_pickle_between_groups_gives_the_one_pass_rows_in_fewer_bytes() -> None:
    """Spark's state store keeps each session's state pickled between batches."""
    blocks, _, info = _blocks(seconds=30, seed=2)
    one, state = process(SessionState(), blocks, 0, CONFIG, info)
    stored, windows, beats, sizes = SessionState(), [], [], []
    for at in range(0, len(blocks), 13):
        out, after = process(stored, blocks[at : at + 13], 0, CONFIG, info)
        windows += out.windows
        beats += out.beats
        pickled = pickle.dumps(after, protocol=5)
        sizes.append(len(pickled))
        stored = pickle.loads(pickled)
    assert [b["sample_index"] for b in beats] == [b["sample_index"] for b in one.beats]
    assert len(windows) == len(one.windows)
    for a, b in zip(windows, one.windows):
        for key in ("band_power", "ssvep_score", "railed_pct", "line_noise_ratio", "window_start_us"):
            np.testing.assert_array_equal(a[key], b[key])
    float64_bytes = state.windows.buffer.nbytes + state.pulse_tail.nbytes
    assert max(sizes) < 0.65 * float64_bytes


def test_heart_rate_beats_from_the_pulse_channel_in_any_grouping() -> None:
    blocks, _, info = _blocks(seconds=30, seed=3)
    state_one, state_many = SessionState(), SessionState()
    out, state_one = process(state_one, blocks, 0, CONFIG, info)
    beats_one = [(b["sample_index"], b["bpm"]) for b in out.beats]
    beats_many = []
    for at in range(0, len(blocks), 7):
        out, state_many = process(state_many, blocks[at : at + 7], 0, CONFIG, info)
        beats_many += [(b["sample_index"], b["bpm"]) for b in out.beats]
    heart_hz = SimulatedEeg(SimulationSettings(seed=3)).heart_hz
    assert len(beats_one) == pytest.approx(30 * heart_hz, abs=2)
    assert [b for b, _ in beats_many] == [b for b, _ in beats_one]
    bpms = [bpm for _, bpm in beats_one if bpm is not None]
    assert np.median(bpms) == pytest.approx(heart_hz * 60, rel=0.03)


def test_a_bandstop_lake_has_its_own_fingerprint_and_takes_wandering_mains_out_of_silver() -> None:
    # The fingerprint is what tells `neurolake lake rebuild` which sessions were made otherwise;
    # a lake that did not change its filter keeps the fingerprint it had before band-stops existed.
    assert ProcessorConfig().fingerprint == "942c06c808716048"
    assert ProcessorConfig(notch_q=30.0, bandstop_width_hz=4.0).fingerprint == ProcessorConfig().fingerprint
    bandstop = ProcessorConfig(gap_wait_ms=5_000, line_filter="bandstop", bandstop_width_hz=2.0, bandstop_order=2)
    assert bandstop.fingerprint != CONFIG.fingerprint
    assert ProcessorConfig(notch_q=10.0).fingerprint != ProcessorConfig().fingerprint
    assert (
        ProcessorConfig(line_filter="bandstop", notch_hz=None).fingerprint == ProcessorConfig(notch_hz=None).fingerprint
    )

    blocks, data, info = _blocks(seconds=12)
    t = np.arange(len(data)) / FS
    mains = (20.0 * np.sin(2 * np.pi * 60.15 * t)).astype(np.float32)  # the grid a little off 60 Hz
    hummed = [
        Block(b.device_id, b.seq, b.first_sample_index, b.samples + mains[b.first_sample_index : b.first_sample_index + len(b.samples), None],
              b.device_times_us, b.clock_offset_us, b.sample_rate_hz)
        for b in blocks
    ]  # fmt: skip

    def mains_left(config: ProcessorConfig) -> float:
        out, state = process(SessionState(), hummed, 0, config, info)
        assert state.fingerprints == {config.fingerprint}
        filtered = _concat(out.samples, "filtered")[int(4 * FS) :, :16]
        spectrum = np.abs(np.fft.rfft(filtered, axis=0))
        freqs = np.fft.rfftfreq(len(filtered), 1 / FS)
        return float(spectrum[np.abs(freqs - 60.15) < 0.3].max() / np.median(spectrum[(freqs > 40) & (freqs < 50)]))

    assert mains_left(bandstop) < mains_left(CONFIG) / 5
