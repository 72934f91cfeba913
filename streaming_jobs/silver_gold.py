"""Silver and gold from bronze: one stateful query, exactly once, one session's failure isolated.

Flow per micro-batch (``foreachBatch``; bronze rows come from :mod:`streaming_jobs.bronze_source`):

1. The driver reads the batch's offset from the checkpoint (bronze versions and the batch clock)
   and the sessions whose gap wait ends by that clock (timers).
2. Executors (``mapInArrow`` over the source's partitions, each one bucket of sessions; regrouped
   by a shuffle only in batches that add timer ticks) run
   :func:`dsp.session.process` per session, with that session's state loaded
   from the state directory (the newest state saved before this batch), write the Parquet files of
   ``silver.eeg_samples``, ``silver.heart_rate``, ``gold.eeg_windows``, ``silver.skipped_blocks`` and
   ``silver.session_errors``, save each session's new state, and return the files' descriptions.
   A session that raises is written to ``silver.session_errors``; the others go on.
3. The driver commits each table's files in one Delta transaction carrying the app transaction
   ``(silver_gold:<table>, batch id)`` and the settings that made the rows.

Exactly once: the batch's input (files, clock, marker version) is fixed in Spark's offset log
before it runs and the processor is deterministic, so a replay after a crash makes the same rows;
tables that had committed the batch skip it, the others commit it. States are versioned by batch
id, so a replay starts from the state before it.

``silver.eeg_samples``: one row per sample; ``raw`` and ``filtered`` are float arrays in the
session's channel order (names in ``bronze.sessions``); ``time_us`` is lab time (dejittered device
time plus the clock offset); ``gap_before`` > 0 marks the first sample after lost samples.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
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
from infra.delta import LakeTable, WrittenFile
from schemas.catalog import (
    BRONZE_MARKERS,
    GOLD_EEG_WINDOWS,
    SILVER_EEG_SAMPLES,
    SILVER_HEART_RATE,
    SILVER_SESSION_ERRORS,
    SILVER_SKIPPED_BLOCKS,
    TableSpec,
)
from streaming_jobs.bronze_source import ROWS_DDL, SOURCE_NAME, BronzeDeltaSource, parse_offset
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
RESULT_DDL = "kind STRING, name STRING, session_id STRING, payload STRING"
RESULT_ARROW = pa.schema(
    [("kind", pa.string()), ("name", pa.string()), ("session_id", pa.string()), ("payload", pa.string())]
)


# -- state ----------------------------------------------------------------------------------------


class SessionStateStore:
    """Each session's processor state, one file per batch that changed it.

    ``load(session, before=b)`` gives the newest state saved by a batch before ``b``: a replayed
    batch starts where its first attempt did. Only the last few versions are kept.
    """

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = keep

    def _dir(self, session_id: str) -> Path:
        digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
        return self.root / digest[:2] / digest

    def _tags(self, session_id: str) -> list[int]:
        directory = self._dir(session_id)
        if not directory.is_dir():
            return []
        return sorted(int(p.stem) for p in directory.glob("*.state") if p.stem.lstrip("-").isdigit())

    def load(self, session_id: str, before: int) -> SessionState:
        tags = [t for t in self._tags(session_id) if t < before]
        if not tags:
            return SessionState()
        with open(self._dir(session_id) / f"{tags[-1]}.state", "rb") as handle:
            stored_id, state = pickle.load(handle)
        if stored_id != session_id:
            raise RuntimeError(f"state file for {session_id!r} holds {stored_id!r}")
        return state

    def save(self, session_id: str, batch_id: int, state: SessionState) -> None:
        directory = self._dir(session_id)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{batch_id}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            pickle.dump((session_id, state), handle, protocol=5)
        os.replace(temporary, directory / f"{batch_id}.state")
        for old in self._tags(session_id)[: -self.keep]:
            (directory / f"{old}.state").unlink(missing_ok=True)

    def replace(self, session_id: str, batch_id: int, state: SessionState) -> None:
        """Make ``state`` the session's only state, as of ``batch_id`` (a rebuild)."""
        for tag in self._tags(session_id):
            (self._dir(session_id) / f"{tag}.state").unlink(missing_ok=True)
        self.save(session_id, batch_id, state)


