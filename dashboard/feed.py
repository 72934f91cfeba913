"""The dashboard server's one Kafka reader: live sessions in memory, read by every browser session.

A background thread ``assign()``s the live topics from their latest offsets (``sessions`` from the
beginning, to know channel names), decodes, filters each session's EEG with the lake's stateful
filter, and keeps the last seconds per session in :class:`SessionBuffer`. Documents never touch
Kafka: they copy what is new since their cursor, so a slow page never blocks the reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ServiceError
from core.settings import Settings
from dsp.filters import FilterSpec, design_sos, filter_block
from dsp.heart import detect_beats
from dsp.labels import intervals_from_markers
from dsp.session import session_record_problem
from infra.kafka import LiveReader
from schemas.catalog import CAMERA_FRAMES, DEVICE_STATUS, EEG_RAW, MARKERS, PREDICTIONS, SENSORS_ENV, SESSIONS
from schemas.codec import eeg_block_device_times, eeg_block_samples

log = logging.getLogger(__name__)

LIVE_TOPICS = (EEG_RAW, PREDICTIONS, DEVICE_STATUS, SENSORS_ENV, CAMERA_FRAMES, MARKERS)


@dataclass
class SessionBuffer:
    session_id: str
    device_id: str
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    sample_rate_hz: float
    montage: str
    capacity: int
    sos: np.ndarray
    raw: np.ndarray = field(init=False)
    filtered: np.ndarray = field(init=False)
    seconds: np.ndarray = field(init=False)  # seconds since session start (sample index / rate)
    total: int = 0  # samples appended so far: documents' cursors count in these
    next_index: int | None = None
    zi: np.ndarray | None = None
    last_block_at: float = 0.0  # monotonic
    block_times: deque = field(default_factory=lambda: deque(maxlen=2000))  # (total after, kafka ms)
    predictions: deque = field(default_factory=lambda: deque(maxlen=500))
    markers: deque = field(default_factory=lambda: deque(maxlen=400))
    losses: deque = field(
        default_factory=lambda: deque(maxlen=1000)
    )  # (monotonic, samples lost)  # START/END rows for trial_intervals
    started_us: int = 0
    _bpm: tuple[float, float | None] = (0.0, None)  # (computed at, value): shared by every tab

    def __post_init__(self) -> None:
        n = len(self.channel_names)
        self.raw = np.empty((0, n), np.float32)
        self.filtered = np.empty((0, n), np.float32)
        self.seconds = np.empty(0)

    @property
    def eeg_columns(self) -> list[int]:
        return [i for i, t in enumerate(self.channel_types) if t == "eeg"]

    def append(self, first_index: int, samples: np.ndarray, last_sample_ms: float) -> None:
        if self.next_index is not None and first_index > self.next_index:
            self.losses.append((time.monotonic(), first_index - self.next_index))
        filtered, self.zi = filter_block(self.sos, self.zi, self.next_index, first_index, samples.astype(np.float64))
        seconds = (first_index + np.arange(len(samples))) / self.sample_rate_hz
        keep = self.capacity
        self.raw = np.concatenate([self.raw, samples])[-keep:]
        self.filtered = np.concatenate([self.filtered, filtered.astype(np.float32)])[-keep:]
        self.seconds = np.concatenate([self.seconds, seconds])[-keep:]
        self.total += len(samples)
        self.next_index = first_index + len(samples)
        self.last_block_at = time.monotonic()
        self.block_times.append((self.total, last_sample_ms))

    def since(self, cursor: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, bool]:
        """(new cursor, seconds, raw, filtered) appended after ``cursor``; ``reset`` when the cursor
        fell out of the buffer (the document then redraws everything it gets)."""
        new = self.total - cursor
        reset = cursor == 0 or new > len(self.seconds)
        take = len(self.seconds) if reset else new
        if take <= 0:
            return self.total, self.seconds[:0], self.raw[:0], self.filtered[:0], False
        return self.total, self.seconds[-take:], self.raw[-take:], self.filtered[-take:], reset

    def last_sample_ms_for(self, total: int) -> float | None:
        """Lab time (ms) of sample number ``total``, when it ended a block."""
        for after, last_sample_ms in reversed(self.block_times):
            if after == total:
                return last_sample_ms
            if after < total:
                return None
        return None

    def samples_lost_since(self, monotonic_s: float) -> int:
        """Samples missing from the sample index (lost blocks) that showed up after ``monotonic_s``."""
        return sum(count for at, count in self.losses if at >= monotonic_s)

    def trial_intervals(self) -> list[tuple[int, int, str]]:
        """The trials seen so far as (start_us, end_us, label), by gold's own marker rule."""
        if not self.markers:
            return []
        intervals = intervals_from_markers(pd.DataFrame(list(self.markers)))
        return list(zip(intervals["start_us"].tolist(), intervals["end_us"].tolist(), intervals["label"].tolist()))

    def heart_rate_bpm(self) -> float | None:
        """Median beat interval of the buffered pulse channel, recomputed at most every 2 s (every
        open tab asks once a second, under the feed's lock)."""
        computed_at, value = self._bpm
        if time.monotonic() - computed_at < 2.0:
            return value
        value = self._detect_bpm()
        self._bpm = (time.monotonic(), value)
        return value

    def _detect_bpm(self) -> float | None:
        pulse = [i for i, t in enumerate(self.channel_types) if t == "pulse"]
        if not pulse or len(self.raw) < 4 * self.sample_rate_hz:
            return None
        beats = detect_beats(self.raw[:, pulse[0]].astype(np.float64), self.sample_rate_hz)
        if len(beats) < 3:
            return None
        return float(60.0 * self.sample_rate_hz / np.median(np.diff(beats)))


