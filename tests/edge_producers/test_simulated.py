import numpy as np
from scipy.signal import welch

from core.settings import SimulationSettings
from edge_producers.devices.simulated import CHANNELS_16, SimulatedEeg, layout_for


def _stimulus(t_us: np.ndarray) -> np.ndarray:
    return np.where((t_us >= 2e6) & (t_us < 10e6), 12.0, np.nan)


def test_chunked_generation_equals_one_pass() -> None:
    settings = SimulationSettings(seed=3, blinks_per_minute=60)
    whole = SimulatedEeg(settings, _stimulus).generate(5000)
    parts = SimulatedEeg(settings, _stimulus)
    rng = np.random.default_rng(1)
    chunks = []
    while sum(len(c) for c in chunks) < 5000:
        n = min(int(rng.integers(1, 400)), 5000 - sum(len(c) for c in chunks))
        chunks.append(parts.generate(n))
    np.testing.assert_array_equal(np.vstack(chunks), whole)


def test_layout_has_16_eeg_channels_and_a_pulse() -> None:
    layout = layout_for(SimulationSettings())
    assert layout.channel_names[:16] == CHANNELS_16
    assert layout.channel_types[-1] == "pulse"


def _power_at(x: np.ndarray, hz: float) -> float:
    freqs, psd = welch(x, fs=250, nperseg=500)
    return float(psd[np.argmin(np.abs(freqs - hz))])


def test_ssvep_on_occipital_channels_only_while_shown() -> None:
    # Without alpha: a subject's resting alpha can sit at the flicker frequency (dsp/simulation.py).
    eeg = SimulatedEeg(SimulationSettings(seed=0, alpha_uv=0), _stimulus).generate(3000)  # 12 s
    o1, fp1 = CHANNELS_16.index("O1"), CHANNELS_16.index("Fp1")
    during, rest = eeg[500:2500], eeg[2500:3000]
    assert _power_at(during[:, o1], 12) > 10 * _power_at(during[:, o1], 13.5)
    assert _power_at(during[:, o1], 12) > 5 * _power_at(rest[:, o1], 12)
    assert _power_at(during[:, o1], 12) > 5 * _power_at(during[:, fp1], 12)


def test_realistic_amplitudes_and_mains() -> None:
    eeg = SimulatedEeg(SimulationSettings(seed=1, blinks_per_minute=0)).generate(5000)
    rms = eeg[:, :16].std(axis=0)
    assert np.all((rms > 5) & (rms < 40)), rms  # microvolts
    c3 = CHANNELS_16.index("C3")
    assert _power_at(eeg[:, c3], 60) > 20 * _power_at(eeg[:, c3], 57)
