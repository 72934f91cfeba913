"""LSL in: record any Lab Streaming Layer stream through the edge, with the edge's guarantees.

``board = "lsl"`` makes an EEG source of the first LSL stream matching ``edge.lsl_stream`` (an LSL
predicate such as ``type='EEG'`` or ``name='ActiCHamp-1'``), for amplifiers that only speak LSL. With
``edge.lsl_markers``, whatever the board (BrainFlow, simulated or LSL), the runtime also records a
marker stream (PsychoPy, OpenSesame, Unity) as marker records that label gold windows exactly like
the built-in stimulus runner's: :class:`LslMarkers` wraps the EEG source. Stimulus software is
usually started after the recording, so the marker stream is looked for in the background and
taken when it appears (LSL delivers an inlet only what is sent after it opened).

Times: the inlets post-process with LSL's own clock synchronisation (``proc_clocksync``), so each
timestamp is on this machine's LSL clock; it becomes this machine's wall time here, and the edge's
clock probe then maps it to lab time like any board's.

Marker strings: ``START <label> [<duration_s>]`` opens a trial (its duration, or until the next
``END <label>``), ``END <label>`` closes it; anything else is an INSTANT marker with that text as its
label. Case does not matter.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from edge_producers.devices.eeg import BoardInfo, ContextSource, DeviceError, EegChunk, EegSource, empty_chunk

log = logging.getLogger(__name__)

_HZ = re.compile(r"(\d+(?:\.\d+)?)\s*hz", re.IGNORECASE)


@dataclass(frozen=True)
class MarkerEvent:
    event: str  # START, END or INSTANT
    label: str
    trial: int | None
    duration_s: float | None
    stimulus_hz: float | None


def parse_marker(text: str, last_trial: int) -> tuple[MarkerEvent, int]:
    """The marker record one LSL marker string stands for, and the trial counter after it."""
    words = text.strip().split()
    kind = words[0].upper() if words else ""
    if kind in ("START", "END") and len(words) >= 2:
        label = words[1]
        hz_match = _HZ.search(label)
        hz = float(hz_match.group(1)) if hz_match else None
        if kind == "START":
            duration = None
            if len(words) >= 3:
                try:
                    duration = float(words[2])
                except ValueError:
                    duration = None
            if duration is not None and not (duration > 0 and np.isfinite(duration)):
                duration = None
            return MarkerEvent("START", label, last_trial + 1, duration, hz), last_trial + 1
        return MarkerEvent("END", label, last_trial, None, hz), last_trial
    return MarkerEvent("INSTANT", text.strip()[:200] or "marker", None, None, None), last_trial


def _pylsl() -> ModuleType:
    try:
        import pylsl
    except ImportError:
        raise DeviceError("edge.board=lsl needs pylsl: install neurolake with the lsl extra") from None
    module: ModuleType = pylsl
    return module


def _wall_us(pylsl: ModuleType, stamps: list[float] | np.ndarray) -> np.ndarray:
    """LSL-clock timestamps (already clock-synchronised) as this machine's wall time."""
    shift: float = time.time() - pylsl.local_clock()
    return ((np.asarray(stamps, dtype=np.float64) + shift) * 1e6).astype(np.int64)


def _open_inlet(pylsl: ModuleType, info: Any, timeout_s: float) -> Any:  # pylsl ships no type hints
    # Clock-synchronised and dejittered by LSL itself: timestamps on this machine's LSL clock.
    inlet = pylsl.StreamInlet(info, max_buflen=60, processing_flags=pylsl.proc_clocksync | pylsl.proc_dejitter)
    inlet.open_stream(timeout=timeout_s)
    return inlet


