"""Silver and gold from bronze: one stateful Spark query over the sessions, exactly once into Delta.

- **Source**: Delta's own streaming source over ``bronze.eeg_blocks`` and ``bronze.sessions`` (a
  union of the two): silver never reads Kafka, so whatever bronze acknowledged to a Pi can always
  be (re)processed.
- **State**: each session's processor state (filter memory, dejitter fit, window buffer, blocks
  waiting on a gap) lives in Spark's state store, in its bucket's state (sessions hashed into
  :data:`BUCKETS_PER_STATE_PARTITION` buckets per state partition), through
  ``applyInPandasWithState``: :func:`process_sessions` feeds each session's new rows to
  :func:`dsp.session.process` and returns the bucket's rows as Arrow tables (one per output table,
  serialised; the executors build them with the same functions a rebuild and an import use). A
  bucket with a session waiting on a gap gets a processing-time timeout for the earliest wait, so a
  wait ends even if no block comes; the clock is the batch's, fixed in Spark's offset log, so a
  replayed batch makes the same rows. A checkpoint that keyed the state by session (before the
  buckets) is carried over at start (:func:`carry_over_session_states`).
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    empty_table,
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
# The stateful step's groups: sessions hashed into buckets, each bucket's state its sessions'
# pickled states. Every group costs, per batch, a pandas frame, a state row and an output frame in
# PySpark, and the JVM pickling the state row and a state-store get and put: one group per session
# cost more than the sessions' own processing (100 headsets: the Python workers 0.75 -> 0.53 of a
# core). A new checkpoint gets this many buckets per state partition, their ids chosen so that
# Spark's hash partitioning gives each partition as many (:func:`balanced_bucket_ids`): evenly, so
# that neither stateful task waits for the other (ids 0-15 on 2 partitions were 9 and 7), and more
# than one, so that the JVM prepares one bucket's rows while Python processes another's. The ids
# are fixed for the life of the checkpoint (a session's state is found in its bucket only) and kept
# in its layout file.
BUCKETS_PER_STATE_PARTITION = 3
# What a checkpoint's layout file meant before it named its bucket ids: 16 buckets, ids 0-15.
FIRST_BUCKET_COUNT = 16


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
        # Only what has rows: the stream adds every session of a bucket at every batch, and most
        # outputs have no notes (an empty table was ~0.06-0.1 ms of pyarrow's work each).
        if output.samples:
            self.samples.append(samples_table(session_id, output.samples))
        if output.beats:
            self.beats.append(beats_table(session_id, output.beats))
        if output.windows:
            self.windows.append((session_id, output.windows))
        for kind, notes in (("late", output.late), ("rejected", output.rejected)):
            if notes:
                self.notes.append(notes_table(session_id, device_id, notes, batch_id, noted_us, kind))

    def extend(self, other: SessionTables) -> None:
        self.samples += other.samples
        self.beats += other.beats
        self.windows += other.windows
        self.notes += other.notes
        self.errors += other.errors

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
            SILVER_SESSION_ERRORS: (
                pa.Table.from_pylist(self.errors, schema=SESSION_ERRORS_SCHEMA)
                if self.errors
                else empty_table(SESSION_ERRORS_SCHEMA)
            ),
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
    # A session idle this long with no gap wait is parked (:func:`park_idle_sessions`).
    park_after_ms: int = 600_000
    # bucket -> session -> deadline (ms): gap waits of sessions carried over from a checkpoint keyed
    # by session, for their buckets' first call (their states are adopted as rebuild states).
    carried_deadlines: Mapping[int, Mapping[str, int]] = field(default_factory=dict)


def process_sessions(context: StreamContext, key: tuple[int], frames: Iterator[Any], group_state: Any) -> Iterator[Any]:
    """``applyInPandasWithState`` function over one bucket of sessions (:func:`session_bucket`):
    each session with new bronze rows, or whose gap wait has ended, through the processor, its state
    in and out of the bucket's state. Yields one row per non-empty table."""
    freeze_long_lived_objects()
    now_ms = int(group_state.getCurrentProcessingTimeMs())
    rows = {} if group_state.hasTimedOut else rows_by_session(frames)
    # A new bucket starts with the gap waits of the sessions carried over into it, if any.
    bucket: dict[str, dict[str, Any]] = (
        pickle.loads(group_state.get[0])
        if group_state.exists
        else {"states": {}, "deadlines": dict(context.carried_deadlines.get(int(key[0]), {})), "seen": {}}
    )
    states: dict[str, bytes] = bucket["states"]
    deadlines: dict[str, int] = bucket["deadlines"]
    seen: dict[str, int] = bucket["seen"]
    due = {session_id for session_id, deadline in deadlines.items() if deadline <= now_ms}
    made = SessionTables.empty()
    for session_id in sorted(rows.keys() | due):
        state = advance_session(context, session_id, states.get(session_id), rows.get(session_id, []), now_ms, made)
        # A session that failed keeps its state and waits for its next rows (no timer: a retry
        # every batch would only repeat its error).
        deadline = timer_deadline(state, context.config) if state is not None else None
        if state is not None:
            states[session_id] = pickle.dumps(state, protocol=5)
        if deadline is None:
            deadlines.pop(session_id, None)
        else:
            deadlines[session_id] = deadline
        seen[session_id] = now_ms
    park_idle_sessions(context, bucket, now_ms)
    group_state.update((pickle.dumps(bucket, protocol=5),))
    if deadlines:
        group_state.setTimeoutDuration(max(1, min(deadlines.values()) - now_ms))
    yield output_frame(made)


