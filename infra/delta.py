"""Delta table access, the one home for it: read a table at a version, append with an app
transaction, follow its log as a stream, and commit Parquet files written elsewhere.

A Delta table is a log of versions; each version's JSON file lists the files it added and removed.
A reader that remembers the last version it saw can take exactly the files added since, which is
how silver and gold follow bronze (Delta's own streaming source does the same): only ``add``
actions with ``dataChange`` count, so compaction (which rewrites files with ``dataChange: false``)
never shows the same rows twice.

Writers on the other side write Parquet files wherever the work happens (Spark executors) and the
driver commits them in one transaction carrying an app transaction ``(app_id, batch_id)``, so a
replayed batch finds its commit and writes nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.catalog import TableSpec

log = logging.getLogger(__name__)

_VERSION_DIGITS = 20


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a table: where it is, how big, its partition values."""

    path: str  # absolute
    size: int
    partition_values: tuple[tuple[str, str | None], ...] = ()


def _log_file(table: Path, version: int) -> Path:
    return table / "_delta_log" / f"{version:0{_VERSION_DIGITS}d}.json"


def latest_version(table: Path, known: int = -1) -> int:
    """The newest committed version of the table at ``table``, -1 when it has none yet.

    Probes the commit files one by one from ``known`` (or the last checkpoint) instead of
    listing the log, which grows by one file per commit for the life of the table.
    """
    if not (table / "_delta_log").is_dir():
        return -1
    start = known
    checkpoint = table / "_delta_log" / "_last_checkpoint"
    if checkpoint.exists():
        try:
            start = max(start, int(json.loads(checkpoint.read_text())["version"]))
        except (ValueError, KeyError, json.JSONDecodeError):
            pass
    if start < 0 and not _log_file(table, 0).exists():
        return -1
    version = max(start, 0)
    # Gallop then step: the log may be far ahead of what we knew.
    step = 1
    while _log_file(table, version + step).exists():
        version += step
        step *= 2
    while step > 1:
        step //= 2
        if _log_file(table, version + step).exists():
            version += step
    return version


def _file(table: Path, add: Mapping[str, Any]) -> DataFile:
    values = tuple(sorted((add.get("partitionValues") or {}).items()))
    return DataFile(str(table / unquote(add["path"])), int(add.get("size") or 0), values)


def commit_actions(table: Path, version: int) -> list[dict[str, Any]]:
    """The actions (``add``, ``remove``, ``txn``, ...) that one commit of the table wrote."""
    try:
        lines = _log_file(table, version).read_text().splitlines()
    except FileNotFoundError:
        raise RuntimeError(
            f"{table}: commit {version} is missing from the Delta log (cleaned up?); "
            f"rebuild from the table with `neurolake lake rebuild`"
        ) from None
    return [json.loads(line) for line in lines if line.strip()]


def added_files(table: Path, after: int, until: int) -> list[DataFile]:
    """Data files added by versions ``after`` (exclusive) to ``until`` (inclusive), in commit order.

    From version -1 the table's snapshot at ``until`` is taken instead of replaying its whole log
    (old commit files may have been cleaned up).
    """
    if until <= after:
        return []
    if after < 0:
        from deltalake import DeltaTable

        actions = pa.table(DeltaTable(str(table), version=until).get_add_actions(flatten=False)).to_pydict()
        partitions = actions.get("partition") or [None] * len(actions["path"])
        files = [
            _file(table, {"path": path, "size": size, "partitionValues": values or {}})
            for path, size, values in zip(actions["path"], actions["size_bytes"], partitions)
        ]
        return files
    files = []
    for version in range(after + 1, until + 1):
        for action in commit_actions(table, version):
            if "add" in action and action["add"].get("dataChange", True):
                files.append(_file(table, action["add"]))
            elif "remove" in action and action["remove"].get("dataChange", True):
                log.warning(
                    "%s version %d removed %s; a stream reading it keeps the rows it took",
                    table,
                    version,
                    action["remove"].get("path"),
                )
    return files


