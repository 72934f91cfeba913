"""SSVEP decoding maths: stimulus layouts, the filter bank, CCA, TRCA and TDCA, as plain numpy/scipy.

Arrays follow the lake's layout: a window is (samples, channels) and a stack of windows
(n_windows, samples, channels); after the filter bank a stack is (n_windows, bands, samples, channels).
The estimators in ``ml/decoders.py`` are thin wrappers around these functions.

References (the parameters below follow them):
- Chen, Wang, Gao, Jung, Gao (2015), "Filter bank canonical correlation analysis for implementing a
  high-speed SSVEP-based brain-computer interface", J. Neural Eng. 12:046008 (FBCCA: sub-band n from
  8n Hz to 90 Hz, Chebyshev type I, weights n^-1.25 + 0.25, 5 harmonics).
- Nakanishi, Wang, Chen, Wang, Gao, Jung (2018), "Enhancing detection of SSVEPs for a high-speed brain
  speller using task-related component analysis", IEEE TBME 65:104-112 (TRCA, ensemble TRCA).
- Liu, Liu, Wang, Gao, Chen, Gao (2021), "Improving the performance of individually calibrated
  SSVEP-BCI by task-discriminant component analysis", IEEE TNSRE 29:1998-2007 (TDCA).
- Wang, Chen, Gao, Gao (2017), "A benchmark dataset for SSVEP-based brain-computer interfaces",
  IEEE TNSRE 25:1746-1752 (the 40-target layout, 9 occipital channels, 0.14 s latency).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.linalg import eigh
from scipy.signal import cheb1ord, cheby1, sosfilt, sosfilt_zi

from dsp.features import orthonormal_basis, reference_basis

# The benchmark dataset's visual latency: decoding windows start this long after stimulus onset.
BENCHMARK_LATENCY_S = 0.14


@dataclass(frozen=True)
class StimulusLayout:
    """The flicker targets of a protocol, in class order: label, frequency and phase of each.

    A phase is the flicker's phase at stimulus onset (joint frequency-phase modulation); the
    decoders that learn templates use it implicitly, the reference-based ones ignore it."""

    labels: tuple[str, ...]
    frequencies_hz: tuple[float, ...]
    phases_rad: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("a stimulus layout needs at least one target")
        if not len(self.labels) == len(self.frequencies_hz) == len(self.phases_rad):
            raise ValueError(
                f"a stimulus layout needs one frequency and one phase per label: {len(self.labels)} labels, "
                f"{len(self.frequencies_hz)} frequencies, {len(self.phases_rad)} phases"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("stimulus labels must be unique")
        if min(self.frequencies_hz) <= 0:
            raise ValueError(f"stimulus frequencies must be > 0 Hz, got {min(self.frequencies_hz)}")

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def layout_from_classes(classes: Mapping[str, float], phases_rad: Mapping[str, float] | None = None) -> StimulusLayout:
    """A layout from ``label -> Hz`` (the lab's ``edge.stimulus.classes``); phases default to 0."""
    labels = tuple(classes)
    phases = phases_rad or {}
    return StimulusLayout(
        labels, tuple(float(classes[c]) for c in labels), tuple(float(phases.get(c, 0.0)) for c in labels)
    )


def benchmark_label(hz: float) -> str:
    """A benchmark target's label, spelled as the lab's classes are (``flicker_8hz``, ``flicker_8.2hz``)."""
    return f"flicker_{hz:g}hz"


def benchmark_layout() -> StimulusLayout:
    """The 40 targets of the Tsinghua benchmark (Wang et al. 2017): 8.0-15.8 Hz in 0.2 Hz steps, the
    k-th frequency in increasing order with phase (k x 0.5 pi) mod 2 pi, listed in the dataset's target
    order (8, 9, ..., 15, 8.2, 9.2, ... Hz: the 5 x 8 on-screen matrix read column by column)."""
    labels, frequencies, phases = [], [], []
    for row in range(5):
        for column in range(8):
            k = 5 * column + row  # rank of this frequency in increasing order
            hz = round(8.0 + column + 0.2 * row, 1)
            labels.append(benchmark_label(hz))
            frequencies.append(hz)
            phases.append(float((k * 0.5 * np.pi) % (2 * np.pi)))
    return StimulusLayout(tuple(labels), tuple(frequencies), tuple(phases))


# --- filter bank -------------------------------------------------------------------------------------


def filter_bank_weights(n_bands: int, a: float = 1.25, b: float = 0.25) -> np.ndarray:
    """Sub-band weights n^-a + b (Chen et al. 2015)."""
    return np.arange(1, n_bands + 1, dtype=np.float64) ** -a + b


@lru_cache(maxsize=32)
def filter_bank(
    sample_rate_hz: float, n_bands: int = 5, first_hz: float = 8.0, step_hz: float = 8.0, high_hz: float = 90.0
) -> tuple[np.ndarray, ...]:
    """Second-order sections of each sub-band: pass band [first + (n-1) step, high] Hz with a 2 Hz
    low transition and a 10 Hz high one, Chebyshev type I (3 dB pass ripple design, 40 dB stop,
    0.5 dB ripple), as Chen et al. 2015 (M3). On a slow board the high edge moves below Nyquist
    (0.72 and 0.8 of it: 90/100 Hz at 250 Hz)."""
    nyquist = sample_rate_hz / 2
    pass_high, stop_high = min(high_hz, 0.72 * nyquist), min(high_hz + 10.0, 0.8 * nyquist)
    bands = []
    for n in range(n_bands):
        pass_low = first_hz + n * step_hz
        if pass_low + 2.0 >= pass_high:
            raise ValueError(
                f"filter bank: sub-band {n + 1} would start at {pass_low:g} Hz, above its high edge "
                f"{pass_high:g} Hz at {sample_rate_hz:g} Hz; use fewer bands (n_bands <= {n})"
            )
        order, edges = cheb1ord([pass_low, pass_high], [pass_low - 2.0, stop_high], 3, 40, fs=sample_rate_hz)
        sos = cheby1(order, 0.5, edges, btype="bandpass", output="sos", fs=sample_rate_hz)
        bands.append(sos)
    return tuple(bands)


@lru_cache(maxsize=32)
def _filter_bank_zi(sample_rate_hz: float, n_bands: int) -> tuple[np.ndarray, ...]:
    """Each sub-band's steady-state filter state per unit input (scipy's ``sosfilt_zi``): solving for
    it was two thirds of a live window's filtering when done for every call."""
    return tuple(sosfilt_zi(sos) for sos in filter_bank(sample_rate_hz, n_bands))


def _sosfiltfilt(sos: np.ndarray, zi: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """scipy's ``sosfiltfilt(sos, x, axis=-2, padlen=padlen)`` (odd extension) with ``zi`` given:
    the same operations, so the same numbers, without recomputing ``zi``."""
    if padlen > 0:
        left = 2 * x[..., :1, :] - x[..., padlen:0:-1, :]
        right = 2 * x[..., -1:, :] - x[..., -2 : -(padlen + 2) : -1, :]
        x = np.concatenate([left, x, right], axis=-2)
    state = zi.reshape(zi.shape[0], *([1] * (x.ndim - 2)), 2, 1)
    y, _ = sosfilt(sos, x, axis=-2, zi=state * x[..., :1, :])
    y, _ = sosfilt(sos, y[..., ::-1, :], axis=-2, zi=state * y[..., -1:, :])
    y = y[..., ::-1, :]
    return np.asarray(y[..., padlen : y.shape[-2] - padlen, :] if padlen > 0 else y)


def apply_filter_bank(windows: np.ndarray, sample_rate_hz: float, n_bands: int = 5) -> np.ndarray:
    """Zero-phase sub-bands of each window: (n, samples, channels) -> (n, bands, samples, channels).

    Each window is filtered on its own (odd extension at both ends), as a live scorer sees it."""
    x = np.asarray(windows, dtype=np.float64)
    n_samples = x.shape[-2]
    out = np.empty((x.shape[0], n_bands, *x.shape[1:]))
    bank, states = filter_bank(float(sample_rate_hz), n_bands), _filter_bank_zi(float(sample_rate_hz), n_bands)
    for band, (sos, zi) in enumerate(zip(bank, states)):
        padlen = min(3 * (2 * len(sos) + 1), n_samples - 1)
        out[:, band] = _sosfiltfilt(sos, zi, x, padlen)
    return out


def usable_harmonics(sample_rate_hz: float, frequencies_hz: Sequence[float], n_harmonics: int) -> int:
    """How many harmonics every target keeps below 0.9 x Nyquist (one count for all, so that every
    target's reference space has the same dimension and no correlation is favoured)."""
    top = 0.45 * sample_rate_hz / max(frequencies_hz)
    return max(1, min(n_harmonics, int(top)))


def phased_references(
    n_samples: int,
    sample_rate_hz: float,
    frequencies_hz: Sequence[float],
    phases_rad: Sequence[float],
    n_harmonics: int,
) -> np.ndarray:
    """Sine-cosine references that carry each target's phase: (targets, samples, 2H), columns
    sin(2 pi h f t + h phi), cos(2 pi h f t + h phi). A window starting at the visual latency sees the
    flicker's own phase (Wang et al. 2017 chose 0.14 s so), which is what multi-stimulus methods share."""
    t = np.arange(n_samples) / sample_rate_hz
    out = np.empty((len(frequencies_hz), n_samples, 2 * n_harmonics))
    for k, (hz, phase) in enumerate(zip(frequencies_hz, phases_rad)):
        for h in range(1, n_harmonics + 1):
            out[k, :, 2 * h - 2] = np.sin(2 * np.pi * h * hz * t + h * phase)
            out[k, :, 2 * h - 1] = np.cos(2 * np.pi * h * hz * t + h * phase)
    return out


def neighbours(frequencies_hz: Sequence[float], n: int) -> list[np.ndarray]:
    """For each target, the ``n`` targets nearest to it in frequency, itself included (a window of the
    frequency-sorted list, shifted inwards at the ends), as the multi-stimulus methods pool them."""
    order = np.argsort(frequencies_hz, kind="stable")
    n = min(n, len(order))
    before = n // 2
    groups: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(order)
    for rank, target in enumerate(order):
        start = min(max(rank - before, 0), len(order) - n)
        groups[int(target)] = order[start : start + n]
    return groups


def reference_bases(
    n_samples: int, sample_rate_hz: float, frequencies_hz: Sequence[float], n_harmonics: int
) -> np.ndarray:
    """Orthonormal bases of the sine-cosine references of each target: (targets, samples, 2 harmonics)."""
    return np.stack([reference_basis(n_samples, float(sample_rate_hz), float(f), n_harmonics) for f in frequencies_hz])


# --- CCA ---------------------------------------------------------------------------------------------


def cca_correlations(bands: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """Largest canonical correlation of each sub-band window with each target's references:
    (n, bands, samples, channels) x (targets, samples, 2H) -> (n, bands, targets)."""
    qx = orthonormal_basis(bands)
    products = np.einsum("nbsc,ksh->nbkch", qx, bases, optimize=True)
    # The squared correlation is the top eigenvalue of M M^T (channels x channels): half an SVD's cost.
    gram = products @ np.swapaxes(products, -1, -2)
    return np.asarray(np.sqrt(np.clip(np.linalg.eigvalsh(gram)[..., -1], 0.0, 1.0)))


# --- TRCA --------------------------------------------------------------------------------------------


def trca_covariances(trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TRCA's two matrices for one target's trials (n_trials, samples, channels): the summed covariance
    between different trials, and the covariance of all trials (Nakanishi et al. 2018)."""
    if trials.shape[0] < 2:
        raise ValueError(f"TRCA needs at least two trials of each target, got {trials.shape[0]}")
    x = trials - trials.mean(axis=1, keepdims=True)
    total = x.sum(axis=0)
    within = np.einsum("tsc,tsd->cd", x, x)
    return total.T @ total - within, within


def _top_generalised_eigenvector(between: np.ndarray, within: np.ndarray) -> np.ndarray:
    # A whisper of ridge keeps the generalised problem defined for a flat (or duplicated) channel.
    within = within + 1e-9 * np.trace(within) / len(within) * np.eye(len(within))
    _, vectors = eigh(between, within)
    return np.asarray(vectors[:, -1])


def trca_filter(trials: np.ndarray) -> np.ndarray:
    """The TRCA spatial filter of one target's trials (n_trials, samples, channels): the direction that
    maximises the covariance between trials relative to the variance (Nakanishi et al. 2018)."""
    return _top_generalised_eigenvector(*trca_covariances(trials))


def class_templates(bands: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean of each target's trials: (n, bands, samples, channels) -> (bands, targets, samples, channels)."""
    missing = sorted(set(range(n_classes)) - set(np.asarray(labels).tolist()))
    if missing:
        raise ValueError(f"training windows cover no trial of target(s) {missing[:10]}; every target needs some")
    return np.stack([bands[labels == k].mean(axis=0) for k in range(n_classes)], axis=1)


def trca_filters(
    bands: np.ndarray, labels: np.ndarray, n_classes: int, pooled: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """TRCA filters per sub-band and target: (n, bands, samples, channels) -> (bands, targets, channels).

    ``pooled[k]`` lists the targets whose trials make target k's filter (multi-stimulus TRCA, Wong et
    al. 2020); by default each target's own."""
    groups = pooled if pooled is not None else [np.array([k]) for k in range(n_classes)]
    filters = []
    for b in range(bands.shape[1]):
        per_target = [trca_covariances(bands[labels == k, b]) for k in range(n_classes)]
        filters.append(
            np.stack(
                [
                    _top_generalised_eigenvector(
                        sum(per_target[j][0] for j in group), sum(per_target[j][1] for j in group)
                    )
                    for group in groups
                ]
            )
        )
    return np.stack(filters)


def _standardised(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Centred over ``axes`` and scaled to unit norm there: correlations become dot products."""
    x = x - x.mean(axis=axes, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=axes, keepdims=True))
    return np.asarray(x / np.maximum(norm, 1e-300))


def trca_correlations(bands: np.ndarray, templates: np.ndarray, filters: np.ndarray, ensemble: bool) -> np.ndarray:
    """Correlation of each window with each target's template after spatial filtering:
    (n, bands, samples, channels) -> (n, bands, targets). TRCA filters both with the target's own
    filter; ensemble TRCA with all targets' filters at once (a 2-D correlation)."""
    if ensemble:
        test = np.einsum("nbsc,bjc->nbsj", bands, filters, optimize=True)
        template = np.einsum("bksc,bjc->bksj", templates, filters, optimize=True)
        n, n_bands = test.shape[:2]
        a = _standardised(test, (2, 3)).reshape(n, n_bands, -1)
        t = _standardised(template, (2, 3)).reshape(n_bands, templates.shape[1], -1)
        return np.asarray(np.einsum("nbm,bkm->nbk", a, t, optimize=True))
    test = _standardised(np.einsum("nbsc,bkc->nbks", bands, filters, optimize=True), (3,))
    template = _standardised(np.einsum("bksc,bkc->bks", templates, filters, optimize=True), (2,))
    return np.asarray(np.einsum("nbks,bks->nbk", test, template, optimize=True))


# --- multi-stimulus CCA (Wong et al. 2020) -----------------------------------------------------------


def _first_canonical_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first pair of canonical weights (for the columns of a and of b)."""
    qa, ra = np.linalg.qr(a - a.mean(axis=0))
    qb, rb = np.linalg.qr(b - b.mean(axis=0))
    left, _, right = np.linalg.svd(qa.T @ qb)
    return np.linalg.lstsq(ra, left[:, 0], rcond=None)[0], np.linalg.lstsq(rb, right[0], rcond=None)[0]


def ms_cca_filters(
    templates: np.ndarray, references: np.ndarray, pooled: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """For each sub-band and target, the CCA between the templates of its neighbours (``pooled[k]``),
    concatenated in time, and their phase-carrying references: a spatial filter (bands, targets,
    channels) and harmonic weights (bands, targets, 2H). Learned across stimuli, ``references @ v``
    is a noise-free template of the target's steady-state response, phase included."""
    n_bands, n_classes = templates.shape[:2]
    spatial = np.empty((n_bands, n_classes, templates.shape[-1]))
    harmonic = np.empty((n_bands, n_classes, references.shape[-1]))
    for b in range(n_bands):
        for k, group in enumerate(pooled):
            a = templates[b, group].reshape(-1, templates.shape[-1])
            spatial[b, k], harmonic[b, k] = _first_canonical_pair(
                a, references[group].reshape(-1, references.shape[-1])
            )
    return spatial, harmonic


def ms_cca_correlations(
    bands: np.ndarray, spatial: np.ndarray, harmonic: np.ndarray, references: np.ndarray
) -> np.ndarray:
    """Correlation of each window, filtered by each target's ms-CCA filter, with that target's
    reference template: (n, bands, samples, channels) -> (n, bands, targets)."""
    test = _standardised(np.einsum("nbsc,bkc->nbks", bands, spatial, optimize=True), (3,))
    template = _standardised(np.einsum("ksh,bkh->bks", references, harmonic, optimize=True), (2,))
    return np.asarray(np.einsum("nbks,bks->nbk", test, template, optimize=True))


def signed_square(r: np.ndarray) -> np.ndarray:
    """sign(r) r^2: how the multi-stimulus methods combine correlations."""
    return np.asarray(np.sign(r) * r * r)


# --- TDCA --------------------------------------------------------------------------------------------


def delay_embed(x: np.ndarray, n_delays: int) -> np.ndarray:
    """(..., samples, channels) -> (..., samples, channels x n_delays): the window and its copies
    advanced by 1..n_delays-1 samples, zero-filled at the end (Liu et al. 2021)."""
    n_samples, n_channels = x.shape[-2:]
    out = np.zeros((*x.shape[:-1], n_channels * n_delays))
    for d in range(n_delays):
        out[..., : n_samples - d, d * n_channels : (d + 1) * n_channels] = x[..., d:, :]
    return out


@dataclass(frozen=True)
class TdcaModel:
    """TDCA per sub-band: spatio-temporal filters (bands, channels x delays, components) and each
    target's template split as TDCA builds it: the filtered mean trial (bands, targets, samples,
    components) and its projection onto the target's references (bands, targets, 2H, components)."""

    filters: np.ndarray
    templates: np.ndarray
    projected_templates: np.ndarray


def tdca_fit(bands: np.ndarray, labels: np.ndarray, bases: np.ndarray, n_delays: int, n_components: int) -> TdcaModel:
    """TDCA: each trial X (delay-embedded) is stacked in time with its projection P_k X onto its
    target's sine-cosine subspace (P_k = Q_k Q_k^T); discriminant spatial filters maximise the
    between-target scatter of these over their within-target scatter."""
    n_classes = bases.shape[0]
    filters, templates, projected = [], [], []
    for b in range(bands.shape[1]):
        x = delay_embed(bands[:, b], n_delays)
        means = np.stack([x[labels == k].mean(axis=0) for k in range(n_classes)])  # (K, s, cL)
        # P_k is a projection, so |P D|^2 = |Q^T D|^2: the scatter never needs the (samples x samples) P.
        width = x.shape[-1]
        within = np.zeros((width, width))
        for k in range(n_classes):
            deviation = x[labels == k] - means[k]
            coefficients = np.swapaxes(bases[k].T @ deviation, 0, 1).reshape(-1, width)  # Q_k^T D, stacked
            flat = deviation.reshape(-1, width)
            within += flat.T @ flat + coefficients.T @ coefficients
        mean_coefficients = np.einsum("ksh,ksc->khc", bases, means)
        stacked = np.concatenate([means, np.einsum("ksh,khc->ksc", bases, mean_coefficients)], axis=1)  # (K, 2s, cL)
        centred = (stacked - stacked.mean(axis=0)).reshape(-1, width)
        between = centred.T @ centred / n_classes
        within = within / len(labels) + 1e-9 * np.trace(within) / len(within) / len(labels) * np.eye(len(within))
        _, vectors = eigh(between, within)
        w = vectors[:, ::-1][:, :n_components]
        filters.append(w)
        templates.append(means @ w)
        projected.append(mean_coefficients @ w)
    return TdcaModel(np.stack(filters), np.stack(templates), np.stack(projected))


def tdca_correlations(
    bands: np.ndarray, filters: np.ndarray, templates: np.ndarray, projected_templates: np.ndarray, bases: np.ndarray
) -> np.ndarray:
    """Correlation of each window, stacked with its projection onto each target's references and
    filtered, with that target's template: (n, bands, samples, channels) -> (n, bands, targets).

    Computed from sums over the two halves so that no (targets x samples x components) stack is built."""
    n, n_bands, n_samples, n_channels = bands.shape
    n_delays = filters.shape[1] // n_channels
    per_delay = filters.reshape(n_bands, n_delays, n_channels, -1)
    # Y = [X, X advanced by 1, ...] W, summed delay by delay instead of building the embedded stack.
    y = np.zeros((n, n_bands, n_samples, per_delay.shape[-1]))
    for d in range(n_delays):
        y[:, :, : n_samples - d] += np.einsum("nbsc,bcf->nbsf", bands[:, :, d:], per_delay[:, d], optimize=True)
    coefficients = np.einsum("ksh,nbsf->nbkhf", bases, y, optimize=True)  # Q_k^T Y
    ones = bases.sum(axis=1)  # Q_k^T 1, (K, 2H)
    n_values = 2 * y.shape[2] * y.shape[3]
    sum_v = y.sum(axis=(2, 3))[..., None] + np.einsum("kh,nbkhf->nbk", ones, coefficients)
    sumsq_v = (y * y).sum(axis=(2, 3))[..., None] + (coefficients * coefficients).sum(axis=(3, 4))
    dot = np.einsum("bksf,nbsf->nbk", templates, y, optimize=True) + np.einsum(
        "bkhf,nbkhf->nbk", projected_templates, coefficients, optimize=True
    )
    template_projection_sum = np.einsum("kh,bkhf->bk", ones, projected_templates)
    sum_u = (templates.sum(axis=(2, 3)) + template_projection_sum)[None]
    sumsq_u = ((templates * templates).sum(axis=(2, 3)) + (projected_templates**2).sum(axis=(2, 3)))[None]
    num = n_values * dot - sum_u * sum_v
    den = np.sqrt(np.maximum((n_values * sumsq_u - sum_u**2) * (n_values * sumsq_v - sum_v**2), 1e-300))
    return np.asarray(num / den)
