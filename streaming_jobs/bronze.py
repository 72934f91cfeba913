"""Bronze: every Kafka record, authenticated and decoded, exactly once per (device, spool epoch,
topic, seq), in Delta.

Per micro-batch (Spark ``foreachBatch`` on the driver):
1. verify each record's signature against the hub's keyring (schemas/signing.py) and decode it;
   what is not authenticated, does not decode or does not validate goes to ``bronze.quarantine``
   with its raw bytes and the reason (never dropped);
2. drop duplicates (the edge resends after outages) against an index of what bronze holds, per
   device, spool epoch and topic: the highest contiguous seq plus the seqs seen above it;
3. append each table with delta-rs, the commit carrying the app transaction
   (``query id + table``, ``batch id``): a batch replayed after a crash finds its version committed
   and is skipped, so a commit happens exactly once;
4. publish, per device, epoch and topic, the highest contiguous seq stored (a hub-signed
   ``SPOOL_ACK`` on ``devices.control``), which lets the edge delete its spool up to there.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsp.session import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE_HZ,
    is_finite_number,
    session_record_problem,
)
from infra.delta import LakeTable, utc_date
from schemas import timebase
from schemas.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_SESSIONS,
    BRONZE_TABLE_OF_TOPIC,
    TABLES,
    TOPICS,
)
from schemas.codec import EEG_DTYPE, TIME_DTYPE, AvroCodec, CodecError, default_codec
from schemas.records import MARKER_COLUMNS, identifier_problem
from schemas.signing import Keyring, SignatureError
from streaming_jobs.arrow_schema import record_schema

log = logging.getLogger(__name__)

# topic -> its bronze table's name (the catalog's BRONZE_TABLE_OF_TOPIC, keyed as decoded batches are).
BRONZE_TABLES: dict[str, str] = {topic: spec.name for topic, spec in BRONZE_TABLE_OF_TOPIC.items()}
BRONZE_TOPICS = tuple(BRONZE_TABLES)
QUARANTINE_TABLE = BRONZE_QUARANTINE.name
# The record's own time, which decides its date partition.
TIME_FIELD = {
    "eeg_block": "produced_us",
    "camera_frame": "captured_us",
    "sensor_reading": "measured_us",
    "marker": "timestamp_us",
    "session": "started_us",
    "device_status": "timestamp_us",
    "device_log": "timestamp_us",
}
KAFKA_COLUMNS = [
    pa.field("kafka_topic", pa.string(), nullable=False),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("ingest_us", pa.int64(), nullable=False),
    pa.field("date", pa.string(), nullable=False),
]
QUARANTINE_SCHEMA = pa.schema(
    [
        *KAFKA_COLUMNS[:3],
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("reason", pa.string(), nullable=False),
        *KAFKA_COLUMNS[3:],
    ]
)


def bronze_schema(record_type: str) -> pa.Schema:
    return pa.schema([*record_schema(record_type), *KAFKA_COLUMNS])


# Caps no real record comes near; past them a record is a mistake or an attack, not data.
MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_BLOCK_SAMPLES = 10_000
MAX_SEQ_JUMP = 1_000_000  # records per device and topic between two stored ones (~28 h of blocks)
# A block's sample index may run ahead of its session's elapsed time by this much (clock skew).
SAMPLE_INDEX_SLACK_S = 600.0
MAX_SESSION_S = 31 * 86_400.0


@dataclass(frozen=True)
class SessionFacts:
    """What bronze checks each EEG block against: its session's shape and start."""

    n_channels: int
    sample_rate_hz: float
    started_us: int


