"""Causal EEG filters (band-pass + a mains line filter) whose state carries across chunks.

One-pass ``scipy.signal.sosfilt(sos, x, axis=0)`` over a whole recording equals
``filter_chunk`` applied chunk by chunk from :func:`initial_state` (zero initial conditions):
that is what lets silver filter a session across Spark micro-batches and still match.

The mains line filter is either scipy's ``iirnotch`` (a zero exactly at ``notch_hz``, -3 dB over
``notch_hz / notch_q``) or a Butterworth band-stop over ``notch_hz +- bandstop_width_hz / 2``: the lab
found the Q 30 notch too weak for mains that wanders off 60.000 Hz and uses 59-61 Hz at order 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

import numpy as np
from scipy.signal import butter, iirnotch, sosfilt, sosfilt_zi, tf2sos

LineFilter = Literal["notch", "bandstop"]
LINE_FILTERS: tuple[LineFilter, ...] = ("notch", "bandstop")
MAX_BANDSTOP_ORDER = 8


class FilterParams(Protocol):
    """The filter settings as the lake's settings and :class:`~dsp.session.ProcessorConfig` name them."""

    @property
    def band_low_hz(self) -> float: ...
    @property
    def band_high_hz(self) -> float: ...
    @property
    def notch_hz(self) -> float | None: ...
    @property
    def line_filter(self) -> LineFilter: ...
    @property
    def notch_q(self) -> float: ...
    @property
    def bandstop_width_hz(self) -> float: ...
    @property
    def bandstop_order(self) -> int: ...


@dataclass(frozen=True)
class FilterSpec:
    sample_rate_hz: float
    band_low_hz: float = 1.0
    band_high_hz: float = 60.0
    band_order: int = 4
    # Centre of the line filter (None: no line filter).
    notch_hz: float | None = 60.0
    notch_q: float = 30.0
    line_filter: LineFilter = "notch"
    bandstop_width_hz: float = 2.0
    bandstop_order: int = 2

    @classmethod
    def at_rate(
        cls,
        sample_rate_hz: float,
        band_low_hz: float,
        band_high_hz: float,
        notch_hz: float | None,
        *,
        line_filter: LineFilter = "notch",
        notch_q: float = 30.0,
        bandstop_width_hz: float = 2.0,
        bandstop_order: int = 2,
    ) -> FilterSpec:
        """The configured filter fitted to a stream's own rate: a slow board cannot carry a 60 Hz
        edge or line filter, so the high edge stops at 0.45 x rate and a line filter reaching
        Nyquist is left out."""
        reach = notch_hz + bandstop_width_hz / 2 if notch_hz and line_filter == "bandstop" else notch_hz
        return cls(
            sample_rate_hz,
            band_low_hz,
            min(band_high_hz, 0.45 * sample_rate_hz),
            notch_hz=notch_hz if notch_hz and reach is not None and reach < sample_rate_hz / 2 else None,
            notch_q=notch_q,
            line_filter=line_filter,
            bandstop_width_hz=bandstop_width_hz,
            bandstop_order=bandstop_order,
        )

    @classmethod
    def of(cls, params: FilterParams, sample_rate_hz: float) -> FilterSpec:
        """The filter ``params`` (the lake's settings, a processor config, a page's controls)
        describe, fitted to ``sample_rate_hz``: the one place that mapping is spelled."""
        return cls.at_rate(
            sample_rate_hz,
            params.band_low_hz,
            params.band_high_hz,
            params.notch_hz,
            line_filter=params.line_filter,
            notch_q=params.notch_q,
            bandstop_width_hz=params.bandstop_width_hz,
            bandstop_order=params.bandstop_order,
        )

    @property
    def bandstop_edges_hz(self) -> tuple[float, float] | None:
        if self.notch_hz is None or self.line_filter != "bandstop":
            return None
        return self.notch_hz - self.bandstop_width_hz / 2, self.notch_hz + self.bandstop_width_hz / 2

    def describe(self) -> str:
        """One line for people: what this filter does."""
        text = f"band-pass {self.band_low_hz:g}-{self.band_high_hz:g} Hz (order {self.band_order})"
        edges = self.bandstop_edges_hz
        if edges is not None:
            text += f", band-stop {edges[0]:g}-{edges[1]:g} Hz (order {self.bandstop_order})"
        elif self.notch_hz is not None:
            text += f", notch {self.notch_hz:g} Hz (Q {self.notch_q:g})"
        return text

    def validate(self) -> None:
        nyquist = self.sample_rate_hz / 2
        if not 0 < self.band_low_hz < self.band_high_hz:
            raise ValueError(f"band-pass needs 0 < low < high, got {self.band_low_hz}-{self.band_high_hz} Hz")
        if self.band_high_hz >= nyquist:
            raise ValueError(
                f"band-pass high edge {self.band_high_hz} Hz must be below Nyquist "
                f"({nyquist} Hz at {self.sample_rate_hz} Hz)"
            )
        if self.line_filter not in LINE_FILTERS:
            raise ValueError(f"line filter {self.line_filter!r} is not one of {', '.join(LINE_FILTERS)}")
        if self.notch_hz is not None and not 0 < self.notch_hz < nyquist:
            raise ValueError(f"notch {self.notch_hz} Hz must be below Nyquist ({nyquist} Hz)")
        if self.notch_q <= 0:
            raise ValueError(f"notch Q must be positive, got {self.notch_q}")
        edges = self.bandstop_edges_hz
        if edges is not None:
            if not 1 <= self.bandstop_order <= MAX_BANDSTOP_ORDER:
                raise ValueError(f"band-stop order must be 1-{MAX_BANDSTOP_ORDER}, got {self.bandstop_order}")
            if not (self.bandstop_width_hz > 0 and 0 < edges[0] and edges[1] < nyquist):
                raise ValueError(
                    f"band-stop {edges[0]:g}-{edges[1]:g} Hz must lie between 0 and Nyquist ({nyquist} Hz) "
                    "with a positive width"
                )