class _Writers(threading.local):
    """The tables this thread writes, kept loaded between commits. Loading a table replays its log
    from the last checkpoint (up to 100 commit files): 7-30 ms idle, far more on busy cores, twice
    per commit per table; catching a loaded table up costs ~1 ms. Per thread, so the bronze and
    silver writers (two threads of one driver) never share one."""

    def __init__(self) -> None:
        self.tables: dict[Path, tuple[Any, tuple[int, int]]] = {}


_writers = _Writers()


def _first_commit_identity(table: Path) -> tuple[int, int] | None:
    try:
        stat = _log_file(table, 0).stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def writable_table(table: Path) -> Any:
    """The table at ``table`` as this thread last loaded it, caught up with its log; None when there
    is no table. A table deleted and created again (its first commit is another file) is loaded anew.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    identity = _first_commit_identity(table)
    cached = _writers.tables.get(table)
    if cached is not None and identity is not None and cached[1] == identity:
        cached[0].update_incremental()
        return cached[0]
    _writers.tables.pop(table, None)
    try:
        loaded = DeltaTable(str(table))
    except TableNotFoundError:
        return None
    identity = _first_commit_identity(table)
    if identity is not None:
        _writers.tables[table] = (loaded, identity)
    return loaded


def committed_version(table: Path, app_id: str) -> int | None:
    """The last batch id ``app_id`` committed to the table, None if never (or no table)."""
    loaded = writable_table(table)
    return None if loaded is None else loaded.transaction_version(app_id)


# -- writing files for a later commit ------------------------------------------------------------


def _stats(table: pa.Table) -> str:
    """Delta file statistics (row count, min/max of scalar columns), so readers can skip files."""
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_string(column.type):
            extremes = pc.min_max(column)
            if extremes["min"].is_valid:
                minimum[name] = extremes["min"].as_py()
                maximum[name] = extremes["max"].as_py()
            nulls[name] = column.null_count
    return json.dumps({"numRecords": table.num_rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls})


@dataclass(frozen=True)
class WrittenFile:
    """A Parquet file written under a table's directory, not yet committed."""

    relative_path: str
    size: int
    partition_values: tuple[tuple[str, str], ...]
    modification_ms: int
    stats: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "path": self.relative_path,
                "size": self.size,
                "partition": dict(self.partition_values),
                "mtime": self.modification_ms,
                "stats": self.stats,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WrittenFile:
        raw = json.loads(text)
        return cls(raw["path"], raw["size"], tuple(sorted(raw["partition"].items())), raw["mtime"], raw["stats"])


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Only text columns (ids, labels) repeat enough for a dictionary. pyarrow's default tries one
    for every column: on sample values it never pays, makes files ~50% larger, and made a silver
    batch's Parquet writes ~6x slower (the largest cost of silver's tasks after the processor)."""
    return [field.name for field in schema if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)]


def write_files(table_dir: Path, rows: pa.Table, partition_by: str = "date", prefix: str = "part") -> list[WrittenFile]:
    """Write ``rows`` as one Parquet file per value of ``partition_by`` (hive layout), uncommitted."""
    if rows.num_rows == 0:
        return []
    written = []
    values = rows.column(partition_by)
    for value in pc.unique(values).to_pylist():
        part = rows.filter(pc.equal(values, value)).drop_columns([partition_by])
        relative = f"{partition_by}={value}/{prefix}-{uuid.uuid4().hex}.parquet"
        path = table_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, compression="snappy", use_dictionary=_dictionary_columns(part.schema))
        stat = os.stat(path)
        written.append(
            WrittenFile(relative, stat.st_size, ((partition_by, value),), int(stat.st_mtime * 1000), _stats(part))
        )
    return written


def commit_files(
    table_dir: Path,
    schema: pa.Schema,
    files: Iterable[WrittenFile],
    app_id: str,
    batch_id: int,
    metadata: Mapping[str, str] | None = None,
    partition_by: str = "date",
) -> bool:
    """Commit ``files`` to the table in one transaction carrying ``(app_id, batch_id)``; creates the
    table on first use. False (and nothing written) when that batch is committed already."""
    from deltalake import CommitProperties, Schema, Transaction
    from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

    table = writable_table(table_dir)
    done = None if table is None else table.transaction_version(app_id)
    if done is not None and done >= batch_id:
        log.info("%s: batch %d already committed by %s; skipped", table_dir, batch_id, app_id)
        return False
    adds = [
        AddAction(f.relative_path, f.size, dict(f.partition_values), f.modification_ms, True, f.stats) for f in files
    ]
    properties = CommitProperties(
        app_transactions=[Transaction(app_id=app_id, version=batch_id)],
        custom_metadata={"neurolake.batch_id": str(batch_id), **(metadata or {})},
    )
    delta_schema = Schema.from_arrow(schema)
    if table is None:
        table_dir.mkdir(parents=True, exist_ok=True)
        create_table_with_add_actions(
            str(table_dir),
            delta_schema,
            adds,
            mode="append",
            partition_by=[partition_by],
            commit_properties=properties,
        )
        return True
    actions: list[AddAction | RemoveAction] = list(adds)
    table.create_write_transaction(
        actions, mode="append", schema=delta_schema, partition_by=[partition_by], commit_properties=properties
    )
    return True


def ensure_table(table_dir: Path, schema: pa.Schema, partition_by: Sequence[str] = ("date",)) -> bool:
    """Create an empty table with ``schema`` unless one exists (Delta's streaming source needs its
    table before the first record arrives). Returns whether it created one."""
    from deltalake import DeltaTable

    if (table_dir / "_delta_log").is_dir():
        return False
    table_dir.mkdir(parents=True, exist_ok=True)
    DeltaTable.create(str(table_dir), schema, partition_by=list(partition_by) or None, mode="ignore")
    return True


def spark_append(
    frame: Any,
    table_dir: Path,
    app_id: str,
    batch_id: int,
    partition_by: Sequence[str] = ("date",),
    metadata: Mapping[str, str] | None = None,
) -> float:
    """Append a Spark DataFrame with delta-spark, from the executors, unless ``(app_id, batch_id)``
    is already committed (Delta's idempotent writes: ``txnAppId``/``txnVersion``; a new checkpoint
    must come with a new ``app_id``, or its batches 0, 1, ... are taken for done). ``metadata`` goes
    to the commit's ``userMetadata`` as JSON. Creates the table on first use; returns the seconds."""
    started = time.monotonic()
    writer = (
        frame.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", str(batch_id))
        # A schema that gained a field (BACKWARD-compatible .avsc change) adds the column.
        .option("mergeSchema", "true")
        .option("userMetadata", json.dumps({"neurolake.batch_id": str(batch_id), **(metadata or {})}, sort_keys=True))
    )
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(str(table_dir))
    return round(time.monotonic() - started, 3)