class TimerStore:
    """Per batch, the sessions waiting on a gap and the clock (ms) at which their wait ends."""

    def __init__(self, root: Path, keep: int = 5) -> None:
        self.root = root / "_timers"
        self.keep = keep

    def _tags(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(p.stem) for p in self.root.glob("*.json") if p.stem.isdigit())

    def load(self, before: int) -> dict[str, int]:
        tags = [t for t in self._tags() if t < before]
        return json.loads((self.root / f"{tags[-1]}.json").read_text()) if tags else {}

    def save(self, batch_id: int, timers: dict[str, int]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{batch_id}.tmp"
        temporary.write_text(json.dumps(timers, sort_keys=True))
        os.replace(temporary, self.root / f"{batch_id}.json")
        for old in self._tags()[: -self.keep]:
            (self.root / f"{old}.json").unlink(missing_ok=True)


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


# -- per-session work (executors, rebuild) ---------------------------------------------------------


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
            info = info_from_session_record(json.loads(row["session_json"]), config)
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

    def tables(self, markers: pa.Table | None) -> dict[TableSpec, pa.Table]:
        windows = []
        for session_id, rows in self.windows:
            table = windows_table(session_id, rows)
            windows.append(
                table.set_column(table.schema.get_field_index("label"), "label", label_windows(table, markers))
            )
        return {
            SILVER_EEG_SAMPLES: concat(self.samples, SAMPLES_SCHEMA),
            SILVER_HEART_RATE: concat(self.beats, BEATS_SCHEMA),
            GOLD_EEG_WINDOWS: concat(windows, WINDOWS_SCHEMA),
            SILVER_SKIPPED_BLOCKS: concat(self.notes, BLOCK_NOTES_SCHEMA),
            SILVER_SESSION_ERRORS: pa.Table.from_pylist(self.errors, schema=SESSION_ERRORS_SCHEMA),
        }


def read_markers(lake_root: Path, version: int, sessions: list[str]) -> pa.Table | None:
    """The markers of ``sessions`` from bronze at ``version`` (None before any), with their trial
    numbers: a START without a duration lasts until its trial's END (LSL marker streams)."""
    if version < 0 or not sessions:
        return None
    from infra.delta import delta_dataset

    dataset, _ = delta_dataset(BRONZE_MARKERS.path(lake_root), version=version)
    if dataset is None:
        return None
    return dataset.to_table(
        columns=["session_id", "event", "timestamp_us", "duration_s", "label", "trial"],
        filter=pc.field("session_id").isin(sessions),
    )


@dataclass(frozen=True)
class BatchContext:
    """What every executor task of one batch needs (pickled into the task)."""

    batch_id: int
    clock_ms: int
    markers_version: int
    lake_root: str
    state_dir: str
    config: ProcessorConfig


def process_partition(context: BatchContext, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: this task's sessions through the processor; files written, states saved."""
    batch_list = list(batches)
    if not batch_list:
        return
    rows = pa.Table.from_batches(batch_list).to_pylist()
    by_session: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_session.setdefault(row["session_id"], []).append(row)
    store = SessionStateStore(Path(context.state_dir))
    noted_us = context.clock_ms * 1000
    made = SessionTables.empty()
    states: dict[str, SessionState] = {}
    for session_id in sorted(by_session):
        session_rows = by_session[session_id]
        device_id = next((r["device_id"] for r in session_rows if r["device_id"]), "")
        try:
            state = store.load(session_id, before=context.batch_id)
            output, state = process_rows(state, session_rows, context.clock_ms, context.config)
            made.add(session_id, device_id, output, context.batch_id, noted_us)
            states[session_id] = state
        except Exception as exc:  # one session's failure must not stop the others
            log.exception("session %s failed in batch %d", session_id, context.batch_id)
            made.error(session_id, context.batch_id, exc, noted_us)
    window_sessions = [s for s, _ in made.windows]
    markers = read_markers(Path(context.lake_root), context.markers_version, window_sessions)
    results: list[dict[str, Any]] = []
    for spec, table in made.tables(markers).items():
        for file in LakeTable(Path(context.lake_root), spec).write_files(table, prefix=f"part-b{context.batch_id}"):
            results.append({"kind": "file", "name": spec.qualified, "session_id": None, "payload": file.to_json()})
    for session_id, state in states.items():
        store.save(session_id, context.batch_id, state)
        deadline = timer_deadline(state, context.config)
        results.append(
            {
                "kind": "timer",
                "name": None,
                "session_id": session_id,
                "payload": None if deadline is None else str(deadline),
            }
        )
    yield pa.RecordBatch.from_pylist(results, schema=RESULT_ARROW)


# -- labels --------------------------------------------------------------------------------------


def label_windows(windows: pa.Table, markers: pa.Table | None) -> pa.Array:
    """Gold's labels (``dsp.labels.stimulus_labels``) for windows and bronze markers."""
    if markers is None or markers.num_rows == 0 or windows.num_rows == 0:
        return pa.nulls(windows.num_rows, pa.string())
    frame = windows.select(["session_id", "window_start_us", "window_end_us"]).to_pandas()
    marker_frame = markers.to_pandas().rename(columns={"timestamp_us": "time_us"})
    return pa.array(stimulus_labels(frame, marker_frame), pa.string(), from_pandas=True)


# -- the driver ----------------------------------------------------------------------------------


def session_state_dir(checkpoint: Path) -> Path:
    """Beside Spark's checkpoint, not in it: Spark claims ``<checkpoint>/state`` for its own."""
    return checkpoint.parent / f"{checkpoint.name}_sessions"


def read_batch_offset(checkpoint: Path, batch_id: int) -> dict[str, int] | None:
    """This query's source offset for ``batch_id`` from Spark's offset log (None if absent)."""
    try:
        lines = (checkpoint / "offsets" / str(batch_id)).read_text().splitlines()
    except FileNotFoundError:
        return None
    # line 1: version, line 2: batch metadata, then one line per source (this query has one).
    return parse_offset(lines[2])


def commit_metadata(config: ProcessorConfig, offset: dict[str, int]) -> dict[str, str]:
    return {
        "neurolake.settings": json.dumps(config.describe(), sort_keys=True),
        "neurolake.settings_fingerprint": config.fingerprint,
        "neurolake.bronze_versions": json.dumps(offset, sort_keys=True),
    }


class SilverGoldBatch:
    """The ``foreachBatch`` function of the silver/gold query (runs on the driver)."""

    def __init__(
        self, lake_root: Path, checkpoint: Path, config: ProcessorConfig, tasks: int = 2, query_name: str = QUERY_NAME
    ) -> None:
        self.lake_root = lake_root
        self.checkpoint = checkpoint
        self.state_dir = session_state_dir(checkpoint)
        self.config = config
        self.tasks = tasks
        self.query_name = query_name
        self.timers = TimerStore(self.state_dir)
        self.last_batch: dict[str, Any] = {}

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        started = time.monotonic()
        offset = read_batch_offset(self.checkpoint, batch_id)
        if offset is None:
            raise RuntimeError(f"no offset for batch {batch_id} in {self.checkpoint}/offsets")
        previous = read_batch_offset(self.checkpoint, batch_id - 1) or parse_offset({})
        timers = self.timers.load(before=batch_id)
        due = sorted(s for s, deadline in timers.items() if deadline <= offset["clock_ms"])
        has_data = any(offset[t] != previous[t] for t in ("eeg_blocks", "sessions"))
        if not has_data and not due:
            self.timers.save(batch_id, timers)
            return
        # The source already puts each session in one task (bronze_source.BronzeFiles); ticks made
        # here on the driver must be regrouped with their sessions' rows, which costs a shuffle.
        frame = batch_df
        if due:
            spark = batch_df.sparkSession
            ticks = [("tick", s, None, None, None, None, None, None, None, None, None, None) for s in due]
            frame = batch_df.unionByName(spark.createDataFrame(ticks, ROWS_DDL)).repartition(self.tasks, "session_id")
        context = BatchContext(
            batch_id, offset["clock_ms"], offset["markers"], str(self.lake_root), str(self.state_dir), self.config
        )
        results = frame.mapInArrow(functools.partial(process_partition, context), RESULT_DDL).toArrow().to_pylist()
        processed = time.monotonic()
        files: dict[str, list[WrittenFile]] = {}
        for result in results:
            if result["kind"] == "file":
                files.setdefault(result["name"], []).append(WrittenFile.from_json(result["payload"]))
            elif result["kind"] == "timer":
                timers.pop(result["session_id"], None)
                if result["payload"] is not None:
                    timers[result["session_id"]] = int(result["payload"])
        # Before the commits: a replay that finds every table committed still needs the timers.
        self.timers.save(batch_id, timers)
        metadata = commit_metadata(self.config, offset)
        rows = {}
        for spec, schema in OUTPUT_TABLES.items():
            table_files = files.get(spec.qualified, [])
            if table_files:
                LakeTable(self.lake_root, spec).commit_files(
                    schema, table_files, f"{self.query_name}:{spec.name}", batch_id, metadata
                )
            rows[spec.qualified] = sum(json.loads(f.stats)["numRecords"] for f in table_files)
        self.last_batch = {
            "batch_id": batch_id,
            "rows": rows,
            "timers": len(timers),
            "process_s": round(processed - started, 3),
            "commit_s": round(time.monotonic() - processed, 3),
        }
        log.info("silver/gold batch %d: %s", batch_id, self.last_batch)
        if rows["silver.session_errors"]:
            log.error(
                "batch %d: %d session(s) failed; see silver.session_errors", batch_id, rows["silver.session_errors"]
            )


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
    )


def start_silver_gold(spark: Any, settings: Any, trigger_s: float | None = None) -> Any:
    from streaming_jobs.jobs import checkpoint_dir, clear_unfinished_writes

    checkpoint = checkpoint_dir(settings, QUERY_NAME)
    clear_unfinished_writes(checkpoint)
    hold_state_lock(session_state_dir(checkpoint), "the silver/gold stream")
    trigger_s = trigger_s or settings.lake.trigger_s
    spark.dataSource.register(BronzeDeltaSource)
    tasks = settings.lake.silver_tasks
    rows = (
        spark.readStream.format(SOURCE_NAME)
        .schema(ROWS_DDL)  # given, so Spark need not ask the source's Python for it (faster start)
        .option("root", str(settings.paths.lake_root))
        .option("maxVersionsPerTrigger", str(settings.lake.max_bronze_versions_per_trigger))
        .option("maxTasks", str(tasks))
        .load()
    )
    writer = SilverGoldBatch(settings.paths.lake_root, checkpoint, processor_config(settings), tasks)
    return (
        rows.writeStream.queryName(QUERY_NAME)
        .foreachBatch(writer)
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{trigger_s} seconds")
        .start()
    )
