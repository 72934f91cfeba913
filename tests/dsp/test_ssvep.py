"""SSVEP maths: the filter bank, CCA, TRCA and TDCA against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.features import canonical_correlation, reference_signals
from dsp.ssvep import (
    StimulusLayout,
    apply_filter_bank,
    cca_correlations,
    class_templates,
    delay_embed,
    filter_bank,
    filter_bank_weights,
    layout_from_classes,
    reference_bases,
    tdca_correlations,
    tdca_fit,
    trca_correlations,
    trca_filters,
    usable_harmonics,
)

FS = 250.0


def test_filter_bank_weights_and_bands() -> None:
    assert filter_bank_weights(5) == pytest.approx([1.25, 0.6705, 0.5033, 0.4268, 0.3837], abs=1e-4)  # n^-1.25 + 0.25
    t = np.arange(500) / FS
    for hz, passes in ((12.0, [True, False, False, False, False]), (50.0, [True] * 5), (35.0, [True] * 4 + [False])):
        x = np.sin(2 * np.pi * hz * t)[None, :, None]
        bands = apply_filter_bank(x, FS)
        kept = bands[0, :, 100:-100, 0].std(axis=1) / x[0, 100:-100, 0].std()
        assert list(kept > 0.7) == passes, (hz, kept)
    assert len(filter_bank(125.0)) == 5  # a slow board keeps five bands below its Nyquist
    with pytest.raises(ValueError, match="use fewer bands"):
        filter_bank(60.0)


def test_cca_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 250, 4))
    x[..., 0] += np.sin(2 * np.pi * 10 * np.arange(250) / FS)
    bases = reference_bases(250, FS, (10.0, 12.0), 3)
    got = cca_correlations(x, bases)
    for n in range(3):
        for b in range(2):
            for k, hz in enumerate((10.0, 12.0)):
                expected = canonical_correlation(x[n, b], reference_signals(250, FS, hz, 3))
                assert got[n, b, k] == pytest.approx(expected, abs=1e-9)
    assert np.all(got[:, :, 0] > got[:, :, 1])


def test_harmonics_stay_below_nyquist() -> None:
    assert usable_harmonics(250.0, (8.0, 15.8), 5) == 5
    assert usable_harmonics(125.0, (8.0, 15.8), 5) == 3


def _trials(rng: np.random.Generator, n_per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Two targets, each a fixed waveform on a fixed spatial pattern, in correlated noise."""
    t = np.arange(200) / FS
    waves = [np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 10 * t + np.pi / 2)]
    pattern = np.array([1.0, 0.5, -0.2, 0.0])
    mixing = rng.normal(size=(4, 4))
    x, y = [], []
    for k in range(2):
        for _ in range(n_per_class):
            x.append(np.outer(waves[k], pattern) + rng.normal(size=(200, 4)) @ mixing)
            y.append(k)
    return np.asarray(x)[:, None], np.asarray(y)  # one band


def test_trca_filters_recover_the_reproducible_component() -> None:
    x, y = _trials(np.random.default_rng(1))
    filters = trca_filters(x, y, 2)
    templates = class_templates(x, y, 2)
    for ensemble in (False, True):
        r = trca_correlations(x, templates, filters, ensemble)
        assert np.mean(np.argmax(r[:, 0], axis=1) == y) == 1.0
    with pytest.raises(ValueError, match="no trial of target"):
        class_templates(x[y == 0], y[y == 0], 2)


def test_tdca_correlations_equal_the_naive_stacked_computation() -> None:
    rng = np.random.default_rng(2)
    x, y = _trials(rng)
    bases = reference_bases(200, FS, (10.0, 10.0), 2)
    model = tdca_fit(x, y, bases, n_delays=3, n_components=2)
    test = x[:3] + rng.normal(size=x[:3].shape)
    got = tdca_correlations(test, model.filters, model.templates, model.projected_templates, bases)
    w = model.filters[0]
    for n in range(3):
        embedded = delay_embed(test[n, 0], 3)
        for k in range(2):
            projection = bases[k] @ bases[k].T
            stacked = np.vstack([embedded, projection @ embedded]) @ w
            mean = delay_embed(x[y == k, 0], 3).mean(axis=0)
            template = np.vstack([mean, projection @ mean]) @ w
            assert got[n, 0, k] == pytest.approx(np.corrcoef(stacked.ravel(), template.ravel())[0, 1], abs=1e-9)


def test_delay_embedding_advances_and_zero_fills() -> None:
    x = np.arange(12, dtype=float).reshape(6, 2)
    embedded = delay_embed(x, 3)
    assert embedded.shape == (6, 6)
    np.testing.assert_array_equal(embedded[:, :2], x)
    np.testing.assert_array_equal(embedded[:4, 4:], x[2:])
    np.testing.assert_array_equal(embedded[4:, 4:], 0)


def test_layouts() -> None:
    lab = layout_from_classes({"flicker_8hz": 8.0, "flicker_10hz": 10.0})
    assert lab == StimulusLayout(("flicker_8hz", "flicker_10hz"), (8.0, 10.0), (0.0, 0.0))
    with pytest.raises(ValueError, match="one frequency and one phase per label"):
        StimulusLayout(("a", "b"), (8.0,), (0.0,))
    with pytest.raises(ValueError, match="unique"):
        StimulusLayout(("a", "a"), (8.0, 9.0), (0.0, 0.0))
