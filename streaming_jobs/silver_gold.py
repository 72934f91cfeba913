"""Silver and gold from bronze: one stateful Spark query keyed by session, exactly once into Delta.

- **Source**: Delta's own streaming source over ``bronze.eeg_blocks`` and ``bronze.sessions`` (a
  union of the two): silver never reads Kafka, so whatever bronze acknowledged to a Pi can always
  be (re)processed.
- **State**: each session's processor state (filter memory, dejitter fit, window buffer, blocks
  waiting on a gap) lives in Spark's state store, keyed by session, through
  ``applyInPandasWithState``: :func:`process_session` feeds the session's new rows to
  :func:`dsp.session.process` and returns its rows as Arrow tables (one per output table,
  serialised; the executors build them with the same functions a rebuild and an import use). A
  session waiting on a gap gets a processing-time timeout, so its wait ends even if no block comes;
  the clock is the batch's, fixed in Spark's offset log, so a replayed batch makes the same rows.
- **Sink**: ``foreachBatch`` writes each output table's Parquet files on the executors (pyarrow,
  gold's windows labelled from ``bronze.markers`` on the way) and commits them from the driver in
  one Delta transaction per table (delta-rs, :func:`infra.delta.commit_data_files`): delta-spark's
  own writer made a JVM row of every sample and was most of silver's time at 100 headsets. Each
  commit names its app (query + checkpoint + table) and batch id, so a batch replayed after a
  crash is written once. A session whose processing raises goes to ``silver.session_errors`` with
  its state unchanged (its blocks wait in bronze for a rebuild); the other sessions go on.

``silver.eeg_samples``: one row per sample; ``raw`` and ``filtered`` are float arrays in the
session's channel order (names in ``bronze.sessions``); ``time_us`` is lab time (dejittered device
time plus the clock offset); ``gap_before`` > 0 marks the first sample after lost samples.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import pickle
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

from core.files import replace_file
from dsp.labels import stimulus_labels
from dsp.session import (
    BlockNote,
    Output,
    ProcessorConfig,
    SessionState,
    block_from_record,
    info_from_session_record,
    process,
)
from infra.delta import WRITTEN_FILES
from infra.python_workers import freeze_long_lived_objects
from schemas.catalog import (
    BRONZE_EEG_BLOCKS,
    BRONZE_MARKERS,
    BRONZE_SESSIONS,
    GOLD_EEG_WINDOWS,
    SILVER_EEG_SAMPLES,
    SILVER_HEART_RATE,
    SILVER_SESSION_ERRORS,
    SILVER_SKIPPED_BLOCKS,
    TABLES,
    TableSpec,
)
from streaming_jobs.lake_rows import (
    BEATS_SCHEMA,
    BLOCK_NOTES_SCHEMA,
    SAMPLES_SCHEMA,
    SESSION_ERRORS_SCHEMA,
    WINDOWS_SCHEMA,
    beats_table,
    concat,
    notes_table,
    samples_table,
    utc_dates,
    windows_table,
)

log = logging.getLogger(__name__)

QUERY_NAME = "silver_gold"
# table -> schema, in commit order: samples before the windows derived from them.
OUTPUT_TABLES: dict[TableSpec, pa.Schema] = {
    SILVER_EEG_SAMPLES: SAMPLES_SCHEMA,
    SILVER_HEART_RATE: BEATS_SCHEMA,
    GOLD_EEG_WINDOWS: WINDOWS_SCHEMA,
    SILVER_SKIPPED_BLOCKS: BLOCK_NOTES_SCHEMA,
    SILVER_SESSION_ERRORS: SESSION_ERRORS_SCHEMA,
}
# Every output table is partitioned by the UTC day of its rows.
PARTITION_BY = ("date",)
# What the processor reads of bronze: blocks and session records as one stream of rows.
BLOCK_COLUMNS = (
    "session_id",
    "device_id",
    "seq",
    "first_sample_index",
    "n_samples",
    "n_channels",
    "sample_rate_hz",
    "data",
    "device_times_us",
    "clock_offset_us",
)
SESSION_COLUMNS = ("session_id", "device_id", "seq", "sample_rate_hz", "channel_names", "channel_types", "metadata")
ROWS_ARROW = pa.schema(
    [
        ("kind", pa.string()),
        ("session_id", pa.string()),
        ("device_id", pa.string()),
        ("seq", pa.int64()),
        ("first_sample_index", pa.int64()),
        ("n_samples", pa.int32()),
        ("n_channels", pa.int32()),
        ("sample_rate_hz", pa.float64()),
        ("data", pa.binary()),
        ("device_times_us", pa.binary()),
        ("clock_offset_us", pa.int64()),
        ("channel_names", pa.list_(pa.string())),
        ("channel_types", pa.list_(pa.string())),
        ("metadata", pa.map_(pa.string(), pa.string())),
    ]
)
# The stateful step's input: the session (its group key) and each bronze row as one struct of
# ``ROWS_ARROW``'s fields. PySpark makes a pandas Series of every column of every session's rows and
# joins them into a frame, per session and batch: ~1.4 ms with the fourteen fields as columns (more
# than the processor's own time for a second of a session), ~0.3 ms with one struct column, whose
# rows come out as dicts with integers as integers.
ROW = "row"
STREAM_ROWS_ARROW = pa.schema([("session_id", pa.string()), (ROW, pa.struct(list(ROWS_ARROW)))])
# The stateful step's output: per session and table, that table's rows as an Arrow IPC stream.
OUTPUT_DDL = "table STRING, session_id STRING, rows BINARY"
STATE_DDL = "state BINARY"


# -- per-session work (executors, rebuild) ---------------------------------------------------------


def session_record(row: dict[str, Any]) -> dict[str, Any]:
    """A ``session`` row of the stream as the session record the processor reads."""
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):  # an Arrow map comes out of pandas as (key, value) pairs
        metadata = dict(metadata)
    return {
        "device_id": row["device_id"],
        "channel_names": list(row["channel_names"]),
        "channel_types": list(row["channel_types"]),
        "sample_rate_hz": row["sample_rate_hz"],
        "metadata": metadata,
    }


def timer_deadline(state: SessionState, config: ProcessorConfig) -> int | None:
    """When the processor must look at this session again though no block arrives."""
    if state.pending and state.gap_since_ms is not None:
        return state.gap_since_ms + config.gap_wait_ms + 1
    return None


def process_rows(
    state: SessionState, rows: list[dict[str, Any]], clock_ms: int, config: ProcessorConfig
) -> tuple[Output, SessionState]:
    """Feed one session's bronze rows (source schema: blocks, session records, ticks) to the
    processor. A block that cannot be read is rejected with its reason, not raised."""
    info = None
    blocks = []
    rejected = []
    for row in rows:
        if row["kind"] == "session" and info is None and state.info is None:
            info = info_from_session_record(session_record(row), config)
        elif row["kind"] == "block":
            try:
                blocks.append(block_from_record(row))
            except (ValueError, TypeError) as exc:
                rejected.append(
                    BlockNote(
                        int(row["seq"]),
                        int(row["first_sample_index"]),
                        int(row["n_samples"] or 0),
                        f"unreadable block: {exc}",
                    )
                )
    output, state = process(state, blocks, clock_ms, config, info)
    output.rejected.extend(rejected)
    return output, state


@dataclass
class SessionTables:
    """Rows made from one or more sessions, one Arrow table per output."""

    samples: list[pa.Table]
    beats: list[pa.Table]
    windows: list[tuple[str, list[dict[str, Any]]]]
    notes: list[pa.Table]
    errors: list[dict[str, Any]]

    @classmethod
    def empty(cls) -> SessionTables:
        return cls([], [], [], [], [])

    def add(self, session_id: str, device_id: str, output: Output, batch_id: int, noted_us: int) -> None:
        self.samples.append(samples_table(session_id, output.samples))
        self.beats.append(beats_table(session_id, output.beats))
        if output.windows:
            self.windows.append((session_id, output.windows))
        late = notes_table(session_id, device_id, output.late, batch_id, noted_us, "late")
        rejected = notes_table(session_id, device_id, output.rejected, batch_id, noted_us, "rejected")
        self.notes += [late, rejected]

    def error(self, session_id: str, batch_id: int, exc: BaseException, noted_us: int) -> None:
        self.errors.append(
            {
                "session_id": session_id,
                "batch_id": batch_id,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
                "noted_us": noted_us,
                "date": utc_dates([noted_us])[0].as_py(),
            }
        )

    def tables(self, markers: pa.Table | None = None) -> dict[TableSpec, pa.Table]:
        """Each output table's rows; windows labelled from ``markers`` when given (the stream
        labels them in its sink, from bronze as it is then)."""
        windows = []
        for session_id, rows in self.windows:
            table = windows_table(session_id, rows)
            if markers is not None:
                table = table.set_column(table.schema.get_field_index("label"), "label", label_windows(table, markers))
            windows.append(table)
        return {
            SILVER_EEG_SAMPLES: concat(self.samples, SAMPLES_SCHEMA),
            SILVER_HEART_RATE: concat(self.beats, BEATS_SCHEMA),
            GOLD_EEG_WINDOWS: concat(windows, WINDOWS_SCHEMA),
            SILVER_SKIPPED_BLOCKS: concat(self.notes, BLOCK_NOTES_SCHEMA),
            SILVER_SESSION_ERRORS: pa.Table.from_pylist(self.errors, schema=SESSION_ERRORS_SCHEMA),
        }


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def from_ipc(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(payload).read_all()


@dataclass(frozen=True)
class StreamContext:
    """What the stateful step needs on every executor (pickled into its tasks)."""

    config: ProcessorConfig
    rebuilds_dir: str


def process_session(context: StreamContext, key: tuple[str], frames: Iterator[Any], group_state: Any) -> Iterator[Any]:
    """``applyInPandasWithState`` function: one session's new bronze rows (or a timeout) through the
    processor, its state in and out of Spark's state store. Yields one row per non-empty table."""
    import pandas as pd

    freeze_long_lived_objects()
    (session_id,) = key
    now_ms = int(group_state.getCurrentProcessingTimeMs())
    rows: list[dict[str, Any]] = []
    if not group_state.hasTimedOut:
        for frame in frames:
            rows += rows_of(frame)
    made = SessionTables.empty()
    state: SessionState | None = None
    try:
        before = pickle.loads(group_state.get[0]) if group_state.exists else SessionState()
        before = adopt_rebuild(context, session_id, before)
        device_id = next(
            (r["device_id"] for r in rows if r.get("device_id")), before.info.device_id if before.info else ""
        )
        output, state = process_rows(before, rows, now_ms, context.config)
        made.add(session_id, device_id, output, -1, now_ms * 1000)
    except Exception as exc:  # one session's failure must not stop the others; its state stays
        log.exception("session %s failed", session_id)
        made.error(session_id, -1, exc, now_ms * 1000)
        state = None
    else:
        group_state.update((pickle.dumps(state, protocol=5),))
    deadline = timer_deadline(state, context.config) if state is not None else None
    if deadline is not None:
        group_state.setTimeoutDuration(max(1, deadline - now_ms))
    tables = [(spec.qualified, table) for spec, table in made.tables().items() if table.num_rows]
    yield pd.DataFrame(
        {
            "table": [name for name, _ in tables],
            "session_id": [session_id] * len(tables),
            "rows": [to_ipc(table) for _, table in tables],
        }
    )


