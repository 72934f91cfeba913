"""Simulated EEG: one seeded, chunk-invariant generator behind the simulated headset, the sample lake and
the decoding benchmark.

The model, in microvolts, per channel, referenced to the headset's reference electrode:

- **head**: electrodes and sources are points on a unit sphere (10-05 positions); a source reaches an
  electrode through a smooth volume-conduction kernel, exp(-angle^2 / 2 spread^2), so neighbouring
  channels share their signals as on a real scalp. The reference electrode sees the same sources
  (attenuated off the scalp) and is subtracted, like an amplifier's SRB/reference input.
- **background**: pink (1/f) noise from ~60 independent sources over the upper head, mixed by the
  kernel, ``background_uv`` RMS per channel; plus ~1 uV of independent sensor noise.
- **alpha**: two parieto-occipital sources of narrow-band (1.5 Hz wide) activity at the subject's alpha
  frequency, slowly waxing and waning, damped while a flicker is seen (alpha blocking).
- **SSVEP**: the superposition model (Capilla et al. 2011): the flicker on screen, a sinusoid of f Hz
  starting at phase phi, drives the visual cortex, whose response is that drive convolved with the
  subject's visual impulse response (a pure conduction delay, then a damped ~12 Hz oscillation of
  ~0.1-0.2 s). Each harmonic h = 1..5 is the same with the drive's h-th harmonic (the visual system's
  nonlinearity), its own falling amplitude, response phase and occipital focus (plus a weaker,
  phase-shifted parietal one). So the response starts after a latency of 100-150 ms, builds up
  with a stimulus-specific transient, settles to a frequency- and phase-specific steady state and
  fades when the flicker stops. Amplitude varies from trial to trial (and its phase a little), and
  from subject to subject (``SsvepModel.subject_snr_sd_db``). The SNR is the steady-state SSVEP's
  power (all harmonics) over the background's at the occipital focus, for an average subject and a
  10 Hz flicker, in dB; other frequencies get the subject's impulse response's gain there.
- **artifacts**: mains (per-electrode amplitude, as impedances differ), slow electrode drift, blinks on
  frontal channels, EMG bursts (temporal muscles and neck), and now and then a channel that goes flat
  or rails at the amplifier's full scale for a few seconds.

State in, state out: :func:`simulate` takes a :class:`SimulationState` and returns the next one, so a
recording generated in any chunking equals one generated in one call. Every random quantity has its
own stream (per-sample noise, blinks, EMG, faults, trials): interleaved draws from one stream would
depend on chunk sizes. The subject (``subject_seed``) fixes the anatomy and the response; the session
(``session_seed``) the cap placement, impedances and noise, so two sessions of one subject differ as
two days in the lab do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.signal import butter, lfilter, lfilter_zi, sosfilt

from core.settings import SimulationSettings
from dsp.features import RAILED_UV
from dsp.ssvep import BENCHMARK_LATENCY_S, StimulusLayout

# Unit vectors of 10-05 sites (MNE's standard_1005 montage, sphere-fitted), x right, y front, z up.
ELECTRODES: dict[str, tuple[float, float, float]] = {
    "Fp1": (-0.289, 0.956, -0.056),
    "Fp2": (0.276, 0.960, -0.056),
    "Fz": (-0.005, 0.742, 0.671),
    "F1": (-0.284, 0.734, 0.617),
    "F2": (0.288, 0.740, 0.608),
    "F3": (-0.530, 0.719, 0.450),
    "F4": (0.528, 0.730, 0.434),
    "F5": (-0.699, 0.688, 0.194),
    "F6": (0.701, 0.690, 0.183),
    "F7": (-0.766, 0.633, -0.111),
    "F8": (0.761, 0.639, -0.114),
    "Cz": (-0.004, 0.069, 0.998),
    "C3": (-0.710, 0.049, 0.703),
    "C4": (0.714, 0.057, 0.698),
    "T7": (-0.995, 0.002, -0.096),
    "T8": (0.995, 0.014, -0.098),
    "Pz": (-0.005, -0.612, 0.791),
    "P3": (-0.536, -0.623, 0.569),
    "P4": (0.542, -0.616, 0.571),
    "P7": (-0.788, -0.616, -0.014),
    "P8": (0.786, -0.618, -0.015),
    "POz": (-0.006, -0.857, 0.516),
    "PO3": (-0.373, -0.845, 0.383),
    "PO4": (0.362, -0.852, 0.378),
    "PO5": (-0.496, -0.837, 0.229),
    "PO6": (0.494, -0.838, 0.231),
    "PO7": (-0.564, -0.824, 0.040),
    "PO8": (0.558, -0.829, 0.040),
    "Oz": (-0.007, -0.987, 0.158),
    "O1": (-0.298, -0.949, 0.099),
    "O2": (0.288, -0.952, 0.099),
    "A1": (-0.790, -0.080, -0.608),
    "A2": (0.783, -0.081, -0.616),
}

# OpenBCI's default placement (BrainFlow's board descriptions): the Cyton's 8, then the Daisy's 8.
CYTON_DAISY_CHANNELS = (
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
# BrainFlow names no Ganglion channels (the board adapter calls them EEG1-EEG4); an SSVEP lab puts them here.
GANGLION_CHANNELS = ("O1", "Oz", "O2", "Pz")
# The 9 channels every decoder paper uses on the Tsinghua benchmark (Wang et al. 2017).
BENCHMARK_CHANNELS = ("Pz", "PO5", "PO3", "POz", "PO4", "PO6", "O1", "Oz", "O2")
PULSE_CHANNEL = "PULSE"


@dataclass(frozen=True)
class Headset:
    """What a simulated board looks like: its rate, its channels' sites and its reference site."""

    name: str
    sample_rate_hz: float
    channel_names: tuple[str, ...]
    reference: str
    # How much of the scalp's activity the reference site picks up (an earlobe less than the scalp).
    reference_gain: float

    def __post_init__(self) -> None:
        unknown = [n for n in (*self.channel_names, self.reference) if n not in ELECTRODES]
        if unknown:
            raise ValueError(f"no scalp position for {unknown}; known sites: {', '.join(ELECTRODES)}")


