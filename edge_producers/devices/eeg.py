"""EEG sources behind one interface: BrainFlow boards (real, synthetic, playback) and the simulated
lab headset. The runtime only sees :class:`EegSource`."""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Protocol, Self

import numpy as np

from core.settings import EdgeSettings
from edge_producers.devices.packets import BOARD_COUNTERS, CounterState, PacketCounter, drop_packets, samples_missing
from edge_producers.devices.simulated import SimulatedEeg, StimulusAt
from schemas.timebase import now_us

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """A device cannot be opened or read; the message says what to check."""


@dataclass(frozen=True)
class BoardInfo:
    board: str
    sample_rate_hz: float
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    units: str = "uV"
    gain: float = 24.0

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)


@dataclass(frozen=True)
class EegChunk:
    samples: np.ndarray  # (n_samples, n_channels) float32, microvolts
    device_times_us: np.ndarray  # (n_samples,) int64, device clock
    # The board's radio packet counter per sample (sources that have one), and, once a RadioLink
    # has read it, how many samples were lost just before each sample.
    counter: np.ndarray | None = None
    missing_before: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])


class EegSource(Protocol):
    info: BoardInfo

    def start(self) -> None: ...

    def read(self) -> EegChunk:
        """Every sample acquired since the last call (possibly none); never blocks for long."""
        ...

    def stop(self) -> None: ...