def validate(
    record_type: str, record: dict[str, Any], sessions: Mapping[str, SessionFacts] | None = None
) -> str | None:
    """Checks the Avro schema cannot express; the reason a record is refused, or None. An EEG block
    is checked against its session when bronze knows the session."""
    if record.get("seq", 0) < 0:
        return f"{record_type} seq={record['seq']} is negative"
    for id_field in ("device_id", "session_id"):
        value = record.get(id_field)
        if value is not None and (problem := identifier_problem(f"{record_type} {id_field}", value)):
            return problem
    if record_type == "session":
        return session_record_problem(record)
    if record_type == "marker":
        for name in ("stimulus_hz", "duration_s"):
            value = record.get(name)
            if value is not None and (not is_finite_number(value) or value < 0):
                return f"marker {name}={value!r} must be a finite, non-negative number"
        return None
    if record_type != "eeg_block":
        return None
    n, c, rate = record["n_samples"], record["n_channels"], record["sample_rate_hz"]
    if not 0 < n <= MAX_BLOCK_SAMPLES or not 0 < c <= MAX_CHANNELS:
        return f"eeg_block n_samples={n} n_channels={c}: must be in 1..{MAX_BLOCK_SAMPLES} and 1..{MAX_CHANNELS}"
    if len(record["data"]) != n * c * EEG_DTYPE.itemsize:
        return f"eeg_block data is {len(record['data'])} bytes, n_samples*n_channels*4 = {n * c * 4}"
    if len(record["device_times_us"]) != n * TIME_DTYPE.itemsize:
        return f"eeg_block device_times_us is {len(record['device_times_us'])} bytes, expected {n * 8}"
    if not is_finite_number(rate) or not 0 < rate <= MAX_SAMPLE_RATE_HZ:
        return f"eeg_block sample_rate_hz={rate} must be a finite rate in (0, {MAX_SAMPLE_RATE_HZ:g}] Hz"
    first = record["first_sample_index"]
    if first < 0:
        return f"eeg_block first_sample_index={first} is negative"
    session = (sessions or {}).get(record["session_id"])
    if session is None:
        if first > MAX_SESSION_S * rate:
            return (
                f"eeg_block first_sample_index={first} is more than {MAX_SESSION_S / 86_400:.0f} "
                f"days of samples at {rate:g} Hz"
            )
        return None
    if c != session.n_channels:
        return f"eeg_block n_channels={c} but session {record['session_id']} has {session.n_channels} channels"
    if not math.isclose(rate, session.sample_rate_hz, rel_tol=1e-6):
        return (
            f"eeg_block sample_rate_hz={rate:g} but session {record['session_id']} runs at "
            f"{session.sample_rate_hz:g} Hz"
        )
    elapsed_s = max(0.0, (record["produced_us"] - session.started_us) / 1e6)
    if first > (elapsed_s + SAMPLE_INDEX_SLACK_S) * rate:
        return (
            f"eeg_block first_sample_index={first} is implausible: session "
            f"{record['session_id']} started {elapsed_s:.0f} s before this block "
            f"(at most {(elapsed_s + SAMPLE_INDEX_SLACK_S) * rate:.0f} samples at {rate:g} Hz)"
        )
    return None


def session_facts(record: Mapping[str, Any]) -> SessionFacts:
    return SessionFacts(len(record["channel_names"]), float(record["sample_rate_hz"]), int(record["started_us"]))


