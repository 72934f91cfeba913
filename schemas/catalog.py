"""Every Kafka topic neurolake uses, with the record type it carries and how it is keyed.

Producers, Spark jobs, the dashboard and tests take topic names from here and nowhere else.
Schema compatibility rule (checked by tests/schemas/test_contracts.py): a schema may change only
BACKWARD-compatibly, i.e. new fields carry defaults, so a consumer on the new schema still reads every
record already in the topics, the spool and bronze.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    record_type: str
    key: str
    default_partitions: int
    compacted: bool = False
    description: str = ""


# The topic names, for code that names one topic.
EEG_RAW = "eeg.raw"
CAMERA_FRAMES = "camera.frames"
SENSORS_ENV = "sensors.env"
MARKERS = "markers"
SESSIONS = "sessions"
DEVICE_STATUS = "devices.status"
DEVICE_LOGS = "devices.logs"
CONTROL = "devices.control"
PREDICTIONS = "eeg.predictions"
DEADLETTER = "deadletter"

TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(EEG_RAW, "eeg_block", "device_id", 4, description="EEG sample blocks"),
        TopicSpec(CAMERA_FRAMES, "camera_frame", "device_id", 2, description="JPEG camera frames"),
        TopicSpec(SENSORS_ENV, "sensor_reading", "device_id", 2, description="Sense HAT / room sensors"),
        TopicSpec(MARKERS, "marker", "session_id", 1, description="stimulus and task events"),
        TopicSpec(
            SESSIONS, "session", "session_id", 1, compacted=True,
            description="one record per session: montage, channels, rate",
        ),
        TopicSpec(DEVICE_STATUS, "device_status", "device_id", 1, description="edge heartbeats"),
        TopicSpec(DEVICE_LOGS, "device_log", "device_id", 1, description="edge log lines"),
        TopicSpec(
            CONTROL, "control", "device_id", 1,
            description="commands, command acks, lake spool acks",
        ),
        TopicSpec(PREDICTIONS, "prediction", "device_id", 2, description="live model output"),
        TopicSpec(DEADLETTER, "dead_letter", "source_topic", 1, description="undecodable records"),
    )
}

RECORD_TYPES: tuple[str, ...] = tuple(spec.record_type for spec in TOPICS.values())