class ContextSource(ABC):
    """``with source:`` starts and stops it, so a board is released however the block ends."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def empty_chunk(n_channels: int) -> EegChunk:
    return EegChunk(np.empty((0, n_channels), np.float32), np.empty(0, np.int64))


class SimulatedHeadset(ContextSource):
    """The simulated lab headset, paced by the wall clock like a real board."""

    def __init__(
        self,
        settings: EdgeSettings,
        stimulus_at: StimulusAt | None = None,
        clock_us: Callable[[], int] = now_us,
        to_lab_us: Callable[[np.ndarray], np.ndarray] = lambda t: t,
    ) -> None:
        self._sim = settings.simulation
        self._stimulus_at = stimulus_at
        self._to_lab_us = to_lab_us
        # The stimulus schedule is in lab time; the generator sees device times.
        lookup = (lambda t: stimulus_at(to_lab_us(t))) if stimulus_at is not None else None
        self._generator = SimulatedEeg(self._sim, lookup)
        # Counted like a Cyton's radio packets, so a RadioLink finds losses the same way.
        self.packet_counter: PacketCounter | None = PacketCounter()
        self._clock_us = clock_us
        self._jitter = np.random.default_rng(self._sim.seed + 7919)
        self._start_us: int | None = None
        layout = self._generator.layout
        self._rate = self._generator.fs
        self.info = BoardInfo(
            board="simulated",
            sample_rate_hz=self._rate,
            channel_names=layout.channel_names,
            channel_types=layout.channel_types,
        )

    def start(self) -> None:
        self._start_us = self._clock_us()

    def read(self) -> EegChunk:
        if self._start_us is None:
            raise DeviceError("simulated headset read before start()")
        # Sample k is stamped start + k/rate and readable from that moment, as from a board that
        # reports each sample when it is acquired.
        due = int((self._clock_us() - self._start_us) * self._rate / 1e6) + 1
        n = due - self._generator.sample_index
        if n <= 0:
            return empty_chunk(self.info.n_channels)
        index = self._generator.sample_index + np.arange(n)
        ideal = self._start_us + index * (1e6 / self._rate)
        jitter = self._jitter.normal(0.0, self._sim.timestamp_jitter_us, n)
        times = (ideal + jitter).astype(np.int64)
        samples = self._generator.generate(n, times)
        return EegChunk(samples, times, counter=index % self.packet_counter.modulus if self.packet_counter else None)

    def stop(self) -> None:
        self._start_us = None


BOARD_IDS = {
    "synthetic": "SYNTHETIC_BOARD",
    "playback": "PLAYBACK_FILE_BOARD",
    "cyton": "CYTON_BOARD",
    "cyton_daisy": "CYTON_DAISY_BOARD",
    "ganglion": "GANGLION_BOARD",
}


def brainflow_module() -> ModuleType:
    with warnings.catch_warnings():
        # BrainFlow 5.23 locates its native library through the deprecated pkg_resources.
        warnings.simplefilter("ignore", UserWarning)
        from brainflow import board_shim

        board_shim.BoardShim.get_board_descr(board_shim.BoardIds.SYNTHETIC_BOARD)
    module: ModuleType = board_shim
    return module


class BrainFlowSource(ContextSource):
    """An OpenBCI (or synthetic, or playback) board through BrainFlow.

    Rate, channel rows and names come from BrainFlow's board description. With ``analog_mode`` on a
    Cyton, the board is switched to analog mode (``/2``) and its analog rows (where the pulse sensor
    is wired) travel as extra channels: the first as ``pulse``, the others as ``aux``.
    """

    def __init__(
        self,
        board: str,
        serial_port: str | None = None,
        playback_file: Path | None = None,
        playback_board: str = "synthetic",
        analog_mode: bool = False,
    ) -> None:
        if board not in BOARD_IDS:
            raise DeviceError(f"unknown board {board!r}; choose one of {', '.join(BOARD_IDS)}")
        if board in ("cyton", "cyton_daisy", "ganglion") and not serial_port:
            raise DeviceError(f"board {board} needs edge.serial_port (e.g. /dev/ttyUSB0)")
        if board == "playback" and (playback_file is None or not Path(playback_file).is_file()):
            raise DeviceError(
                f"playback board needs edge.playback_file to be a BrainFlow recording; {playback_file} does not exist"
            )
        shim = brainflow_module()
        self._shim = shim
        self._board_name = board
        self._board_id = getattr(shim.BoardIds, BOARD_IDS[board]).value
        params = shim.BrainFlowInputParams()
        if serial_port:
            params.serial_port = serial_port
        description_id = self._board_id
        if board == "playback":
            params.file = str(playback_file)
            description_id = getattr(shim.BoardIds, BOARD_IDS[playback_board]).value
            params.master_board = description_id
        self._params = params
        self._analog_mode = analog_mode and board in ("cyton", "cyton_daisy")
        descr = shim.BoardShim.get_board_descr(description_id)
        eeg_rows = list(descr["eeg_channels"])
        names = descr.get("eeg_names", "").split(",") if descr.get("eeg_names") else []
        if len(names) != len(eeg_rows):
            names = [f"EEG{i + 1}" for i in range(len(eeg_rows))]
        types = ["eeg"] * len(eeg_rows)
        rows = list(eeg_rows)
        if self._analog_mode:
            analog = list(descr.get("analog_channels", []))
            rows += analog
            names += [f"AUX{i + 1}" for i in range(len(analog))]
            types += ["pulse"] + ["aux"] * (len(analog) - 1)
        self._rows = np.array(rows)
        self._timestamp_row = int(descr["timestamp_channel"])
        # The radio's packet counter (BrainFlow's package_num row), on boards where it counts packets.
        counted = playback_board if board == "playback" else board
        self.packet_counter: PacketCounter | None = BOARD_COUNTERS.get(counted)
        self._counter_row = int(descr["package_num_channel"])
        self.info = BoardInfo(
            board=descr.get("name", board),
            sample_rate_hz=float(descr["sampling_rate"]),
            channel_names=tuple(names),
            channel_types=tuple(types),
        )
        self._board = None

    def start(self) -> None:
        shim = self._shim
        board = shim.BoardShim(self._board_id, self._params)
        try:
            board.prepare_session()
            if self._analog_mode:
                board.config_board("/2")
            board.start_stream(45000 * 4)
        except shim.BrainFlowError as exc:
            try:
                board.release_session()
            except shim.BrainFlowError:
                pass
            where = self._params.serial_port or self._params.file or "the board"
            raise DeviceError(
                f"cannot start {self._board_name} on {where}: {exc}; check the dongle/port "
                "(edge.serial_port) and that no other program holds it"
            ) from None
        self._board = board
        log.info("%s streaming at %.0f Hz", self.info.board, self.info.sample_rate_hz)

    def read(self) -> EegChunk:
        if self._board is None:
            raise DeviceError(f"{self._board_name} read before start()")
        data = self._board.get_board_data()
        if data.shape[1] == 0:
            return empty_chunk(self.info.n_channels)
        samples = np.ascontiguousarray(data[self._rows].T, dtype=np.float32)
        times = (data[self._timestamp_row] * 1e6).astype(np.int64)
        return EegChunk(samples, times, counter=data[self._counter_row] if self.packet_counter else None)

    def stop(self) -> None:
        if self._board is None:
            return
        shim = self._shim
        try:
            self._board.stop_stream()
        except shim.BrainFlowError:
            pass
        try:
            self._board.release_session()
        except shim.BrainFlowError as exc:
            log.warning("releasing %s failed: %s", self._board_name, exc)
        self._board = None


class RadioLink(ContextSource):
    """Every sample of a board with a packet counter passes through here on its way to the runner:
    the samples the radio lost, found from the counter (devices/packets.py), are marked on the
    sample after them (``missing_before``). With ``packet_loss`` (fault injection,
    ``edge.simulation.packet_loss``) the link also loses packets itself, which are then found the
    same way as a real radio's."""

    def __init__(self, source: EegSource, counter: PacketCounter, packet_loss: float = 0.0, seed: int = 0) -> None:
        self._source = source
        self._counter = counter
        self._loss = packet_loss
        self._rng = np.random.default_rng(seed + 104729)
        self._state = CounterState()
        self._last_time_us: int | None = None
        self.info = source.info

    def start(self) -> None:
        self._state, self._last_time_us = CounterState(), None
        self._source.start()
        self.info = self._source.info

    def read(self) -> EegChunk:
        chunk = self._source.read()
        if chunk.counter is None or chunk.n_samples == 0:
            return chunk
        keep = drop_packets(chunk.n_samples, self._loss, self._rng)
        samples, times, counter = chunk.samples[keep], chunk.device_times_us[keep], chunk.counter[keep]
        if not len(times):
            return empty_chunk(self.info.n_channels)
        missing, self._state = samples_missing(counter, self._counter, self._state)
        # A silence of a whole counter period or more hides how many periods went by.
        previous = self._last_time_us if self._last_time_us is not None else int(times[0])
        silence_s = float(np.max(np.diff(np.concatenate([[previous], times])))) / 1e6
        if silence_s * self.info.sample_rate_hz >= self._counter.period:
            log.warning(
                "%s: no sample for %.2f s, as long as the packet counter's period: whole periods of "
                "lost samples cannot be counted",
                self.info.board,
                silence_s,
            )
        self._last_time_us = int(times[-1])
        return EegChunk(samples, times, counter, missing)

    def stop(self) -> None:
        self._source.stop()