def rows_of(frame: Any) -> list[dict[str, Any]]:
    """A pandas frame of ``STREAM_ROWS_ARROW`` rows as the bronze rows (``ROWS_ARROW`` dicts) it holds."""
    return list(frame[ROW])


def adopt_rebuild(context: StreamContext, session_id: str, state: SessionState) -> SessionState:
    """A session rebuilt since the stream last saw it goes on from the rebuild's state (the rebuild
    replaced its rows), so blocks read again are recognised as done."""
    path = rebuild_state_path(Path(context.rebuilds_dir), session_id)
    try:
        with open(path, "rb") as handle:
            stored_id, rebuild_id, rebuilt = pickle.load(handle)
    except FileNotFoundError:
        return state
    if stored_id != session_id:
        raise RuntimeError(f"rebuild state {path} holds {stored_id!r}, not {session_id!r}")
    if getattr(state, "rebuild_id", None) == rebuild_id:
        return state
    rebuilt.rebuild_id = rebuild_id
    return rebuilt


def rebuild_state_path(rebuilds_dir: Path, session_id: str) -> Path:
    import hashlib

    return rebuilds_dir / f"{hashlib.sha256(session_id.encode()).hexdigest()[:32]}.state"


def save_rebuild_state(rebuilds_dir: Path, session_id: str, rebuild_id: str, state: SessionState) -> None:
    replace_file(
        rebuild_state_path(rebuilds_dir, session_id), pickle.dumps((session_id, rebuild_id, state), protocol=5)
    )