HEADSETS: dict[str, Headset] = {
    # The lab's simulated headset as it always was: the Cyton+Daisy sites at 250 Hz.
    "simulated": Headset("simulated", 250.0, CYTON_DAISY_CHANNELS, "A1", 0.5),
    "cyton": Headset("cyton", 250.0, CYTON_DAISY_CHANNELS[:8], "A1", 0.5),
    "cyton_daisy": Headset("cyton_daisy", 125.0, CYTON_DAISY_CHANNELS, "A1", 0.5),
    "ganglion": Headset("ganglion", 200.0, GANGLION_CHANNELS, "A1", 0.5),
    # Tsinghua benchmark: Synamps2, Cz reference, downsampled to 250 Hz.
    "benchmark": Headset("benchmark", 250.0, BENCHMARK_CHANNELS, "Cz", 1.0),
}


def headset_for(settings: SimulationSettings) -> Headset:
    """The board of ``edge.simulation``, with its rate and channel count overrides applied."""
    board = HEADSETS[settings.board]
    names = board.channel_names
    if settings.n_eeg_channels is not None:
        if settings.n_eeg_channels > len(names):
            raise ValueError(
                f"edge.simulation.n_eeg_channels={settings.n_eeg_channels}, but the {board.name} board has "
                f"{len(names)} channels; leave it unset or choose 1-{len(names)}"
            )
        names = names[: settings.n_eeg_channels]
    rate = settings.sample_rate_hz if settings.sample_rate_hz is not None else board.sample_rate_hz
    return replace(board, sample_rate_hz=float(rate), channel_names=names)


@dataclass(frozen=True)
class SsvepModel:
    """The SSVEP's structure (what the ``benchmark`` SNR was calibrated with; bench/decoding_bench.py).

    Amplitudes are relative, per harmonic, before the subject's own variation; the phases of the
    response are the subject's, drawn uniformly."""

    # Steady-state amplitude of harmonics 1-5 at the focus: with the 1/f background, the 2nd harmonic's
    # SNR is ~7 dB below the fundamental's and the 5th's ~27 dB below (real SSVEP harmonics fall fast;
    # strong high harmonics would let CCA tell 0.2 Hz neighbours apart in 0.5 s, which it cannot).
    harmonic_amplitudes: tuple[float, ...] = (1.0, 0.3, 0.12, 0.05, 0.02)
    # Subjects differ by this much in SNR (dB, normal), on top of what their anatomy, impulse response
    # and harmonics make of it: together they range from near chance to near perfect.
    subject_snr_sd_db: float = 1.0
    # Per subject, each harmonic's amplitude varies by this factor (log-normal sd).
    harmonic_amplitude_sd: float = 0.3
    # The visual impulse response: a pure delay, then (u/b)^2 exp(-u/b) cos(2 pi f0 u + psi), per subject
    # uniformly in these ranges (its group delay, the apparent latency, is then ~100-150 ms).
    delay_s: tuple[float, float] = (0.05, 0.08)
    kernel_decay_s: tuple[float, float] = (0.02, 0.03)
    kernel_hz: tuple[float, float] = (10.0, 14.0)
    trial_amplitude_sd: float = 0.25
    trial_latency_sd_s: float = 0.0
    trial_phase_sd_rad: float = 0.05
    # Occipital focus of the response and its spread over the scalp (radians on the unit sphere).
    focus: tuple[float, float, float] = (0.0, -0.95, 0.30)
    spread_rad: float = 0.5
    subject_focus_sd_rad: float = 0.12
    harmonic_focus_sd_rad: float = 0.12
    # A weaker parietal generator, phase-shifted, so the response's phase differs across channels.
    secondary_focus: tuple[float, float, float] = (0.0, -0.70, 0.70)
    secondary_gain: float = 0.4
    channel_gain_sd: float = 0.2
    # Alpha power while a flicker is seen, relative to rest.
    alpha_blocking: float = 0.5


