"""The visual-stimulus protocol: which flicker is shown when, in lab time.

The schedule is a pure function of the settings and the start time, extended block by block as
time goes on (block k of ``repetitions`` trials is shuffled with seed ``seed + k``). The marker
publisher and the simulated headset's SSVEP read the same schedule, so markers and responses line up.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from core.settings import StimulusSettings


@dataclass(frozen=True)
class Trial:
    trial: int
    label: str
    hz: float
    start_us: int
    end_us: int


@dataclass(frozen=True)
class StimulusEvent:
    time_us: int
    event: str  # START or END
    trial: Trial


class StimulusSchedule:
    def __init__(self, settings: StimulusSettings, start_us: int) -> None:
        self.settings = settings
        self.start_us = start_us
        self.trials: list[Trial] = []
        self._starts: list[int] = []
        self._block = 0
        self._next_start = start_us + int(settings.lead_in_s * 1e6)

    def _extend_until(self, time_us: int) -> None:
        s = self.settings
        on, off = int(s.stimulus_s * 1e6), int(s.rest_s * 1e6)
        labels = list(s.classes)
        while self._next_start <= time_us:
            rng = np.random.default_rng(s.seed + self._block)
            order = [labels[i] for _ in range(s.repetitions) for i in rng.permutation(len(labels))]
            for label in order:
                trial = Trial(len(self.trials), label, s.classes[label], self._next_start, self._next_start + on)
                self.trials.append(trial)
                self._starts.append(trial.start_us)
                self._next_start += on + off
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