@lru_cache(maxsize=64)
def design_sos(spec: FilterSpec) -> np.ndarray:
    """Second-order sections of the band-pass followed by the line filter."""
    spec.validate()
    band = butter(
        spec.band_order,
        [spec.band_low_hz, spec.band_high_hz],
        btype="bandpass",
        fs=spec.sample_rate_hz,
        output="sos",
    )
    edges = spec.bandstop_edges_hz
    if edges is not None:
        stop = butter(spec.bandstop_order, list(edges), btype="bandstop", fs=spec.sample_rate_hz, output="sos")
        return np.vstack([band, stop])
    if spec.notch_hz is None:
        return np.asarray(band)
    b, a = iirnotch(spec.notch_hz, spec.notch_q, fs=spec.sample_rate_hz)
    return np.vstack([band, tf2sos(b, a)])


def initial_state(sos: np.ndarray, n_channels: int) -> np.ndarray:
    """Zero initial conditions, shape ``(n_sections, 2, n_channels)``, as one-pass sosfilt uses."""
    return np.zeros((sos.shape[0], 2, n_channels))


def settled_state(sos: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The state after a long constant input ``level`` (one value per channel): a stretch that starts
    here shows no start-up transient from the electrodes' DC offset (a display joining a stream)."""
    settled: np.ndarray = sosfilt_zi(sos)[:, :, None] * np.asarray(level, dtype=np.float64)[None, None, :]
    return settled


def filter_chunk(sos: np.ndarray, state: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filter ``samples`` (n_samples, n_channels) continuing from ``state``; returns (y, new state)."""
    if samples.shape[0] == 0:
        return samples.astype(np.float64), state
    if state.shape[2] != samples.shape[1]:
        raise ValueError(f"filter state is for {state.shape[2]} channels, chunk has {samples.shape[1]}")
    filtered, new_state = sosfilt(sos, samples, axis=0, zi=state)
    return filtered, new_state


def filter_block(
    sos: np.ndarray, state: np.ndarray | None, expected_index: int | None, first_index: int, samples: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Filter a live block that starts at sample ``first_index``, continuing ``state`` when the block
    follows the previous one (``expected_index``); after a gap or at the start it begins at rest, as
    a one-pass filter over that stretch would. Returns (y, new state)."""
    if state is None or expected_index is None or first_index != expected_index:
        state = initial_state(sos, samples.shape[1])
    return filter_chunk(sos, state, samples)


def filter_indexed(
    sos: np.ndarray,
    state: np.ndarray | None,
    expected_index: int | None,
    indices: np.ndarray,
    samples: np.ndarray,
    settle: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Filter samples that carry their sample indices (several blocks, possibly with gaps between):
    each run of consecutive indices continues the state when it follows ``expected_index`` and
    otherwise starts afresh, at rest or, with ``settle``, settled on its first sample. Any chunking
    of the same samples gives the same output. Returns (y, state after the last sample)."""
    if len(indices) == 0:
        return samples.astype(np.float64), state
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    out = np.empty(samples.shape, dtype=np.float64)
    for start, end in zip(np.r_[0, breaks], np.r_[breaks, len(indices)]):
        follows = start == 0 and state is not None and expected_index is not None and indices[0] == expected_index
        if not follows:
            first = samples[start].astype(np.float64)
            state = settled_state(sos, first) if settle else initial_state(sos, samples.shape[1])
        assert state is not None
        out[start:end], state = filter_chunk(sos, state, samples[start:end])
    return out, state