@dataclass(frozen=True)
class SimulationConfig:
    """Everything the generator needs; built from ``edge.simulation`` by :func:`config_from_settings`
    (the settings hold the defaults)."""

    headset: Headset
    snr_db: float
    background_uv: float
    alpha_uv: float
    mains_uv: float
    mains_hz: float
    blink_uv: float
    blinks_per_minute: float
    emg_uv: float
    emg_bursts_per_minute: float
    drift_uv: float
    channel_faults_per_hour: float
    with_pulse: bool
    # (frequency Hz, phase rad) of each target; a frequency not listed flickers from phase 0.
    stimulus_phases: tuple[tuple[float, float], ...] = ()
    subject_seed: int = 0
    session_seed: int = 0
    # Amplifier and electrode noise, independent per channel.
    sensor_noise_uv: float = 1.0
    ssvep: SsvepModel = field(default_factory=SsvepModel)

    @property
    def channel_names(self) -> tuple[str, ...]:
        eeg = self.headset.channel_names
        return (*eeg, PULSE_CHANNEL) if self.with_pulse else eeg

    @property
    def channel_types(self) -> tuple[str, ...]:
        types = ("eeg",) * len(self.headset.channel_names)
        return (*types, "pulse") if self.with_pulse else types


def config_from_settings(
    settings: SimulationSettings, layout: StimulusLayout | None = None, session_seed: int | None = None
) -> SimulationConfig:
    """The generator's configuration from ``edge.simulation`` (each seed is its own subject)."""
    phases = tuple(zip(layout.frequencies_hz, layout.phases_rad)) if layout is not None else ()
    return SimulationConfig(
        headset=headset_for(settings),
        snr_db=settings.ssvep_snr_db,
        background_uv=settings.background_uv,
        alpha_uv=settings.alpha_uv,
        mains_uv=settings.mains_uv,
        mains_hz=settings.mains_hz,
        blink_uv=settings.blink_uv,
        blinks_per_minute=settings.blinks_per_minute,
        emg_uv=settings.emg_uv,
        emg_bursts_per_minute=settings.emg_bursts_per_minute,
        drift_uv=settings.drift_uv,
        channel_faults_per_hour=settings.channel_faults_per_hour,
        with_pulse=settings.with_pulse,
        stimulus_phases=phases,
        subject_seed=settings.seed,
        session_seed=settings.seed if session_seed is None else session_seed,
    )


# --- the prepared model ------------------------------------------------------------------------------

# Kellet's "economy" pink-noise filter, -3 dB/octave within 1 % over the EEG band.
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
_PINK_GAIN = 1.0 / 0.0865  # measured: brings unit white noise to ~unit RMS pink noise
_BACKGROUND_SPREAD_RAD = 0.35
_ALPHA_SOURCES = ((-0.35, -0.80, 0.48), (0.35, -0.80, 0.48))
_ALPHA_SPREAD_RAD = 0.45
_BLINK_SOURCE = (0.0, 0.97, -0.22)
_BLINK_SPREAD_RAD = 0.5
_EMG_SOURCES = ((-0.93, 0.25, -0.27), (0.93, 0.25, -0.27), (0.0, -0.88, -0.45))  # temporalis L/R, neck
_EMG_SPREAD_RAD = 0.45
_EMG_HIGHPASS_HZ = 20.0
_DRIFT_CORNER_HZ = 0.05
_STREAMS = ("samples", "blinks", "emg", "faults", "trials")


