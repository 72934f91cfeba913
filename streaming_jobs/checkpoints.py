"""Where each streaming query keeps its checkpoint, and what a killed run left half-written there."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)


def checkpoint_dir(settings: Settings, query: str) -> Path:
    return settings.paths.lake_root / "_checkpoints" / query


def clear_unfinished_writes(checkpoint: Path) -> list[Path]:
    """Remove what a killed process left half-written in Spark's checkpoint log.

    Spark writes each log entry to a hidden ``.N.<uuid>.tmp`` file and renames it; a kill before
    the rename leaves the temp file, which is no entry at all. Spark still counts it: a query
    killed while planning its first batch then refuses to start again ("should be empty on batch
    0") and would fail forever. Removing the temp files loses nothing, since no batch was planned.
    """
    removed = []
    for log_dir in ("offsets", "commits", "sources"):
        directory = checkpoint / log_dir
        if not directory.is_dir():
            continue
        for leftover in directory.rglob(".*.tmp*"):
            if leftover.is_file() and (leftover.name.endswith(".tmp") or leftover.name.endswith(".tmp.crc")):
                leftover.unlink()
                removed.append(leftover)
    if removed:
        log.warning("removed %d unfinished checkpoint write(s) under %s (a killed run)", len(removed), checkpoint)
    return removed


def spark_log_batches(log_dir: Path) -> list[int]:
    """The batch ids in one of Spark's checkpoint logs (``offsets``, ``commits``)."""
    return [int(p.name) for p in log_dir.iterdir() if p.name.isdigit()] if log_dir.is_dir() else []


def source_offsets(checkpoint: Path, batch_id: int) -> list[dict[str, Any]]:
    """The end offset of each source of a batch, from Spark's offset log (a line per source, in the
    union's order, after the version and the batch's metadata); [] for no such batch."""
    path = checkpoint / "offsets" / str(batch_id)
    if batch_id < 0 or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()[2:]]


def checkpoint_identity(checkpoint: Path) -> str:
    """The id Spark gave the query when it made ``checkpoint`` (kept in its ``metadata`` file): part
    of every Delta app id the query writes with, since a new checkpoint numbers its batches from 0
    again and Delta would take them for batches it has already committed."""
    try:
        return str(json.loads((checkpoint / "metadata").read_text())["id"])[:8]
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"{checkpoint}/metadata holds no query id ({exc}); was the query started?") from None


class BatchInterrupted(RuntimeError):
    """A micro-batch cut short because its query is stopping."""


def interruptible(write: Callable[[Any, int], None]) -> Callable[[Any, int], None]:
    """A ``foreachBatch`` function whose interruption (the query stopping mid-batch) surfaces as a
    short error. Spark recognises a stop by matching a regular expression against the error's
    message, and on the full message of an interrupted Py4J call (a Java stack inside a Python
    traceback) that match overflowed the stack of the stream's thread. The batch still fails, so
    it is replayed at the next start, as it must be."""

    @functools.wraps(write)
    def wrapped(batch_df: Any, batch_id: int) -> None:
        try:
            write(batch_df, batch_id)
        except Exception as exc:
            if "InterruptedException" in repr(getattr(exc, "java_exception", "")) or isinstance(exc, InterruptedError):
                raise BatchInterrupted(f"batch {batch_id} interrupted: its query is stopping") from None
            raise

    return wrapped
