"""The producer runtime: devices -> Avro records -> disk spool -> Kafka, nothing lost.

One process hosts one Pi's devices (``neurolake edge run``) or many simulated Pis
(``neurolake edge simulate``). Threads: the acquisition loop (this module; every device's logic
runs here, so devices need no locks), the Kafka sender, the control listener and the clock probe.
Commands from the control thread are queued and carried out by the acquisition loop.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from core import __version__
from core.errors import NeurolakeError
from core.settings import EdgeSettings, Settings, StimulusSettings
from dsp.simulation import headset_for
from edge_producers.clock import ClockProbe
from edge_producers.control import CommandRefused, ControlListener, apply_config
from edge_producers.devices.camera import Camera, make_camera
from edge_producers.devices.eeg import DeviceError, EegChunk, EegSource, make_eeg_source
from edge_producers.devices.lsl import parse_marker
from edge_producers.devices.sensors import RoomSensors, make_sensors
from edge_producers.host import HostMonitor
from edge_producers.presenter import StimulusPresenter
from edge_producers.spool import AckRefused, Spool
from edge_producers.stimulus import StimulusEvent, StimulusSchedule, Trial, stimulus_targets
from edge_producers.transport import KafkaSender
from schemas.catalog import (
    CAMERA_FRAMES,
    COMMAND_ACKS,
    CONTROL,
    DEVICE_LOGS,
    DEVICE_STATUS,
    EEG_RAW,
    MARKERS,
    SENSORS_ENV,
    SESSIONS,
)
from schemas.codec import AvroCodec, default_codec
from schemas.records import (
    camera_frame_record,
    control_record,
    device_log_record,
    device_status_record,
    eeg_block_record,
    marker_record,
    sensor_reading_record,
    session_record,
)
from schemas.signing import DeviceKey, Keyring, new_key, sign
from schemas.timebase import now_us

# The camera and the room sensors: optional devices the edge runs without when they fail to start.
OptionalDevice = TypeVar("OptionalDevice", Camera, RoomSensors)

log = logging.getLogger(__name__)
# Past a block's due time, so that its last sample is on the board when the loop reads.
BLOCK_WAKE_MARGIN_S = 0.0005

DEVICE_RETRY_S = 5.0
# How far ahead the presenter's page is told the schedule (it needs each trial before its cue).
PLAN_AHEAD_US = 10_000_000
# How long a closing session waits for the page's last frame (a few frames and a round trip).
PRESENTER_CLOSE_WAIT_S = 0.3

SourceFactory = Callable[..., EegSource]


def stimulus_metadata(stimulus: StimulusSettings) -> dict[str, str]:
    """The session's stimulus: ``stimulus.<label>`` = Hz for every target (the lake scores SSVEP at
    those frequencies and reads nothing else under that prefix), phases and layout beside it."""
    targets = stimulus_targets(stimulus)
    metadata = {f"stimulus.{t.label}": str(t.hz) for t in targets}
    metadata["stimulus_layout"] = stimulus.layout
    if any(t.phase for t in targets):
        metadata.update({f"stimulus_phase.{t.label}": f"{t.phase:.6f}" for t in targets})
    if stimulus.presenter:
        metadata["stimulus_markers"] = "frames"  # stamped from the frames the presenter's page drew
    return metadata


def new_session_id(device_id: str, at_us: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at_us / 1e6))
    return f"{device_id}-{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class DeviceCounters:
    samples: int = 0
    blocks: int = 0
    markers: int = 0
    frames: int = 0
    frames_refused: int = 0
    sensor_readings: int = 0
    commands: int = 0
    device_errors: int = 0
    # Samples the board's radio lost (from its packet counter), and counted in the heartbeat's losses.
    samples_lost: int = 0
    sessions: list[str] = field(default_factory=list)


class DeviceRunner:
    """One Pi's devices: EEG board, stimulus task, camera, room sensors. Not thread-safe by design:
    only the acquisition loop calls it."""

    def __init__(
        self,
        edge: EdgeSettings,
        spool: Spool,
        clock: ClockProbe,
        codec: AvroCodec | None = None,
        source_factory: SourceFactory = make_eeg_source,
        sender_stats: Callable[[], int] = lambda: 0,
        signing_key: DeviceKey | None = None,
        on_spooled: Callable[[], None] = lambda: None,
        presenter: StimulusPresenter | None = None,
        host: HostMonitor | None = None,
    ) -> None:
        self.edge = edge
        # The Pi's CPU, memory and temperature for the heartbeat (shared by a process's devices).
        self._host = host or HostMonitor()
        # With a presenter, stimulus markers come from the frames its page drew, not the timetable.
        self._presenter = presenter
        self._open_trials: dict[int, Trial] = {}
        # Every record leaves signed with the device's key, so the lake can tell it from a forgery.
        self.signing_key = signing_key or new_key(edge.device_id)
        self.spool = spool
        self.clock = clock
        self.codec = codec or default_codec()
        self._source_factory = source_factory
        self._sender_stats = sender_stats
        # Wakes the sender the moment a block is spooled: no polling delay on the live path.
        self._on_spooled = on_spooled
        self._last_sample_us: int | None = None
        self._source_trial = 0
        self._blocks_acquired = 0
        self.key = edge.device_id.encode()
        self.state = "STOPPED"
        self.session_id: str | None = None
        self.counters = DeviceCounters()
        self._source: EegSource | None = None
        self._camera: Camera | None = None
        self._sensors: RoomSensors | None = None
        self._schedule: StimulusSchedule | None = None
        self._pending = EegChunk(np.empty((0, 0), np.float32), np.empty(0, np.int64))
        self._sample_index = 0
        self._last_marker_check_us = 0
        self._next_frame_us = 0
        self._next_sensor_us = 0
        self._next_heartbeat_us = 0
        self._retry_at_us = 0
        self._message: str | None = None
        self._rate_window: tuple[int, int] = (0, 0)  # (time_us, samples) at the last heartbeat
        self._rate_hz = 0.0
        self.shutdown_requested = False

    # -- sessions ----------------------------------------------------------------------------

    def start_session(self) -> None:
        if self.streaming or self.state == "STARTING":
            return
        self.state = "STARTING"
        started = self.clock.estimate.to_lab(now_us())
        schedule = StimulusSchedule(self.edge.stimulus, started) if self.edge.stimulus.enabled else None
        offset = self.clock.estimate.offset_us
        try:
            source = self._source_factory(
                self.edge,
                stimulus_at=schedule.frequency_at if schedule else None,
                to_lab_us=lambda t: t + offset,
            )
            source.start()
        except DeviceError as exc:
            self._device_failed(str(exc))
            return
        # A missing camera or Sense HAT degrades the device; EEG goes on.
        problems: list[str] = []
        camera = self._start_optional(make_camera(self.edge.camera), "camera", problems)
        sensors = self._start_optional(
            make_sensors(self.edge.sensors.source, seed=self.edge.simulation.seed), "sensors", problems
        )
        self._source, self._camera, self._sensors, self._schedule = source, camera, sensors, schedule
        self.session_id = new_session_id(self.edge.device_id, started)
        self.counters.sessions.append(self.session_id)
        self._open_trials = {}
        if self._presenter is not None and schedule is not None:
            self._presenter.begin(self.session_id, schedule.targets)
        self._sample_index = 0
        self._pending = EegChunk(np.empty((0, source.info.n_channels), np.float32), np.empty(0, np.int64))
        self._last_marker_check_us = started
        self._next_frame_us = self._next_sensor_us = started
        self._rate_window = (now_us(), 0)
        self._publish_session(started)
        self.state = "DEGRADED" if problems else "STREAMING"
        self._message = "; ".join(problems) or None
        log.info(
            "%s: session %s started (%s, %.0f Hz, %d channels)",
            self.edge.device_id,
            self.session_id,
            source.info.board,
            source.info.sample_rate_hz,
            source.info.n_channels,
        )

    def _start_optional(self, device: OptionalDevice | None, name: str, problems: list[str]) -> OptionalDevice | None:
        if device is None:
            return None
        try:
            device.start()
        except DeviceError as exc:
            self.counters.device_errors += 1
            problems.append(f"{name}: {exc}")
            log.error("%s: %s unavailable, continuing without it: %s", self.edge.device_id, name, exc)
            return None
        return device

    @property
    def sample_rate_hz(self) -> float:
        return self._source.info.sample_rate_hz if self._source else headset_for(self.edge.simulation).sample_rate_hz

    @property
    def streaming(self) -> bool:
        return self.state in ("STREAMING", "DEGRADED")

    def stop_session(self, state: str = "STOPPED") -> None:
        if self._source is not None:
            try:
                self._drain_eeg(final=True)
            except DeviceError as exc:
                log.warning("%s: last read failed: %s", self.edge.device_id, exc)
            self._source.stop()
        for device in (self._camera, self._sensors):
            if device is not None:
                device.stop()
        if self._schedule is not None and self.session_id is not None:
            self._publish_markers(self.clock.estimate.to_lab(now_us()), closing=True)
        if self._presenter is not None:
            self._presenter.end()
        self._source = self._camera = self._sensors = self._schedule = None
        if self.session_id is not None:
            log.info("%s: session %s stopped", self.edge.device_id, self.session_id)
        self.state = state

    def _device_failed(self, reason: str) -> None:
        self.counters.device_errors += 1
        self.state = "ERROR"
        self._message = reason
        self._retry_at_us = now_us() + int(DEVICE_RETRY_S * 1e6)
        log.error("%s: %s (retrying in %.0f s)", self.edge.device_id, reason, DEVICE_RETRY_S)

    # -- the acquisition tick ----------------------------------------------------------------

    def tick(self) -> None:
        now = now_us()
        if self.state == "ERROR" and now >= self._retry_at_us:
            self.stop_session("ERROR")
            self.start_session()
        if self.streaming:
            try:
                self._drain_eeg(final=False)
            except DeviceError as exc:
                self.stop_session("ERROR")
                self._device_failed(str(exc))
            lab_now = self.clock.estimate.to_lab(now)
            if self._schedule is not None:
                self._publish_markers(lab_now)
            read_markers = getattr(self._source, "read_markers", None)
            if read_markers is not None:
                self._publish_source_markers(read_markers())
            if self._camera is not None and now >= self._next_frame_us:
                # Paced from the schedule, not from this tick (ticks come late by up to one): the
                # frame rate is edge.camera.fps. A camera more than a frame behind skips, never bursts.
                period = int(1e6 / self.edge.camera.fps)
                self._next_frame_us += period
                if self._next_frame_us <= now:
                    self._next_frame_us = now + period
                self._publish_frame()
            if self._sensors is not None and now >= self._next_sensor_us:
                self._next_sensor_us = now + int(1e6 / self.edge.sensors.rate_hz)
                self._publish_sensors()
        if now >= self._next_heartbeat_us:
            self._next_heartbeat_us = now + int(self.edge.heartbeat_s * 1e6)
            self.publish_status()

    def _drain_eeg(self, final: bool) -> None:
        assert self._source is not None
        chunk = self._source.read()
        if chunk.n_samples:
            self._last_sample_us = int(chunk.device_times_us[-1])
            missing = chunk.missing_before if chunk.missing_before is not None else np.zeros(chunk.n_samples, np.int64)
            self.counters.samples_lost += int(missing.sum())
            self._pending = EegChunk(
                np.concatenate([self._pending.samples, chunk.samples]),
                np.concatenate([self._pending.device_times_us, chunk.device_times_us]),
                missing_before=np.concatenate([self._pending_missing(), missing]),
            )
        size = self.edge.block_size
        samples, times, missing = self._pending.samples, self._pending.device_times_us, self._pending_missing()
        n = len(times)
        encoders = []
        start = 0
        while start < n:
            if missing[start]:
                # Samples the radio lost: the index moves on by them, so everything after keeps the
                # index (and the dejittered time) it would have had, and silver marks the gap.
                self._sample_index += int(missing[start])
                missing = missing.copy()
                missing[start] = 0
            losses = np.flatnonzero(missing[start + 1 : start + size]) + start + 1
            if losses.size:
                end = int(losses[0])  # a block never spans a loss: it ends short, complete
            elif start + size <= n:
                end = start + size
            elif final:
                end = n
            else:
                break
            self._blocks_acquired += 1
            drop_every = self.edge.simulation.drop_block_every if self.edge.board == "simulated" else 0
            if drop_every and self._blocks_acquired % drop_every == 0:
                # Fault injection (simulation.drop_block_every): this block is lost, its samples too.
                self._sample_index += end - start
            else:
                encoders.append(self._block_encoder(samples[start:end], times[start:end]))
            start = end
        if encoders:
            self.spool.append_many(EEG_RAW, self.key, encoders)
            self._on_spooled()
        self._pending = EegChunk(samples[start:], times[start:], missing_before=missing[start:])
        self.counters.blocks += len(encoders)

    def _pending_missing(self) -> np.ndarray:
        missing = self._pending.missing_before
        return missing if missing is not None else np.zeros(self._pending.n_samples, np.int64)

    def next_block_in_s(self, now: int) -> float | None:
        """Seconds until the board should hold the next block's last sample (None when not streaming):
        the acquisition loop wakes then, so a block leaves about when its last sample exists."""
        if not self.streaming or self._source is None or self._last_sample_us is None:
            return None
        missing = self.edge.block_size - self._pending.n_samples
        due_us = self._last_sample_us + missing * 1e6 / self._source.info.sample_rate_hz
        return max(0.0, (due_us - now) / 1e6)

    def next_frame_in_s(self, now: int) -> float | None:
        """Seconds until the camera's next frame is due (None without a camera or a session)."""
        if not self.streaming or self._camera is None:
            return None
        return max(0.0, (self._next_frame_us - now) / 1e6)

    def _block_encoder(self, samples: np.ndarray, times: np.ndarray) -> Callable[[int], bytes]:
        first = self._sample_index
        self._sample_index += len(samples)
        self.counters.samples += len(samples)
        estimate = self.clock.estimate
        assert self.session_id is not None
        record = eeg_block_record(
            device_id=self.edge.device_id,
            session_id=self.session_id,
            seq=0,
            first_sample_index=first,
            samples=samples,
            device_times_us=times,
            sample_rate_hz=self._source.info.sample_rate_hz if self._source else 0.0,
            produced_us=now_us(),
            clock_offset_us=estimate.offset_us,
            clock_rtt_us=estimate.rtt_us,
        )

        def encode(seq: int) -> bytes:
            record["seq"] = seq
            record["spool_epoch"] = self.spool.epoch
            return sign(self.codec.encode("eeg_block", record), EEG_RAW, self.signing_key)

        return encode

    def _spool_record(
        self, topic: str, record_type: str, record: dict[str, Any], key: bytes | None = None
    ) -> int | None:
        def encode(seq: int) -> bytes:
            record["seq"] = seq
            record["spool_epoch"] = self.spool.epoch
            return sign(self.codec.encode(record_type, record), topic, self.signing_key)

        return self.spool.append(topic, key if key is not None else self.key, encode)

    def _publish_session(self, started_us: int) -> None:
        assert self._source is not None and self.session_id is not None
        info = self._source.info
        stimulus = self.edge.stimulus
        record = session_record(
            device_id=self.edge.device_id,
            session_id=self.session_id,
            started_us=started_us,
            board=info.board,
            sample_rate_hz=info.sample_rate_hz,
            channel_names=list(info.channel_names),
            channel_types=list(info.channel_types),
            units=info.units,
            gain=info.gain,
            montage=self.edge.montage,
            block_size=self.edge.block_size,
            subject_id=self.edge.subject_id,
            task=self.edge.task or ("ssvep" if stimulus.enabled else None),
            software_version=__version__,
            metadata=stimulus_metadata(stimulus) if stimulus.enabled else {},
        )
        self._spool_record(SESSIONS, "session", record, key=self.session_id.encode())

    def _publish_markers(self, lab_now_us: int, closing: bool = False) -> None:
        assert self._schedule is not None
        if self._presenter is not None:
            # Stamped from the frames the page drew; the page learns the coming trials here.
            if not closing:
                self._presenter.plan(self._schedule.upcoming(lab_now_us, lab_now_us + PLAN_AHEAD_US))
            events = self._presenter.take_events()
        else:
            events = self._schedule.events_between(self._last_marker_check_us, lab_now_us)
            self._last_marker_check_us = lab_now_us
        for event in events:
            self._publish_stimulus_event(event)
        if closing:
            if self._presenter is not None:
                # The page stops the flicker on its next frame: that frame is the END, when it comes.
                for event in self._presenter.end(wait_s=PRESENTER_CLOSE_WAIT_S if self._open_trials else 0.0):
                    self._publish_stimulus_event(event)
            # A trial cut short by the end of the session still gets its END marker.
            for trial in list(self._open_trials.values()):
                self._publish_stimulus_event(StimulusEvent(max(lab_now_us, trial.start_us), "END", trial))

    def _publish_stimulus_event(self, event: StimulusEvent) -> None:
        trial = event.trial
        if event.event == "START":
            self._open_trials[trial.trial] = trial
        elif self._open_trials.pop(trial.trial, None) is None:
            return  # an END without its START (a trial the display skipped or already closed)
        record = marker_record(
            device_id=self.edge.device_id,
            session_id=self.session_id or "",
            timestamp_us=event.time_us,
            event=event.event,
            label=trial.label,
            trial=trial.trial,
            stimulus_hz=trial.hz,
            # The presenter's page knows the whole frames it shows; a timetable, its plan.
            duration_s=(event.duration_us if event.duration_us is not None else trial.end_us - trial.start_us) / 1e6,
        )
        self._spool_record(MARKERS, "marker", record, key=(self.session_id or "").encode())
        self.counters.markers += 1

    def _publish_source_markers(self, markers: list[tuple[int, str]]) -> None:
        """Markers a source brings with it (an LSL marker stream), in lab time."""
        for device_us, text in markers:
            event, self._source_trial = parse_marker(text, self._source_trial)
            record = marker_record(
                device_id=self.edge.device_id,
                session_id=self.session_id or "",
                timestamp_us=self.clock.estimate.to_lab(device_us),
                event=event.event,
                label=event.label,
                trial=event.trial,
                stimulus_hz=event.stimulus_hz,
                duration_s=event.duration_s,
            )
            self._spool_record(MARKERS, "marker", record, key=(self.session_id or "").encode())
            self.counters.markers += 1

    def _publish_frame(self) -> None:
        assert self._camera is not None
        if self.session_id is None:  # the session ended in this tick (a device error): frames need one
            return
        try:
            frame = self._camera.capture()
        except DeviceError as exc:
            self.counters.frames_refused += 1
            log.warning("%s: camera capture failed: %s", self.edge.device_id, exc)
            return
        if len(frame.jpeg) > self.edge.camera.max_frame_bytes:
            self.counters.frames_refused += 1
            log.warning(
                "%s: refused a %d-byte frame (edge.camera.max_frame_bytes=%d); lower "
                "edge.camera.width/height or jpeg_quality; %d refused so far",
                self.edge.device_id,
                len(frame.jpeg),
                self.edge.camera.max_frame_bytes,
                self.counters.frames_refused,
            )
            return
        self._spool_record(
            CAMERA_FRAMES,
            "camera_frame",
            camera_frame_record(
                device_id=self.edge.device_id,
                session_id=self.session_id,
                frame_index=self.counters.frames,
                captured_us=frame.captured_us,
                clock_offset_us=self.clock.estimate.offset_us,
                width=frame.width,
                height=frame.height,
                data=frame.jpeg,
            ),
        )
        self.counters.frames += 1

    def _publish_sensors(self) -> None:
        assert self._sensors is not None
        if self.session_id is None:  # as for frames: a reading belongs to a session
            return
        try:
            values = self._sensors.read()
        except (DeviceError, OSError) as exc:
            log.warning("%s: sensor read failed: %s", self.edge.device_id, exc)
            return
        self._spool_record(
            SENSORS_ENV,
            "sensor_reading",
            sensor_reading_record(
                device_id=self.edge.device_id,
                session_id=self.session_id,
                measured_us=now_us(),
                clock_offset_us=self.clock.estimate.offset_us,
                sensor=self._sensors.name,
                values=values,
            ),
        )
        self.counters.sensor_readings += 1

    def publish_status(self) -> None:
        now = now_us()
        then, samples_then = self._rate_window
        if now > then:
            self._rate_hz = (self.counters.samples - samples_then) * 1e6 / (now - then)
        self._rate_window = (now, self.counters.samples)
        stats = self.spool.stats()
        estimate = self.clock.estimate
        vitals = self._host.sample()
        message = self._message
        if self._presenter is not None and self.streaming and not self._presenter.status().connected:
            message = "; ".join(filter(None, [message, f"stimulus page not open: open {self._presenter.url}"]))
        self._spool_record(
            DEVICE_STATUS,
            "device_status",
            device_status_record(
                device_id=self.edge.device_id,
                session_id=self.session_id,
                timestamp_us=now,
                state=self.state,
                spool_depth=stats.records,
                spool_bytes=stats.bytes,
                records_sent=self._sender_stats(),
                losses=stats.losses + self.counters.samples_lost,
                clock_offset_us=estimate.offset_us,
                clock_rtt_us=estimate.rtt_us,
                sample_rate_hz=round(self._rate_hz, 3),
                message=message,
                cpu_pct=vitals.cpu_pct,
                memory_pct=vitals.memory_pct,
                soc_temperature_c=vitals.soc_temperature_c,
            ),
        )

    # -- commands ----------------------------------------------------------------------------

    def handle(self, command: dict[str, Any]) -> tuple[bool, str]:
        kind = command["kind"]
        self.counters.commands += 1
        if kind == "START":
            self.start_session()
            return self.streaming, f"state {self.state}"
        if kind == "STOP":
            self.stop_session()
            return True, "stopped"
        if kind == "RESTART":
            self.stop_session()
            self.start_session()
            return self.streaming, f"restarted, state {self.state}"
        if kind == "SHUTDOWN":
            if command.get("device_id") != self.edge.device_id:
                return False, "SHUTDOWN must name this device (not '*')"
            if not self.edge.allow_remote_shutdown:
                return False, "SHUTDOWN refused: edge.allow_remote_shutdown is false in this Pi's settings"
            self.stop_session("SHUTTING_DOWN")
            self.shutdown_requested = True
            return True, "shutting down"
        if kind == "SET_CONFIG":
            try:
                updated = apply_config(self.edge, command.get("config") or {})
            except CommandRefused as exc:
                return False, str(exc)
            restart = updated.stimulus != self.edge.stimulus and self.streaming
            self.edge = updated
            if restart:
                self.stop_session()
                self.start_session()
            return True, "applied " + ", ".join(sorted(command["config"]))
        return False, f"unknown command {kind}"

    def summary(self) -> dict[str, Any]:
        stats = self.spool.stats()
        return {
            "device_id": self.edge.device_id,
            "state": self.state,
            "sessions": list(self.counters.sessions),
            "samples": self.counters.samples,
            "blocks": self.counters.blocks,
            "markers": self.counters.markers,
            "frames": self.counters.frames,
            "frames_refused": self.counters.frames_refused,
            "sensor_readings": self.counters.sensor_readings,
            "device_errors": self.counters.device_errors,
            "samples_lost": self.counters.samples_lost,
            "next_seq": {t: self.spool.next_seq(t) for t in (EEG_RAW, MARKERS, DEVICE_STATUS)},
            "spool": stats.__dict__,
            **({"presenter": self._presenter.status().__dict__} if self._presenter is not None else {}),
        }