def unpack_task(
    table: str, batch_id: int, lake_root: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Executor side of a rebuild: the stateful step's serialised rows of one table as that
    table's rows (:func:`unpacked_rows`)."""
    freeze_long_lived_objects()
    received = list(batches)
    rows = unpacked_rows(table, batch_id, lake_root, pa.Table.from_batches(received)) if received else None
    if rows is not None:
        yield from rows.to_batches()


def write_task(
    batch_id: int, lake_root: str, skip: frozenset[str], batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Executor side of the sink: this task's rows of every output table but ``skip`` (the tables
    that already hold the batch) written as that table's Parquet files, and described for the
    driver's commit (``WRITTEN_FILES``)."""
    from infra.delta import write_table_files

    freeze_long_lived_objects()
    received = list(batches)
    if not received:
        return
    parts = pa.Table.from_batches(received)
    tables: dict[str, pa.Table] = {}
    for table in pc.unique(parts.column("table")).to_pylist():
        if table in skip:
            continue
        rows = unpacked_rows(table, batch_id, lake_root, parts.filter(pc.equal(parts.column("table"), table)))
        if rows is not None:
            tables[table] = rows
    yield from write_table_files(Path(lake_root), tables, skip, PARTITION_BY)


def unpacked_rows(table: str, batch_id: int, lake_root: str, parts: pa.Table) -> pa.Table | None:
    """The stateful step's serialised rows of one table (``parts``, ``OUTPUT_DDL`` rows) as that
    table's rows; windows labelled from bronze.markers, notes and errors stamped with the batch id.
    None when there are none."""
    tables = [from_ipc(payload) for payload in parts.column("rows").to_pylist()]
    rows = pa.concat_tables(tables) if tables else None
    if rows is None or rows.num_rows == 0:
        return None
    if table == GOLD_EEG_WINDOWS.qualified:
        sessions = pc.unique(rows.column("session_id")).to_pylist()
        markers = read_markers(Path(lake_root), None, sessions)
        rows = rows.set_column(rows.schema.get_field_index("label"), "label", label_windows(rows, markers))
    if "batch_id" in rows.schema.names:
        rows = rows.set_column(
            rows.schema.get_field_index("batch_id"), "batch_id", pa.array([batch_id] * rows.num_rows, pa.int64())
        )
    return rows


def read_markers(lake_root: Path, version: int | None, sessions: list[str]) -> pa.Table | None:
    """The markers of ``sessions`` from bronze at ``version`` (default latest; None without any),
    with their trial numbers: a START without a duration lasts until its trial's END (LSL marker
    streams)."""
    if (version is not None and version < 0) or not sessions:
        return None
    from infra.delta import delta_dataset

    dataset, _ = delta_dataset(BRONZE_MARKERS.path(lake_root), version=version)
    if dataset is None:
        return None
    return dataset.to_table(
        columns=["session_id", "event", "timestamp_us", "duration_s", "label", "trial"],
        filter=pc.field("session_id").isin(sessions),
    )


# -- labels --------------------------------------------------------------------------------------


def label_windows(windows: pa.Table, markers: pa.Table | None) -> pa.Array:
    """Gold's labels (``dsp.labels.stimulus_labels``) for windows and bronze markers."""
    if markers is None or markers.num_rows == 0 or windows.num_rows == 0:
        return pa.nulls(windows.num_rows, pa.string())
    frame = windows.select(["session_id", "window_start_us", "window_end_us"]).to_pandas()
    marker_frame = markers.to_pandas().rename(columns={"timestamp_us": "time_us"})
    return pa.array(stimulus_labels(frame, marker_frame), pa.string(), from_pandas=True)


_HELD_LOCKS: dict[Path, StateLock] = {}
# Present while a rebuild replaces sessions' rows and states; the stream will not start over it.
REBUILD_JOURNAL = "rebuild-journal.json"


def hold_state_lock(state_dir: Path, holder: str) -> None:
    """Take the state lock for the rest of this process (a query restarted in it keeps it)."""
    if state_dir in _HELD_LOCKS:
        return
    from core.errors import NeurolakeError

    if (state_dir / REBUILD_JOURNAL).exists():
        raise NeurolakeError(
            f"a rebuild of silver/gold was cut short ({state_dir / REBUILD_JOURNAL}); run "
            f"`neurolake lake rebuild` again before starting the stream"
        )
    lock = StateLock(state_dir)
    if not lock.acquire(holder):
        raise NeurolakeError(
            f"the silver/gold state in {state_dir} is in use by {lock.holder()}; wait for a rebuild "
            f"to finish, or stop the streaming process (Ctrl-C where `neurolake stream start` runs, "
            f"or SIGTERM to that pid)"
        )
    _HELD_LOCKS[state_dir] = lock


class StateLock:
    """Held by whoever advances the session states (the stream, or a rebuild): never both."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".lock"
        self._handle: IO[str] | None = None

    def acquire(self, holder: str) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{holder} pid {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except FileNotFoundError:
            return "another process"

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def commit_metadata(config: ProcessorConfig) -> dict[str, str]:
    """Recorded with every silver/gold commit: the settings that made the rows."""
    return {
        "neurolake.settings": json.dumps(config.describe(), sort_keys=True),
        "neurolake.settings_fingerprint": config.fingerprint,
    }


# -- the driver ----------------------------------------------------------------------------------


class SilverGoldSink:
    """The ``foreachBatch`` function of the silver/gold query (runs on the driver; rows stay on the
    executors): each output table appended in one Delta commit per batch."""

    def __init__(
        self,
        lake_root: Path,
        checkpoint: Path,
        config: ProcessorConfig,
        query_name: str = QUERY_NAME,
        arrow_records_per_batch: int | None = None,
    ) -> None:
        """``arrow_records_per_batch``: as :class:`streaming_jobs.bronze.BronzeBatchWriter`'s (the
        stateful step's input and the file writers' are Arrow batches too)."""
        self.lake_root = lake_root
        self.arrow_records_per_batch = arrow_records_per_batch
        self.checkpoint = checkpoint
        self.config = config
        self.query_name = query_name
        self.last_batch: dict[str, Any] = {}
        self._app_prefix: str | None = None

    def app_id(self, table: str) -> str:
        if self._app_prefix is None:
            from streaming_jobs.checkpoints import checkpoint_identity

            self._app_prefix = f"{self.query_name}-{checkpoint_identity(self.checkpoint)}"
        return f"{self._app_prefix}:{table}"

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        from infra.delta import batch_committed, commit_written_files
        from infra.spark import arrow_batches_by_records
        from streaming_jobs.bronze import spark_struct

        started = time.monotonic()
        if self.arrow_records_per_batch is not None:
            arrow_batches_by_records(batch_df.sparkSession, self.arrow_records_per_batch)
        # A batch replayed after a crash between two tables' commits rewrites only the others.
        skip = frozenset(
            spec.qualified
            for spec in OUTPUT_TABLES
            if batch_committed(spec.path(self.lake_root), self.app_id(spec.name), batch_id)
        )
        # One Spark job: the stateful step and the files of every table, written on the executors.
        written = batch_df.mapInArrow(
            functools.partial(write_task, batch_id, str(self.lake_root), skip), spark_struct(WRITTEN_FILES)
        ).collect()
        write_s = round(time.monotonic() - started, 3)
        commit_s, rows = commit_written_files(
            self.lake_root,
            (row.asDict() for row in written),
            {spec.qualified: schema for spec, schema in OUTPUT_TABLES.items()},
            lambda table: self.app_id(TABLES[table].name),
            batch_id,
            commit_metadata(self.config),
            PARTITION_BY,
        )
        self.last_batch = {
            "batch_id": batch_id,
            "rows_by_table": rows,
            "skipped_tables": sorted(skip),
            "write_s": write_s,
            "commit_s": commit_s,
            "seconds": round(time.monotonic() - started, 3),
        }
        log.info("silver/gold batch %d: %s", batch_id, self.last_batch)
        if SILVER_SESSION_ERRORS.qualified in rows:
            log.error(
                "batch %d: %d session(s) failed; see silver.session_errors",
                batch_id,
                rows[SILVER_SESSION_ERRORS.qualified],
            )


def rebuilds_dir(checkpoint: Path) -> Path:
    """Beside the checkpoint, not in it: where a rebuild leaves each rebuilt session's state."""
    return checkpoint.parent / f"{checkpoint.name}_rebuilds"