@dataclass
class SeqTrack:
    """What bronze holds of one device's stream on one topic."""

    contiguous: int = -1  # every seq <= this is stored
    above: set[int] = field(default_factory=set)
    gap_since: float | None = None  # when records above a gap were first seen

    def jump(self, seq: int) -> int:
        """How far ``seq`` lies beyond everything stored (0 when it does not)."""
        return max(0, seq - max(self.contiguous, max(self.above, default=-1)))

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already stored (a duplicate)."""
        if seq <= self.contiguous or seq in self.above:
            return False
        self.above.add(seq)
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)
        return True

    def give_up_gap(self, now: float, timeout_s: float) -> int:
        """Declare a gap lost once it has been open for ``timeout_s``; returns samples skipped."""
        if not self.above:
            self.gap_since = None
            return 0
        if self.gap_since is None:
            self.gap_since = now
            return 0
        if now - self.gap_since < timeout_s:
            return 0
        lowest = min(self.above)
        lost = lowest - self.contiguous - 1
        self.contiguous = lowest - 1
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)
        self.gap_since = now if self.above else None
        return lost


StreamKey = tuple[str, str, int]  # (topic, device_id, spool_epoch)


class SeqIndex:
    """Dedup and acknowledgment index, per (topic, device, spool epoch): a device whose spool was made
    anew numbers from 0 again under a new epoch, and those records are new, not duplicates."""

    def __init__(self) -> None:
        self.tracks: dict[StreamKey, SeqTrack] = defaultdict(SeqTrack)

    def seed(self, key: StreamKey, seqs: Iterable[int]) -> None:
        track = self.tracks[key]
        for seq in seqs:
            track.add(int(seq))

    def add(self, key: StreamKey, seq: int) -> bool:
        return self.tracks[key].add(seq)

    def jump(self, key: StreamKey, seq: int) -> int:
        track = self.tracks.get(key)
        return (track or SeqTrack()).jump(seq)

    def contiguous(self) -> dict[StreamKey, int]:
        return {key: track.contiguous for key, track in self.tracks.items()}


@dataclass
class DecodedBatch:
    tables: dict[str, pa.Table]
    quarantine: pa.Table
    duplicates: int
    records: int


def decode_batch(
    rows: pa.Table,
    index: SeqIndex,
    codec: AvroCodec | None = None,
    now_us: int | None = None,
    sessions: dict[str, SessionFacts] | None = None,
    keyring: Keyring | None = None,
) -> DecodedBatch:
    """Split a micro-batch of raw Kafka rows into bronze tables and quarantine (pure but for the
    index and the ``sessions`` bronze knows, which it updates). With a ``keyring`` every record must
    carry a valid signature by a key of the device it names (schemas/signing.py)."""
    codec = codec or default_codec()
    sessions = sessions if sessions is not None else {}
    ingest = now_us if now_us is not None else timebase.now_us()
    by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
    quarantined: list[dict[str, Any]] = []
    duplicates = 0
    columns = rows.to_pydict()
    decoded: list[tuple[dict[str, Any], bytes | None, bytes | None, str, dict[str, Any]]] = []

    def refuse(kafka: dict[str, Any], key: bytes | None, value: bytes | None, reason: str) -> None:
        quarantined.append({**kafka, "key": key, "value": value, "reason": reason, "date": utc_date(ingest)})

    for topic, partition, offset, key, value in zip(
        columns["topic"], columns["partition"], columns["offset"], columns["key"], columns["value"]
    ):
        kafka = {"kafka_topic": topic, "kafka_partition": partition, "kafka_offset": offset, "ingest_us": ingest}
        expected = TOPICS[topic].record_type if topic in TOPICS else None
        if value is not None and len(value) > MAX_RECORD_BYTES:
            refuse(
                kafka,
                key,
                value[:1024],
                f"record is {len(value):,} bytes; the cap is {MAX_RECORD_BYTES:,} (first 1 KiB kept)",
            )
            continue
        try:
            if value is None:
                raise CodecError("record has no value (tombstone or empty message)")
            body, signer = keyring.verify(value, topic) if keyring is not None else (value, None)
            record_type, record = codec.decode(body, expected_type=expected)
        except SignatureError as exc:
            refuse(kafka, key, value, f"not authenticated: {exc}")
            continue
        except CodecError as exc:
            refuse(kafka, key, value, str(exc))
            continue
        if signer is not None and record.get("device_id") != signer.device_id:
            refuse(
                kafka,
                key,
                value,
                f"not authenticated: a {record_type} for device {record.get('device_id')!r} "
                f"signed with key {signer.key_id!r} of device {signer.device_id!r}",
            )
            continue
        decoded.append((kafka, key, value, record_type, record))
    # Sessions first: a block is checked against its session even when both came in this batch.
    for *_, record_type, record in decoded:
        if record_type == "session" and validate(record_type, record) is None:
            sessions.setdefault(record["session_id"], session_facts(record))
    for kafka, key, value, record_type, record in decoded:
        topic = kafka["kafka_topic"]
        problem = validate(record_type, record, sessions)
        if problem is None:
            stream = (topic, record["device_id"], int(record.get("spool_epoch") or 0))
            jump = index.jump(stream, record["seq"])
            if jump > MAX_SEQ_JUMP:
                problem = (
                    f"{record_type} seq={record['seq']} from {record['device_id']} jumps {jump:,} "
                    f"past the last stored (more than {MAX_SEQ_JUMP:,}); not indexed"
                )
        if problem is not None:
            refuse(kafka, key, value, problem)
            continue
        if not index.add((topic, record["device_id"], int(record.get("spool_epoch") or 0)), record["seq"]):
            duplicates += 1
            continue
        record.update(kafka)
        record["date"] = utc_date(record[TIME_FIELD[record_type]])
        by_table[BRONZE_TABLES[topic]].append(record)
    tables = {}
    for topic, table_name in BRONZE_TABLES.items():
        if by_table.get(table_name):
            schema = bronze_schema(TOPICS[topic].record_type)
            tables[table_name] = pa.Table.from_pylist(by_table[table_name], schema=schema)
    quarantine = pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA)
    return DecodedBatch(tables, quarantine, duplicates, rows.num_rows)


def seed_index(lake_root: Path) -> SeqIndex:
    """Rebuild the dedup index from what bronze already holds (on query start)."""
    index = SeqIndex()
    for topic, spec in BRONZE_TABLE_OF_TOPIC.items():
        table = LakeTable(lake_root, spec)
        dataset, _ = table.dataset()
        if dataset is None:
            continue
        # Tables written before spool epochs have no such column: their records are epoch 0.
        columns = ["device_id", "seq"] + (["spool_epoch"] if "spool_epoch" in dataset.schema.names else [])
        stored = dataset.to_table(columns=columns)
        devices = stored.column("device_id").to_numpy(zero_copy_only=False)
        seqs = stored.column("seq").to_numpy()
        epochs = (
            stored.column("spool_epoch").fill_null(0).to_numpy()
            if "spool_epoch" in columns
            else np.zeros(len(seqs), np.int64)
        )
        pairs = np.unique(np.stack([devices.astype(str), epochs.astype(str)], axis=1), axis=0) if len(seqs) else []
        for device, epoch in pairs:
            mine = (devices == device) & (epochs == int(epoch))
            index.seed((topic, str(device), int(epoch)), np.sort(seqs[mine]))
    return index


def seed_sessions(lake_root: Path) -> dict[str, SessionFacts]:
    """The sessions bronze holds, for checking blocks against them (on query start)."""
    stored = LakeTable(lake_root, BRONZE_SESSIONS).read_columns(
        ["session_id", "channel_names", "sample_rate_hz", "started_us"]
    )
    if stored is None:
        return {}
    return {row["session_id"]: session_facts(row) for row in stored.to_pylist()}


def silver_projections(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Lab-time views of the low-rate streams, written alongside bronze: ``silver.markers`` (already
    in lab time) and ``silver.sensor_readings`` (device time + clock offset as ``time_us``)."""
    result = {}
    markers = tables.get("markers")
    if markers is not None:
        # silver.markers has always led with the session (existing tables keep their column order).
        columns = ["session_id", *(name for name in MARKER_COLUMNS if name != "session_id"), "date"]
        # Markers are in lab time already: silver names the time the way every silver table does.
        result["markers"] = markers.select(columns).rename_columns(
            ["time_us" if name == "timestamp_us" else name for name in columns]
        )
    readings = tables.get("sensor_readings")
    if readings is not None:
        lab = pc.add(readings.column("measured_us"), readings.column("clock_offset_us"))
        values = [
            f.name for f in record_schema("sensor_reading") if f.name.endswith(("_c", "_pct", "_hpa", "_g", "_rad_s"))
        ]
        result["sensor_readings"] = readings.select(
            ["session_id", "device_id", "seq", "sensor", *values, "date"]
        ).append_column("time_us", lab)
    return result