def park_idle_sessions(context: StreamContext, bucket: dict[str, dict[str, Any]], now_ms: int) -> None:
    """Take the sessions that had no rows for ``context.park_after_ms`` and wait on no gap out of the
    bucket's state, leaving each state to be adopted if its blocks come again (:func:`leave_for_adoption`):
    a bucket otherwise carries every session it ever had through the JVM at every batch. The parked
    id is the batch's clock, so a replayed batch parks the same state under the same id."""
    states, deadlines, seen = bucket["states"], bucket["deadlines"], bucket["seen"]
    idle = [
        session_id
        for session_id in states
        if session_id not in deadlines and now_ms - seen.setdefault(session_id, now_ms) > context.park_after_ms
    ]
    for session_id in idle:
        leave_for_adoption(
            Path(context.rebuilds_dir), session_id, f"parked-{now_ms}", pickle.loads(states.pop(session_id))
        )
        del seen[session_id]


def leave_for_adoption(rebuilds_dir: Path, session_id: str, leave_id: str, state: SessionState) -> bool:
    """Leave ``state`` as the state the stream adopts when it next meets the session (a rebuild state),
    unless a rebuild the stream has not adopted yet is there: that one is newer. Whether it was left."""
    found = read_rebuild_state(rebuild_state_path(rebuilds_dir, session_id), session_id)
    if found is not None and found.rebuild_id != state.rebuild_id:
        return False
    save_rebuild_state(rebuilds_dir, session_id, leave_id, state)
    return True


def process_session(context: StreamContext, key: tuple[str], frames: Iterator[Any], group_state: Any) -> Iterator[Any]:
    """The stateful step of a checkpoint keyed by session (before the buckets): run only
    to finish such a checkpoint's batches before its states are carried over
    (:func:`carry_over_session_states`)."""
    freeze_long_lived_objects()
    (session_id,) = key
    now_ms = int(group_state.getCurrentProcessingTimeMs())
    rows = [] if group_state.hasTimedOut else rows_by_session(frames).get(session_id, [])
    made = SessionTables.empty()
    stored = group_state.get[0] if group_state.exists else None
    state = advance_session(context, session_id, stored, rows, now_ms, made)
    if state is not None:
        group_state.update((pickle.dumps(state, protocol=5),))
        deadline = timer_deadline(state, context.config)
        if deadline is not None:
            group_state.setTimeoutDuration(max(1, deadline - now_ms))
    yield output_frame(made)


def output_frame(made: SessionTables) -> Any:
    """The stateful step's output (``OUTPUT_DDL``): one row per non-empty table, its rows as Arrow IPC."""
    import pandas as pd

    tables = [(spec.qualified, table) for spec, table in made.tables().items() if table.num_rows]
    return pd.DataFrame(
        {
            "table": [name for name, _ in tables],
            "session_id": [None] * len(tables),
            "rows": [to_ipc(table) for _, table in tables],
        }
    )