def bronze_rows(
    spark: Any, lake_root: Path, streaming: bool = True, sessions: list[str] | None = None, max_files: int = 1000
) -> Any:
    """What the processor reads of bronze, as one DataFrame of ``STREAM_ROWS_ARROW`` rows: a stream from
    Delta's streaming source, or (for a rebuild) the tables as they are, for ``sessions``."""
    from pyspark.sql import functions as F

    from infra.delta import only_appended

    def read(spec: TableSpec) -> Any:
        reader = spark.readStream if streaming else spark.read
        frame = reader.format("delta")
        if streaming:
            frame = frame.option("maxFilesPerTrigger", str(max_files))
            if only_appended(spec.path(lake_root)):
                # A new checkpoint otherwise starts from the table's snapshot, which Delta's source
                # builds and sorts first (7.7 s of silver's 52 s cold start at 100 headsets); a
                # young append-only table's commits from version 0 hold the same rows. A checkpoint
                # that exists ignores this and goes on from its own offsets.
                frame = frame.option("startingVersion", "0")
        frame = frame.load(str(spec.path(lake_root)))
        return frame if sessions is None else frame.where(F.col("session_id").isin(sessions))

    def typed(frame: Any, kind: str, columns: tuple[str, ...]) -> Any:
        fields = [
            F.col(field.name).cast(spark_type(field.type)).alias(field.name)
            if field.name in columns
            else F.lit(None).cast(spark_type(field.type)).alias(field.name)
            for field in ROWS_ARROW
            if field.name != "kind"
        ]
        return frame.select(F.col("session_id"), F.struct(F.lit(kind).alias("kind"), *fields).alias(ROW))

    return typed(read(BRONZE_EEG_BLOCKS), "block", BLOCK_COLUMNS).unionByName(
        typed(read(BRONZE_SESSIONS), "session", SESSION_COLUMNS)
    )