SIMULATED_RADIO = ("simulated", "synthetic", "playback")


def make_eeg_source(
    settings: EdgeSettings,
    stimulus_at: StimulusAt | None = None,
    to_lab_us: Callable[[np.ndarray], np.ndarray] = lambda t: t,
) -> EegSource:
    source = _board_source(settings, stimulus_at, to_lab_us)
    if settings.lsl_markers:
        # Stimulus software's markers (PsychoPy over LSL) beside whatever board records the EEG.
        from edge_producers.devices.lsl import LslMarkers

        return LslMarkers(source, settings.lsl_markers, settings.lsl_timeout_s)
    return source


def _board_source(
    settings: EdgeSettings,
    stimulus_at: StimulusAt | None,
    to_lab_us: Callable[[np.ndarray], np.ndarray],
) -> EegSource:
    if settings.board == "lsl":
        from edge_producers.devices.lsl import LslSource

        return LslSource(settings.lsl_stream, settings.lsl_timeout_s)
    source: SimulatedHeadset | BrainFlowSource
    if settings.board == "simulated":
        source = SimulatedHeadset(settings, stimulus_at, to_lab_us=to_lab_us)
    else:
        source = BrainFlowSource(
            settings.board,
            serial_port=settings.serial_port,
            playback_file=settings.playback_file,
            playback_board=settings.playback_board,
            analog_mode=settings.analog_mode,
        )
    if source.packet_counter is None:
        return source
    # Injected losses only where no real radio is: a Cyton's own losses are counted, not made.
    loss = settings.simulation.packet_loss if settings.board in SIMULATED_RADIO else 0.0
    return RadioLink(source, source.packet_counter, loss, seed=settings.simulation.seed)