class SpoolLogHandler(logging.Handler):
    """Ships this process's edge log lines on ``devices.logs`` through the spool (so they survive
    being offline). Records without a ``device_id`` attribute go to the first device."""

    def __init__(self, runners: dict[str, DeviceRunner], level: int = logging.INFO) -> None:
        super().__init__(level)
        self._runners = runners
        self._guard = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._guard, "busy", False) or not self._runners:
            return
        self._guard.busy = True
        try:
            device_id = getattr(record, "device_id", None) or next(iter(self._runners))
            runner = self._runners.get(device_id)
            if runner is None:
                return
            runner._spool_record(
                DEVICE_LOGS,
                "device_log",
                device_log_record(
                    device_id=device_id,
                    session_id=runner.session_id,
                    timestamp_us=int(record.created * 1e6),
                    level=record.levelname,
                    logger=record.name,
                    message=record.getMessage(),
                ),
            )
        except Exception:  # logging must never take the producer down
            pass
        finally:
            self._guard.busy = False


class EdgeRuntime:
    """Runs devices until the duration ends, a stop is requested, or every device shut down."""

    def __init__(
        self,
        settings: Settings,
        devices: list[EdgeSettings],
        source_factory: SourceFactory = make_eeg_source,
        ship_logs: bool = True,
    ) -> None:
        if not devices:
            raise ValueError("EdgeRuntime needs at least one device")
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError(f"device ids must be unique, got {ids}")
        self.settings = settings
        self.codec = default_codec()
        self.started_us = now_us()
        self.clock = ClockProbe(
            settings.clock.host,
            settings.clock.port,
            settings.clock.probe_interval_s,
            settings.clock.probes_per_round,
            settings.clock.probe_timeout_s,
            max_offset_us=int(settings.clock.max_offset_s * 1e6),
        )
        first = devices[0]
        self.sender = KafkaSender(
            # A block goes out as soon as it is handed over (edge.linger_ms, 1 ms by default).
            {**settings.kafka.producer_config(), "linger.ms": first.linger_ms},
            stall_timeout_s=first.stall_timeout_s,
            reconnect_backoff_max_s=first.reconnect_backoff_max_s,
            resend_unacked_after_outage=first.resend_unacked_after_outage,
        )
        self.keyring = Keyring(settings.security.keyring)
        missing = [d.device_id for d in devices if self.keyring.active_key(d.device_id) is None]
        if missing:
            raise NeurolakeError(
                f"no key for device(s) {', '.join(missing)} in {settings.security.keyring}: the lake "
                "refuses unsigned records. On a Pi run `neurolake edge setup` (it makes the key and prints "
                "how to register it on the hub); on the hub, `neurolake keys add DEVICE`"
            )
        shown = [d for d in devices if d.stimulus.enabled and d.stimulus.presenter]
        if len(shown) > 1:
            raise NeurolakeError(
                f"edge.stimulus.presenter is on for {len(shown)} devices; one stimulus monitor serves one "
                "device: turn it on for one"
            )
        # The page on the stimulus monitor; markers of that device come from the frames it drew.
        self.presenter = StimulusPresenter(shown[0].stimulus, lambda: self.clock.estimate) if shown else None
        self.runners: dict[str, DeviceRunner] = {}
        host = HostMonitor()
        for edge in devices:
            spool = Spool(
                edge.spool.directory / f"{edge.device_id}.sqlite",
                edge.spool.max_bytes,
                edge.spool.when_full,
                edge.spool.synchronous,
            )
            self.runners[edge.device_id] = DeviceRunner(
                edge,
                spool,
                self.clock,
                self.codec,
                source_factory,
                sender_stats=functools.partial(self.sender.sent_count, edge.device_id),
                on_spooled=self.sender.notify if edge.tick_ms == 0 else (lambda: None),
                signing_key=self.keyring.active_key(edge.device_id),
                presenter=self.presenter if shown and edge is shown[0] else None,
                host=host,
            )
            self.sender.add_device(edge.device_id, spool)
        self._commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self.control = ControlListener(
            settings.kafka.client_config(),
            CONTROL,
            self.codec,
            self._on_control,
            not_before_us=self.started_us - 1_000_000,
            keyring=self.keyring,
            devices=set(self.runners),
            max_age_us=int(settings.security.control_max_age_s * 1e6),
        )
        self._ship_logs = ship_logs
        self._log_handler: SpoolLogHandler | None = None
        self._stop = threading.Event()
        self._sender_thread = threading.Thread(target=self._send_loop, name="kafka-sender", daemon=True)
        self.acks_applied = 0

    # control thread -> queue -> acquisition loop
    def _on_control(self, record: dict[str, Any]) -> None:
        if record["kind"] == "SPOOL_ACK":
            runner = self.runners.get(record["device_id"])
            if runner is not None and record.get("acked_topic") and record.get("acked_seq") is not None:
                try:
                    runner.spool.acknowledge(record["acked_topic"], record["acked_seq"], record.get("acked_epoch"))
                    self.acks_applied += 1
                except AckRefused as exc:
                    self.control.refused += 1
                    log.warning("%s: spool ack refused: %s", runner.edge.device_id, exc)
            return
        if record["kind"] == "COMMAND_ACK":
            return
        self._commands.put(record)

    def _carry_out(self, command: dict[str, Any]) -> None:
        # Commands are signed per device (the listener refuses anything else): never a broadcast.
        targets = [self.runners[command["device_id"]]] if command["device_id"] in self.runners else []
        for runner in targets:
            ok, message = runner.handle(command)
            log.info("%s: %s %s: %s", runner.edge.device_id, command["kind"], "done" if ok else "refused", message)
            # Acks are not spooled: the send time is their seq.
            ack = control_record(
                device_id=runner.edge.device_id,
                session_id=runner.session_id,
                kind="COMMAND_ACK",
                sender=runner.edge.device_id,
                issued_us=now_us(),
                in_reply_to=command["command_id"],
                ok=ok,
                message=message,
            )
            self.sender.send_now(
                COMMAND_ACKS, runner.key, sign(self.codec.encode("control", ack), COMMAND_ACKS, runner.signing_key)
            )

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            handed = self.sender.pump(0.0)
            if not handed:
                # Woken at once when a block is spooled; the timeout serves delivery reports.
                self.sender.wait_for_work(0.005)

    def __enter__(self) -> EdgeRuntime:
        if self.presenter is not None:
            try:
                self.presenter.start()
            except DeviceError as exc:
                raise NeurolakeError(str(exc)) from None
        self.clock.start()
        self.clock.probe_round()
        self.control.start()
        self._sender_thread.start()
        if self._ship_logs:
            self._log_handler = SpoolLogHandler(self.runners)
            logging.getLogger("edge_producers").addHandler(self._log_handler)
        for runner in self.runners.values():
            runner.start_session()
        return self

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> None:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        # Each device is ticked when its next block should be complete (its last sample just on the
        # board), and at least every half block (10-50 ms) for markers, frames, sensors and
        # heartbeats; a wake-up ticks only the devices that are due, so many headsets in one
        # process cost what they did with a fixed tick.
        tick_s = min(r.edge.block_size / r.sample_rate_hz for r in self.runners.values()) / 2
        tick_s = min(max(tick_s, 0.01), 0.05)
        fixed_tick_ms = max(r.edge.tick_ms for r in self.runners.values())
        if fixed_tick_ms:
            tick_s = fixed_tick_ms / 1000
        due = dict.fromkeys(self.runners, 0.0)  # device -> monotonic time of its next tick
        while not (stop is not None and stop.is_set()):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            while not self._commands.empty():
                self._carry_out(self._commands.get_nowait())
                due = dict.fromkeys(self.runners, 0.0)  # a command may start or stop sessions
            wall = now_us()
            for device_id, runner in self.runners.items():
                if due[device_id] > now:
                    continue
                runner.tick()
                block_in = None if fixed_tick_ms else runner.next_block_in_s(wall)
                if block_in is not None and block_in <= 0:
                    # Overdue yet not read: this board hands samples over later than it stamps them.
                    block_in = 1.0 / runner.sample_rate_hz
                wake = tick_s if block_in is None else min(tick_s, block_in + BLOCK_WAKE_MARGIN_S)
                frame_in = None if fixed_tick_ms else runner.next_frame_in_s(wall)
                if frame_in is not None:
                    wake = min(wake, frame_in)  # a 24 fps camera needs a tick every 42 ms, on time
                due[device_id] = now + wake
            if all(r.shutdown_requested for r in self.runners.values()):
                log.info("every device shut down on command")
                break
            time.sleep(max(0.0, min(due.values()) - time.monotonic()))

    def __exit__(self, *exc: object) -> None:
        for runner in self.runners.values():
            if runner.state != "SHUTTING_DOWN":
                runner.stop_session()
            runner.publish_status()
        if self._log_handler is not None:
            logging.getLogger("edge_producers").removeHandler(self._log_handler)
        # Give the sender a bounded chance to deliver the tail; the spool keeps the rest.
        self._stop.set()
        self._sender_thread.join(timeout=5)
        remaining = self.sender.flush(timeout_s=10)
        if remaining:
            log.warning("%d records not yet delivered; they stay in the spool", remaining)
        self.control.stop()
        self.clock.stop()
        if self.presenter is not None:
            self.presenter.stop()
        for runner in self.runners.values():
            runner.spool.close()

    def summary(self) -> dict[str, Any]:
        transport = self.sender.stats()
        return {
            "devices": [runner.summary() for runner in self.runners.values()],
            "transport": transport.__dict__,
            "control_refused": self.control.refused,
            "control_failures": self.control.failures,
            "acks_applied": self.acks_applied,
        }