def _unit(v: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return np.asarray(a / np.linalg.norm(a, axis=-1, keepdims=True))


def _kernel(sites: np.ndarray, sources: np.ndarray, spread_rad: float) -> np.ndarray:
    """Volume conduction from ``sources`` (m, 3) to ``sites`` (n, 3): (n, m)."""
    angle = np.arccos(np.clip(sites @ sources.T, -1.0, 1.0))
    return np.asarray(np.exp(-(angle**2) / (2 * spread_rad**2)))


def _jitter(position: np.ndarray, sd_rad: float, rng: np.random.Generator) -> np.ndarray:
    """``position`` moved by a random tangent step of ~``sd_rad``."""
    step = rng.normal(0.0, sd_rad, 3)
    step -= (step @ position) * position
    return _unit(position + step)


def _fibonacci_sources(n: int, lowest_z: float) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    r = np.sqrt(1 - z**2)
    theta = np.pi * (1 + 5**0.5) * k
    points = np.column_stack([r * np.cos(theta), r * np.sin(theta), z])
    return points[points[:, 2] > lowest_z]


_BACKGROUND_SOURCES = _fibonacci_sources(64, -0.3)


@dataclass(frozen=True)
class Simulator:
    """One subject in one session, ready to generate: mixing matrices, response and filter designs."""

    config: SimulationConfig
    fs: float
    background_mixing: np.ndarray  # (sources, channels)
    alpha_mixing: np.ndarray  # (2, channels)
    alpha_b: np.ndarray
    alpha_a: np.ndarray
    alpha_hz: float
    blink_gains: np.ndarray  # (channels,)
    emg_mixing: np.ndarray  # (3, channels)
    emg_sos: np.ndarray
    mains_gains: np.ndarray  # (channels,)
    mains_phase: float
    drift_pole: float
    envelope_pole: float
    blocking_pole: float
    # SSVEP, per harmonic: the spatial patterns of the response's sine and cosine parts, the impulse
    # response (normalised to unit gain at 10 Hz x h) and the steady-state peak amplitude there.
    ssvep_sin: np.ndarray  # (harmonics, channels)
    ssvep_cos: np.ndarray
    ssvep_kernels: tuple[np.ndarray, ...]
    ssvep_amplitudes: np.ndarray  # (harmonics,)
    heart_hz: float
    phases: Mapping[float, float]

    @property
    def n_eeg(self) -> int:
        return len(self.config.headset.channel_names)

    @property
    def n_channels(self) -> int:
        return len(self.config.channel_names)


def prepare(config: SimulationConfig) -> Simulator:
    """Draw the subject (anatomy, response) and the session (cap placement, impedances)."""
    headset, model = config.headset, config.ssvep
    fs = headset.sample_rate_hz
    subject = np.random.default_rng(np.random.SeedSequence([config.subject_seed, 1]))
    session = np.random.default_rng(np.random.SeedSequence([config.subject_seed, config.session_seed, 2]))
    # The cap sits a little differently every session: every site moves by a few millimetres.
    sites = np.stack([_jitter(_unit(ELECTRODES[n]), 0.03, session) for n in headset.channel_names])
    reference = _unit(ELECTRODES[headset.reference])

    def referenced(sources: np.ndarray, spread: float, normalise: bool) -> np.ndarray:
        at_sites = _kernel(sites, sources, spread)
        at_reference = headset.reference_gain * _kernel(reference[None], sources, spread)
        if normalise:  # unit RMS per site from unit-RMS independent sources, before referencing
            scale = 1.0 / np.linalg.norm(at_sites, axis=1, keepdims=True)
            at_sites, at_reference = at_sites * scale, at_reference * scale.mean()
        return np.asarray((at_sites - at_reference).T)

    background = referenced(_BACKGROUND_SOURCES, _BACKGROUND_SPREAD_RAD, normalise=True)
    alpha_sources = np.stack([_jitter(_unit(p), 0.1, subject) for p in _ALPHA_SOURCES])
    alpha_mixing = referenced(alpha_sources, _ALPHA_SPREAD_RAD, normalise=False)
    alpha_hz = float(subject.uniform(9.0, 11.5))
    r = float(np.exp(-np.pi * 1.5 / fs))  # 1.5 Hz wide resonance
    w = 2 * np.pi * alpha_hz / fs
    variance = (1 + r**2) / ((1 - r**2) * ((1 + r**2) ** 2 - 4 * r**2 * np.cos(w) ** 2))
    # blink_uv is the blink's size at Fp1/Fp2, just above the eyes.
    blink_source = _unit(_BLINK_SOURCE)[None]
    at_fp = _kernel(_unit(ELECTRODES["Fp1"])[None], blink_source, _BLINK_SPREAD_RAD)[0, 0]
    blink_gains = referenced(blink_source, _BLINK_SPREAD_RAD, normalise=False)[0] / at_fp
    emg_mixing = referenced(_unit(np.array(_EMG_SOURCES)), _EMG_SPREAD_RAD, normalise=False)
    high = min(_EMG_HIGHPASS_HZ, 0.4 * fs)

    # The response: each harmonic has its own focus near the subject's, and a phase-shifted parietal partner.
    n_harmonics = len(model.harmonic_amplitudes)
    subject_focus = _jitter(_unit(model.focus), model.subject_focus_sd_rad, subject)
    channel_gain = np.exp(subject.normal(0.0, model.channel_gain_sd, len(sites)))
    secondary_phase = subject.uniform(-np.pi / 2, np.pi / 2, n_harmonics)
    sin_patterns, cos_patterns = [], []
    for h in range(n_harmonics):
        primary = _jitter(subject_focus, model.harmonic_focus_sd_rad, subject)
        secondary = _jitter(_unit(model.secondary_focus), model.harmonic_focus_sd_rad, subject)
        p1 = referenced(primary[None], model.spread_rad, normalise=False)[0] * channel_gain
        p2 = referenced(secondary[None], model.spread_rad, normalise=False)[0] * channel_gain
        sin_patterns.append(p1 + model.secondary_gain * np.cos(secondary_phase[h]) * p2)
        cos_patterns.append(model.secondary_gain * np.sin(secondary_phase[h]) * p2)
    relative = np.asarray(model.harmonic_amplitudes) * np.exp(
        np.r_[0.0, subject.normal(0.0, model.harmonic_amplitude_sd, n_harmonics - 1)]
    )
    snr_db = config.snr_db + subject.normal(0.0, model.subject_snr_sd_db)
    rms = config.background_uv * 10 ** (snr_db / 20)
    # Peak amplitudes whose sum of sinusoids has that RMS at the focus.
    amplitudes = rms * np.sqrt(2) * relative / np.sqrt(np.sum(relative**2))
    delay = subject.uniform(*model.delay_s)
    decay = subject.uniform(*model.kernel_decay_s)
    kernel_hz = subject.uniform(*model.kernel_hz)
    kernel_phases = subject.uniform(0, 2 * np.pi, n_harmonics)
    kernels = tuple(
        _impulse_response(fs, delay, decay / (h + 1), kernel_hz * (h + 1), kernel_phases[h], 10.0 * (h + 1))
        for h in range(n_harmonics)
    )

    return Simulator(
        config=config,
        fs=fs,
        background_mixing=background,
        alpha_mixing=alpha_mixing,
        alpha_b=np.array([1.0 / np.sqrt(variance)]),
        alpha_a=np.array([1.0, -2 * r * np.cos(w), r**2]),
        alpha_hz=alpha_hz,
        blink_gains=blink_gains,
        emg_mixing=emg_mixing,
        emg_sos=np.asarray(butter(4, high, btype="highpass", fs=fs, output="sos")),
        mains_gains=np.exp(session.normal(0.0, 0.5, len(sites))),
        mains_phase=float(session.uniform(0, 2 * np.pi)),
        drift_pole=float(np.exp(-2 * np.pi * _DRIFT_CORNER_HZ / fs)),
        envelope_pole=float(np.exp(-1.0 / (2.0 * fs))),
        blocking_pole=float(np.exp(-1.0 / (0.3 * fs))),
        ssvep_sin=np.stack(sin_patterns),
        ssvep_cos=np.stack(cos_patterns),
        ssvep_kernels=kernels,
        ssvep_amplitudes=amplitudes,
        heart_hz=float(subject.uniform(1.0, 1.3)),
        phases=dict(config.stimulus_phases),
    )


def _impulse_response(fs: float, delay_s: float, decay_s: float, hz: float, phase: float, unit_hz: float) -> np.ndarray:
    """A pure delay, then (u/b)^2 exp(-u/b) cos(2 pi hz u + phase) up to 10 b, scaled to unit gain at ``unit_hz``."""
    u = np.arange(int(np.ceil((delay_s + 10 * decay_s) * fs))) / fs - delay_s
    after = np.clip(u, 0.0, None)
    kernel = np.where(
        u >= 0, (after / decay_s) ** 2 * np.exp(-after / decay_s) * np.cos(2 * np.pi * hz * after + phase), 0.0
    )
    gain = abs(np.sum(kernel * np.exp(-2j * np.pi * unit_hz * np.arange(len(kernel)) / fs)))
    return np.asarray(kernel / gain)


# --- state -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SsvepTrial:
    """The flicker on screen: its onset (sample index), frequency, phase and this trial's draws."""

    onset: int
    hz: float
    phase: float
    amplitude: float
    harmonic_phases: tuple[float, ...]


@dataclass(frozen=True)
class SimulationState:
    index: int
    rng: tuple[Mapping[str, Any], ...]  # bit-generator states, one per stream in _STREAMS
    pink_zi: np.ndarray
    alpha_zi: np.ndarray
    envelope_zi: np.ndarray
    blocking_zi: np.ndarray
    emg_zi: np.ndarray
    drift_zi: np.ndarray
    ssvep_zi: tuple[np.ndarray, ...]  # per harmonic, the impulse response's memory of the drive
    next_event: tuple[int, int, int]  # next blink, EMG burst and channel fault onsets
    blinks: tuple[int, ...]
    emg: tuple[tuple[int, int, int, float], ...]  # onset, length, source, amplitude
    faults: tuple[tuple[int, int, int, float], ...]  # onset, length, channel, value
    trial: SsvepTrial | None


def _generator(state: Mapping[str, Any]) -> np.random.Generator:
    g = np.random.Generator(np.random.PCG64(0))
    g.bit_generator.state = dict(state)
    return g


def _gap(rate_per_s: float, rng: np.random.Generator, fs: float, start: int) -> int:
    if rate_per_s <= 0:
        return int(np.iinfo(np.int64).max)
    return start + max(1, int(rng.exponential(1.0 / rate_per_s) * fs))


def initial_state(sim: Simulator) -> SimulationState:
    c = sim.config
    seeds = np.random.SeedSequence([c.subject_seed, c.session_seed, 3]).spawn(len(_STREAMS))
    streams = [np.random.Generator(np.random.PCG64(s)) for s in seeds]
    first = tuple(
        _gap(rate, streams[i + 1], sim.fs, 0)
        for i, rate in enumerate(
            (c.blinks_per_minute / 60, c.emg_bursts_per_minute / 60, c.channel_faults_per_hour / 3600)
        )
    )
    n_sources = sim.background_mixing.shape[0]
    return SimulationState(
        index=0,
        rng=tuple(g.bit_generator.state for g in streams),
        pink_zi=np.outer(lfilter_zi(_PINK_B, _PINK_A), np.zeros(n_sources)),
        alpha_zi=np.zeros((2, 2)),
        envelope_zi=np.zeros(1),
        blocking_zi=lfilter_zi([1 - sim.blocking_pole], [1.0, -sim.blocking_pole]),
        emg_zi=np.zeros((len(sim.emg_sos), 2, len(_EMG_SOURCES))),
        drift_zi=np.zeros((1, sim.n_eeg)),
        ssvep_zi=tuple(np.zeros((len(k) - 1, 2)) for k in sim.ssvep_kernels),
        next_event=(first[0], first[1], first[2]),
        blinks=(),
        emg=(),
        faults=(),
        trial=None,
    )


StimulusAt = Callable[[np.ndarray], np.ndarray]
"""The flicker frequency (Hz) on screen at each of the given times (microseconds), NaN where none."""


# --- generation --------------------------------------------------------------------------------------


def simulate(
    sim: Simulator,
    state: SimulationState,
    n: int,
    times_us: np.ndarray | None = None,
    stimulus_at: StimulusAt | None = None,
) -> tuple[np.ndarray, SimulationState]:
    """The next ``n`` samples, (n, channels) float32 microvolts, and the state after them.

    ``times_us`` are the samples' times on the stimulus schedule's clock (default: index / rate)."""
    c, fs = sim.config, sim.fs
    index = state.index + np.arange(n)
    t = index / fs
    times = np.round(t * 1e6).astype(np.int64) if times_us is None else np.asarray(times_us, dtype=np.int64)
    rngs = [_generator(s) for s in state.rng]
    n_sources, n_eeg = sim.background_mixing.shape
    noise = rngs[0].standard_normal((n, n_sources + 2 * n_eeg + 2 + 1 + len(_EMG_SOURCES)))
    columns = np.cumsum([0, n_sources, n_eeg, 2, 1, len(_EMG_SOURCES), n_eeg])
    white_sources, white_sensor, white_alpha, white_envelope, white_emg, white_drift = (
        noise[:, columns[i] : columns[i + 1]] for i in range(6)
    )

    pink, pink_zi = lfilter(_PINK_B, _PINK_A, white_sources, axis=0, zi=state.pink_zi)
    eeg = (pink * _PINK_GAIN) @ sim.background_mixing * c.background_uv
    eeg += white_sensor * c.sensor_noise_uv

    if stimulus_at is not None:
        seen = np.asarray(stimulus_at(times), dtype=np.float64)
    else:
        seen = np.full(n, np.nan)
    shown = ~np.isnan(seen)

    envelope, envelope_zi = lfilter(
        [np.sqrt(1 - sim.envelope_pole**2)], [1.0, -sim.envelope_pole], white_envelope[:, 0], zi=state.envelope_zi
    )
    target = np.where(shown, c.ssvep.alpha_blocking, 1.0)
    blocking, blocking_zi = lfilter([1 - sim.blocking_pole], [1.0, -sim.blocking_pole], target, zi=state.blocking_zi)
    alpha, alpha_zi = lfilter(sim.alpha_b, sim.alpha_a, white_alpha, axis=0, zi=state.alpha_zi)
    alpha_gain = c.alpha_uv * np.maximum(0.1, 1.0 + 0.3 * envelope) * blocking
    eeg += (alpha * alpha_gain[:, None]) @ sim.alpha_mixing

    response, trial, ssvep_zi = _ssvep(sim, state.trial, state.ssvep_zi, index, seen, rngs[4])
    eeg += response

    eeg += c.mains_uv * np.sin(2 * np.pi * c.mains_hz * t + sim.mains_phase)[:, None] * sim.mains_gains[None, :]
    drift, drift_zi = lfilter(
        [np.sqrt(1 - sim.drift_pole**2)], [1.0, -sim.drift_pole], white_drift, axis=0, zi=state.drift_zi
    )
    eeg += c.drift_uv * drift

    next_blink, next_emg, next_fault = state.next_event
    blinks, next_blink, blink_wave = _blinks(sim, state.blinks, next_blink, index, rngs[1])
    eeg += c.blink_uv * blink_wave[:, None] * sim.blink_gains[None, :]
    emg_noise, emg_zi = sosfilt(sim.emg_sos, white_emg, axis=0, zi=state.emg_zi)
    bursts, next_emg, emg_envelope = _emg(sim, state.emg, next_emg, index, rngs[2])
    eeg += (emg_noise * emg_envelope * c.emg_uv / np.sqrt(1 - 2 * _EMG_HIGHPASS_HZ / fs)) @ sim.emg_mixing
    faults, next_fault = _faults(sim, state.faults, next_fault, index, rngs[3], eeg)

    out = np.empty((n, sim.n_channels))
    out[:, :n_eeg] = eeg
    if c.with_pulse:
        phase = (sim.heart_hz * t) % 1.0
        out[:, n_eeg] = 500.0 * np.exp(-((phase - 0.2) ** 2) / 0.004) + 50 * phase
    new_state = SimulationState(
        index=state.index + n,
        rng=tuple(g.bit_generator.state for g in rngs),
        pink_zi=pink_zi,
        alpha_zi=alpha_zi,
        envelope_zi=envelope_zi,
        blocking_zi=blocking_zi,
        emg_zi=emg_zi,
        drift_zi=drift_zi,
        ssvep_zi=ssvep_zi,
        next_event=(next_blink, next_emg, next_fault),
        blinks=blinks,
        emg=bursts,
        faults=faults,
        trial=trial,
    )
    return out.astype(np.float32), new_state


def _ssvep(
    sim: Simulator,
    trial: SsvepTrial | None,
    memory: tuple[np.ndarray, ...],
    index: np.ndarray,
    seen: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, SsvepTrial | None, tuple[np.ndarray, ...]]:
    """The response to the flicker on screen: each harmonic of the drive through its impulse response.
    A new trial starts where the flicker changes."""
    model, n = sim.config.ssvep, len(index)
    n_harmonics = len(sim.ssvep_amplitudes)
    previous = np.r_[trial.hz if trial is not None else np.nan, seen[:-1]]
    changed = ~((seen == previous) | (np.isnan(seen) & np.isnan(previous)))
    onsets = np.flatnonzero(changed & ~np.isnan(seen))
    trials: list[SsvepTrial | None] = [trial]
    for at in onsets:
        hz = float(seen[at])
        jitter = rng.normal(0.0, model.trial_latency_sd_s)
        harmonic = rng.normal(0.0, model.trial_phase_sd_rad, n_harmonics)
        trials.append(
            SsvepTrial(
                onset=int(index[at]),
                hz=hz,
                phase=_phase_of(sim.phases, hz),
                amplitude=float(np.exp(rng.normal(0.0, model.trial_amplitude_sd))),
                harmonic_phases=tuple(
                    float(-2 * np.pi * (h + 1) * hz * jitter + harmonic[h]) for h in range(n_harmonics)
                ),
            )
        )
    # The drive of each harmonic (its cosine and sine parts), per trial segment of the chunk.
    drive = np.zeros((n_harmonics, n, 2))
    segment = np.searchsorted(onsets, np.arange(n), side="right")
    for k, current in enumerate(trials):
        if current is None:
            continue
        rows = np.flatnonzero((segment == k) & ~np.isnan(seen))
        if len(rows) == 0:
            continue
        elapsed = (index[rows] - current.onset) / sim.fs
        for h in range(n_harmonics):
            theta = (h + 1) * (2 * np.pi * current.hz * elapsed + current.phase) + current.harmonic_phases[h]
            drive[h, rows, 0] = current.amplitude * np.cos(theta)
            drive[h, rows, 1] = current.amplitude * np.sin(theta)
    out = np.zeros((n, sim.n_eeg))
    new_memory = []
    for h, kernel in enumerate(sim.ssvep_kernels):
        response, zi = lfilter(kernel, [1.0], drive[h], axis=0, zi=memory[h])
        new_memory.append(zi)
        a = sim.ssvep_amplitudes[h]
        out += a * (response[:, 1:2] * sim.ssvep_sin[h] + response[:, 0:1] * sim.ssvep_cos[h])
    last = trials[-1]
    if len(seen) and np.isnan(seen[-1]):
        last = None
    return out, last, tuple(new_memory)


def _phase_of(phases: Mapping[float, float], hz: float) -> float:
    for known, phase in phases.items():
        if abs(known - hz) < 1e-6:
            return phase
    return 0.0


def _blinks(
    sim: Simulator, onsets: tuple[int, ...], next_onset: int, index: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[int, ...], int, np.ndarray]:
    rate = sim.config.blinks_per_minute / 60
    end = int(index[-1]) + 1 if len(index) else 0
    active = list(onsets)
    while next_onset < end:
        active.append(next_onset)
        next_onset = _gap(rate, rng, sim.fs, next_onset)
    width = 0.3 * sim.fs
    wave = np.zeros(len(index))
    first = int(index[0]) if len(index) else 0
    for onset in active:
        rows = slice(max(0, onset - first), max(0, int(onset + width) + 1 - first))
        x = (index[rows] - onset) / width
        wave[rows] += np.where((x >= 0) & (x <= 1), np.sin(np.pi * np.clip(x, 0, 1)) ** 2, 0.0)
    keep = tuple(o for o in active if o + width >= end)
    return keep, next_onset, wave


def _emg(
    sim: Simulator,
    bursts: tuple[tuple[int, int, int, float], ...],
    next_onset: int,
    index: np.ndarray,
    rng: np.random.Generator,
) -> tuple[tuple[tuple[int, int, int, float], ...], int, np.ndarray]:
    rate = sim.config.emg_bursts_per_minute / 60
    end = int(index[-1]) + 1 if len(index) else 0
    active = list(bursts)
    while next_onset < end:
        length = int(rng.uniform(0.3, 1.5) * sim.fs)
        active.append((next_onset, length, int(rng.integers(len(_EMG_SOURCES))), float(rng.uniform(0.5, 1.5))))
        next_onset = _gap(rate, rng, sim.fs, next_onset)
    envelope = np.zeros((len(index), len(_EMG_SOURCES)))
    first = int(index[0]) if len(index) else 0
    for onset, length, source, amplitude in active:
        rows = slice(max(0, onset - first), max(0, onset + length + 1 - first))
        x = (index[rows] - onset) / length
        envelope[rows, source] += np.where(
            (x >= 0) & (x <= 1), amplitude * np.sin(np.pi * np.clip(x, 0, 1)) ** 0.5, 0.0
        )
    keep = tuple(b for b in active if b[0] + b[1] >= end)
    return keep, next_onset, envelope


def _faults(
    sim: Simulator,
    faults: tuple[tuple[int, int, int, float], ...],
    next_onset: int,
    index: np.ndarray,
    rng: np.random.Generator,
    eeg: np.ndarray,
) -> tuple[tuple[tuple[int, int, int, float], ...], int]:
    """Overwrites ``eeg`` where a channel is flat (0 uV) or railed (at full scale)."""
    rate = sim.config.channel_faults_per_hour / 3600
    end = int(index[-1]) + 1 if len(index) else 0
    active = list(faults)
    while next_onset < end:
        length = int(rng.uniform(1.0, 5.0) * sim.fs)
        channel = int(rng.integers(sim.n_eeg))
        value = 0.0 if rng.random() < 0.5 else float(rng.choice([-1.0, 1.0])) * RAILED_UV
        active.append((next_onset, length, channel, value))
        next_onset = _gap(rate, rng, sim.fs, next_onset)
    first = int(index[0]) if len(index) else 0
    for onset, length, channel, value in active:
        eeg[max(0, onset - first) : max(0, onset + length - first), channel] = value
    return tuple(f for f in active if f[0] + f[1] > end), next_onset


# --- the benchmark protocol --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkProtocol:
    """How the Tsinghua benchmark runs (Wang et al. 2017): blocks of one trial per target in random
    order; a trial is a 0.5 s cue, 5 s of flicker, 0.5 s of blank screen."""

    n_blocks: int = 6
    cue_s: float = 0.5
    flicker_s: float = 5.0
    blank_s: float = 0.5
    lead_in_s: float = 2.0
    latency_s: float = BENCHMARK_LATENCY_S


@dataclass(frozen=True)
class SimulatedBlock:
    """One block's continuous recording and where each of its trials' flicker started."""

    samples: np.ndarray  # (n, channels) float32 microvolts
    onsets: np.ndarray  # sample index of each flicker onset, in presentation order
    targets: np.ndarray  # target (class index) of each trial


def benchmark_session(
    config: SimulationConfig, layout: StimulusLayout, protocol: BenchmarkProtocol = BenchmarkProtocol()
) -> list[SimulatedBlock]:
    """A subject's session as the benchmark records it: ``protocol.n_blocks`` blocks, each a continuous
    recording (the generator runs on between trials) with every target once in a seeded random order."""
    phases = tuple(zip(layout.frequencies_hz, layout.phases_rad))
    sim = prepare(replace(config, stimulus_phases=phases))
    fs = sim.fs
    order_rng = np.random.default_rng(np.random.SeedSequence([config.subject_seed, config.session_seed, 4]))
    trial_s = protocol.cue_s + protocol.flicker_s + protocol.blank_s
    blocks = []
    state = initial_state(sim)
    for _ in range(protocol.n_blocks):
        targets = order_rng.permutation(layout.n_classes)
        starts_s = protocol.lead_in_s + protocol.cue_s + trial_s * np.arange(len(targets))
        onsets = np.round(starts_s * fs).astype(np.int64)
        n = int(round((protocol.lead_in_s + trial_s * len(targets)) * fs))
        frequencies = np.asarray(layout.frequencies_hz)[targets]

        def stimulus_at(
            times_us: np.ndarray, onsets: np.ndarray = onsets, hz: np.ndarray = frequencies, first: int = state.index
        ) -> np.ndarray:
            # Times are sample index / rate; onsets count from the block's first sample.
            rel = np.asarray(times_us) * fs / 1e6 - first + 1e-6
            k = np.searchsorted(onsets, rel, side="right") - 1
            inside = (k >= 0) & (rel < onsets[np.clip(k, 0, None)] + protocol.flicker_s * fs)
            return np.where(inside, hz[np.clip(k, 0, None)], np.nan)

        samples, state = simulate(sim, state, n, stimulus_at=stimulus_at)
        blocks.append(SimulatedBlock(samples, onsets, targets))
        # Minutes of rest between blocks: the next block starts from a settled, unrelated stretch.
        state = replace(state, index=state.index + int(60 * fs), trial=None)
    return blocks