class LslSource(ContextSource):
    def __init__(self, stream: str, timeout_s: float = 10.0) -> None:
        self._query, self._timeout_s = stream, timeout_s
        self._inlet: Any = None  # a pylsl.StreamInlet once started
        self.info = BoardInfo("lsl", 0.0, (), ())

    def start(self) -> None:
        pylsl = _pylsl()
        found = pylsl.resolve_bypred(self._query, 1, self._timeout_s)
        if not found:
            raise DeviceError(f"no LSL stream matches {self._query!r} within {self._timeout_s:.0f} s (edge.lsl_stream)")
        self._inlet = _open_inlet(pylsl, found[0], self._timeout_s)
        full = self._inlet.info(timeout=self._timeout_s)
        names, types = [], []
        channel = full.desc().child("channels").child("channel")
        while not channel.empty():
            names.append(channel.child_value("label"))
            types.append((channel.child_value("type") or "eeg").lower())
            channel = channel.next_sibling()
        count = full.channel_count()
        if len(names) != count or not all(names):
            names, types = [f"ch{i + 1}" for i in range(count)], ["eeg"] * count
        rate = full.nominal_srate()
        if not rate > 0:
            raise DeviceError(f"LSL stream {full.name()!r} has an irregular rate; an EEG source needs a nominal rate")
        self.info = BoardInfo(f"lsl:{full.name()}", float(rate), tuple(names), tuple(types), gain=1.0)

    def read(self) -> EegChunk:
        if self._inlet is None:
            raise DeviceError("LSL source read before start()")
        pylsl = _pylsl()
        try:
            samples, stamps = self._inlet.pull_chunk(timeout=0.0, max_samples=4096)
        except pylsl.LostError:
            raise DeviceError("the LSL stream was lost (its outlet closed)") from None
        if not stamps:
            return empty_chunk(self.info.n_channels)
        return EegChunk(np.asarray(samples, dtype=np.float32), _wall_us(pylsl, stamps))

    def stop(self) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
        self._inlet = None


class LslMarkers(ContextSource):
    """Any EEG source with an LSL marker stream recorded beside it (``edge.lsl_markers``).

    The marker stream is resolved in the background (a ``ContinuousResolver``), so the board starts
    at once and the markers of stimulus software started later are taken from when it appears; a
    marker stream that goes away is looked for again.
    """

    def __init__(self, source: EegSource, query: str, timeout_s: float = 10.0) -> None:
        self._source, self._query, self._timeout_s = source, query, timeout_s
        self._resolver: Any = None
        self._inlet: Any = None
        self._started = 0.0
        self._warned = False
        self.info = source.info

    def start(self) -> None:
        pylsl = _pylsl()
        self._source.start()
        self.info = self._source.info
        self._resolver = pylsl.ContinuousResolver(pred=self._query)
        self._started, self._warned = time.monotonic(), False

    def read(self) -> EegChunk:
        return self._source.read()

    def read_markers(self) -> list[tuple[int, str]]:
        """Marker strings that arrived since the last call, with their wall times (microseconds)."""
        pylsl = _pylsl()
        if self._inlet is None and not self._connect(pylsl):
            return []
        try:
            samples, stamps = self._inlet.pull_chunk(timeout=0.0)
        except pylsl.LostError:
            log.warning("LSL marker stream %r was lost; looking for it again", self._query)
            self._inlet.close_stream()
            self._inlet, self._started = None, time.monotonic()
            return []
        if not stamps:
            return []
        return [(int(t), str(s[0])) for s, t in zip(samples, _wall_us(pylsl, stamps))]

    def _connect(self, pylsl: ModuleType) -> bool:
        found = self._resolver.results() if self._resolver is not None else []
        if not found:
            if not self._warned and time.monotonic() - self._started > self._timeout_s:
                self._warned = True
                log.warning(
                    "no LSL marker stream matches %r yet (edge.lsl_markers); recording EEG without markers "
                    "until one appears",
                    self._query,
                )
            return False
        self._inlet = _open_inlet(pylsl, found[0], self._timeout_s)
        log.info("recording LSL markers from %r (%s)", found[0].name(), self._query)
        return True

    def stop(self) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
        self._inlet = self._resolver = None
        self._source.stop()
