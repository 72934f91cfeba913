"""The field's SSVEP decoders as scikit-learn estimators: filter-bank CCA, (ensemble) TRCA, TDCA and
ms-CCA + ms-eTRCA.

Each takes X = (n_windows, n_samples, n_channels) filtered multichannel windows, starting at the
visual latency after stimulus onset, and predicts the target seen. The stimulus layout (sampling rate,
frequencies, phases, labels) is a constructor parameter, so it travels with a saved model; fitted
state is plain arrays, so skops can save and load them with the trusted-type list of ``ml/trust.py``.
The maths lives in ``dsp/ssvep.py``; these classes only check inputs and keep the fitted arrays.

Scores are the methods' own (weighted sums of squared canonical correlations for FBCCA, of
correlations with templates for TRCA and TDCA); ``predict_proba`` is their softmax at
``temperature``: a ranking with a soft edge, not a calibrated probability.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from dsp.ssvep import (
    apply_filter_bank,
    cca_correlations,
    class_templates,
    filter_bank_weights,
    ms_cca_correlations,
    ms_cca_filters,
    neighbours,
    phased_references,
    reference_bases,
    signed_square,
    tdca_correlations,
    tdca_fit,
    trca_correlations,
    trca_filters,
    usable_harmonics,
)


class _SsvepDecoder(ClassifierMixin, BaseEstimator, ABC):  # type: ignore[misc]
    """What every SSVEP decoder shares: the layout, the filter bank, labels, scores to predictions."""

    # What a scorer feeds it: filtered multichannel windows, not the lake's feature columns.
    input_kind = "windows"

    def __init__(
        self,
        sample_rate_hz: float = 250.0,
        frequencies_hz: Sequence[float] = (),
        phases_rad: Sequence[float] | None = None,
        labels: Sequence[Any] | None = None,
        n_bands: int = 5,
        n_harmonics: int = 5,
        temperature: float = 0.05,
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.frequencies_hz = frequencies_hz
        self.phases_rad = phases_rad
        self.labels = labels
        self.n_bands = n_bands
        self.n_harmonics = n_harmonics
        self.temperature = temperature

    # -- inputs ---------------------------------------------------------------------------------------

    def _layout(self) -> None:
        if not len(self.frequencies_hz):
            raise ValueError(f"{type(self).__name__} needs frequencies_hz: the stimulus frequency of each target")
        labels = list(range(len(self.frequencies_hz))) if self.labels is None else list(self.labels)
        if len(labels) != len(self.frequencies_hz):
            raise ValueError(
                f"{len(labels)} labels for {len(self.frequencies_hz)} frequencies; give one label per target"
            )
        if self.phases_rad is not None and len(self.phases_rad) != len(self.frequencies_hz):
            raise ValueError(f"{len(self.phases_rad)} phases for {len(self.frequencies_hz)} frequencies")
        self.classes_ = np.asarray(labels)
        self.harmonics_ = usable_harmonics(self.sample_rate_hz, self.frequencies_hz, self.n_harmonics)

    def _windows(self, X: Any) -> np.ndarray:
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 3:
            raise ValueError(
                f"{type(self).__name__} takes windows shaped (n_windows, n_samples, n_channels), got shape {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("windows contain NaN or infinite samples; drop or repair them before decoding")
        return x

    def _targets(self, y: Any) -> np.ndarray:
        index = {label: k for k, label in enumerate(self.classes_.tolist())}
        values = np.asarray(y).tolist()
        unknown = sorted({str(v) for v in values if v not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not targets of this layout ({list(index)[:5]}...)")
        return np.asarray([index[v] for v in values], dtype=np.int64)

    def _bands(self, x: np.ndarray) -> np.ndarray:
        return apply_filter_bank(x, self.sample_rate_hz, self.n_bands)

    # -- outputs --------------------------------------------------------------------------------------

    def decision_function(self, X: Any) -> np.ndarray:
        """One score per window and target (n_windows, n_targets); the highest is the prediction."""
        check_is_fitted(self, "classes_")
        x = self._windows(X)
        if len(x) == 0:
            return np.empty((0, len(self.classes_)))
        per_band = self._band_scores(x)
        return np.asarray(np.einsum("nbk,b->nk", per_band, filter_bank_weights(per_band.shape[1])))

    @abstractmethod
    def _band_scores(self, x: np.ndarray) -> np.ndarray:
        """Scores per window, filter-bank band and target (n_windows, n_bands, n_targets)."""

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[np.argmax(self.decision_function(X), axis=1)])

    def predict_proba(self, X: Any) -> np.ndarray:
        scores = self.decision_function(X) / self.temperature
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        return np.asarray(weights / weights.sum(axis=1, keepdims=True))


class FilterBankCCA(_SsvepDecoder):
    """Filter-bank CCA (Chen et al. 2015): training-free, so it scores from a session's first window.

    ``fit`` only checks the layout (X and y may be empty or None)."""

    def __init__(
        self,
        sample_rate_hz: float = 250.0,
        frequencies_hz: Sequence[float] = (),
        phases_rad: Sequence[float] | None = None,
        labels: Sequence[Any] | None = None,
        n_bands: int = 5,
        n_harmonics: int = 5,
        temperature: float = 0.02,
    ) -> None:
        super().__init__(sample_rate_hz, frequencies_hz, phases_rad, labels, n_bands, n_harmonics, temperature)

    def fit(self, X: Any = None, y: Any = None) -> Self:
        self._layout()
        if y is not None:
            self._targets(y)
        return self

    def _band_scores(self, x: np.ndarray) -> np.ndarray:
        bases = reference_bases(x.shape[1], self.sample_rate_hz, self.frequencies_hz, self.harmonics_)
        return cca_correlations(self._bands(x), bases) ** 2


class _TemplateDecoder(_SsvepDecoder):
    def _trained_length(self, x: np.ndarray) -> None:
        if x.shape[1:] != (self.n_samples_, self.n_channels_):
            raise ValueError(
                f"{type(self).__name__} was trained on windows of {self.n_samples_} samples x {self.n_channels_} "
                f"channels, got {x.shape[1]} x {x.shape[2]}: train one model per window length and montage"
            )

    def _training(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        self._layout()
        x, targets = self._windows(X), self._targets(y)
        if len(x) != len(targets):
            raise ValueError(f"{len(x)} windows but {len(targets)} labels")
        self.n_samples_, self.n_channels_ = x.shape[1], x.shape[2]
        return self._bands(x), targets


class TRCA(_TemplateDecoder):
    """Task-related component analysis (Nakanishi et al. 2018) with the filter bank; ``ensemble=True``
    is ensemble TRCA (every target's spatial filter applied at once)."""

    def __init__(
        self,
        sample_rate_hz: float = 250.0,
        frequencies_hz: Sequence[float] = (),
        phases_rad: Sequence[float] | None = None,
        labels: Sequence[Any] | None = None,
        n_bands: int = 5,
        n_harmonics: int = 5,
        temperature: float = 0.05,
        ensemble: bool = True,
    ) -> None:
        super().__init__(sample_rate_hz, frequencies_hz, phases_rad, labels, n_bands, n_harmonics, temperature)
        self.ensemble = ensemble

    def fit(self, X: Any, y: Any) -> Self:
        bands, targets = self._training(X, y)
        self.templates_ = class_templates(bands, targets, len(self.classes_))
        self.filters_ = trca_filters(bands, targets, len(self.classes_))
        return self

    def _band_scores(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "filters_")
        self._trained_length(x)
        return trca_correlations(self._bands(x), self.templates_, self.filters_, self.ensemble)


class TDCA(_TemplateDecoder):
    """Task-discriminant component analysis (Liu et al. 2021) with the filter bank: discriminant
    spatio-temporal filters over delay-embedded windows stacked with their projection onto each
    target's sine-cosine references. ``n_delays`` copies (the window and its 1..n-1 sample advances)
    and ``n_components`` filters, as the SSVEP Analysis Toolbox runs it on the benchmark (6 and 8)."""

    def __init__(
        self,
        sample_rate_hz: float = 250.0,
        frequencies_hz: Sequence[float] = (),
        phases_rad: Sequence[float] | None = None,
        labels: Sequence[Any] | None = None,
        n_bands: int = 5,
        n_harmonics: int = 5,
        temperature: float = 0.05,
        n_delays: int = 6,
        n_components: int = 8,
    ) -> None:
        super().__init__(sample_rate_hz, frequencies_hz, phases_rad, labels, n_bands, n_harmonics, temperature)
        self.n_delays = n_delays
        self.n_components = n_components

    def fit(self, X: Any, y: Any) -> Self:
        bands, targets = self._training(X, y)
        missing = sorted(set(range(len(self.classes_))) - set(targets.tolist()))
        if missing:
            raise ValueError(f"training windows cover no trial of target(s) {missing[:10]}; every target needs some")
        bases = reference_bases(self.n_samples_, self.sample_rate_hz, self.frequencies_hz, self.harmonics_)
        model = tdca_fit(bands, targets, bases, self.n_delays, min(self.n_components, self.n_channels_ * self.n_delays))
        self.filters_, self.templates_, self.projected_templates_ = (
            model.filters,
            model.templates,
            model.projected_templates,
        )
        return self

    def _band_scores(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "filters_")
        self._trained_length(x)
        bases = reference_bases(self.n_samples_, self.sample_rate_hz, self.frequencies_hz, self.harmonics_)
        return tdca_correlations(self._bands(x), self.filters_, self.templates_, self.projected_templates_, bases)


class MsCcaMsEtrca(_TemplateDecoder):
    """ms-CCA + ms-eTRCA (Wong, Wan, Wang, ..., Rosa 2020, "Learning across multi-stimulus enhances
    target recognition methods in SSVEP-based BCIs", J. Neural Eng. 17:016026), with the filter bank.

    Two correlations per target, combined as sign(r) r^2 and summed: the window, filtered by the
    target's ms-CCA filter, against a noise-free template of its steady-state response (sine-cosine
    references carrying the target's phase, weighted by harmonic weights learned jointly with the
    filter from the ``cca_neighbours`` targets nearest in frequency); and ensemble TRCA whose filters
    each pool ``trca_neighbours`` neighbouring targets. Neighbour counts as the SSVEP Analysis Toolbox
    runs it on the benchmark (12 and 2). Needs the targets' phases (default: all 0)."""

    def __init__(
        self,
        sample_rate_hz: float = 250.0,
        frequencies_hz: Sequence[float] = (),
        phases_rad: Sequence[float] | None = None,
        labels: Sequence[Any] | None = None,
        n_bands: int = 5,
        n_harmonics: int = 5,
        temperature: float = 0.05,
        cca_neighbours: int = 12,
        trca_neighbours: int = 2,
    ) -> None:
        super().__init__(sample_rate_hz, frequencies_hz, phases_rad, labels, n_bands, n_harmonics, temperature)
        self.cca_neighbours = cca_neighbours
        self.trca_neighbours = trca_neighbours

    def _references(self) -> np.ndarray:
        phases = self.phases_rad if self.phases_rad is not None else [0.0] * len(self.frequencies_hz)
        return phased_references(self.n_samples_, self.sample_rate_hz, self.frequencies_hz, phases, self.harmonics_)

    def fit(self, X: Any, y: Any) -> Self:
        bands, targets = self._training(X, y)
        n_classes = len(self.classes_)
        self.templates_ = class_templates(bands, targets, n_classes)
        self.cca_spatial_, self.cca_harmonic_ = ms_cca_filters(
            self.templates_, self._references(), neighbours(self.frequencies_hz, self.cca_neighbours)
        )
        self.filters_ = trca_filters(bands, targets, n_classes, neighbours(self.frequencies_hz, self.trca_neighbours))
        return self

    def _band_scores(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "filters_")
        self._trained_length(x)
        bands = self._bands(x)
        cca = ms_cca_correlations(bands, self.cca_spatial_, self.cca_harmonic_, self._references())
        trca = trca_correlations(bands, self.templates_, self.filters_, ensemble=True)
        return np.asarray(signed_square(cca) + signed_square(trca))