def spark_type(arrow_type: pa.DataType) -> Any:
    from pyspark.sql.pandas.types import from_arrow_type

    return from_arrow_type(arrow_type)


def processor_config(settings: Any) -> ProcessorConfig:
    lake = settings.lake
    return ProcessorConfig(
        band_low_hz=lake.band_low_hz,
        band_high_hz=lake.band_high_hz,
        notch_hz=lake.notch_hz,
        window_s=lake.window_s,
        window_overlap=lake.window_overlap,
        gap_wait_ms=int(lake.gap_wait_s * 1000),
        default_ssvep_hz=tuple(sorted(settings.edge.stimulus.classes.values())),
        line_filter=lake.line_filter,
        notch_q=lake.notch_q,
        bandstop_width_hz=lake.bandstop_width_hz,
        bandstop_order=lake.bandstop_order,
    )


def start_silver_gold(spark: Any, settings: Any, trigger_s: float | None = None) -> Any:
    return silver_gold_writer(spark, settings, trigger_s).start()


def silver_gold_writer(spark: Any, settings: Any, trigger_s: float | None = None) -> Any:
    """The silver/gold query, planned but not started (a ``DataStreamWriter``): the runner plans it
    while bronze makes its first commit."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    from infra.delta import ensure_table
    from streaming_jobs.bronze import bronze_schema
    from streaming_jobs.checkpoints import checkpoint_dir, clear_unfinished_writes, interruptible

    checkpoint = checkpoint_dir(settings, QUERY_NAME)
    clear_unfinished_writes(checkpoint)
    hold_state_lock(rebuilds_dir(checkpoint), "the silver/gold stream")
    trigger_s = settings.lake.trigger_s if trigger_s is None else trigger_s
    lake_root = settings.paths.lake_root
    # Delta's source needs its tables to exist; an empty lake has none until the first records.
    for spec, record_type in ((BRONZE_EEG_BLOCKS, "eeg_block"), (BRONZE_SESSIONS, "session")):
        ensure_table(spec.path(lake_root), bronze_schema(record_type), properties=spec.table_properties)
    # The state store's partitions are fixed when the checkpoint is made: one per core locally.
    spark.conf.set("spark.sql.shuffle.partitions", str(settings.lake.silver_tasks))
    context = StreamContext(processor_config(settings), str(rebuilds_dir(checkpoint)))
    rows = (
        bronze_rows(spark, lake_root, max_files=settings.lake.max_bronze_files_per_trigger)
        .groupBy("session_id")
        .applyInPandasWithState(
            functools.partial(process_session, context),
            OUTPUT_DDL,
            STATE_DDL,
            "append",
            GroupStateTimeout.ProcessingTimeTimeout,
        )
    )
    sink = SilverGoldSink(
        lake_root, checkpoint, context.config, arrow_records_per_batch=settings.lake.arrow_records_per_batch
    )
    return (
        rows.writeStream.queryName(QUERY_NAME)
        .foreachBatch(interruptible(sink))
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{trigger_s} seconds")
    )
