"""Re-derive silver and gold from bronze: after a settings change, a fix, or blocks that came late.

The stream's own code path as a Spark batch job: bronze's rows of the sessions (the same union of
blocks and session records the stream reads) grouped by session (``applyInPandas``) through the
processor (:func:`rebuild_session`, chunk by chunk with every gap final, since bronze holds all a
session will get), the output unpacked and labelled by the stream sink's own task, and each
table's rows of those sessions replaced in one Delta transaction (``replaceWhere``) whose metadata
records the settings that made them. Each session's final state is left for the stream, which
adopts it (``streaming_jobs.silver_gold.adopt_rebuild``), so blocks it reads again are done.

A session is up to date, and skipped, when its rows were all made with the current settings (the
stream's state, read with Spark's state store reader, or its last rebuild's) and no block of it
came late or failed; so a second rebuild writes nothing. The stream and a rebuild never run at
once (they share the state lock); a rebuild cut short leaves a journal that keeps the stream from
starting until the rebuild is run again.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from core.errors import NeurolakeError
from dsp.session import ProcessorConfig, SessionState
from infra.delta import delta_dataset, spark_replace_sessions
from schemas.catalog import (
    BRONZE_EEG_BLOCKS,
    GOLD_EEG_WINDOWS,
    SILVER_EEG_SAMPLES,
    SILVER_HEART_RATE,
    SILVER_SESSION_ERRORS,
    SILVER_SKIPPED_BLOCKS,
)
from streaming_jobs.bronze import spark_struct
from streaming_jobs.silver_gold import (
    OUTPUT_DDL,
    OUTPUT_TABLES,
    REBUILD_JOURNAL,
    SessionTables,
    StateLock,
    bronze_rows,
    commit_metadata,
    process_rows,
    read_rebuild_state,
    rebuilds_dir,
    rows_of,
    save_rebuild_state,
    to_ipc,
    unpack_task,
)

log = logging.getLogger(__name__)

TARGETS = {
    "silver": {SILVER_EEG_SAMPLES, SILVER_HEART_RATE},
    "gold": {GOLD_EEG_WINDOWS},
    "all": {SILVER_EEG_SAMPLES, SILVER_HEART_RATE, GOLD_EEG_WINDOWS},
}
# Always rewritten for a rebuilt session: what the rebuild found late, rejected or failing.
BOOKKEEPING = {SILVER_SKIPPED_BLOCKS, SILVER_SESSION_ERRORS}
CHUNK_S = 60.0


@dataclass
class RebuildReport:
    rebuilt: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    late_blocks_included: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "rebuilt": self.rebuilt,
            "up_to_date": self.up_to_date,
            "rows": self.rows,
            "late_blocks_included": self.late_blocks_included,
        }


def bronze_sessions(lake_root: Path) -> list[str]:
    dataset, _ = delta_dataset(BRONZE_EEG_BLOCKS.path(lake_root))
    if dataset is None:
        return []
    return sorted(pc.unique(dataset.to_table(columns=["session_id"]).column("session_id")).to_pylist())


def sessions_with_notes(lake_root: Path) -> tuple[set[str], dict[str, int]]:
    """Sessions with a skipped block or an error (they need a rebuild), and late blocks per session."""
    flagged: set[str] = set()
    late: dict[str, int] = {}
    for spec in (SILVER_SKIPPED_BLOCKS, SILVER_SESSION_ERRORS):
        dataset, _ = delta_dataset(spec.path(lake_root))
        if dataset is None:
            continue
        columns = ["session_id", "kind"] if spec == SILVER_SKIPPED_BLOCKS else ["session_id"]
        for row in dataset.to_table(columns=columns).to_pylist():
            flagged.add(row["session_id"])
            if row.get("kind") == "late":
                late[row["session_id"]] = late.get(row["session_id"], 0) + 1
    return flagged, late


def made_with(spark: Any, checkpoint: Path) -> dict[str, frozenset[str]]:
    """Per session, the settings fingerprints its rows were made with: the stream's state (Spark's
    state store reader over the checkpoint), or the session's last rebuild when that is newer."""
    streamed: dict[str, Any] = {}
    if (checkpoint / "state").is_dir():
        _ = spark.streams.active  # the state reader needs the driver's state store coordinator
        for row in spark.read.format("statestore").load(str(checkpoint)).collect():
            stored = pickle.loads(row["value"]["groupState"]["state"])
            # A bucket's sessions, or one session in a checkpoint made before them.
            if isinstance(stored, dict):
                streamed.update((session_id, pickle.loads(state)) for session_id, state in stored["states"].items())
            else:
                streamed[row["key"]["session_id"]] = stored
    found = {session_id: state.fingerprints for session_id, state in streamed.items()}
    # A state left beside the checkpoint (a rebuild's, a parked or carried-over session's) that the
    # stream has not taken up is the newer one.
    for path in rebuilds_dir(checkpoint).glob("*.state"):
        left = read_rebuild_state(path)
        if left is not None and getattr(streamed.get(left.session_id), "rebuild_id", None) != left.rebuild_id:
            found[left.session_id] = left.state().fingerprints
    return found