def advance_session(
    context: StreamContext,
    session_id: str,
    stored: bytes | None,
    rows: list[dict[str, Any]],
    now_ms: int,
    made: SessionTables,
) -> SessionState | None:
    """One session's rows (none: its gap wait ended) through the processor, from its pickled state;
    its rows added to ``made``. None when it failed (recorded in ``made``: one session's failure
    must not stop the others)."""
    try:
        before = pickle.loads(stored) if stored is not None else SessionState()
        before = adopt_rebuild(context, session_id, before)
        device_id = next(
            (r["device_id"] for r in rows if r.get("device_id")), before.info.device_id if before.info else ""
        )
        output, state = process_rows(before, rows, now_ms, context.config)
        # Its rows join the others' only whole: a failure half-way must leave none behind.
        own = SessionTables.empty()
        own.add(session_id, device_id, output, -1, now_ms * 1000)
    except Exception as exc:
        log.exception("session %s failed", session_id)
        made.error(session_id, -1, exc, now_ms * 1000)
        return None
    made.extend(own)
    return state


def rows_by_session(frames: Iterator[Any]) -> dict[str, list[dict[str, Any]]]:
    """Pandas frames of ``STREAM_ROWS_ARROW`` rows as each session's bronze rows (``ROWS_ARROW``
    dicts), in order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for frame in frames:
        for session_id, row in zip(frame["session_id"], frame[ROW]):
            rows.setdefault(session_id, []).append(row)
    return rows


def rows_of(frame: Any) -> list[dict[str, Any]]:
    """A pandas frame of ``STREAM_ROWS_ARROW`` rows as the bronze rows (``ROWS_ARROW`` dicts) it holds."""
    return list(frame[ROW])


def adopt_rebuild(context: StreamContext, session_id: str, state: SessionState) -> SessionState:
    """A session rebuilt since the stream last saw it goes on from the rebuild's state (the rebuild
    replaced its rows), so blocks read again are recognised as done."""
    found = read_rebuild_state(rebuild_state_path(Path(context.rebuilds_dir), session_id), session_id)
    if found is None or getattr(state, "rebuild_id", None) == found.rebuild_id:
        return state
    rebuilt = found.state()
    rebuilt.rebuild_id = found.rebuild_id
    return rebuilt


def rebuild_state_path(rebuilds_dir: Path, session_id: str) -> Path:
    import hashlib

    return rebuilds_dir / f"{hashlib.sha256(session_id.encode()).hexdigest()[:32]}.state"


def save_rebuild_state(rebuilds_dir: Path, session_id: str, rebuild_id: str, state: SessionState) -> None:
    """The header (session, rebuild id) and the state as two pickles, so that a reader checking the
    id (the stream, for every session that has such a file, at every batch) need not load the state."""
    replace_file(
        rebuild_state_path(rebuilds_dir, session_id),
        pickle.dumps((session_id, rebuild_id), protocol=5) + pickle.dumps(state, protocol=5),
    )


@dataclass(frozen=True)
class LeftState:
    """A rebuild state file read as far as its header: whose, which rebuild, and its state on demand."""

    session_id: str
    rebuild_id: str
    _state: SessionState | None
    _rest: bytes | None

    def state(self) -> SessionState:
        return self._state if self._rest is None else pickle.loads(self._rest)


def read_rebuild_state(path: Path, session_id: str | None = None) -> LeftState | None:
    """A rebuild state file, its state not yet loaded; None without one. Checks the file is
    ``session_id``'s when given. (Files written before the header was split hold one pickle of all
    three.)"""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None
    with handle:
        header = pickle.load(handle)
        if len(header) == 3:
            found = LeftState(header[0], header[1], header[2], None)
        else:
            found = LeftState(header[0], header[1], None, handle.read())
    if session_id is not None and found.session_id != session_id:
        raise RuntimeError(f"rebuild state {path} holds {found.session_id!r}, not {session_id!r}")
    return found


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
    spark: Any,
    lake_root: Path,
    streaming: bool = True,
    sessions: list[str] | None = None,
    max_files: int = 1000,
    starting_versions: Mapping[str, int] | None = None,
) -> Any:
    """What the processor reads of bronze, as one DataFrame of ``STREAM_ROWS_ARROW`` rows: a stream from
    Delta's streaming source (a new checkpoint from ``starting_versions``, per table, where given),
    or (for a rebuild) the tables as they are, for ``sessions``."""
    from pyspark.sql import functions as F

    from infra.delta import latest_version, only_appended

    def read(spec: TableSpec) -> Any:
        reader = spark.readStream if streaming else spark.read
        frame = reader.format("delta")
        if streaming:
            frame = frame.option("maxFilesPerTrigger", str(max_files))
            if starting_versions and spec.qualified in starting_versions:
                # Where a carried-over checkpoint ended may be a version not yet written: the latest
                # is then read again (its blocks are recognised as done).
                version = min(starting_versions[spec.qualified], latest_version(spec.path(lake_root)))
                frame = frame.option("startingVersion", str(max(0, version)))
            elif only_appended(spec.path(lake_root)):
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


BUCKET = "bucket"


def session_bucket(bucket_ids: Sequence[int], session_id: str = "session_id") -> Any:
    """The Spark column of a session's bucket, one of ``bucket_ids``, from its ``session_id`` column."""
    from pyspark.sql import functions as F

    index = F.pmod(F.xxhash64(F.col(session_id)), F.lit(len(bucket_ids)))
    if list(bucket_ids) == list(range(len(bucket_ids))):
        # Ids 0..n-1 (2 partitions x 3 are; so was every checkpoint before ids were chosen): the
        # index is the id, the state key as it always was.
        return index
    ids = F.array(*(F.lit(bucket).cast("long") for bucket in bucket_ids))
    return F.element_at(ids, (index + 1).cast("int"))


