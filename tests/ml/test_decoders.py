"""The SSVEP decoders: they recover the target on a clear simulation, sit near chance on noise, keep
the scikit-learn contract, and survive a skops round trip with the project's trusted types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import sosfilt
from sklearn.base import clone

from core.settings import SimulationSettings
from dsp.filters import FilterSpec, design_sos
from dsp.simulation import BenchmarkProtocol, benchmark_session, config_from_settings
from dsp.ssvep import BENCHMARK_LATENCY_S, StimulusLayout, benchmark_layout
from ml.decoders import TDCA, TRCA, FilterBankCCA, MsCcaMsEtrca
from ml.evaluation import leave_one_block_out
from ml.trust import TRUSTED_TYPES, artifact_sha256, load_trusted

FS = 250.0
# Eight benchmark targets: neighbours 0.2 Hz apart that only their phase tells apart in short windows.
LAYOUT = StimulusLayout(
    tuple(benchmark_layout().labels[i] for i in (0, 8, 16, 24, 32, 4, 12, 20)),
    tuple(benchmark_layout().frequencies_hz[i] for i in (0, 8, 16, 24, 32, 4, 12, 20)),
    tuple(benchmark_layout().phases_rad[i] for i in (0, 8, 16, 24, 32, 4, 12, 20)),
)


def _windows(snr_db: float, window_s: float = 1.0, blocks: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    settings = SimulationSettings(board="benchmark", with_pulse=False, ssvep_snr_db=snr_db, mains_hz=50.0, seed=7)
    config = config_from_settings(settings, session_seed=1)
    sos = design_sos(FilterSpec.at_rate(FS, 1.0, 90.0, 50.0))
    x, y, g = [], [], []
    for b, block in enumerate(benchmark_session(config, LAYOUT, BenchmarkProtocol(n_blocks=blocks))):
        filtered = sosfilt(sos, block.samples.astype(np.float64), axis=0)
        start = int(round(BENCHMARK_LATENCY_S * FS))
        for onset, target in zip(block.onsets, block.targets):
            x.append(filtered[onset + start : onset + start + int(window_s * FS)])
            y.append(LAYOUT.labels[target])
            g.append(b)
    return np.stack(x), np.asarray(y), np.asarray(g)


def _decoders() -> dict[str, object]:
    layout = {
        "sample_rate_hz": FS,
        "frequencies_hz": LAYOUT.frequencies_hz,
        "phases_rad": LAYOUT.phases_rad,
        "labels": LAYOUT.labels,
    }
    return {
        "fbcca": FilterBankCCA(**layout),
        "trca": TRCA(**layout, ensemble=False),
        "etrca": TRCA(**layout),
        "tdca": TDCA(**layout),
        "ms": MsCcaMsEtrca(**layout),
    }


@pytest.fixture(scope="module")
def clear() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _windows(snr_db=6.0)


@pytest.mark.parametrize("name", ["fbcca", "trca", "etrca", "tdca", "ms"])
def test_each_decoder_recovers_the_targets_of_a_clear_simulation(clear, name: str) -> None:  # type: ignore[no-untyped-def]
    x, y, blocks = clear
    predictions = leave_one_block_out(_decoders()[name], x, y, blocks)
    assert predictions.accuracy >= 0.9, (name, predictions.accuracy)


@pytest.mark.parametrize("name", ["fbcca", "etrca", "tdca", "ms"])
def test_each_decoder_is_near_chance_on_noise(name: str) -> None:
    x, y, blocks = _windows(snr_db=-60.0, blocks=4)
    predictions = leave_one_block_out(_decoders()[name], x, y, blocks)
    assert predictions.accuracy < 0.35, (name, predictions.accuracy)  # chance is 1/8


def test_scikit_learn_contract(clear) -> None:  # type: ignore[no-untyped-def]
    x, y, _ = clear
    for name, decoder in _decoders().items():
        fitted = clone(decoder).fit(x, y)
        assert list(fitted.classes_) == list(LAYOUT.labels)
        proba = fitted.predict_proba(x[:5])
        assert proba.shape == (5, 8) and np.allclose(proba.sum(axis=1), 1.0)
        assert list(fitted.predict(x[:5])) == list(fitted.classes_[np.argmax(proba, axis=1)]), name
        assert fitted.decision_function(x[:0]).shape == (0, 8)


def test_filter_bank_cca_needs_no_training() -> None:
    t = np.arange(250) / FS
    window = np.sin(2 * np.pi * LAYOUT.frequencies_hz[3] * t)[:, None] * np.ones((1, 4))
    window += np.random.default_rng(0).normal(0, 0.5, window.shape)
    fbcca = FilterBankCCA(FS, LAYOUT.frequencies_hz, labels=LAYOUT.labels).fit()
    assert fbcca.predict(window[None])[0] == LAYOUT.labels[3]


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="needs frequencies_hz"):
        FilterBankCCA().fit()
    with pytest.raises(ValueError, match="2 labels for 3 frequencies"):
        FilterBankCCA(FS, (8.0, 9.0, 10.0), labels=("a", "b")).fit()
    decoder = TRCA(FS, (8.0, 9.0), labels=("a", "b"))
    with pytest.raises(ValueError, match="shaped \\(n_windows, n_samples, n_channels\\)"):
        decoder.fit(np.zeros((4, 250)), ["a", "b", "a", "b"])
    with pytest.raises(ValueError, match="not targets of this layout"):
        decoder.fit(np.zeros((4, 250, 3)), ["a", "b", "a", "c"])
    rng = np.random.default_rng(0)
    fitted = decoder.fit(rng.normal(size=(4, 250, 3)), ["a", "b", "a", "b"])
    with pytest.raises(ValueError, match="trained on windows of 250 samples x 3 channels, got 125 x 3"):
        fitted.predict(rng.normal(size=(2, 125, 3)))
    with pytest.raises(ValueError, match="at least two trials"):
        TRCA(FS, (8.0, 9.0)).fit(rng.normal(size=(3, 250, 3)), [0, 1, 0])


@pytest.mark.parametrize("name", ["fbcca", "trca", "tdca", "ms"])
def test_skops_round_trip_with_the_trusted_types(clear, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    """Saved as the registry saves models (MLflow's skops flavour) and loaded as the scorers load
    them (ml.trust.load_trusted): same predictions."""
    import mlflow

    x, y, _ = clear
    fitted = clone(_decoders()[name]).fit(x, y)
    model_dir = tmp_path / name
    mlflow.sklearn.save_model(
        fitted,
        str(model_dir),
        serialization_format="skops",
        pip_requirements=["scikit-learn"],
        skops_trusted_types=list(TRUSTED_TYPES),
    )
    loaded = load_trusted(model_dir, artifact_sha256(model_dir))
    assert type(loaded) is type(fitted)
    np.testing.assert_array_equal(loaded.predict(x[:10]), fitted.predict(x[:10]))
    np.testing.assert_allclose(loaded.predict_proba(x[:10]), fitted.predict_proba(x[:10]))
    assert loaded.get_params() == fitted.get_params()
