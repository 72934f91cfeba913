"""Bronze: every Kafka record, authenticated and decoded, exactly once per (device, spool epoch,
topic, seq), in Delta.

The query reads Kafka with Spark's own Kafka source (offsets in its checkpoint). Per micro-batch
(``foreachBatch``, :class:`BronzeBatchWriter`):

1. one Spark job (``mapInArrow`` over the Kafka partitions, coalesced to ``lake.silver_tasks``
   tasks, :func:`bronze_task`): on the executors each record's signature is verified against the
   hub's keyring (schemas/signing.py), the record decoded and validated (:func:`decode_rows`), and
   every table's Parquet files written (:func:`sink_tables`, pyarrow); what is not authenticated,
   does not decode or does not validate goes to ``bronze.quarantine`` with its raw bytes and the
   reason (never dropped). The tasks return the files and only each record's stream key and facts;
2. the driver decides against an index of what bronze holds which records are new, which are
   duplicates (the edge resends after outages) and which jump implausibly far (:func:`decide`). A
   batch with a duplicate or a refused record (rare) has its files removed and written again
   without them, the refused in quarantine (the same job with the verdicts);
3. the driver commits each table in one Delta transaction with delta-rs, naming its app (query +
   table) and batch id (:func:`infra.delta.commit_written_files`): a batch replayed after a crash
   finds its commit and writes nothing twice. ``silver.markers`` and ``silver.sensor_readings``
   (lab-time projections) commit before the bronze tables they come from, so a crash between the
   two is replayed safely. (delta-spark's writer took a job and 1.5-2 s per table and batch at 100
   headsets, and 5.4 s for the first: bench/lake_bench.py; deciding before writing took a second
   job per batch, and each job waits for a task slot: bench/lake_bench.py, README);
4. after the commits, per device, epoch and topic, the highest contiguous seq stored is published
   (a hub-signed ``SPOOL_ACK`` on ``devices.control``), which lets the edge delete its spool up to there.

The live scorer's ``eeg.predictions`` come in the same way (hub-signed, see ``HUB_SIGNED``) and land in
``gold.live_predictions``, exactly once per (session, window, model version): a prediction has no
spool, and the scorer's seqs start over with each of its processes.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsp.session_record import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE_HZ,
    is_finite_number,
    session_record_problem,
)
from infra.delta import (
    WRITTEN_FILES,
    LakeTable,
    batch_committed,
    commit_written_files,
    remove_written_files,
    utc_date,
    write_table_files,
)
from infra.python_workers import freeze_long_lived_objects
from schemas import timebase
from schemas.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_SESSIONS,
    BRONZE_TABLE_OF_TOPIC,
    EEG_RAW,
    HUB_SIGNED,
    LAKE_TABLE_OF_TOPIC,
    PREDICTIONS,
    SESSIONS,
    TABLES,
    TOPICS,
)
from schemas.codec import EEG_DTYPE, TIME_DTYPE, AvroCodec, CodecError, default_codec
from schemas.records import MARKER_COLUMNS, identifier_problem
from schemas.signing import DEVICE, HUB, Keyring, SignatureError
from streaming_jobs.arrow_schema import record_schema
from streaming_jobs.checkpoints import checkpoint_identity

log = logging.getLogger(__name__)

# topic -> its bronze table's name (the catalog's BRONZE_TABLE_OF_TOPIC, keyed as decoded batches are).
BRONZE_TABLES: dict[str, str] = {topic: spec.name for topic, spec in BRONZE_TABLE_OF_TOPIC.items()}
BRONZE_TOPICS = tuple(BRONZE_TABLES)
# Every topic the bronze queries may read: the devices' and the live scorer's (eeg.predictions, which
# lands in gold.live_predictions: :data:`schemas.catalog.LAKE_TABLE_OF_TOPIC`).
LANDED_TOPICS = tuple(LAKE_TABLE_OF_TOPIC)
QUARANTINE_TABLE = BRONZE_QUARANTINE.name
# A prediction is one window scored by one model version: the same again (a scorer restarted from
# the earliest offsets, a record resent) is a duplicate, whatever its seq (the scorer numbers its
# records per process, so seqs start over when it restarts).
PREDICTION_KEY_COLUMNS = ("session_id", "window_start_index", "window_end_index", "model_name", "model_version")
# What a landed table calls a column of its topic's records: to a prediction's reader, bronze's
# ingest time is the prediction's arrival in the lake.
RENAMED_COLUMNS: dict[str, dict[str, str]] = {PREDICTIONS: {"ingest_us": "arrival_us"}}
# The record's own time, which decides its date partition.
TIME_FIELD = {
    "eeg_block": "produced_us",
    "camera_frame": "captured_us",
    "sensor_reading": "measured_us",
    "marker": "timestamp_us",
    "session": "started_us",
    "device_status": "timestamp_us",
    "device_log": "timestamp_us",
    "prediction": "scored_us",
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


def landed_schema(topic: str) -> pa.Schema:
    """The schema of the table ``topic`` lands in: its records' bronze columns, some renamed."""
    schema = bronze_schema(TOPICS[topic].record_type)
    renamed = RENAMED_COLUMNS.get(topic, {})
    return pa.schema([f.with_name(renamed.get(f.name, f.name)) for f in schema])