def spark_replace_sessions(
    frame: Any, table_dir: Path, sessions: Sequence[str], metadata: Mapping[str, str], partition_by: str = "date"
) -> int:
    """Replace the rows of ``sessions`` in a table with ``frame`` in one delta-spark transaction
    (``replaceWhere`` on ``session_id``); returns the rows written (from the commit's metrics)."""
    quoted = ", ".join("'" + session.replace("'", "''") + "'" for session in sessions)
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"session_id IN ({quoted})")
        .option("userMetadata", json.dumps(dict(metadata), sort_keys=True))
        .partitionBy(partition_by)
        .save(str(table_dir))
    )
    info = _commit_info(table_dir, latest_version(table_dir))
    return int((info.get("operationMetrics") or {}).get("numOutputRows", 0))


def _commit_info(table_dir: Path, version: int) -> dict[str, Any]:
    return next((a["commitInfo"] for a in commit_actions(table_dir, version) if "commitInfo" in a), {})


def read_commit_metadata(table_dir: Path, version: int | None = None) -> dict[str, Any]:
    """What a commit recorded about itself: delta-spark's ``userMetadata`` (JSON) merged with the
    custom metadata delta-rs writes into ``commitInfo`` (the latest commit by default)."""
    info = _commit_info(table_dir, latest_version(table_dir) if version is None else version)
    merged = {k: v for k, v in info.items() if isinstance(k, str) and k.startswith("neurolake.")}
    try:
        merged.update(json.loads(info.get("userMetadata") or "{}"))
    except json.JSONDecodeError:
        pass
    return merged


