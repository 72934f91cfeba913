"""The simulated lab headset: the pure generator of ``dsp/simulation.py`` behind a board-like object.

The signal model (head-mixed 1/f background, alpha, mains, drift, blinks, EMG bursts, flat or railed
channels, the SSVEP of the flicker on screen) and the hardware presets live in ``dsp/simulation.py``,
so the edge simulator, ``sample-lake`` and the decoding benchmark generate the same signals. This
adapter only keeps the generator's state between reads, so a recording read in any chunking is
identical to one read in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.settings import SimulationSettings
from dsp.simulation import (
    CYTON_DAISY_CHANNELS,
    PULSE_CHANNEL,
    StimulusAt,
    config_from_settings,
    initial_state,
    prepare,
    simulate,
)
from dsp.ssvep import StimulusLayout

# The lab headset's 16 sites (OpenBCI Cyton+Daisy placement; the first 8 are the Cyton's).
CHANNELS_16 = CYTON_DAISY_CHANNELS

__all__ = ["CHANNELS_16", "PULSE_CHANNEL", "SimulatedEeg", "SimulatedLayout", "StimulusAt", "layout_for"]


@dataclass(frozen=True)
class SimulatedLayout:
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]


def layout_for(settings: SimulationSettings) -> SimulatedLayout:
    config = config_from_settings(settings)
    return SimulatedLayout(config.channel_names, config.channel_types)


class SimulatedEeg:
    """Generates consecutive samples; ``generate(n, times_us)`` continues where the last call ended.

    ``stimulus_at`` gives the flicker frequency on screen at given times (NaN when none); ``layout``,
    when given, the phase each target flickers from (the lab's flickers start at phase 0)."""

    def __init__(
        self, settings: SimulationSettings, stimulus_at: StimulusAt | None = None, layout: StimulusLayout | None = None
    ) -> None:
        self.settings = settings
        self.stimulus_at = stimulus_at
        self._simulator = prepare(config_from_settings(settings, layout))
        self._state = initial_state(self._simulator)
        config = self._simulator.config
        self.layout = SimulatedLayout(config.channel_names, config.channel_types)
        self.fs = self._simulator.fs

    @property
    def n_channels(self) -> int:
        return len(self.layout.channel_names)

    @property
    def heart_hz(self) -> float:
        """The simulated subject's heart rate (beats per second) on the pulse channel."""
        return self._simulator.heart_hz

    @property
    def sample_index(self) -> int:
        return self._state.index

    def generate(self, n: int, times_us: np.ndarray | None = None) -> np.ndarray:
        """The next ``n`` samples, shape ``(n, n_channels)`` float32, in microvolts.

        ``times_us`` are the samples' times in microseconds on the clock the stimulus schedule
        uses; the stimulus is looked up there. Defaults to sample index / rate.
        """
        samples, self._state = simulate(self._simulator, self._state, n, times_us, self.stimulus_at)
        return samples