def landed_rows(topic: str, decoded: pa.Table) -> pa.Table:
    """Decoded rows of ``topic`` (any schema holding its bronze columns) as its table's rows."""
    schema = bronze_schema(TOPICS[topic].record_type)
    return decoded.select(schema.names).cast(schema).rename_columns(landed_schema(topic).names)


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
    if record_type == "prediction":
        return prediction_problem(record)
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
    return block_session_problem(record, session)


def prediction_problem(record: Mapping[str, Any]) -> str | None:
    start, end = record["window_start_index"], record["window_end_index"]
    if not 0 <= start < end:
        return f"prediction window [{start}, {end}) must be a non-empty range of sample indices >= 0"
    probabilities = record["probabilities"] or {}
    if record["label"] not in probabilities:
        return f"prediction label {record['label']!r} is not among its probabilities' classes"
    if not all(is_finite_number(p) and 0.0 <= p <= 1.0 for p in probabilities.values()):
        return "prediction probabilities must be finite numbers in [0, 1]"
    return None


# What block_session_problem reads of a block: few scalars, so the driver can check a batch's blocks
# against sessions that arrived in the same batch without their samples.
BLOCK_FACT_COLUMNS = ("session_id", "n_channels", "sample_rate_hz", "first_sample_index", "produced_us")


def block_session_problem(record: Mapping[str, Any], session: SessionFacts) -> str | None:
    """Why an EEG block (any mapping with ``BLOCK_FACT_COLUMNS``) contradicts its session, or None."""
    c, rate, first = record["n_channels"], record["sample_rate_hz"], record["first_sample_index"]
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
    anew numbers from 0 again under a new epoch, and those records are new, not duplicates.
    Predictions, which no spool numbers, are kept by what they are (``PREDICTION_KEY_COLUMNS``) and
    never acknowledged."""

    def __init__(self) -> None:
        self.tracks: dict[StreamKey, SeqTrack] = defaultdict(SeqTrack)
        self.predictions: set[tuple[Any, ...]] = set()

    def add_prediction(self, key: tuple[Any, ...]) -> bool:
        """Record a prediction's key; False when bronze already holds it (a duplicate)."""
        if key in self.predictions:
            return False
        self.predictions.add(key)
        return True

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


@dataclass(frozen=True)
class DecodeContext:
    """What a decoding task needs (pickled into it): the keyring as of this batch (None when records
    need no signature), the sessions bronze knows (blocks are checked against them), the ingest time."""

    keyring: Keyring | None
    sessions: Mapping[str, SessionFacts]
    ingest_us: int


