"""Typed builders for the records more than one place creates: each record is spelled once.

The field names and the control kinds come from the .avsc files (the only source of truth); a
builder takes typed keyword arguments, fills the schema's defaults and refuses what the schema
would refuse, naming the field, before anything reaches a spool or a topic.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import numpy as np

from schemas.codec import SCHEMA_DIR, samples_to_bytes, times_to_bytes


def _enum_symbols(record_type: str, field: str) -> frozenset[str]:
    schema = json.loads((SCHEMA_DIR / f"{record_type}.avsc").read_text())
    [spec] = [f for f in schema["fields"] if f["name"] == field]
    return frozenset(spec["type"]["symbols"])


def record_fields(record_type: str) -> tuple[str, ...]:
    """The field names of ``record_type`` in schema order, from its .avsc."""
    schema = json.loads((SCHEMA_DIR / f"{record_type}.avsc").read_text())
    return tuple(field["name"] for field in schema["fields"])


# What a marker says, without its delivery bookkeeping (the spool epoch): the columns markers are
# read back with, by recordings and by silver.markers.
MARKER_COLUMNS = tuple(name for name in record_fields("marker") if name != "spool_epoch")

CONTROL_KINDS = _enum_symbols("control", "kind")


# Device and session ids become file and folder names (spools, exports, BIDS, Delta filters): they
# must never climb out of a folder or carry markup.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")


def identifier_problem(field: str, value: object) -> str | None:
    """Why ``value`` is not a valid device or session id, or None."""
    if isinstance(value, str) and IDENTIFIER.fullmatch(value) and ".." not in value:
        return None
    return (
        f"{field}={str(value)[:80]!r} must be 1-128 letters, digits, '.', '_', '~' or '-', start "
        "with a letter or digit and contain no '..'"
    )


def control_record(
    *,
    device_id: str,
    kind: str,
    sender: str,
    issued_us: int,
    seq: int | None = None,
    session_id: str | None = None,
    command_id: str | None = None,
    config: dict[str, str] | None = None,
    acked_topic: str | None = None,
    acked_seq: int | None = None,
    acked_epoch: int | None = None,
    in_reply_to: str | None = None,
    ok: bool | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """A ``control`` record: a command, a command's ack or a lake spool ack. Records that are not
    spooled take their send time as ``seq`` (monotonic across restarts) unless one is given."""
    if kind not in CONTROL_KINDS:
        raise ValueError(
            f"control kind {kind!r} is not one of {', '.join(sorted(CONTROL_KINDS))} (schemas/avro/control.avsc)"
        )
    return {
        "device_id": device_id,
        "session_id": session_id,
        "seq": issued_us if seq is None else seq,
        "issued_us": issued_us,
        "kind": kind,
        "command_id": command_id or uuid.uuid4().hex,
        "sender": sender,
        "config": dict(config or {}),
        "acked_topic": acked_topic,
        "acked_seq": acked_seq,
        "acked_epoch": acked_epoch,
        "in_reply_to": in_reply_to,
        "ok": ok,
        "message": message,
    }


def eeg_block_record(
    *,
    device_id: str,
    session_id: str,
    seq: int,
    first_sample_index: int,
    samples: np.ndarray,
    device_times_us: np.ndarray,
    sample_rate_hz: float,
    produced_us: int,
    clock_offset_us: int,
    clock_rtt_us: int,
    spool_epoch: int = 0,
) -> dict[str, Any]:
    """An ``eeg_block``: samples (n_samples x n_channels, any float dtype; sent as float32) with one
    device time per sample; the counts come from the arrays, so they cannot disagree with them."""
    if samples.ndim != 2:
        raise ValueError(f"eeg_block samples must be 2-D (samples x channels), got shape {samples.shape}")
    if len(device_times_us) != len(samples):
        raise ValueError(f"eeg_block device_times_us has {len(device_times_us)} entries for {len(samples)} samples")
    return {
        "device_id": device_id,
        "session_id": session_id,
        "seq": int(seq),
        "spool_epoch": int(spool_epoch),
        "first_sample_index": int(first_sample_index),
        "n_samples": int(samples.shape[0]),
        "n_channels": int(samples.shape[1]),
        "sample_rate_hz": float(sample_rate_hz),
        "data": samples_to_bytes(samples),
        "device_times_us": times_to_bytes(device_times_us),
        "produced_us": int(produced_us),
        "clock_offset_us": int(clock_offset_us),
        "clock_rtt_us": int(clock_rtt_us),
    }


MARKER_EVENTS = _enum_symbols("marker", "event")


def marker_record(
    *,
    device_id: str,
    session_id: str,
    timestamp_us: int,
    event: str,
    label: str,
    seq: int = 0,
    trial: int | None = None,
    stimulus_hz: float | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """A ``marker`` in lab time: a trial's START (with its duration, or until its END), END, or an
    INSTANT event. ``trial`` None is the schema's 0 (an event outside any numbered trial)."""
    if event not in MARKER_EVENTS:
        raise ValueError(f"marker event {event!r} is not one of {', '.join(sorted(MARKER_EVENTS))} (marker.avsc)")
    return {
        "device_id": device_id, "session_id": session_id, "seq": int(seq), "timestamp_us": int(timestamp_us),
        "event": event, "label": label, "trial": 0 if trial is None else int(trial), "stimulus_hz": stimulus_hz, "duration_s": duration_s,
    }  # fmt: skip