def balanced_bucket_ids(spark: Any, partitions: int, per_partition: int) -> tuple[int, ...]:
    """``per_partition`` bucket ids for each of ``partitions`` state partitions: the smallest ids that
    Spark's hash partitioning of the stateful step's grouping key (a long) sends there, found with
    Spark's own hash in the driver. (An inline table is evaluated there, with no job: a job at a
    stream's start took task slots from bronze's first batch.)"""
    candidates = 16 * partitions * per_partition
    while True:
        values = ", ".join(f"({bucket}L)" for bucket in range(candidates))
        found = spark.sql(
            f"SELECT bucket, pmod(hash(bucket), {int(partitions)}) AS partition FROM VALUES {values} AS ids(bucket)"
        ).collect()
        chosen: dict[int, list[int]] = {}
        for row in found:
            ids = chosen.setdefault(int(row["partition"]), [])
            if len(ids) < per_partition:
                ids.append(int(row["bucket"]))
        if len(chosen) == partitions and all(len(ids) == per_partition for ids in chosen.values()):
            return tuple(sorted(bucket for ids in chosen.values() for bucket in ids))
        candidates *= 4


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
    from infra.delta import ensure_table
    from streaming_jobs.bronze import bronze_schema
    from streaming_jobs.checkpoints import checkpoint_dir, clear_unfinished_writes

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
    context = StreamContext(
        processor_config(settings), str(rebuilds_dir(checkpoint)), int(settings.lake.idle_session_park_s * 1000)
    )
    layout = checkpoint_layout(checkpoint, spark, settings.lake.silver_tasks)
    if layout is None:
        layout = carry_over_session_states(spark, settings, checkpoint, context)
    context = replace(context, carried_deadlines=layout.carried_deadlines)
    return stateful_writer(spark, settings, checkpoint, context, layout.bucket_ids, layout.starting_versions).trigger(
        processingTime=f"{trigger_s} seconds"
    )


