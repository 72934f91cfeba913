"""The simulated EEG: chunk-invariant, hardware presets, a head-like background, the SSVEP where the
literature puts it (frequency, phase, latency, occipital), artifacts, and the benchmark's protocol."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt, welch

from core.settings import EdgeSettings, SimulationSettings
from dsp.features import RAILED_UV
from dsp.simulation import (
    BENCHMARK_CHANNELS,
    HEADSETS,
    BenchmarkProtocol,
    SimulationConfig,
    benchmark_session,
    config_from_settings,
    headset_for,
    initial_state,
    prepare,
    simulate,
)
from dsp.ssvep import StimulusLayout, benchmark_layout

FS = 250.0
QUIET = {
    "alpha_uv": 0.0,
    "mains_uv": 0.0,
    "blinks_per_minute": 0.0,
    "emg_bursts_per_minute": 0.0,
    "drift_uv": 0.0,
    "channel_faults_per_hour": 0.0,
}


def _config(board: str = "simulated", session: int | None = None, **settings: object) -> SimulationConfig:
    """A generator configuration from ``edge.simulation`` settings (``seed`` is the subject)."""
    return config_from_settings(
        SimulationSettings.model_validate({"board": board, "with_pulse": False, **settings}), session_seed=session
    )


def _flicker(hz: float, on_s: float = 1.0, off_s: float = 9.0):  # type: ignore[no-untyped-def]
    return lambda t: np.where((t >= on_s * 1e6) & (t < off_s * 1e6), hz, np.nan)


def _generate(config: SimulationConfig, n: int, stimulus=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    sim = prepare(config)
    samples, _ = simulate(sim, initial_state(sim), n, stimulus_at=stimulus)
    return samples.astype(np.float64)


def _response(config: SimulationConfig, n: int, stimulus) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The SSVEP alone: the same seeds with and without the flicker (every stream but the trials' is
    independent of the stimulus once alpha, which the flicker blocks, is off)."""
    quiet = replace(config, alpha_uv=0.0)
    return _generate(quiet, n, stimulus) - _generate(quiet, n)


def test_any_chunking_equals_one_pass() -> None:
    config = replace(
        _config(with_pulse=True, blinks_per_minute=60, emg_bursts_per_minute=30, channel_faults_per_hour=900),
        stimulus_phases=((12.0, np.pi / 2),),
    )
    sim = prepare(config)
    stimulus = lambda t: np.where((t % 4e6) < 2.5e6, 12.0, np.where((t % 4e6) < 3e6, 8.0, np.nan))  # noqa: E731
    whole, end = simulate(sim, initial_state(sim), 6000, stimulus_at=stimulus)
    state, parts, done = initial_state(sim), [], 0
    rng = np.random.default_rng(1)
    while done < 6000:
        n = min(int(rng.integers(1, 400)), 6000 - done)
        chunk, state = simulate(sim, state, n, stimulus_at=stimulus)
        parts.append(chunk)
        done += n
    np.testing.assert_array_equal(np.vstack(parts), whole)
    assert state.index == end.index == 6000
    assert np.any(np.abs(whole[:, :16]) >= RAILED_UV)  # the faults fired and are part of the state too