AckPublisher = Callable[[dict[StreamKey, int]], None]


class BronzeBatchWriter:
    """The ``foreachBatch`` function of the bronze query."""

    def __init__(
        self,
        lake_root: Path,
        query_name: str,
        publish_acks: AckPublisher | None = None,
        gap_timeout_s: float = 60.0,
        keyring: Keyring | None = None,
    ) -> None:
        self.lake_root = lake_root
        self.keyring = keyring
        self.query_name = query_name
        self.index = seed_index(lake_root)
        self.sessions = seed_sessions(lake_root)
        self.publish_acks = publish_acks
        self.gap_timeout_s = gap_timeout_s
        self._acked: dict[tuple[str, str], int] = {}
        self.lost_seqs = 0

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        started = time.monotonic()
        rows = batch_df.toArrow()
        collected = time.monotonic()
        self.write(rows, batch_id)
        log.info(
            "bronze batch %d: %d records, read %.2f s, decode+write %.2f s",
            batch_id,
            rows.num_rows,
            collected - started,
            time.monotonic() - collected,
        )

    def write(self, rows: pa.Table, batch_id: int) -> DecodedBatch:
        try:
            if self.keyring is not None:
                self.keyring.reload()  # a key added or revoked from the CLI counts from this batch on
            decoded = decode_batch(rows, self.index, sessions=self.sessions, keyring=self.keyring)
            # Silver first: if bronze then fails, the replay (no longer deduplicated away) finds
            # silver's transaction committed and skips only that.
            for name, table in silver_projections(decoded.tables).items():
                LakeTable(self.lake_root, TABLES[f"silver.{name}"]).append(
                    table, f"{self.query_name}:silver_{name}", batch_id
                )
            for name, table in decoded.tables.items():
                LakeTable(self.lake_root, TABLES[f"bronze.{name}"]).append(table, f"{self.query_name}:{name}", batch_id)
            if decoded.quarantine.num_rows:
                LakeTable(self.lake_root, BRONZE_QUARANTINE).append(
                    decoded.quarantine, f"{self.query_name}:{QUARANTINE_TABLE}", batch_id
                )
                log.warning("batch %d: %d record(s) quarantined", batch_id, decoded.quarantine.num_rows)
        except BaseException:
            # The index already counts this batch's records as stored; after a failed commit the
            # retry must not take them for duplicates. What bronze really holds is the truth.
            self.index = seed_index(self.lake_root)
            self.sessions = seed_sessions(self.lake_root)
            raise
        now = time.monotonic()
        for key, track in self.index.tracks.items():
            lost = track.give_up_gap(now, self.gap_timeout_s)
            if lost:
                self.lost_seqs += lost
                log.warning(
                    "%s from %s: %d seq(s) never arrived within %.0f s; counted lost",
                    key[0],
                    key[1],
                    lost,
                    self.gap_timeout_s,
                )
        if self.publish_acks is not None:
            current = self.index.contiguous()
            changed = {k: v for k, v in current.items() if v >= 0 and self._acked.get(k) != v}
            if changed:
                self.publish_acks(changed)
                self._acked.update(changed)
        return decoded
