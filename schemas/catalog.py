"""Every Kafka topic and every lake table neurolake uses: the one place their names are spelled.

Topics carry their record type and key; tables their layer. Producers, Spark jobs, batch jobs, the
dashboard and tests take topic and table names from here and nowhere else.
Schema compatibility rule (checked by tests/schemas/test_contracts.py): a schema may change only
BACKWARD-compatibly, i.e. new fields carry defaults, so a consumer on the new schema still reads every
record already in the topics, the spool and bronze.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
COMMAND_ACKS = "devices.acks"
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
            SESSIONS,
            "session",
            "session_id",
            1,
            compacted=True,
            description="one record per session: montage, channels, rate",
        ),
        TopicSpec(DEVICE_STATUS, "device_status", "device_id", 1, description="edge heartbeats"),
        TopicSpec(DEVICE_LOGS, "device_log", "device_id", 1, description="edge log lines"),
        TopicSpec(
            CONTROL,
            "control",
            "device_id",
            1,
            description="hub to devices: commands and lake spool acks (signed by the hub)",
        ),
        # Apart from devices.control so that a Pi may write its acks and never a command (ACLs).
        TopicSpec(COMMAND_ACKS, "control", "device_id", 1, description="devices' acks of commands"),
        TopicSpec(PREDICTIONS, "prediction", "device_id", 2, description="live model output"),
        TopicSpec(DEADLETTER, "dead_letter", "source_topic", 1, description="undecodable records"),
    )
}

RECORD_TYPES: tuple[str, ...] = tuple(dict.fromkeys(spec.record_type for spec in TOPICS.values()))


@dataclass(frozen=True, order=True)
class TableSpec:
    """A Delta table of the lake: ``<lake_root>/<layer>/<name>``, called ``layer.name`` by users."""

    layer: str
    name: str
    description: str = ""
    # Columns the maintenance job clusters the files by (OPTIMIZE ... ZORDER BY): what readers
    # filter on, so a query for one session reads few files.
    zorder: tuple[str, ...] = ()
    # Columns Delta keeps file statistics on (min, max, null count), for data skipping; empty: Delta's
    # default, the first 32 columns. Each write computes them row by row, and on the sample arrays
    # they skip nothing: a 140,000-row silver append took 1.05 s with all columns, 0.76 s with the
    # keys alone (bench/delta_stats_bench.py). Must hold the ZORDER columns (OPTIMIZE needs their stats).
    stats_columns: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def table_properties(self) -> dict[str, str]:
        """Delta table properties the table is created with."""
        if not self.stats_columns:
            return {}
        return {"delta.dataSkippingStatsColumns": ",".join(self.stats_columns)}

    def path(self, lake_root: Path) -> Path:
        return lake_root / self.layer / self.name


LAYERS = ("bronze", "silver", "gold")

BRONZE_EEG_BLOCKS = TableSpec(
    "bronze", "eeg_blocks", "eeg.raw as received, one row per block", ("session_id", "first_sample_index")
)
BRONZE_CAMERA_FRAMES = TableSpec("bronze", "camera_frames", "camera.frames as received", ("session_id", "seq"))
BRONZE_SENSOR_READINGS = TableSpec("bronze", "sensor_readings", "sensors.env as received", ("session_id", "seq"))
BRONZE_MARKERS = TableSpec("bronze", "markers", "markers as received", ("session_id",))
BRONZE_SESSIONS = TableSpec("bronze", "sessions", "one row per session record", ("session_id",))
BRONZE_DEVICE_STATUS = TableSpec("bronze", "device_status", "devices.status heartbeats", ("device_id", "seq"))
BRONZE_DEVICE_LOGS = TableSpec("bronze", "device_logs", "devices.logs lines", ("device_id", "seq"))
BRONZE_QUARANTINE = TableSpec("bronze", "quarantine", "records that did not decode or validate, with the reason")
SILVER_EEG_SAMPLES = TableSpec(
    "silver",
    "eeg_samples",
    "dejittered, filtered samples, one row per sample",
    ("session_id", "sample_index"),
    ("session_id", "device_id", "sample_index", "time_us"),
)
SILVER_HEART_RATE = TableSpec("silver", "heart_rate", "heart beats detected in ECG channels", ("session_id",))
SILVER_MARKERS = TableSpec("silver", "markers", "markers in lab time", ("session_id",))
SILVER_SENSOR_READINGS = TableSpec(
    "silver", "sensor_readings", "room sensor readings in lab time", ("session_id", "time_us")
)
SILVER_SKIPPED_BLOCKS = TableSpec("silver", "skipped_blocks", "blocks that arrived after their gap was closed")
SILVER_SESSION_ERRORS = TableSpec("silver", "session_errors", "sessions the processor refused, with the error")
GOLD_EEG_WINDOWS = TableSpec(
    "gold",
    "eeg_windows",
    "windows with features, quality and label",
    ("session_id", "window_start_index"),
    ("session_id", "device_id", "window_start_index", "window_start_us", "window_end_us", "label"),
)
GOLD_PREDICTIONS = TableSpec("gold", "predictions", "model predictions per window", ("session_id",))
GOLD_LIVE_PREDICTIONS = TableSpec(
    "gold",
    "live_predictions",
    "the live scorer's predictions (eeg.predictions) with their arrival, one row per window and model version",
    ("session_id",),
)

TABLES: dict[str, TableSpec] = {
    spec.qualified: spec
    for spec in (
        BRONZE_EEG_BLOCKS,
        BRONZE_CAMERA_FRAMES,
        BRONZE_SENSOR_READINGS,
        BRONZE_MARKERS,
        BRONZE_SESSIONS,
        BRONZE_DEVICE_STATUS,
        BRONZE_DEVICE_LOGS,
        BRONZE_QUARANTINE,
        SILVER_EEG_SAMPLES,
        SILVER_HEART_RATE,
        SILVER_MARKERS,
        SILVER_SENSOR_READINGS,
        SILVER_SKIPPED_BLOCKS,
        SILVER_SESSION_ERRORS,
        GOLD_EEG_WINDOWS,
        GOLD_PREDICTIONS,
        GOLD_LIVE_PREDICTIONS,
    )
}

# What a Pi's certificate may do on the broker (infra/kafka.py grants it; nothing else is allowed).
DEVICE_WRITES: tuple[str, ...] = (
    EEG_RAW,
    CAMERA_FRAMES,
    SENSORS_ENV,
    MARKERS,
    SESSIONS,
    DEVICE_STATUS,
    DEVICE_LOGS,
    COMMAND_ACKS,
)
DEVICE_READS: tuple[str, ...] = (CONTROL,)
# The consumer group a Pi's control listener names (it assigns its partitions and joins no group,
# but librdkafka asks for the group's coordinator all the same, which needs READ on the group).
EDGE_CONTROL_GROUP = "neurolake-edge-control"

# The bronze table each topic lands in (control and dead letters are not landed; predictions land in
# gold, below).
BRONZE_TABLE_OF_TOPIC: dict[str, TableSpec] = {
    EEG_RAW: BRONZE_EEG_BLOCKS,
    CAMERA_FRAMES: BRONZE_CAMERA_FRAMES,
    SENSORS_ENV: BRONZE_SENSOR_READINGS,
    MARKERS: BRONZE_MARKERS,
    SESSIONS: BRONZE_SESSIONS,
    DEVICE_STATUS: BRONZE_DEVICE_STATUS,
    DEVICE_LOGS: BRONZE_DEVICE_LOGS,
}

# Every topic bronze's queries read, and the table its records land in: the devices' topics in
# bronze, and the live scorer's output, a result that nothing is derived from, straight in gold.
LAKE_TABLE_OF_TOPIC: dict[str, TableSpec] = {**BRONZE_TABLE_OF_TOPIC, PREDICTIONS: GOLD_LIVE_PREDICTIONS}

# Topics the hub writes about a device: signed as the hub (schemas/signing.HUB), with that device's key.
HUB_SIGNED: tuple[str, ...] = (CONTROL, PREDICTIONS)