# Columns a decoded topic's rows carry beside its bronze table's: why a record is refused (None when
# it is fine) and, for refused records only, the raw key and value that bronze.quarantine keeps.
PROBLEM, RAW_KEY, RAW_VALUE = "_problem", "_raw_key", "_raw_value"
ENVELOPE_FIELDS = [pa.field(PROBLEM, pa.string()), pa.field(RAW_KEY, pa.binary()), pa.field(RAW_VALUE, pa.binary())]
STREAM_KEY_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "device_id", "spool_epoch", "seq")
# What the driver decides duplicates on: the stream key, and a prediction's own key.
DECISION_COLUMNS = (*STREAM_KEY_COLUMNS, *(c for c in PREDICTION_KEY_COLUMNS if c not in STREAM_KEY_COLUMNS))


@cache
def decoded_schema(record_type: str) -> pa.Schema:
    """A topic's decoded rows: its bronze table's columns (nullable: a refused record has none of
    them) and the envelope columns."""
    return pa.schema([f.with_nullable(True) for f in bronze_schema(record_type)] + ENVELOPE_FIELDS)


def decode_rows(topic: str, rows: pa.Table, context: DecodeContext, codec: AvroCodec | None = None) -> pa.Table:
    """One topic's raw Kafka rows (``topic, partition, offset, key, value``) as its bronze table's
    rows plus the envelope: pure, and the same on any executor. With a keyring every record must
    carry a valid signature by a key of the device it names."""
    codec = codec or default_codec()
    record_type = TOPICS[topic].record_type
    out: list[dict[str, Any]] = []
    ingest = context.ingest_us
    columns = rows.to_pydict()

    def refuse(kafka: dict[str, Any], key: bytes | None, value: bytes | None, reason: str) -> None:
        out.append({**kafka, PROBLEM: reason, RAW_KEY: key, RAW_VALUE: value, "date": utc_date(ingest)})

    for partition, offset, key, value in zip(columns["partition"], columns["offset"], columns["key"], columns["value"]):
        kafka = {"kafka_topic": topic, "kafka_partition": partition, "kafka_offset": offset, "ingest_us": ingest}
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
            direction = HUB if topic in HUB_SIGNED else DEVICE
            body, signer = (
                context.keyring.verify(value, topic, direction) if context.keyring is not None else (value, None)
            )
            decoded_type, record = codec.decode(body, expected_type=record_type)
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
                f"not authenticated: a {decoded_type} for device {record.get('device_id')!r} "
                f"signed with key {signer.key_id!r} of device {signer.device_id!r}",
            )
            continue
        problem = validate(decoded_type, record, context.sessions)
        if problem is not None:
            refuse(kafka, key, value, problem)
            continue
        record.update(kafka)
        record["date"] = utc_date(record[TIME_FIELD[decoded_type]])
        out.append(record)
    return pa.Table.from_pylist(out, schema=decoded_schema(record_type))


def sessions_in(decoded: pa.Table) -> dict[str, SessionFacts]:
    """The sessions described by a ``sessions`` topic's decoded rows (valid ones only)."""
    valid = decoded.filter(pc.is_null(decoded.column(PROBLEM)))
    return {row["session_id"]: session_facts(row) for row in valid.select(list(SESSION_FACT_COLUMNS)).to_pylist()}


SESSION_FACT_COLUMNS = ("session_id", "channel_names", "sample_rate_hz", "started_us")


@dataclass
class Decision:
    """The driver's verdict on a batch's valid records: which are duplicates (dropped, counted) and
    which jump implausibly far past what is stored (quarantined, not indexed); both by Kafka
    coordinates (topic, partition, offset)."""

    duplicates: set[tuple[str, int, int]] = field(default_factory=set)
    jumped: dict[tuple[str, int, int], str] = field(default_factory=dict)
    stored: int = 0