@pytest.mark.parametrize(
    ("board", "rate", "names"),
    [
        ("cyton", 250.0, ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")),
        (
            "cyton_daisy",
            125.0,
            ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2", "F7", "F8", "F3", "F4", "T7", "T8", "P3", "P4"),
        ),
        ("ganglion", 200.0, ("O1", "Oz", "O2", "Pz")),
        ("benchmark", 250.0, ("Pz", "PO5", "PO3", "POz", "PO4", "PO6", "O1", "Oz", "O2")),
    ],
)
def test_hardware_presets(board: str, rate: float, names: tuple[str, ...]) -> None:
    headset = headset_for(SimulationSettings(board=board))  # type: ignore[arg-type]
    assert (headset.sample_rate_hz, headset.channel_names) == (rate, names)
    samples = _generate(_config(board), 100)
    assert samples.shape == (100, len(names))


def test_the_default_board_follows_the_edge_board() -> None:
    assert headset_for(SimulationSettings()).channel_names[:8] == HEADSETS["cyton"].channel_names
    assert headset_for(SimulationSettings()).sample_rate_hz == 250.0
    cyton = EdgeSettings(board="cyton", serial_port="/dev/ttyUSB0")
    assert cyton.simulation.board == "cyton"
    assert headset_for(cyton.simulation).sample_rate_hz == 250.0
    ganglion = EdgeSettings(board="ganglion", serial_port="/dev/ttyUSB0", simulation={"board": "cyton_daisy"})  # type: ignore[arg-type]
    assert ganglion.simulation.board == "cyton_daisy"  # said explicitly: kept
    assert EdgeSettings().simulation.board == "simulated"
    overridden = headset_for(SimulationSettings(board="cyton_daisy", n_eeg_channels=8, sample_rate_hz=250))
    assert (overridden.sample_rate_hz, len(overridden.channel_names)) == (250.0, 8)
    with pytest.raises(ValueError, match="n_eeg_channels=9.*1-8"):
        headset_for(SimulationSettings(board="cyton", n_eeg_channels=9))


def test_snr_presets_resolve_in_settings() -> None:
    from core.settings import SSVEP_SNR_PRESETS_DB

    assert SimulationSettings(ssvep_snr_db="benchmark").ssvep_snr_db == SSVEP_SNR_PRESETS_DB["benchmark"]  # type: ignore[arg-type]
    assert SimulationSettings(ssvep_snr_db="-12.5").ssvep_snr_db == -12.5  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ssvep_snr_db must be a number of dB or one of benchmark"):
        SimulationSettings(ssvep_snr_db="loud")  # type: ignore[arg-type]


def test_background_is_pink_with_alpha_and_correlated_like_a_scalp() -> None:
    config = _config(**{**QUIET, "alpha_uv": 6.0})
    eeg = _generate(config, int(120 * FS))
    names = config.headset.channel_names
    freqs, psd = welch(eeg, fs=FS, nperseg=int(4 * FS), axis=0)

    def power(channel: str, low: float, high: float) -> float:
        band = (freqs >= low) & (freqs < high)
        return float(psd[band, names.index(channel)].mean())

    assert power("C3", 2, 4) > 4 * power("C3", 25, 35)  # 1/f
    alpha_peak = power("O1", 8.5, 12) / np.mean([power("O1", 6, 7.5), power("O1", 14, 16)])
    assert alpha_peak > 2  # posterior alpha at rest
    assert power("O1", 8.5, 12) > 1.5 * power("Fp1", 8.5, 12)
    corr = np.corrcoef(eeg.T)
    neighbours = corr[names.index("O1"), names.index("O2")]
    far = corr[names.index("Fp1"), names.index("O2")]
    assert neighbours > 0.3 and neighbours > far + 0.2


def _fundamental(x: np.ndarray, hz: float, fs: float) -> complex:
    t = np.arange(len(x)) / fs
    return complex(np.mean(x * np.exp(-2j * np.pi * hz * t)) * 2)


def test_ssvep_at_the_flicker_frequency_on_occipital_channels() -> None:
    config = _config(ssvep_snr_db=0.0, **QUIET)
    names = config.headset.channel_names
    eeg = _generate(config, int(10 * FS), _flicker(12.0))
    freqs, psd = welch(eeg[int(2 * FS) : int(9 * FS)], fs=FS, nperseg=int(2 * FS), axis=0)
    o1, fp1 = names.index("O1"), names.index("Fp1")
    at = int(np.argmin(np.abs(freqs - 12.0)))
    assert freqs[np.argmax(psd[(freqs > 5) & (freqs < 20), o1]) + np.searchsorted(freqs, 5, side="right")] == 12.0
    assert psd[at, o1] > 10 * psd[at - 3, o1]  # a peak, not a bump (1.5 Hz below)
    assert psd[at, o1] > 5 * psd[at, fp1]  # occipital, not frontal
    assert psd[2 * at, o1] > 5 * psd[2 * at - 3, o1]  # a second harmonic
    rest = welch(eeg[int(9.5 * FS) :], fs=FS, nperseg=int(0.5 * FS), axis=0)[1]
    assert rest[6, o1] < psd[at, o1] / 5  # gone after the flicker (12 Hz bin of the shorter segment)


def test_ssvep_phase_follows_the_stimulus_and_starts_after_the_latency() -> None:
    layout = StimulusLayout(("a", "b"), (10.0, 10.0001), (0.0, np.pi))
    base = _config("benchmark", ssvep_snr_db=0.0, **QUIET)
    oz = base.headset.channel_names.index("Oz")
    responses = []
    for hz in layout.frequencies_hz:
        config = replace(base, stimulus_phases=tuple(zip(layout.frequencies_hz, layout.phases_rad)))
        responses.append(_response(config, int(4 * FS), _flicker(hz, 1.0, 4.0))[:, oz])
    steady = slice(int(2 * FS), int(4 * FS))
    a, b = (_fundamental(r[steady], 10.0, FS) for r in responses)
    assert abs(a) > 0.5 and abs(abs(a) - abs(b)) < 0.05 * abs(a)
    assert abs(np.angle(a / b)) == pytest.approx(np.pi, abs=0.05)  # phase pi flickers in anti-phase
    # Nothing before onset + 50 ms (the shortest conduction delay), then the response builds up.
    first = responses[0]
    onset = int(1.0 * FS)
    assert np.all(np.abs(first[: onset + int(0.05 * FS)]) < 1e-3)
    assert np.abs(first[onset + int(0.2 * FS) : onset + int(0.5 * FS)]).max() > 0.5 * np.abs(first[steady]).max()


def test_apparent_latency_is_100_to_160_ms() -> None:
    """The SSVEP's phase lags the flicker by 2 pi f x latency: the slope over frequencies is the latency."""
    frequencies = np.arange(8.0, 16.0, 1.0)
    for subject in range(3):
        config = _config("benchmark", ssvep_snr_db=0.0, seed=subject, **QUIET)
        oz = config.headset.channel_names.index("Oz")
        phases = []
        for hz in frequencies:
            response = _response(config, int(5 * FS), _flicker(hz, 1.0, 5.0))[int(2 * FS) : int(5 * FS), oz]
            t0 = 1.0  # the flicker's phase is 0 at onset, so its phase at the window start is 2 pi f (2 - 1)
            phases.append(np.angle(_fundamental(response, hz, FS) * np.exp(-2j * np.pi * hz * t0)))
        slope = -np.polyfit(2 * np.pi * frequencies, np.unwrap(phases), 1)[0]
        assert 0.09 < slope < 0.17, slope


def test_subjects_differ_and_sessions_of_a_subject_resemble_each_other() -> None:
    def pattern(subject: int, session: int) -> np.ndarray:
        sim = prepare(_config("benchmark", session=session, seed=subject))
        return np.asarray(sim.ssvep_sin[0])

    same = np.corrcoef(pattern(1, 1), pattern(1, 2))[0, 1]
    assert same > 0.9
    oz = HEADSETS["benchmark"].channel_names.index("Oz")
    amplitude = [
        abs(_fundamental(_response(_config("benchmark", seed=s, **QUIET), 1000, _flicker(12.0))[500:, oz], 12.0, FS))
        for s in range(8)
    ]
    assert np.std(np.log(amplitude)) > 0.2, amplitude  # SNR, impulse response and anatomy all differ


def test_artifacts_blinks_mains_and_emg() -> None:
    config = _config(blinks_per_minute=30, channel_faults_per_hour=0.0, mains_hz=50.0, emg_bursts_per_minute=20)
    eeg = _generate(config, int(60 * FS))
    names = config.headset.channel_names
    fp1, o1, c3, t7 = (names.index(n) for n in ("Fp1", "O1", "C3", "T7"))
    low = butter(2, [0.5, 4], btype="bandpass", fs=FS, output="sos")
    assert sosfiltfilt(low, eeg[:, fp1]).std() > 1.5 * sosfiltfilt(low, eeg[:, o1]).std()  # blinks
    freqs, psd = welch(eeg[:, c3], fs=FS, nperseg=int(2 * FS))
    assert psd[np.argmin(np.abs(freqs - 50))] > 20 * psd[np.argmin(np.abs(freqs - 47))]  # mains
    high = butter(4, [70, 100], btype="bandpass", fs=FS, output="sos")
    emg = sosfiltfilt(high, eeg[:, t7])
    per_second = np.sqrt(np.mean(emg[: len(emg) // 250 * 250].reshape(-1, 250) ** 2, axis=1))
    assert per_second.max() > 3 * np.median(per_second)  # bursts, not a steady floor


def test_channels_go_flat_or_rail_now_and_then() -> None:
    config = _config(channel_faults_per_hour=600)
    eeg = _generate(config, int(60 * FS))
    second = int(FS)
    flat = [np.any(np.convolve(eeg[:, c] == 0, np.ones(second), "valid") == second) for c in range(eeg.shape[1])]
    assert any(flat)
    assert np.any(np.abs(eeg) >= RAILED_UV)
    assert np.mean(np.abs(eeg) >= RAILED_UV) < 0.05  # now and then, not always


def test_benchmark_layout_matches_the_dataset() -> None:
    layout = benchmark_layout()
    assert layout.n_classes == 40
    assert sorted(layout.frequencies_hz) == pytest.approx(list(np.arange(8.0, 15.85, 0.2)))
    assert layout.frequencies_hz[:9] == (8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 8.2)  # the dataset's order
    by_frequency = dict(zip(layout.frequencies_hz, layout.phases_rad))
    assert [by_frequency[f] for f in (8.0, 8.2, 8.4, 8.6, 8.8)] == pytest.approx(
        [0, np.pi / 2, np.pi, 3 * np.pi / 2, 0]
    )
    assert by_frequency[9.0] == pytest.approx(np.pi / 2)  # the 6th frequency: 5 x 0.5 pi mod 2 pi
    assert layout.labels[0] == "flicker_8hz" and layout.labels[8] == "flicker_8.2hz"
    assert BENCHMARK_CHANNELS == HEADSETS["benchmark"].channel_names


def test_benchmark_session_runs_every_target_once_per_block() -> None:
    layout = StimulusLayout(("a", "b", "c"), (8.0, 10.0, 12.0), (0.0, np.pi / 2, np.pi))
    protocol = BenchmarkProtocol(n_blocks=2)
    config = _config("benchmark", session=1, ssvep_snr_db=0.0, seed=3)
    blocks = benchmark_session(config, layout, protocol)
    assert len(blocks) == 2
    for block in blocks:
        assert sorted(block.targets.tolist()) == [0, 1, 2]
        assert np.all(np.diff(block.onsets) == int(6.0 * FS))
        assert block.samples.shape == (int((2.0 + 3 * 6.0) * FS), 9)
    again = benchmark_session(config, layout, protocol)
    np.testing.assert_array_equal(again[1].samples, blocks[1].samples)
    # Each trial's response is at its target's frequency on Oz.
    oz = HEADSETS["benchmark"].channel_names.index("Oz")
    quiet = benchmark_session(_config("benchmark", session=1, ssvep_snr_db=20.0, seed=3, **QUIET), layout, protocol)[0]
    for onset, target in zip(quiet.onsets, quiet.targets):
        x = quiet.samples[onset + int(1 * FS) : onset + int(5 * FS), oz].astype(np.float64)
        powers = [abs(_fundamental(x, f, FS)) for f in layout.frequencies_hz]
        assert int(np.argmax(powers)) == target


def test_slow_electrode_drift() -> None:
    def slow_power(drift_uv: float) -> np.ndarray:
        eeg = _generate(_config(**{**QUIET, "drift_uv": drift_uv}), int(120 * FS))
        freqs, psd = welch(eeg, fs=FS, nperseg=int(60 * FS), axis=0)
        return np.asarray(psd[(freqs > 0) & (freqs < 0.2)].mean(axis=0))

    ratio = slow_power(10.0) / slow_power(0.0)
    assert np.median(ratio) > 4 and np.all(ratio > 2), ratio  # well above the 1/f background, on every channel