def rebuild_session(config: ProcessorConfig, rebuild_id: str, key: tuple[str], frame: Any) -> Any:
    """``applyInPandas`` function: every bronze row of one session through the processor, in chunks
    of about ``CHUNK_S`` in sample order. Returns the output tables (as the stream's stateful step
    does) and a ``state`` row with the session's final state."""
    import pandas as pd

    (session_id,) = key
    rows = rows_of(frame)
    records = [r for r in rows if r["kind"] == "session"][:1]
    blocks = sorted((r for r in rows if r["kind"] == "block"), key=lambda r: r["first_sample_index"])
    device_id = records[0]["device_id"] if records else (blocks[0]["device_id"] if blocks else "")
    rate = blocks[0]["sample_rate_hz"] if blocks else 0.0
    per_block = blocks[0]["n_samples"] if blocks else 1
    per_chunk = max(1, int(CHUNK_S * rate / max(1, per_block)))
    made = SessionTables.empty()
    state = SessionState()
    clock_ms = 0
    pending_records = records
    for start in range(0, max(len(blocks), 1), per_chunk):
        chunk = pending_records + blocks[start : start + per_chunk]
        pending_records = []
        output, state = process_rows(state, chunk, clock_ms, config)
        made.add(session_id, device_id, output, -1, 0)
        # Bronze holds every block this stretch will get: a gap in it is final, no need to wait.
        clock_ms += config.gap_wait_ms + 1
        output, state = process_rows(state, [], clock_ms, config)
        made.add(session_id, device_id, output, -1, 0)
        clock_ms += 1
    state.rebuild_id = rebuild_id
    tables = [(spec.qualified, table) for spec, table in made.tables().items()]
    return pd.DataFrame(
        {
            "table": [name for name, _ in tables] + ["state"],
            "session_id": [session_id] * (len(tables) + 1),
            "rows": [to_ipc(table) for _, table in tables] + [pickle.dumps(state, protocol=5)],
        }
    )


def rebuild(
    spark: Any,
    lake_root: Path,
    checkpoint: Path,
    config: ProcessorConfig,
    target: str = "all",
    sessions: Sequence[str] | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    group_size: int = 8,
) -> RebuildReport:
    """Rebuild ``target`` tables for ``sessions`` (default: every session in bronze), ``group_size``
    sessions per Spark job; ``progress(done, total)`` after each group."""
    if target not in TARGETS:
        raise NeurolakeError(f"unknown rebuild target {target!r}; choose silver, gold or all")
    state_dir = rebuilds_dir(checkpoint)
    lock = StateLock(state_dir)
    if not lock.acquire("a rebuild"):
        raise NeurolakeError(
            f"the silver/gold stream ({lock.holder()}) is running; stop it first (Ctrl-C where "
            f"`neurolake stream start` runs, or SIGTERM to that pid), then rebuild"
        )
    try:
        known = bronze_sessions(lake_root)
        wanted = list(sessions) if sessions else known
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise NeurolakeError(
                f"no EEG blocks in bronze for session(s) {', '.join(unknown)}; `neurolake sessions` lists the sessions"
            )
        journal = state_dir / REBUILD_JOURNAL
        report = RebuildReport()
        flagged, late = sessions_with_notes(lake_root)
        current = made_with(spark, checkpoint)
        todo = [
            s
            for s in wanted
            if force or journal.exists() or s in flagged or current.get(s) != frozenset({config.fingerprint})
        ]
        report.up_to_date = [s for s in wanted if s not in todo]
        metadata = {**commit_metadata(config), "neurolake.rebuild": "1"}
        for first in range(0, len(todo), group_size):
            group = todo[first : first + group_size]
            journal.write_text(json.dumps({"sessions": group, "target": target}))
            _rebuild_group(spark, lake_root, state_dir, config, target, group, metadata, report)
            for session_id in group:
                report.late_blocks_included += late.get(session_id, 0)
            report.rebuilt += group
            if progress:
                progress(len(report.rebuilt), len(todo))
        journal.unlink(missing_ok=True)
        return report
    finally:
        lock.release()


def _rebuild_group(
    spark: Any,
    lake_root: Path,
    state_dir: Path,
    config: ProcessorConfig,
    target: str,
    sessions: list[str],
    metadata: dict[str, str],
    report: RebuildReport,
) -> None:
    rebuild_id = uuid.uuid4().hex[:12]

    def rebuild_group(key: tuple[str], frame: Any) -> Any:
        # A plain function, not functools.partial: Spark inspects its signature for the UDF kind.
        return rebuild_session(config, rebuild_id, key, frame)

    out = (
        bronze_rows(spark, lake_root, streaming=False, sessions=sessions)
        .groupBy("session_id")
        .applyInPandas(rebuild_group, OUTPUT_DDL)
        .persist()
    )
    try:
        specs = sorted(TARGETS[target] | BOOKKEEPING)
        # The tables commit side by side (each a Spark job and a Delta commit of its own).
        with ThreadPoolExecutor(len(specs)) as pool:
            futures = {
                spec: pool.submit(
                    spark_replace_sessions,
                    out.where(out["table"] == spec.qualified).mapInArrow(
                        functools.partial(unpack_task, spec.qualified, -1, str(lake_root)),
                        spark_struct(OUTPUT_TABLES[spec]),
                    ),
                    spec.path(lake_root),
                    sessions,
                    metadata,
                )
                for spec in specs
            }
            for spec, future in futures.items():
                report.rows[spec.qualified] = report.rows.get(spec.qualified, 0) + future.result()
        # States last: once a session's state is here, the stream goes on from the rebuilt rows.
        for row in out.where(out["table"] == "state").select("session_id", "rows").collect():
            save_rebuild_state(state_dir, row["session_id"], rebuild_id, pickle.loads(row["rows"]))
        log.info("rebuilt %s: %s", ", ".join(sessions), report.rows)
    finally:
        out.unpersist()