def session_record(
    *,
    device_id: str,
    session_id: str,
    started_us: int,
    board: str,
    sample_rate_hz: float,
    channel_names: list[str],
    channel_types: list[str],
    block_size: int,
    seq: int = 0,
    units: str = "uV",
    gain: float = 24.0,
    montage: str = "standard_1020",
    subject_id: str | None = None,
    task: str | None = None,
    software_version: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``session``: the layout every block of the session follows (channels, rate, units)."""
    if len(channel_names) != len(channel_types):
        raise ValueError(f"session has {len(channel_names)} channel_names but {len(channel_types)} channel_types")
    if not sample_rate_hz > 0:
        raise ValueError(f"session sample_rate_hz={sample_rate_hz!r} must be a positive rate")
    return {
        "device_id": device_id, "session_id": session_id, "seq": int(seq), "started_us": int(started_us),
        "board": board, "sample_rate_hz": float(sample_rate_hz), "channel_names": list(channel_names),
        "channel_types": list(channel_types), "units": units, "gain": float(gain), "montage": montage,
        "block_size": int(block_size), "subject_id": subject_id, "task": task,
        "software_version": software_version, "metadata": dict(metadata or {}),
    }  # fmt: skip


FRAME_ENCODINGS = _enum_symbols("camera_frame", "encoding")
DEVICE_STATES = _enum_symbols("device_status", "state")
SENSOR_VALUES = (
    "temperature_c", "humidity_pct", "pressure_hpa", "accel_x_g", "accel_y_g", "accel_z_g",
    "gyro_x_rad_s", "gyro_y_rad_s", "gyro_z_rad_s",
)  # fmt: skip


def camera_frame_record(
    *,
    device_id: str,
    session_id: str,
    frame_index: int,
    captured_us: int,
    clock_offset_us: int,
    width: int,
    height: int,
    data: bytes,
    encoding: str = "JPEG",
    seq: int = 0,
) -> dict[str, Any]:
    """A ``camera_frame``: one encoded image on the device clock."""
    if encoding not in FRAME_ENCODINGS:
        raise ValueError(f"camera_frame encoding {encoding!r} is not one of {', '.join(sorted(FRAME_ENCODINGS))}")
    if width <= 0 or height <= 0:
        raise ValueError(f"camera_frame width={width} height={height} must both be positive")
    return {
        "device_id": device_id, "session_id": session_id, "seq": int(seq), "frame_index": int(frame_index),
        "captured_us": int(captured_us), "clock_offset_us": int(clock_offset_us), "width": int(width),
        "height": int(height), "encoding": encoding, "data": bytes(data),
    }  # fmt: skip


def sensor_reading_record(
    *,
    device_id: str,
    session_id: str,
    measured_us: int,
    clock_offset_us: int,
    sensor: str,
    values: dict[str, float | None],
    seq: int = 0,
) -> dict[str, Any]:
    """A ``sensor_reading``: whichever of the room values the sensor has; the rest stay null."""
    unknown = set(values) - set(SENSOR_VALUES)
    if unknown:
        raise ValueError(f"sensor_reading has no field {', '.join(sorted(unknown))}; known: {', '.join(SENSOR_VALUES)}")
    return {
        "device_id": device_id, "session_id": session_id, "seq": int(seq), "measured_us": int(measured_us),
        "clock_offset_us": int(clock_offset_us), "sensor": sensor,
        **{name: None if (value := values.get(name)) is None else float(value) for name in SENSOR_VALUES},
    }  # fmt: skip


def device_status_record(
    *,
    device_id: str,
    session_id: str | None,
    timestamp_us: int,
    state: str,
    spool_depth: int,
    spool_bytes: int,
    records_sent: int,
    losses: int,
    clock_offset_us: int,
    clock_rtt_us: int,
    sample_rate_hz: float,
    message: str | None = None,
    seq: int = 0,
    cpu_pct: float | None = None,
    memory_pct: float | None = None,
    soc_temperature_c: float | None = None,
) -> dict[str, Any]:
    """A ``device_status`` heartbeat: what the Pi is doing, how full its spool is and how the Pi
    itself fares (CPU, memory, processor temperature; None where not measured)."""
    if state not in DEVICE_STATES:
        raise ValueError(f"device_status state {state!r} is not one of {', '.join(sorted(DEVICE_STATES))}")
    return {
        "device_id": device_id, "session_id": session_id, "seq": int(seq), "timestamp_us": int(timestamp_us),
        "state": state, "spool_depth": int(spool_depth), "spool_bytes": int(spool_bytes),
        "records_sent": int(records_sent), "losses": int(losses), "clock_offset_us": int(clock_offset_us),
        "clock_rtt_us": int(clock_rtt_us), "sample_rate_hz": float(sample_rate_hz), "message": message,
        "cpu_pct": None if cpu_pct is None else float(cpu_pct),
        "memory_pct": None if memory_pct is None else float(memory_pct),
        "soc_temperature_c": None if soc_temperature_c is None else float(soc_temperature_c),
    }  # fmt: skip


def device_log_record(
    *,
    device_id: str,
    session_id: str | None,
    timestamp_us: int,
    level: str,
    logger: str,
    message: str,
    seq: int = 0,
    max_message_chars: int = 4000,
) -> dict[str, Any]:
    """A ``device_log`` line; long messages are cut so one log call cannot fill a spool."""
    return {
        "device_id": device_id, "session_id": session_id, "seq": int(seq), "timestamp_us": int(timestamp_us),
        "level": level, "logger": logger, "message": message[:max_message_chars],
    }  # fmt: skip
