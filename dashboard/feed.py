"""The dashboard server's one Kafka reader: live sessions and the fleet in memory, read by every
browser session, and the one sender of the dashboard's signed commands.

A background thread ``assign()``s the live topics from their latest offsets (``sessions`` from the
beginning, to know channel names), decodes, and keeps the last seconds of each session's raw EEG
in :class:`SessionBuffer` (every tab filters for itself, with its own controls); per device it keeps
the newest heartbeat, camera frame, room sensor readings and log lines, and it matches the devices'
signed acks to the commands this server sent. Documents never touch Kafka: they copy what is new
since their cursor, so a slow page never blocks the reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ServiceError
from core.settings import Settings
from dashboard.views import beats_and_bpm
from dsp.labels import intervals_from_markers
from dsp.session import session_record_problem
from infra.commands import CommandSender, SignedCommand, is_ack_of
from infra.kafka import LiveReader
from schemas.catalog import (
    CAMERA_FRAMES,
    COMMAND_ACKS,
    DEVICE_LOGS,
    DEVICE_STATUS,
    EEG_RAW,
    MARKERS,
    PREDICTIONS,
    SENSORS_ENV,
    SESSIONS,
)
from schemas.codec import eeg_block_device_times, eeg_block_samples

log = logging.getLogger(__name__)

LIVE_TOPICS = (EEG_RAW, PREDICTIONS, DEVICE_STATUS, SENSORS_ENV, CAMERA_FRAMES, MARKERS, DEVICE_LOGS, COMMAND_ACKS)
LOG_LINES_KEPT = 1000
COMMANDS_KEPT = 500


@dataclass
class SessionBuffer:
    session_id: str
    device_id: str
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    sample_rate_hz: float
    montage: str
    capacity: int
    raw: np.ndarray = field(init=False)
    indices: np.ndarray = field(init=False)  # each sample's index in the session (gaps where lost)
    total: int = 0  # samples appended so far: documents' cursors count in these
    next_index: int | None = None
    last_block_at: float = 0.0  # monotonic
    block_times: deque = field(default_factory=lambda: deque(maxlen=2000))  # (total after, kafka ms)
    predictions: deque = field(default_factory=lambda: deque(maxlen=500))
    markers: deque = field(default_factory=lambda: deque(maxlen=400))  # START/END rows for trial_intervals
    losses: deque = field(default_factory=lambda: deque(maxlen=1000))  # (monotonic, samples lost)
    started_us: int = 0
    _bpm: tuple[float, float | None] = (0.0, None)  # (computed at, value): shared by every tab
    _trials: tuple[Any, list[tuple[int, int, str]]] = (None, [])  # (markers seen, their trials)

    def __post_init__(self) -> None:
        self.raw = np.empty((0, len(self.channel_names)), np.float32)
        self.indices = np.empty(0, np.int64)

    @property
    def eeg_columns(self) -> list[int]:
        return [i for i, t in enumerate(self.channel_types) if t == "eeg"]

    @property
    def pulse_column(self) -> int | None:
        return next((i for i, t in enumerate(self.channel_types) if t == "pulse"), None)

    @property
    def seconds(self) -> np.ndarray:
        """Seconds since the session started (sample index / the session's own rate)."""
        return self.indices / self.sample_rate_hz

    def append(self, first_index: int, samples: np.ndarray, last_sample_ms: float) -> None:
        if self.next_index is not None and first_index > self.next_index:
            self.losses.append((time.monotonic(), first_index - self.next_index))
        keep = self.capacity
        self.raw = np.concatenate([self.raw, samples])[-keep:]
        self.indices = np.concatenate([self.indices, first_index + np.arange(len(samples))])[-keep:]
        self.total += len(samples)
        self.next_index = first_index + len(samples)
        self.last_block_at = time.monotonic()
        self.block_times.append((self.total, last_sample_ms))

    def since(self, cursor: int) -> tuple[int, np.ndarray, np.ndarray, bool]:
        """(new cursor, sample indices, raw samples) appended after ``cursor``; ``reset`` when the
        cursor fell out of the buffer (the document then redraws everything it gets)."""
        new = self.total - cursor
        reset = cursor == 0 or new > len(self.indices)
        take = len(self.indices) if reset else new
        if take <= 0:
            return self.total, self.indices[:0], self.raw[:0], False
        return self.total, self.indices[-take:], self.raw[-take:], reset

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
        """The trials seen so far as (start_us, end_us, label), by gold's own marker rule; worked
        out again only when a marker came (every open tab asks once a second, under the feed's
        lock, and the rule costs a pandas frame)."""
        if not self.markers:
            return []
        seen = (len(self.markers), self.markers[-1]["time_us"], self.markers[0]["time_us"])
        if self._trials[0] != seen:
            intervals = intervals_from_markers(pd.DataFrame(list(self.markers)))
            trials = zip(intervals["start_us"].tolist(), intervals["end_us"].tolist(), intervals["label"].tolist())
            self._trials = (seen, list(trials))
        return list(self._trials[1])

    def heart_rate_bpm(self) -> float | None:
        """Median beat interval of the buffered pulse channel, recomputed at most every 2 s (every
        open tab asks once a second, under the feed's lock)."""
        computed_at, value = self._bpm
        if time.monotonic() - computed_at < 2.0:
            return value
        pulse = self.pulse_column
        value = None if pulse is None else beats_and_bpm(self.raw[:, pulse], self.sample_rate_hz)[1]
        self._bpm = (time.monotonic(), value)
        return value


@dataclass
class CameraFrame:
    session_id: str
    frame_index: int
    width: int
    height: int
    encoding: str
    data: bytes
    received_at: float  # monotonic


@dataclass
class DeviceHealth:
    status: dict[str, Any] = field(default_factory=dict)
    status_at: float | None = None  # monotonic, when the newest heartbeat arrived
    sensors: dict[str, Any] = field(default_factory=dict)
    sensor_history: deque = field(default_factory=deque)  # readings, oldest first
    frame: CameraFrame | None = None
    frames_received: int = 0
    frame_times: deque = field(default_factory=lambda: deque(maxlen=120))  # monotonic arrivals
    logs: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT))

    def camera_fps(self, over_s: float = 3.0) -> float | None:
        """Frames arrived per second over the last ``over_s`` (None with fewer than two)."""
        recent = [t for t in self.frame_times if t >= time.monotonic() - over_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])


