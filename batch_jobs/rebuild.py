"""Re-derive silver and gold from bronze: after a settings change, a fix, or blocks that came late.

Per session, every block bronze holds goes through the streaming job's own processor (same code,
same Arrow rows), and each table's rows for the session are replaced in one Delta transaction
whose metadata records the settings that made them. The session's stream state is then replaced
too, so the stream goes on from the rebuilt rows: blocks it reads again are recognised as done.

A session is up to date, and skipped, when its rows were all made with the current settings and
no block of it came late or failed; so a second rebuild writes nothing. The stream and a rebuild
never run at once (they share the state lock); a rebuild cut short leaves a journal that keeps
the stream from starting until the rebuild is run again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.errors import NeurolakeError
from dsp.session import ProcessorConfig, SessionState
from infra.delta import delta_dataset, latest_version
from schemas.catalog import (
    BRONZE_EEG_BLOCKS,
    BRONZE_MARKERS,
    BRONZE_SESSIONS,
    GOLD_EEG_WINDOWS,
    SILVER_EEG_SAMPLES,
    SILVER_HEART_RATE,
    SILVER_SESSION_ERRORS,
    SILVER_SKIPPED_BLOCKS,
)
from schemas.timebase import now_us
from streaming_jobs.bronze_source import BLOCK_COLUMNS, ROWS_ARROW, session_json
from streaming_jobs.silver_gold import (
    OUTPUT_TABLES,
    REBUILD_JOURNAL,
    SessionStateStore,
    SessionTables,
    StateLock,
    commit_metadata,
    process_rows,
    read_markers,
    session_state_dir,
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


def last_committed_batch(checkpoint: Path) -> int:
    commits = checkpoint / "commits"
    ids = [int(p.name) for p in commits.iterdir() if p.name.isdigit()] if commits.is_dir() else []
    return max(ids, default=-1)


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


def needs_rebuild(store: SessionStateStore, session_id: str, config: ProcessorConfig, flagged: set[str]) -> bool:
    state = store.load(session_id, before=2**62)
    return state.info is None or state.fingerprints != {config.fingerprint} or session_id in flagged


def _session_rows(lake_root: Path, blocks: ds.Dataset, session_id: str) -> tuple[list[dict], pa.Table]:
    """(session record rows as the stream sees them, the session's blocks in sample order)."""
    sessions, _ = delta_dataset(BRONZE_SESSIONS.path(lake_root))
    records = []
    if sessions is not None:
        for row in sessions.to_table(filter=pc.field("session_id") == session_id).to_pylist()[:1]:
            records.append(
                {
                    **{n: None for n in ROWS_ARROW.names},
                    "kind": "session",
                    "session_id": session_id,
                    "device_id": row["device_id"],
                    "session_json": session_json(row),
                }
            )
    table = blocks.to_table(columns=list(BLOCK_COLUMNS), filter=pc.field("session_id") == session_id)
    return records, table.sort_by("first_sample_index")


def rebuild_session(
    lake_root: Path,
    blocks_dataset: ds.Dataset,
    session_id: str,
    config: ProcessorConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[SessionTables, SessionState]:
    """Every bronze block of the session through the processor, in chunks of ``CHUNK_S``."""
    records, blocks = _session_rows(lake_root, blocks_dataset, session_id)
    made = SessionTables.empty()
    state = SessionState()
    device_id = (
        records[0]["device_id"] if records else (blocks.column("device_id")[0].as_py() if blocks.num_rows else "")
    )
    # Chunks of about CHUNK_S at the session's own rate (no rows: one empty chunk).
    rate = blocks.column("sample_rate_hz")[0].as_py() if blocks.num_rows else 0.0
    per_block = blocks.column("n_samples")[0].as_py() if blocks.num_rows else 1
    per_chunk = max(1, int(CHUNK_S * rate / max(1, per_block)))
    noted_us = now_us()
    clock_ms = 0
    pending_records = records
    for start in range(0, max(blocks.num_rows, 1), per_chunk):
        chunk = blocks.slice(start, per_chunk).to_pylist()
        rows = pending_records + [{**r, "kind": "block", "session_json": None} for r in chunk]
        pending_records = []
        output, state = process_rows(state, rows, clock_ms, config)
        made.add(session_id, device_id, output, -1, noted_us)
        # Bronze holds every block this stretch will get: a gap in it is final, no need to wait.
        clock_ms += config.gap_wait_ms + 1
        output, state = process_rows(state, [], clock_ms, config)
        made.add(session_id, device_id, output, -1, noted_us)
        clock_ms += 1
        if progress:
            progress(sum(r["n_samples"] or 0 for r in chunk))
    return made, state


def _replace_rows(
    path: Path, rows: pa.Table, sessions: Sequence[str], metadata: dict[str, str], schema: pa.Schema
) -> None:
    from deltalake import CommitProperties, write_deltalake

    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sessions)
    if not path.exists() and rows.num_rows == 0:
        return
    path.mkdir(parents=True, exist_ok=True)
    write_deltalake(
        str(path),
        rows.cast(schema),
        mode="overwrite",
        predicate=f"session_id IN ({quoted})",
        partition_by=["date"],
        commit_properties=CommitProperties(custom_metadata={**metadata, "neurolake.rebuild": "1"}),
    )


def rebuild(
    lake_root: Path,
    checkpoint: Path,
    config: ProcessorConfig,
    target: str = "all",
    sessions: Sequence[str] | None = None,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> RebuildReport:
    """Rebuild ``target`` tables for ``sessions`` (default: every session in bronze)."""
    if target not in TARGETS:
        raise NeurolakeError(f"unknown rebuild target {target!r}; choose silver, gold or all")
    state_dir = session_state_dir(checkpoint)
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
        store = SessionStateStore(state_dir)
        journal = state_dir / REBUILD_JOURNAL
        report = RebuildReport()
        flagged, late = sessions_with_notes(lake_root)
        todo = [s for s in wanted if force or journal.exists() or needs_rebuild(store, s, config, flagged)]
        report.up_to_date = [s for s in wanted if s not in todo]
        batch = last_committed_batch(checkpoint)
        metadata = commit_metadata(config, {"stream_batch": batch})
        markers_version = latest_version(BRONZE_MARKERS.path(lake_root))
        blocks_dataset, _ = delta_dataset(BRONZE_EEG_BLOCKS.path(lake_root))
        for number, session_id in enumerate(todo, 1):
            journal.write_text(json.dumps({"session": session_id, "target": target}))
            report.late_blocks_included += late.get(session_id, 0)
            made, state = rebuild_session(
                lake_root,
                blocks_dataset,
                session_id,
                config,
                (lambda n, s=session_id, k=number: progress(s, k, n)) if progress else None,
            )
            markers = read_markers(lake_root, markers_version, [session_id])
            tables = made.tables(markers)
            for spec in sorted(TARGETS[target] | BOOKKEEPING):
                _replace_rows(spec.path(lake_root), tables[spec], [session_id], metadata, OUTPUT_TABLES[spec])
                report.rows[spec.qualified] = report.rows.get(spec.qualified, 0) + tables[spec].num_rows
            store.replace(session_id, batch, state)
            report.rebuilt.append(session_id)
            log.info(
                "rebuilt %s (%d of %d): %s",
                session_id,
                number,
                len(todo),
                {spec.qualified: tables[spec].num_rows for spec in sorted(TARGETS[target])},
            )
        journal.unlink(missing_ok=True)
        return report
    finally:
        lock.release()