def stateful_writer(
    spark: Any,
    settings: Any,
    checkpoint: Path,
    context: StreamContext,
    bucket_ids: Sequence[int] = (),
    starting_versions: Mapping[str, int] | None = None,
    by_session: bool = False,
    until_idle: bool = False,
) -> Any:
    """The silver/gold query without its trigger: grouped by bucket (one of ``bucket_ids``), or
    ``by_session`` as a checkpoint made before the buckets was (only to finish its batches);
    ``until_idle``: see :class:`UntilIdle`."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    from streaming_jobs.checkpoints import interruptible

    if not by_session and not bucket_ids:
        raise ValueError("the stateful step grouped by bucket needs its checkpoint's bucket ids")
    lake_root = settings.paths.lake_root
    rows = bronze_rows(
        spark, lake_root, max_files=settings.lake.max_bronze_files_per_trigger, starting_versions=starting_versions
    )
    grouped = (
        rows.groupBy("session_id")
        if by_session
        else rows.withColumn(BUCKET, session_bucket(bucket_ids)).groupBy(BUCKET)
    )
    step = process_session if by_session else process_sessions
    stateful = grouped.applyInPandasWithState(
        functools.partial(step, context), OUTPUT_DDL, STATE_DDL, "append", GroupStateTimeout.ProcessingTimeTimeout
    )
    sink: Any = SilverGoldSink(
        lake_root, checkpoint, context.config, arrow_records_per_batch=settings.lake.arrow_records_per_batch
    )
    if until_idle:
        sink = UntilIdle(sink, checkpoint)
    return (
        stateful.writeStream.queryName(QUERY_NAME)
        .foreachBatch(interruptible(sink))
        .option("checkpointLocation", str(checkpoint))
    )


# In silver/gold's checkpoint, written when this code makes it: how its state is keyed, and where a
# checkpoint carried over from one keyed by session starts reading bronze.
LAYOUT_FILE = "neurolake-state.json"
CARRY_OVER_TIMEOUT_S = 900


@dataclass(frozen=True)
class CheckpointLayout:
    bucket_ids: tuple[int, ...]
    # bronze table -> the Delta version a carried-over checkpoint starts reading at.
    starting_versions: Mapping[str, int] = field(default_factory=dict)
    carried_deadlines: Mapping[int, Mapping[str, int]] = field(default_factory=dict)

    def save(self, checkpoint: Path) -> None:
        checkpoint.mkdir(parents=True, exist_ok=True)
        replace_file(
            checkpoint / LAYOUT_FILE,
            json.dumps(
                {
                    "state_key": BUCKET,
                    "buckets": len(self.bucket_ids),
                    "bucket_ids": list(self.bucket_ids),
                    "starting_versions": dict(self.starting_versions),
                    "carried_deadlines": {str(b): dict(d) for b, d in self.carried_deadlines.items()},
                },
                indent=1,
            ).encode(),
        )


def checkpoint_layout(checkpoint: Path, spark: Any, partitions: int) -> CheckpointLayout | None:
    """The layout of silver/gold's checkpoint: that of a new one (made now, for ``partitions`` state
    partitions), that this code wrote, or None for a checkpoint keyed by session (made before the
    buckets)."""
    from core.errors import NeurolakeError

    path = checkpoint / LAYOUT_FILE
    if not path.exists():
        if (checkpoint / "state").is_dir():
            return None
        layout = CheckpointLayout(balanced_bucket_ids(spark, partitions, BUCKETS_PER_STATE_PARTITION))
        layout.save(checkpoint)
        return layout
    found = json.loads(path.read_text())
    ids = found.get("bucket_ids", list(range(found.get("buckets", FIRST_BUCKET_COUNT))))
    if not ids or not all(isinstance(bucket, int) and bucket >= 0 for bucket in ids) or len(set(ids)) < len(ids):
        raise NeurolakeError(
            f"silver/gold's checkpoint layout {path} names the bucket ids {ids!r}; they must be distinct "
            "integers >= 0, as the stream wrote them: put back the ids the checkpoint was made with, or "
            "move the checkpoint aside and run `neurolake lake rebuild`"
        )
    return CheckpointLayout(
        tuple(ids),
        {table: int(version) for table, version in found.get("starting_versions", {}).items()},
        {
            int(b): {s: int(d) for s, d in sessions.items()}
            for b, sessions in found.get("carried_deadlines", {}).items()
        },
    )


def carry_over_session_states(spark: Any, settings: Any, checkpoint: Path, context: StreamContext) -> CheckpointLayout:
    """Move a checkpoint keyed by session onto the bucketed state, losing and repeating nothing:
    finish its planned batches with the per-session step (Spark's ``availableNow``), leave each
    session's state as a rebuild state (adopted when the session's next rows come, as after a
    rebuild), move the checkpoint aside (``<name>.by-session``), and start a new one where it
    ended in bronze, with the carried sessions' gap waits. Returns the new checkpoint's layout."""
    from pyspark.sql import functions as F

    from streaming_jobs.checkpoints import checkpoint_identity

    log.warning("silver/gold's checkpoint %s keys its state by session: carrying it over to buckets", checkpoint)
    started = time.monotonic()
    # Spark runs a batch after every batch of a query with processing-time timeouts, data or not
    # (so availableNow alone never ends): the run ends at the first batch with no new bronze rows
    # after the one planned before it stopped, which the sink refuses before it does anything.
    finishing = stateful_writer(spark, settings, checkpoint, context, by_session=True, until_idle=True)
    query = finishing.trigger(availableNow=True).start()
    try:
        finished = query.awaitTermination(CARRY_OVER_TIMEOUT_S)
    except Exception as exc:
        if FinishedBatches.__name__ not in str(exc):
            raise
        finished = True
    if not finished:
        query.stop()
        raise RuntimeError(
            f"silver/gold's checkpoint {checkpoint} did not finish its batches within "
            f"{CARRY_OVER_TIMEOUT_S} s; nothing was carried over (start again to retry)"
        )
    _ = spark.streams.active  # the state reader needs the driver's state store coordinator
    stored = (
        spark.read.format("statestore")
        .load(str(checkpoint))
        .select(F.col("key.session_id").alias("session_id"), F.col("value.groupState.state").alias("state"))
        .collect()
    )
    carried_id = f"carried-{checkpoint_identity(checkpoint)}"
    deadlines: dict[str, int] = {}
    for row in stored:
        session_id, state = row["session_id"], pickle.loads(row["state"])
        if not leave_for_adoption(Path(context.rebuilds_dir), session_id, carried_id, state):
            continue
        deadline = timer_deadline(state, context.config)
        if deadline is not None:
            deadlines[session_id] = deadline
    bucket_ids = balanced_bucket_ids(spark, settings.lake.silver_tasks, BUCKETS_PER_STATE_PARTITION)
    carried: dict[int, dict[str, int]] = {}
    if deadlines:
        buckets = spark.createDataFrame([(s,) for s in deadlines], "session_id STRING").select(
            "session_id", session_bucket(bucket_ids).alias(BUCKET)
        )
        for row in buckets.collect():
            carried.setdefault(int(row[BUCKET]), {})[row["session_id"]] = deadlines[row["session_id"]]
    layout = CheckpointLayout(bucket_ids, last_bronze_versions(checkpoint), carried)
    aside = checkpoint.with_name(f"{checkpoint.name}.by-session")
    if aside.exists():
        aside = checkpoint.with_name(f"{checkpoint.name}.by-session-{int(time.time())}")
    checkpoint.rename(aside)
    layout.save(checkpoint)
    log.warning(
        "silver/gold: %d session state(s) carried over in %.1f s (%d waiting on a gap); the old checkpoint is in %s",
        len(stored),
        time.monotonic() - started,
        len(deadlines),
        aside,
    )
    return layout


class FinishedBatches(RuntimeError):
    """Raised by :class:`UntilIdle`'s sink to end its query."""