@dataclass
class CommandStatus:
    command: SignedCommand
    sent_at: float  # monotonic
    ack: dict[str, Any] | None = None
    ack_after_s: float | None = None
    error: str | None = None


class LiveFeed:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.sessions: dict[str, SessionBuffer] = {}
        self.session_records: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, DeviceHealth] = {}
        self.commands: OrderedDict[str, CommandStatus] = OrderedDict()
        self.push_latencies_ms: deque = deque(maxlen=20_000)
        self.undecodable = 0
        self.unauthenticated = 0
        self.rejected = 0
        self.connection_error: str | None = None
        self._subscribers: list[Callable[[set[str]], None]] = []
        self._sender: CommandSender | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self.ready = threading.Event()

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._sender is not None:
            self._sender.flush(5)

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

    def newest_session_of(self, device_id: str) -> str | None:
        """The device's latest session with data here (a restarted device's new one). Call under
        ``lock``."""
        mine = [b for b in self.sessions.values() if b.device_id == device_id]
        return max(mine, key=lambda b: (b.started_us, b.last_block_at)).session_id if mine else None

    # --- commands ----------------------------------------------------------------------------
    def send_command(self, device_id: str, kind: str, config: Mapping[str, str] | None = None) -> CommandStatus:
        """Send one hub-signed command (infra/commands.py: the CLI's path); its device's signed
        ack is matched when it arrives. Raises NeurolakeError when it cannot be signed."""
        with self.lock:
            if self._sender is None:
                self._sender = CommandSender(self.settings, "hub-dashboard", on_failed=self._command_failed)
            sender = self._sender
        command = sender.send(device_id, kind, config)
        status = CommandStatus(command, time.monotonic())
        with self.lock:
            self.commands[command.command_id] = status
            while len(self.commands) > COMMANDS_KEPT:
                self.commands.popitem(last=False)
        return status

    def _command_failed(self, command: SignedCommand, reason: str) -> None:
        with self.lock:
            status = self.commands.get(command.command_id)
            if status is not None:
                status.error = reason

    # --- records -----------------------------------------------------------------------------
    def _buffer_for(self, record: dict[str, Any]) -> SessionBuffer | None:
        session_id = record["session_id"]
        buffer = self.sessions.get(session_id)
        if buffer is not None:
            return buffer
        meta = self.session_records.get(session_id)
        if meta is None:
            return None  # the session record comes first on a healthy edge; wait for it
        fs = float(meta["sample_rate_hz"])
        buffer = SessionBuffer(
            session_id,
            meta["device_id"],
            tuple(meta["channel_names"]),
            tuple(meta["channel_types"]),
            fs,
            meta.get("montage") or "standard_1020",
            int(self.settings.dashboard.window_s * fs * 1.2),
            started_us=int(meta["started_us"]),
        )
        self.sessions[session_id] = buffer
        return buffer

    def _device(self, device_id: str) -> DeviceHealth:
        return self.devices.setdefault(device_id, DeviceHealth())

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
            health = self._device(record["device_id"])
            health.status, health.status_at = record, time.monotonic()
        elif topic == SENSORS_ENV:
            health = self._device(record["device_id"])
            health.sensors = record
            health.sensor_history.append(record)
            # Kept by the readings' own (device) time: a fast sensor keeps as many seconds as a slow one.
            horizon = int(record["measured_us"]) - int(self.settings.dashboard.sensor_history_s * 1e6)
            while health.sensor_history and int(health.sensor_history[0]["measured_us"]) < horizon:
                health.sensor_history.popleft()
        elif topic == CAMERA_FRAMES:
            health = self._device(record["device_id"])
            health.frame = CameraFrame(
                record["session_id"],
                int(record["frame_index"]),
                int(record["width"]),
                int(record["height"]),
                record.get("encoding") or "JPEG",
                bytes(record["data"]),
                time.monotonic(),
            )
            health.frames_received += 1
            health.frame_times.append(health.frame.received_at)
        elif topic == DEVICE_LOGS:
            self._device(record["device_id"]).logs.append(record)
        elif topic == COMMAND_ACKS:
            # The reader checked the device's signature and that it names its own device.
            status = self.commands.get(record.get("in_reply_to") or "")
            if status is not None and status.ack is None and is_ack_of(record, status.command, record["device_id"]):
                status.ack, status.ack_after_s = record, time.monotonic() - status.sent_at

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
                if self._sender is not None:
                    self._sender.poll(0)  # delivery reports of the commands sent
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
