"""A simulated lab headset: realistic EEG with SSVEP responses, seeded and chunk-invariant.

Signal model, per channel (microvolts):
- background: pink (1/f) noise, Paul Kellet's IIR approximation applied to white noise, scaled to
  ``background_uv`` RMS; a shared component gives neighbouring channels realistic correlation;
- alpha: ~10 Hz posterior rhythm with slow amplitude modulation, suppressed while a stimulus is on
  (alpha blocking);
- mains: 60 Hz on every channel;
- blinks: ~300 ms positive deflections on frontal channels at Poisson times;
- SSVEP: while a flicker of f Hz is shown, sinusoids at f and 2f on occipital (and, weaker, parietal)
  channels with amplitude ``background_uv * 10**(ssvep_snr_db / 20)``;
- pulse: a PPG-like waveform at ~70 bpm on an extra channel (what Cyton analog mode carries on AUX).

The generator keeps its state (filter memory, RNG, sample index, blink schedule) between calls, so a
recording generated in any chunking is identical to one generated in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter, lfilter_zi

from core.settings import SimulationSettings

# OpenBCI Cyton+Daisy default 16-electrode layout (10-20 names); the first 8 are the Cyton's.
CHANNELS_16 = (
    "Fp1",
    "Fp2",
    "C3",
    "C4",
    "P7",
    "P8",
    "O1",
    "O2",
    "F7",
    "F8",
    "F3",
    "F4",
    "T7",
    "T8",
    "P3",
    "P4",
)
OCCIPITAL = {"O1": 1.0, "O2": 1.0, "P7": 0.4, "P8": 0.4, "P3": 0.5, "P4": 0.5}
POSTERIOR_ALPHA = {"O1": 1.0, "O2": 1.0, "P7": 0.7, "P8": 0.7, "P3": 0.8, "P4": 0.8, "C3": 0.3, "C4": 0.3}
FRONTAL_BLINK = {"Fp1": 1.0, "Fp2": 1.0, "F7": 0.4, "F8": 0.4, "F3": 0.3, "F4": 0.3}
PULSE_CHANNEL = "PULSE"

# Kellet's "economy" pink-noise filter, -3 dB/octave within 1 % over the EEG band.
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
_PINK_GAIN = 1.0 / 0.0865  # measured: brings unit white noise to ~unit RMS pink noise

# Returns the stimulus frequency (Hz) shown at each of the given times (microseconds), NaN where none.
StimulusAt = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SimulatedLayout:
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]


def layout_for(settings: SimulationSettings) -> SimulatedLayout:
    names = CHANNELS_16[: settings.n_eeg_channels]
    types = ("eeg",) * len(names)
    if settings.with_pulse:
        names, types = (*names, PULSE_CHANNEL), (*types, "pulse")
    return SimulatedLayout(tuple(names), tuple(types))


class SimulatedEeg:
    """Generates consecutive samples; ``generate(n, times_s)`` continues where the last call ended."""

    def __init__(self, settings: SimulationSettings, stimulus_at: StimulusAt | None = None) -> None:
        self.settings = settings
        self.layout = layout_for(settings)
        self.fs = settings.sample_rate_hz
        self.stimulus_at = stimulus_at
        self.sample_index = 0
        seed = np.random.SeedSequence(settings.seed)
        # Separate streams per use: interleaved draws from one stream would depend on chunk sizes.
        noise_seed, envelope_seed, event_seed, subject_seed = seed.spawn(4)
        self._noise = np.random.default_rng(noise_seed)
        self._envelope_noise = np.random.default_rng(envelope_seed)
        self._events = np.random.default_rng(event_seed)
        subject = np.random.default_rng(subject_seed)
        names = self.layout.channel_names[: settings.n_eeg_channels]
        self._n_eeg = len(names)
        self._alpha_weights = np.array([POSTERIOR_ALPHA.get(n, 0.1) for n in names])
        self._ssvep_weights = np.array([OCCIPITAL.get(n, 0.0) for n in names])
        self._blink_weights = np.array([FRONTAL_BLINK.get(n, 0.0) for n in names])
        self._alpha_hz = 9.5 + subject.uniform(0.0, 1.5)
        self._alpha_phase = subject.uniform(0, 2 * np.pi, self._n_eeg)
        self._ssvep_phase = subject.uniform(0, 2 * np.pi)
        self._mains_phase = subject.uniform(0, 2 * np.pi)
        self._heart_hz = subject.uniform(1.0, 1.3)
        # Filter state: one pink filter per EEG channel plus one shared, and the alpha envelope.
        self._pink_zi = np.outer(lfilter_zi(_PINK_B, _PINK_A), np.zeros(self._n_eeg + 1))
        self._env_b, self._env_a = np.array([0.002]), np.array([1.0, -0.998])
        self._env_zi = np.zeros(1)
        self._blink_onsets: list[int] = []
        self._next_blink = self._draw_blink_gap(0)

    @property
    def n_channels(self) -> int:
        return len(self.layout.channel_names)

    def _draw_blink_gap(self, start: int) -> int:
        rate = self.settings.blinks_per_minute / 60.0
        if rate <= 0:
            return np.iinfo(np.int64).max
        return start + max(1, int(self._events.exponential(1.0 / rate) * self.fs))

    def generate(self, n: int, times_us: np.ndarray | None = None) -> np.ndarray:
        """The next ``n`` samples, shape ``(n, n_channels)`` float32, in microvolts.

        ``times_us`` are the samples' times in microseconds on the clock the stimulus schedule
        uses; the stimulus is looked up there. Defaults to sample index / rate.
        """
        s = self.settings
        index = self.sample_index + np.arange(n)
        t = index / self.fs
        times = (t * 1e6).astype(np.int64) if times_us is None else times_us
        out = np.empty((n, self.n_channels), dtype=np.float64)

        white = self._noise.standard_normal((n, self._n_eeg + 1))
        pink, self._pink_zi = lfilter(_PINK_B, _PINK_A, white, axis=0, zi=self._pink_zi)
        pink *= _PINK_GAIN
        background = (0.8 * pink[:, :-1] + 0.6 * pink[:, -1:]) * s.background_uv

        envelope_noise = self._envelope_noise.standard_normal(n)
        envelope, self._env_zi = lfilter(self._env_b, self._env_a, envelope_noise, zi=self._env_zi)
        alpha_amplitude = s.alpha_uv * (1.0 + 2.0 * envelope)

        stimulus_hz = self.stimulus_at(np.asarray(times)) if self.stimulus_at is not None else np.full(n, np.nan)
        shown = ~np.isnan(stimulus_hz)
        alpha_amplitude = np.where(shown, 0.3 * alpha_amplitude, alpha_amplitude)
        alpha = alpha_amplitude[:, None] * np.sin(2 * np.pi * self._alpha_hz * t[:, None] + self._alpha_phase[None, :])
        eeg = background + alpha * self._alpha_weights[None, :]

        if shown.any():
            ssvep_uv = s.background_uv * 10 ** (s.ssvep_snr_db / 20)
            freq = np.where(shown, stimulus_hz, 0.0)
            phase = 2 * np.pi * freq * t + self._ssvep_phase
            wave = np.where(shown, ssvep_uv * (np.sin(phase) + 0.5 * np.sin(2 * phase)), 0.0)
            eeg += wave[:, None] * self._ssvep_weights[None, :]

        eeg += s.mains_uv * np.sin(2 * np.pi * 60.0 * t + self._mains_phase)[:, None]
        eeg += self._blinks(index)[:, None] * self._blink_weights[None, :]
        out[:, : self._n_eeg] = eeg
        if s.with_pulse:
            phase = (self._heart_hz * t) % 1.0
            out[:, self._n_eeg] = 500.0 * np.exp(-((phase - 0.2) ** 2) / 0.004) + 50 * phase
        self.sample_index += n
        return out.astype(np.float32)

    def _blinks(self, index: np.ndarray) -> np.ndarray:
        end = int(index[-1]) + 1 if len(index) else self.sample_index
        while self._next_blink < end:
            self._blink_onsets.append(self._next_blink)
            self._next_blink = self._draw_blink_gap(self._next_blink)
        width = 0.3 * self.fs
        signal = np.zeros(len(index))
        keep = []
        for onset in self._blink_onsets:
            if onset + width < index[0]:
                continue
            keep.append(onset)
            x = (index - onset) / width
            signal += np.where((x >= 0) & (x <= 1), np.sin(np.pi * np.clip(x, 0, 1)) ** 2, 0.0)
        self._blink_onsets = keep
        return signal * self.settings.blink_uv