class UntilIdle:
    """A silver/gold sink that ends its query at the first batch with no new bronze rows after the
    batch its checkpoint had planned at the start (that one always runs: a planned batch may have
    committed some tables already, and its replay must match). The ending batch is refused before
    the stateful step runs, so it leaves neither rows nor state."""

    def __init__(self, sink: Any, checkpoint: Path) -> None:
        from streaming_jobs.checkpoints import spark_log_batches

        self.sink = sink
        self.checkpoint = checkpoint
        self.planned = max(spark_log_batches(checkpoint / "offsets"), default=-1)

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        from streaming_jobs.checkpoints import source_offsets

        if batch_id > self.planned and source_offsets(self.checkpoint, batch_id) == source_offsets(
            self.checkpoint, batch_id - 1
        ):
            raise FinishedBatches(f"silver/gold: batch {batch_id} has no new bronze rows; its batches are finished")
        self.sink(batch_df, batch_id)


def last_bronze_versions(checkpoint: Path) -> dict[str, int]:
    """Where a finished silver/gold checkpoint ended in bronze: each source's Delta version after its
    last committed batch. A batch that ended inside a version is read again from that version's
    start: blocks a state has taken are recognised as done (:func:`dsp.session.process`)."""
    from streaming_jobs.checkpoints import source_offsets, spark_log_batches

    committed = spark_log_batches(checkpoint / "commits")
    if not committed:
        return {}
    versions = {}
    for spec, offset in zip((BRONZE_EEG_BLOCKS, BRONZE_SESSIONS), source_offsets(checkpoint, max(committed))):
        if offset.get("isStartingVersion") or offset.get("isInitialSnapshot"):
            continue  # still inside the table's first snapshot: read it again from there
        versions[spec.qualified] = int(offset["reservoirVersion"])
    return versions