def utc_date(micros: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(micros / 1e6))


class LakeTable:
    """One Delta table of the lake: read it at a version, append with an app transaction, follow its
    log, commit files written elsewhere, read its history. Named by the catalog's ``TableSpec``."""

    def __init__(self, lake_root: Path, spec: TableSpec) -> None:
        self.spec = spec
        self.path = spec.path(lake_root)

    @property
    def name(self) -> str:
        return self.spec.qualified

    def version(self, known: int = -1) -> int:
        """The latest committed version, -1 without a table."""
        return latest_version(self.path, known)

    def dataset(self, version: int | None = None) -> tuple[Any, int | None]:
        """See :func:`delta_dataset`."""
        return delta_dataset(self.path, version)

    def read_columns(self, columns: list[str], where: Any = None, version: int | None = None) -> pa.Table | None:
        """Selected columns (optionally filtered by a pyarrow dataset expression, pushed down to the
        Parquet files); None without a table or files."""
        dataset, _ = delta_dataset(self.path, version)
        return None if dataset is None else dataset.to_table(columns=columns, filter=where)

    def read_pandas(self, columns: list[str] | None = None, version: int | None = None) -> tuple[Any, int | None]:
        """The table (at a version) as a pandas DataFrame, and the version read; (empty, None) if absent."""
        import pandas as pd

        dataset, read_version = delta_dataset(self.path, version)
        if dataset is None:
            return pd.DataFrame(columns=columns or []), read_version
        return dataset.to_table(columns=columns).to_pandas(), read_version

    def added_files(self, after: int, until: int) -> list[DataFile]:
        return added_files(self.path, after, until)

    def committed_version(self, app_id: str) -> int | None:
        return committed_version(self.path, app_id)

    def append(self, rows: pa.Table, app_id: str, batch_id: int, partition_by: Sequence[str] = ("date",)) -> bool:
        """Append unless this (app_id, batch_id) is already committed. Returns whether it wrote."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        table = writable_table(self.path)
        done = None if table is None else table.transaction_version(app_id)
        if done is not None and done >= batch_id:
            log.info("%s: batch %d already committed by %s; skipped", self.name, batch_id, app_id)
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        write_deltalake(
            str(self.path) if table is None else table,
            rows,
            mode="append",
            partition_by=list(partition_by) or None,
            # A schema that gained a field (BACKWARD-compatible .avsc change) adds the column.
            schema_mode="merge",
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=app_id, version=batch_id)],
                custom_metadata={"neurolake.batch_id": str(batch_id)},
            ),
        )
        return True

    def write_files(self, rows: pa.Table, prefix: str = "part") -> list[WrittenFile]:
        return write_files(self.path, rows, prefix=prefix)

    def commit_files(
        self,
        schema: pa.Schema,
        files: Iterable[WrittenFile],
        app_id: str,
        batch_id: int,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        return commit_files(self.path, schema, files, app_id, batch_id, metadata)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first, with their operation and custom metadata; [] without a table."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(str(self.path)).history(limit)
        except TableNotFoundError:
            return []


def delta_dataset(path: Path, version: int | None = None) -> tuple[Any, int | None]:
    """A Delta table's Parquet files (at ``version``, default latest) as one Arrow dataset with its
    hive partition columns, and the version read: (None, None) without a table, (None, version)
    when it has no files. Read through Arrow because delta-rs' own reader aborts at exit (#2184)."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(str(path), version=version)
    except TableNotFoundError:
        return None, None
    files = table.file_uris()
    if not files:
        return None, table.version()
    return ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(path)), table.version()