def decide(keys: pa.Table, index: SeqIndex) -> Decision:
    """Walk the batch's stream keys (``STREAM_KEY_COLUMNS``, and for predictions
    ``PREDICTION_KEY_COLUMNS``; valid records only) in Kafka order and update ``index`` with what
    will be stored."""
    decision = Decision()
    ordered = keys.sort_by(
        [("kafka_topic", "ascending"), ("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
    )
    for row in ordered.to_pylist():
        coordinates = (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"])
        if row["kafka_topic"] == PREDICTIONS:
            if index.add_prediction(tuple(row[c] for c in PREDICTION_KEY_COLUMNS)):
                decision.stored += 1
            else:
                decision.duplicates.add(coordinates)
            continue
        stream = (row["kafka_topic"], row["device_id"], int(row.get("spool_epoch") or 0))
        jump = index.jump(stream, row["seq"])
        if jump > MAX_SEQ_JUMP:
            decision.jumped[coordinates] = (
                f"{TOPICS[row['kafka_topic']].record_type} seq={row['seq']} from {row['device_id']} jumps "
                f"{jump:,} past the last stored (more than {MAX_SEQ_JUMP:,}); not indexed"
            )
        elif index.add(stream, row["seq"]):
            decision.stored += 1
        else:
            decision.duplicates.add(coordinates)
    return decision


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
    """The whole of a bronze batch in one process, as the stream does it across executors and the
    driver: session records first (a block is checked against its session even when both came in
    this batch), then every topic decoded, then the driver's decision. ``sessions`` is updated."""
    codec = codec or default_codec()
    sessions = sessions if sessions is not None else {}
    ingest = now_us if now_us is not None else timebase.now_us()
    by_topic = {
        topic: rows.filter(pc.equal(rows.column("topic"), topic))
        for topic in pc.unique(rows.column("topic")).to_pylist()
    }
    if SESSIONS in by_topic:
        found = sessions_in(decode_rows(SESSIONS, by_topic[SESSIONS], DecodeContext(keyring, sessions, ingest), codec))
        for session_id, facts in found.items():
            sessions.setdefault(session_id, facts)
    context = DecodeContext(keyring, dict(sessions), ingest)
    quarantined: list[pa.Table] = []
    decoded = {topic: decode_rows(topic, part, context, codec) for topic, part in by_topic.items()}
    valid = [
        t.filter(pc.is_null(t.column(PROBLEM))).select([c for c in DECISION_COLUMNS if c in t.schema.names])
        for t in decoded.values()
    ]
    keys = pa.concat_tables(valid, promote_options="permissive") if valid else None
    decision = decide(keys if keys is not None else pa.table({c: [] for c in STREAM_KEY_COLUMNS}), index)
    tables: dict[str, pa.Table] = {}
    for topic, table in decoded.items():
        coordinates = list(
            zip(
                table.column("kafka_topic").to_pylist(),
                table.column("kafka_partition").to_pylist(),
                table.column("kafka_offset").to_pylist(),
            )
        )
        problems = [
            problem if problem is not None else decision.jumped.get(c)
            for problem, c in zip(table.column(PROBLEM).to_pylist(), coordinates)
        ]
        keep = [p is None and c not in decision.duplicates for p, c in zip(problems, coordinates)]
        refused = table.set_column(table.schema.get_field_index(PROBLEM), PROBLEM, pa.array(problems, pa.string()))
        refused = refused.filter(pc.invert(pc.is_null(refused.column(PROBLEM))))
        if refused.num_rows:
            quarantined.append(quarantine_rows(refused))
        stored = landed_rows(topic, table.filter(pa.array(keep)))
        if stored.num_rows:
            tables[LAKE_TABLE_OF_TOPIC[topic].name] = stored
    quarantine = (
        pa.concat_tables([q.cast(QUARANTINE_SCHEMA) for q in quarantined])
        if quarantined
        else QUARANTINE_SCHEMA.empty_table()
    )
    return DecodedBatch(tables, quarantine, len(decision.duplicates), rows.num_rows)


def quarantine_rows(refused: pa.Table) -> pa.Table:
    """Refused decoded rows as ``bronze.quarantine`` rows (pure; also run in Spark tasks)."""
    columns = [f.name for f in QUARANTINE_SCHEMA]
    renamed = refused.rename_columns(
        [
            "key" if n == RAW_KEY else "value" if n == RAW_VALUE else "reason" if n == PROBLEM else n
            for n in refused.column_names
        ]
    )
    return renamed.select(columns).cast(QUARANTINE_SCHEMA)


def seed_index(lake_root: Path, topics: Iterable[str] = BRONZE_TOPICS) -> SeqIndex:
    """Rebuild the dedup index of ``topics`` from what bronze already holds (on query start)."""
    index = SeqIndex()
    for topic in topics:
        spec = LAKE_TABLE_OF_TOPIC[topic]
        table = LakeTable(lake_root, spec)
        if topic == PREDICTIONS:
            held = table.read_columns(list(PREDICTION_KEY_COLUMNS))
            if held is not None:
                index.predictions.update(zip(*(held.column(c).to_pylist() for c in PREDICTION_KEY_COLUMNS)))
            continue
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


@cache
def wide_schema() -> pa.Schema:
    """Every bronze topic's decoded rows in one schema (no column name means two things: a test
    checks it), so that one Spark task per Kafka partition decodes whatever topic it holds."""
    fields: dict[str, pa.Field] = {}
    for topic in LANDED_TOPICS:
        for f in decoded_schema(TOPICS[topic].record_type):
            fields.setdefault(f.name, f)
    return pa.schema(list(fields.values()))


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: its columns in that order and type, those it lacks as nulls."""
    for wanted in schema:
        if wanted.name not in table.schema.names:
            table = table.append_column(wanted, pa.nulls(table.num_rows, wanted.type))
    return table.select(schema.names).cast(schema)


def decoded_task_rows(context: DecodeContext, raw: pa.Table) -> pa.Table:
    """A task's raw Kafka rows as decoded rows in :func:`wide_schema`, whatever topics they hold."""
    codec = default_codec()
    schema = wide_schema()
    parts = [
        conformed(decode_rows(topic, raw.filter(pc.equal(raw.column("topic"), topic)), context, codec), schema)
        for topic in pc.unique(raw.column("topic")).to_pylist()
    ]
    return pa.concat_tables(parts) if parts else schema.empty_table()


# What the driver decides on, per record: its stream and prediction keys, whether it decoded and
# validated, and the facts a block is checked against its session with.
FACT_COLUMNS = tuple(
    dict.fromkeys(
        (*STREAM_KEY_COLUMNS, *BLOCK_FACT_COLUMNS, "started_us", *PREDICTION_KEY_COLUMNS, "valid", "session_channels")
    )
)


@cache
def facts_schema() -> pa.Schema:
    wide = wide_schema()
    derived = {"valid": pa.field("valid", pa.bool_()), "session_channels": pa.field("session_channels", pa.int32())}
    return pa.schema([derived[name] if name in derived else wide.field(name) for name in FACT_COLUMNS])


def facts_of(decoded: pa.Table) -> pa.Table:
    """The driver's facts (:data:`FACT_COLUMNS`) of decoded rows (:func:`wide_schema`)."""
    facts = decoded.select([name for name in FACT_COLUMNS if name in decoded.schema.names])
    facts = facts.append_column("valid", pc.is_null(decoded.column(PROBLEM)))
    facts = facts.append_column("session_channels", pc.list_value_length(decoded.column("channel_names")))
    return conformed(facts, facts_schema())


@cache
def task_output_schema() -> pa.Schema:
    """What a bronze task returns: fact rows (:func:`facts_schema`) and written-file rows
    (``WRITTEN_FILES``) in one schema; a file row has a ``path``, a fact row none."""
    return pa.schema([f.with_nullable(True) for f in (*facts_schema(), *WRITTEN_FILES)])


@dataclass(frozen=True)
class Verdicts:
    """The driver's verdicts on a batch's records, by (topic, partition, offset): those left out of
    their tables (``dropped``: duplicates and refused) and the reasons of those it refused."""

    dropped: Mapping[str, Set[tuple[int, int]]]
    refused: Mapping[tuple[str, int, int], str]


def bronze_task(
    lake_root: str,
    context: DecodeContext,
    verdicts: Verdicts | None,
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """One Spark task of a bronze batch: its raw Kafka rows decoded (step 1) and every table's rows
    written as Parquet files (step 3, :func:`sink_tables`), in one pass. Without ``verdicts`` (the
    driver has not decided yet) every valid record is written, and the rows returned are the
    records' facts (:func:`facts_of`) and the files; with them, the files of the rows the verdicts
    keep, and the refused records in quarantine (:func:`refused_tables`)."""
    freeze_long_lived_objects()
    received = list(batches)
    if not received:
        return
    raw = pa.Table.from_batches(received)
    decoded = decoded_task_rows(context, raw)
    tables = sink_tables(verdicts.dropped if verdicts is not None else {}, decoded)
    if verdicts is not None and verdicts.refused:
        for name, rows in refused_tables(verdicts.refused, context.ingest_us, raw).items():
            tables[name] = pa.concat_tables([tables[name], rows]) if name in tables else rows
    schema = task_output_schema()
    if verdicts is None:
        yield from conformed(facts_of(decoded), schema).to_batches()
    for files in write_table_files(Path(lake_root), tables):
        yield from conformed(pa.Table.from_batches([files]), schema).to_batches()


def sink_tables(dropped: Mapping[str, Set[tuple[int, int]]], decoded: pa.Table) -> dict[str, pa.Table]:
    """A task's ``decoded`` rows (:func:`wide_schema`) as the rows of each table they go to (qualified
    name -> rows): refused ones to quarantine with their reason, each topic's valid rows but those the
    driver dropped (``dropped``: topic -> their (partition, offset) coordinates) to the topic's table,
    and markers and sensor readings also to their silver projections."""
    problem = decoded.column(PROBLEM)
    tables: dict[str, pa.Table] = {}
    refused = decoded.filter(pc.is_valid(problem))
    if refused.num_rows:
        tables[BRONZE_QUARANTINE.qualified] = quarantine_rows(refused)
    valid = decoded.filter(pc.is_null(problem))
    for topic in pc.unique(valid.column("kafka_topic")).to_pylist():
        rows = valid.filter(pc.equal(valid.column("kafka_topic"), topic))
        gone = dropped.get(topic)
        if gone:
            keep = [
                (p, o) not in gone
                for p, o in zip(rows.column("kafka_partition").to_pylist(), rows.column("kafka_offset").to_pylist())
            ]
            rows = rows.filter(pa.array(keep, pa.bool_()))
        if not rows.num_rows:
            continue
        spec = LAKE_TABLE_OF_TOPIC[topic]
        landed = landed_rows(topic, rows)
        tables[spec.qualified] = landed
        if spec.layer == "bronze" and spec.name in SILVER_PROJECTED:
            tables[f"silver.{spec.name}"] = silver_projections({spec.name: landed})[spec.name]
    return tables


def refused_tables(refused: Mapping[tuple[str, int, int], str], ingest_us: int, raw: pa.Table) -> dict[str, pa.Table]:
    """The raw Kafka rows the driver refused (``refused``: coordinates -> reason) as
    ``bronze.quarantine`` rows."""
    rows = [
        {
            "kafka_topic": t,
            "kafka_partition": p,
            "kafka_offset": o,
            "key": k,
            "value": v,
            "reason": refused[(t, p, o)],
            "ingest_us": ingest_us,
            "date": utc_date(ingest_us),
        }
        for t, p, o, k, v in zip(*(raw.column(c).to_pylist() for c in ("topic", "partition", "offset", "key", "value")))
        if (t, p, o) in refused
    ]
    return {BRONZE_QUARANTINE.qualified: pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)} if rows else {}


def projection_schema(name: str) -> pa.Schema:
    example = {"markers": bronze_schema("marker"), "sensor_readings": bronze_schema("sensor_reading")}[name]
    return silver_projections({name: example.empty_table()})[name].schema


class BronzeBatchWriter:
    """The ``foreachBatch`` function of the bronze query (runs on the driver; the data stays on the
    executors but for each record's stream key)."""

    def __init__(
        self,
        lake_root: Path,
        query_name: str,
        publish_acks: AckPublisher | None = None,
        gap_timeout_s: float = 60.0,
        keyring: Keyring | None = None,
        topics: tuple[str, ...] = BRONZE_TOPICS,
        tasks: int = 2,
        arrow_records_per_batch: int | None = None,
    ) -> None:
        """``arrow_records_per_batch``: Arrow batches to the Python workers bounded by rows alone
        (:func:`infra.spark.arrow_batches_by_records`); None keeps Spark's byte limit."""
        self.lake_root = lake_root
        self.arrow_records_per_batch = arrow_records_per_batch
        self.keyring = keyring
        self.query_name = query_name
        self.topics = topics
        self.tasks = tasks
        self.index = seed_index(lake_root, topics)
        self.sessions = seed_sessions(lake_root)
        self.publish_acks = publish_acks
        self.gap_timeout_s = gap_timeout_s
        self._acked: dict[tuple[str, str, int], int] = {}
        self.lost_seqs = 0
        self.last_batch: dict[str, Any] = {}
        self.checkpoint: Path | None = None
        self._app_prefix: str | None = None

    def for_checkpoint(self, checkpoint: Path) -> BronzeBatchWriter:
        """Tie the Delta app ids to the query's checkpoint (:func:`checkpoint_identity`)."""
        self.checkpoint = checkpoint
        self._app_prefix = None
        return self

    def app_id(self, table: str) -> str:
        if self._app_prefix is None:
            identity = checkpoint_identity(self.checkpoint) if self.checkpoint is not None else "adhoc"
            self._app_prefix = f"{self.query_name}-{identity}"
        return f"{self._app_prefix}:{table}"

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        started = time.monotonic()
        try:
            counts = self._write(batch_df, batch_id)
        except BaseException:
            # The index already counts this batch's records as stored; after a failed commit the
            # retry must not take them for duplicates. What bronze really holds is the truth.
            self.index = seed_index(self.lake_root, self.topics)
            self.sessions = seed_sessions(self.lake_root)
            raise
        self._after_commit()
        self.last_batch = {"batch_id": batch_id, **counts, "seconds": round(time.monotonic() - started, 3)}
        log.info("bronze batch %d: %s", batch_id, self.last_batch)

    def _write(self, batch_df: Any, batch_id: int) -> dict[str, Any]:
        from infra.spark import arrow_batches_by_records

        if self.arrow_records_per_batch is not None:
            arrow_batches_by_records(batch_df.sparkSession, self.arrow_records_per_batch)
        if self.keyring is not None:
            self.keyring.reload()  # a key added or revoked from the CLI counts from this batch on
        context = DecodeContext(self.keyring, dict(self.sessions), timebase.now_us())
        started = time.monotonic()
        # One job decodes the records and writes every valid one's files before the driver decides:
        # a batch with no duplicate and nothing refused, nearly every one, needs no other job.
        returned = self._run_tasks(batch_df, context, None)
        is_file = pc.is_valid(returned.column("path"))
        facts = returned.filter(pc.invert(is_file)).select(list(FACT_COLUMNS))
        written = returned.filter(is_file).select(WRITTEN_FILES.names).to_pylist()
        refused, duplicates = self._decide(facts, context)
        if refused or duplicates:
            # Those files hold records the verdicts leave out: written again without them (the
            # Kafka source reads the batch's fixed offsets again, and decoding is deterministic).
            remove_written_files(self.lake_root, written)
            dropped: dict[str, set[tuple[int, int]]] = {}
            for topic, partition, offset in [*duplicates, *refused]:
                dropped.setdefault(topic, set()).add((partition, offset))
            verdicts = Verdicts({topic: frozenset(at) for topic, at in dropped.items()}, dict(refused))
            written = self._run_tasks(batch_df, context, verdicts).select(WRITTEN_FILES.names).to_pylist()
        write_s = round(time.monotonic() - started, 3)
        committed = self._commit(facts, written, batch_id)
        invalid = facts.num_rows - pc.sum(facts.column("valid")).as_py() if facts.num_rows else 0
        return {
            "records": facts.num_rows,
            "duplicates": len(duplicates),
            "quarantined": len(refused) + invalid,
            "topics": sorted(set(facts.column("kafka_topic").to_pylist())),
            **committed,
            "write_s": write_s,
        }

    def _run_tasks(self, batch_df: Any, context: DecodeContext, verdicts: Verdicts | None) -> pa.Table:
        """One Spark job of :func:`bronze_task` over the batch's Kafka rows; what its tasks return."""
        # Kafka gives one Spark partition per topic partition; a task per core decodes them all
        # (tasks cost more than decoding here).
        return (
            batch_df.select("topic", "partition", "offset", "key", "value")
            .coalesce(self.tasks)
            .mapInArrow(
                functools.partial(bronze_task, str(self.lake_root), context, verdicts),
                spark_struct(task_output_schema()),
            )
            .toArrow()
        )

    def _decide(
        self, facts: pa.Table, context: DecodeContext
    ) -> tuple[dict[tuple[str, int, int], str], set[tuple[str, int, int]]]:
        """The driver's part: sessions first, then blocks whose session came in this same batch
        checked against it, then duplicates and seq jumps against the index."""
        valid = facts.filter(facts.column("valid"))
        is_session = pc.equal(valid.column("kafka_topic"), SESSIONS)
        for row in valid.filter(is_session).to_pylist():
            self.sessions.setdefault(
                row["session_id"],
                SessionFacts(int(row["session_channels"]), float(row["sample_rate_hz"]), int(row["started_us"])),
            )
        refused: dict[tuple[str, int, int], str] = {}
        blocks = valid.filter(pc.equal(valid.column("kafka_topic"), EEG_RAW))
        for row in blocks.to_pylist():
            session = self.sessions.get(row["session_id"])
            if row["session_id"] in context.sessions or session is None:
                continue  # checked on the executor, or no session to check against yet
            problem = block_session_problem(row, session)
            if problem is not None:
                refused[(row["kafka_topic"], row["kafka_partition"], row["kafka_offset"])] = problem
        checked = valid.filter(
            pa.array(
                [
                    (t, p, o) not in refused
                    for t, p, o in zip(
                        valid.column("kafka_topic").to_pylist(),
                        valid.column("kafka_partition").to_pylist(),
                        valid.column("kafka_offset").to_pylist(),
                    )
                ],
                pa.bool_(),
            )
        )
        decision = decide(checked.select(list(DECISION_COLUMNS)), self.index)
        refused.update(decision.jumped)
        return refused, decision.duplicates

    def _commit(self, facts: pa.Table, written: list[dict[str, Any]], batch_id: int) -> dict[str, Any]:
        valid_present = sorted(set(facts.filter(facts.column("valid")).column("kafka_topic").to_pylist()))
        # table -> its schema and app, in commit order. Silver's projections first: if bronze then
        # fails, the replay (no longer deduplicated away) finds silver's commit and skips only that.
        schemas: dict[str, pa.Schema] = {}
        app_ids: dict[str, str] = {}
        for topic in valid_present:
            spec = LAKE_TABLE_OF_TOPIC[topic]
            if spec.layer == "bronze" and spec.name in SILVER_PROJECTED:
                schemas[f"silver.{spec.name}"] = projection_schema(spec.name)
                app_ids[f"silver.{spec.name}"] = self.app_id(f"silver_{spec.name}")
        for topic in valid_present:
            spec = LAKE_TABLE_OF_TOPIC[topic]
            schemas[spec.qualified] = landed_schema(topic)
            app_ids[spec.qualified] = self.app_id(spec.name)
        schemas[BRONZE_QUARANTINE.qualified] = QUARANTINE_SCHEMA
        app_ids[BRONZE_QUARANTINE.qualified] = self.app_id(QUARANTINE_TABLE)
        # A batch replayed after a crash between two tables' commits commits only the others.
        skip = frozenset(
            name for name in schemas if batch_committed(TABLES[name].path(self.lake_root), app_ids[name], batch_id)
        )
        if skip:
            remove_written_files(self.lake_root, [row for row in written if row["table"] in skip])
            written = [row for row in written if row["table"] not in skip]
        commit_s, rows = commit_written_files(self.lake_root, written, schemas, app_ids.__getitem__, batch_id)
        return {"rows_by_table": rows, "skipped_tables": sorted(skip), "commit_s": commit_s}

    def _after_commit(self) -> None:
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


# Bronze tables whose lab-time projection silver keeps (written with bronze, before it).
SILVER_PROJECTED = ("markers", "sensor_readings")


def spark_struct(schema: pa.Schema) -> Any:
    """The Spark schema of an Arrow schema (for ``mapInArrow`` outputs)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)
