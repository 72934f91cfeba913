"""The visual-stimulus protocol: which flicker is shown when, in lab time, and how it is drawn.

The schedule is a pure function of the settings and the start time, extended block by block as
time goes on (block k of ``repetitions`` trials is shuffled with seed ``seed + k``). The marker
publisher, the presenter's page and the simulated headset's SSVEP read the same schedule, so
markers, frames and responses line up.

A trial is: cue (``cue_s``, the target outlined), flicker (``stimulus_s``), rest (``rest_s``).
Every target flickers during a trial (the subject attends the cued one, as in the SSVEP benchmark
of Wang et al. 2017); the trial's label is the cued target.

Flicker is *sampled sinusoidal stimulation* (Manyakov et al. 2013, Chen et al. 2014): the luminance
of frame n after the onset is ``0.5 * (1 + sin(2*pi*f*n/refresh + phase))``, so any frequency can
be shown on a 60 Hz screen, not only its divisors. ``luminance`` is the formula the page uses.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from core.settings import StimulusSettings
from dsp.ssvep import benchmark_layout

# The 40-target benchmark grid (Wang et al. 2017, "A benchmark dataset for SSVEP-based BCIs"):
# target k (0..39) flickers at 8.0 + 0.2 k Hz with phase (k mod 4) * pi/2; it sits in row k mod 5,
# column k // 5, so each row steps 1 Hz from left to right and each column 0.2 Hz from top down.
BENCHMARK_ROWS, BENCHMARK_COLUMNS = 5, 8


@dataclass(frozen=True)
class Target:
    label: str
    hz: float
    phase: float  # radians, at the flicker's first frame
    row: int
    column: int


@dataclass(frozen=True)
class Trial:
    trial: int
    label: str
    hz: float
    start_us: int  # the flicker's onset
    end_us: int  # the flicker's offset
    phase: float = 0.0
    target: int = 0  # index into the layout's targets
    cue_us: int | None = None  # when the cue starts (None: no cue)


@dataclass(frozen=True)
class StimulusEvent:
    time_us: int
    event: str  # START or END
    trial: Trial
    # How long the flicker is shown, when the display knows it better than the plan (whole frames).
    duration_us: int | None = None


def benchmark_targets() -> tuple[Target, ...]:
    """The benchmark's 40 targets (dsp/ssvep.py, one definition for the presenter and the decoders) in
    increasing frequency, the k-th at row k mod 5, column k // 5 of the on-screen matrix."""
    layout = benchmark_layout()
    by_frequency = sorted(zip(layout.frequencies_hz, layout.labels, layout.phases_rad))
    return tuple(
        Target(label, hz, phase, k % BENCHMARK_ROWS, k // BENCHMARK_ROWS)
        for k, (hz, label, phase) in enumerate(by_frequency)
    )


def stimulus_targets(settings: StimulusSettings) -> tuple[Target, ...]:
    """The targets on the screen, in the order trials refer to them."""
    if settings.layout == "benchmark40":
        return benchmark_targets()
    # The lab's classes, phase 0, on the squarest grid that holds them (4 -> 2 x 2).
    columns = math.ceil(math.sqrt(len(settings.classes)))
    return tuple(
        Target(label, hz, 0.0, index // columns, index % columns)
        for index, (label, hz) in enumerate(settings.classes.items())
    )


def luminance(frames: np.ndarray | int, hz: float, phase: float, refresh_hz: float) -> np.ndarray:
    """Luminance (0..1) of ``frames`` counted from the onset, at the display's refresh."""
    n = np.asarray(frames, dtype=np.float64)
    return 0.5 * (1.0 + np.sin(2.0 * np.pi * hz * n / refresh_hz + phase))


class StimulusSchedule:
    def __init__(self, settings: StimulusSettings, start_us: int) -> None:
        self.settings = settings
        self.start_us = start_us
        self.targets = stimulus_targets(settings)
        self.trials: list[Trial] = []
        self._starts: list[int] = []
        self._block = 0
        self._next_start = start_us + int((settings.lead_in_s + settings.cue_s) * 1e6)

    def _extend_until(self, time_us: int) -> None:
        s = self.settings
        on, off, cue = int(s.stimulus_s * 1e6), int(s.rest_s * 1e6), int(s.cue_s * 1e6)
        while self._next_start - cue <= time_us:
            rng = np.random.default_rng(s.seed + self._block)
            order = [i for _ in range(s.repetitions) for i in rng.permutation(len(self.targets))]
            for index in order:
                target = self.targets[int(index)]
                start = self._next_start
                trial = Trial(
                    len(self.trials),
                    target.label,
                    target.hz,
                    start,
                    start + on,
                    phase=target.phase,
                    target=int(index),
                    cue_us=start - cue if cue else None,
                )
                self.trials.append(trial)
                self._starts.append(trial.start_us)
                self._next_start += on + off + cue
            self._block += 1

    def frequency_at(self, times_us: np.ndarray) -> np.ndarray:
        """Flicker frequency shown at each time (NaN during rest)."""
        times = np.asarray(times_us, dtype=np.int64)
        result = np.full(times.shape, np.nan)
        if times.size == 0:
            return result
        self._extend_until(int(times.max()))
        if not self.trials:
            return result
        starts = np.asarray(self._starts)
        ends = np.asarray([t.end_us for t in self.trials])
        hz = np.asarray([t.hz for t in self.trials])
        index = np.searchsorted(starts, times, side="right") - 1
        valid = index >= 0
        inside = valid & (times < ends[np.clip(index, 0, None)])
        result[inside] = hz[index[inside]]
        return result

    def events_between(self, after_us: int, until_us: int) -> list[StimulusEvent]:
        """START and END events with after_us < time <= until_us, in time order."""
        self._extend_until(until_us)
        events = []
        first = max(0, bisect.bisect_left(self._starts, after_us - int(self.settings.stimulus_s * 1e6)))
        for trial in self.trials[first:]:
            if trial.start_us > until_us:
                break
            for time_us, name in ((trial.start_us, "START"), (trial.end_us, "END")):
                if after_us < time_us <= until_us:
                    events.append(StimulusEvent(time_us, name, trial))
        return sorted(events, key=lambda e: e.time_us)

    def upcoming(self, after_us: int, until_us: int) -> list[Trial]:
        """Trials not over by ``after_us`` whose cue (or onset) comes by ``until_us``: what a display
        must know of now to draw the coming seconds."""
        cue = int(self.settings.cue_s * 1e6)
        self._extend_until(until_us + cue)
        first = max(0, bisect.bisect_left(self._starts, after_us - int(self.settings.stimulus_s * 1e6)))
        return [
            trial
            for trial in self.trials[first:]
            if trial.end_us > after_us and (trial.cue_us if trial.cue_us is not None else trial.start_us) <= until_us
        ]