@dataclass
class DeviceHealth:
    status: dict[str, Any] = field(default_factory=dict)
    sensors: dict[str, Any] = field(default_factory=dict)
    frame_jpeg: bytes | None = None
    frame_at: float = 0.0


class LiveFeed:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.sessions: dict[str, SessionBuffer] = {}
        self.session_records: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, DeviceHealth] = {}
        self.push_latencies_ms: deque = deque(maxlen=20_000)
        self.undecodable = 0
        self.unauthenticated = 0
        self.rejected = 0
        self.connection_error: str | None = None
        self._subscribers: list[Callable[[set[str]], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self.ready = threading.Event()

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def subscribe(self, on_arrival: Callable[[set[str]], None]) -> None:
        """``on_arrival(session_ids)`` is called on the feed's thread after new EEG for those sessions."""
        with self.lock:
            self._subscribers.append(on_arrival)

    def unsubscribe(self, on_arrival: Callable[[set[str]], None]) -> None:
        with self.lock:
            if on_arrival in self._subscribers:
                self._subscribers.remove(on_arrival)

    def live_sessions(self) -> list[str]:
        with self.lock:
            return sorted(self.sessions, key=lambda s: -self.sessions[s].last_block_at)

    def _buffer_for(self, record: dict[str, Any]) -> SessionBuffer | None:
        session_id = record["session_id"]
        buffer = self.sessions.get(session_id)
        if buffer is not None:
            return buffer
        meta = self.session_records.get(session_id)
        if meta is None:
            return None  # the session record comes first on a healthy edge; wait for it
        fs = float(meta["sample_rate_hz"])
        lake = self.settings.lake
        sos = design_sos(FilterSpec.at_rate(fs, lake.band_low_hz, lake.band_high_hz, lake.notch_hz))
        buffer = SessionBuffer(
            session_id,
            meta["device_id"],
            tuple(meta["channel_names"]),
            tuple(meta["channel_types"]),
            fs,
            meta.get("montage") or "standard_1020",
            int(self.settings.dashboard.window_s * fs * 1.2),
            sos,
            started_us=int(meta["started_us"]),
        )
        self.sessions[session_id] = buffer
        return buffer

    def _handle(self, topic: str, record: dict[str, Any], kafka_ms: int) -> None:
        if topic == SESSIONS:
            problem = session_record_problem(record)
            if problem is not None:
                raise ValueError(problem)
            self.session_records[record["session_id"]] = record
        elif topic == EEG_RAW:
            buffer = self._buffer_for(record)
            if buffer is not None and (buffer.next_index is None or record["first_sample_index"] >= buffer.next_index):
                last_us = int(eeg_block_device_times(record)[-1]) + int(record["clock_offset_us"])
                buffer.append(record["first_sample_index"], eeg_block_samples(record), last_us / 1000)
        elif topic == PREDICTIONS:
            buffer = self.sessions.get(record["session_id"])
            if buffer is not None:
                buffer.predictions.append(record)
        elif topic == MARKERS:
            buffer = self.sessions.get(record["session_id"])
            if buffer is not None and record["event"] in ("START", "END"):
                buffer.markers.append(
                    {
                        "session_id": record["session_id"],
                        "time_us": int(record["timestamp_us"]),
                        "event": record["event"],
                        "label": record["label"],
                        "trial": record.get("trial"),
                        "duration_s": record.get("duration_s"),
                    }
                )
        elif topic == DEVICE_STATUS:
            self.devices.setdefault(record["device_id"], DeviceHealth()).status = record
        elif topic == SENSORS_ENV:
            self.devices.setdefault(record["device_id"], DeviceHealth()).sensors = record
        elif topic == CAMERA_FRAMES:
            health = self.devices.setdefault(record["device_id"], DeviceHealth())
            health.frame_jpeg, health.frame_at = bytes(record["data"]), time.monotonic()

    def _run(self) -> None:
        with LiveReader(self.settings, "neurolake-dashboard", LIVE_TOPICS, logger_name="dashboard.rdkafka") as reader:
            while not self._stop.is_set():
                try:
                    reader.assign(timeout_s=5)
                    self.connection_error = None
                    break
                except ServiceError as exc:  # broker not up yet: the page says so and keeps trying
                    self.connection_error = str(exc)
                    log.warning("dashboard: %s; retrying", exc)
                    self._stop.wait(2)
            else:
                return
            self.ready.set()
            while not self._stop.is_set():
                arrived = reader.read(1000, timeout_s=0.05)
                if not arrived:
                    continue
                updated: set[str] = set()
                with self.lock:
                    # Bronze quarantines these; the page only counts them.
                    self.undecodable = reader.undecodable
                    self.unauthenticated = reader.unauthenticated
                    for item in arrived:
                        try:
                            self._handle(item.topic, item.record, item.timestamp_ms)
                            if item.topic == EEG_RAW:
                                updated.add(item.record["session_id"])
                        except Exception as exc:  # a record that contradicts its session: skip it
                            self.rejected += 1
                            if self.rejected <= 10 or self.rejected % 1000 == 0:
                                log.warning(
                                    "dashboard: %s record refused (%d so far): %s", item.topic, self.rejected, exc
                                )
                    subscribers = list(self._subscribers)
                if updated:
                    for on_arrival in subscribers:
                        on_arrival(updated)
