"""Delta table access, the one home for it: read a table at a version or follow its log, and write.

The lake's streams write from Spark's executors, and the driver commits naming the app and batch, so
a replayed batch finds its commit and writes nothing twice: the bronze and silver/gold streams'
Parquet files by pyarrow in their Python tasks, committed with delta-rs (:func:`write_table_files`,
:func:`commit_written_files`); rebuilds through delta-spark (:func:`spark_replace_sessions`). Small
writers outside Spark (sample sessions, tests, the batch scorer) append through delta-rs with the
same kind of app transaction (:meth:`LakeTable.append`). Readers (DuckDB, Polars, pandas, the
dashboard) go through delta-rs, so every table keeps to Delta features that delta-rs reads. Every
commit made with delta-rs gets Delta's version checksum, which delta-rs does not write and delta-spark
reads instead of running a job over the log (:func:`write_version_checksums`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.files import replace_file
from schemas.catalog import TABLES, TableSpec

log = logging.getLogger(__name__)

_VERSION_DIGITS = 20


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


def only_appended(table: Path, max_commits: int = 100) -> bool:
    """Whether the table is young and only ever appended to: at most ``max_commits`` commits, all
    still in the log, none removing a file (an OPTIMIZE's removed files may since have been
    vacuumed). Such a table's commits hold exactly its rows, file by file, and are cheap to read."""
    latest = latest_version(table)
    if latest < 0 or latest >= max_commits:
        return False
    try:
        return not any("remove" in action for version in range(latest + 1) for action in commit_actions(table, version))
    except RuntimeError:  # a commit already cleaned up
        return False


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


def _checksum_file(table: Path, version: int) -> Path:
    return _log_file(table, version).with_suffix(".crc")


# The fields of Delta's version checksum that this writer keeps. delta-spark's own checksums carry
# more (set transactions, a file size histogram, ...): optional fields, which a reader recomputes
# when a checksum lacks them.
_CHECKSUM_FIELDS = ("tableSizeBytes", "numFiles", "numMetadata", "numProtocol", "metadata", "protocol")
# Actions that change none of them.
_CHECKSUM_NEUTRAL = frozenset({"commitInfo", "txn", "cdc", "domainMetadata", "checkpointMetadata", "sidecar"})
# How far back a missing chain of checksums is looked for, and replayed from.
CHECKSUM_REPLAY_LIMIT = 1000


def _checksum_after(state: dict[str, Any], actions: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The checksum fields after one commit's actions, None when the commit cannot be accounted for
    (a removed file without its size, an action this does not know)."""
    after = dict(state)
    for action in actions:
        if len(action) != 1:  # the protocol's actions are one per line
            return None
        ((kind, body),) = action.items()
        if kind == "add":
            after["numFiles"] += 1
            after["tableSizeBytes"] += int(body["size"])
        elif kind == "remove":
            if body.get("size") is None:
                return None
            after["numFiles"] -= 1
            after["tableSizeBytes"] -= int(body["size"])
        elif kind == "metaData":
            after["metadata"], after["numMetadata"] = body, 1
        elif kind == "protocol":
            after["protocol"], after["numProtocol"] = body, 1
        elif kind not in _CHECKSUM_NEUTRAL:
            return None
    return after if "metadata" in after and "protocol" in after and after["numFiles"] >= 0 else None


def write_version_checksums(table: Path, version: int | None = None) -> int:
    """Delta's version checksum (``_delta_log/N.crc``, the protocol's "Version Checksum File") for
    each commit up to ``version`` (default: the newest) that lacks one; returns how many it wrote.

    delta-rs writes none, and without one delta-spark runs a Spark job over the log's newest commits
    to find a table's protocol and metadata whenever it takes a new snapshot: Delta's streaming
    source does so on every micro-batch, for each table it reads (170-300 ms on local[2] for a table
    of 65 commits, 20-50 ms with checksums). Each checksum is the previous one with the commit's
    files added and removed; a chain that is broken (another writer's commit, an older lake) is
    replayed from the newest checksum before it, or from the first commit. Appends add new paths
    only, so the file count is exact; where a commit cannot be accounted for (a removed file
    without its size), no checksum is written, as before, and readers build the state themselves."""
    newest = latest_version(table) if version is None else version
    start = newest
    while start >= 0 and newest - start <= CHECKSUM_REPLAY_LIMIT and not _checksum_file(table, start).exists():
        start -= 1
    if start == newest or newest - start > CHECKSUM_REPLAY_LIMIT:
        return 0
    state: dict[str, Any] | None
    if start < 0:
        state = {"tableSizeBytes": 0, "numFiles": 0, "numMetadata": 0, "numProtocol": 0}
    else:
        try:
            previous = json.loads(_checksum_file(table, start).read_text())
            state = {name: previous[name] for name in _CHECKSUM_FIELDS}
        except (OSError, ValueError, KeyError):
            return 0
    written = 0
    for commit in range(start + 1, newest + 1):
        try:
            state = _checksum_after(state, commit_actions(table, commit))
        except RuntimeError:  # the commit's file is gone (log clean-up): nothing to replay from
            return written
        if state is None:
            return written
        try:
            replace_file(_checksum_file(table, commit), json.dumps(state, separators=(",", ":")))
        except OSError as exc:  # a checksum only saves readers work: the commit stands without it
            log.warning("%s: no version checksum for commit %d: %s", table, commit, exc)
            return written
        written += 1
    return written


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


def ensure_table(
    table_dir: Path,
    schema: pa.Schema,
    partition_by: Sequence[str] = ("date",),
    properties: Mapping[str, str] | None = None,
) -> bool:
    """Create an empty table with ``schema`` (and table ``properties``) unless one exists (Delta's
    streaming source needs its table before the first record arrives). Returns whether it created one."""
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    if (table_dir / "_delta_log").is_dir():
        return False
    table_dir.mkdir(parents=True, exist_ok=True)
    try:
        DeltaTable.create(
            str(table_dir),
            schema,
            partition_by=list(partition_by) or None,
            mode="ignore",
            configuration=new_table_configuration(properties),
        )
    except CommitFailedError:
        # Another writer created it between the check and the commit (two processes' first records
        # at once: 1 round in 15 with six creators): the table exists, which is all this promises.
        if (table_dir / "_delta_log" / f"{0:020d}.json").is_file():
            return False
        raise
    write_version_checksums(table_dir)
    return True


def new_table_configuration(properties: Mapping[str, str] | None = None) -> dict[str, str]:
    """A table delta-rs makes: checkpoints every 100 commits, as infra.spark sets it for the tables
    delta-spark makes (the default of 10 makes every tenth commit rebuild the table's state), and
    the table's own ``properties``."""
    return {"delta.checkpointInterval": "100", **(properties or {})}


# The newest batch each (table, app id) appended from this process: after its first commit a query
# asks its own memory, not the log. Keyed with the table's identity, so a re-made table is scanned anew.
_appended: dict[tuple[Path, str], tuple[tuple[int, int], int]] = {}
_appended_lock = threading.Lock()


def last_appended_batch(table: Path, app_id: str, scan_limit: int | None = None) -> int | None:
    """The newest batch id ``app_id`` appended to the table, read from the log's newest commits back:
    a commit's ``userMetadata`` names its app and batch (and a ``txn`` action, as Delta's own app
    transactions and earlier versions of the lake wrote them, counts the same). A running query finds
    its last batch in the newest commit or close to it. -1 when the app never committed; None when the
    log cannot tell (its older commits cleaned up, or more than ``scan_limit`` commits back)."""
    latest = latest_version(table)
    if latest < 0:
        return -1
    oldest = 0 if scan_limit is None else max(0, latest - scan_limit + 1)
    for version in range(latest, oldest - 1, -1):
        try:
            actions = commit_actions(table, version)
        except RuntimeError:
            return None
        for action in actions:
            txn = action.get("txn")
            if txn is not None and txn.get("appId") == app_id:
                return int(txn["version"])
            info = action.get("commitInfo")
            if info is not None and info.get("userMetadata"):
                try:
                    metadata = json.loads(info["userMetadata"])
                except json.JSONDecodeError:
                    continue
                if metadata.get("neurolake.app_id") == app_id:
                    return int(metadata["neurolake.batch_id"])
    return -1 if oldest == 0 else None


def spark_append(
    frame: Any,
    table_dir: Path,
    app_id: str,
    batch_id: int,
    partition_by: Sequence[str] = ("date",),
    metadata: Mapping[str, str] | None = None,
    properties: Mapping[str, str] | None = None,
) -> float:
    """Append a Spark DataFrame with delta-spark, from the executors, unless ``(app_id, batch_id)``
    is already committed, so a replayed batch writes nothing twice (a new checkpoint must come with a
    new ``app_id``, or its batches 0, 1, ... are taken for done). ``metadata`` goes to the commit's
    ``userMetadata`` as JSON, with the app and batch. Creates the table on first use, with table
    ``properties``; returns the seconds.

    Which batch is done is read from the log's newest commits once, then remembered. Delta's own app
    transaction (``txnAppId``/``txnVersion``) makes delta-spark rebuild the table's whole state on
    every commit to look the app up: 0.4 s of a 0.6 s small append here (bench/delta_append_bench.py),
    growing with the table. It is still used whenever the log cannot tell."""
    started = time.monotonic()
    last = _last_batch(table_dir, app_id)
    if last is not None and batch_id <= last:
        log.info("%s: batch %d already committed by %s; skipped", table_dir.name, batch_id, app_id)
        return 0.0
    writer = (
        frame.write.format("delta")
        .mode("append")
        # A schema that gained a field (BACKWARD-compatible .avsc change) adds the column.
        .option("mergeSchema", "true")
        .option(
            "userMetadata",
            json.dumps(
                {"neurolake.app_id": app_id, "neurolake.batch_id": str(batch_id), **(metadata or {})}, sort_keys=True
            ),
        )
    )
    if last is None:
        # Only an app silent for longer than the log's retention (30 days by default) gets here;
        # Delta's app transaction then knows only the commits made with it.
        log.warning(
            "%s: the log no longer shows what %s committed; appending batch %d under Delta's app transaction",
            table_dir.name,
            app_id,
            batch_id,
        )
        writer = writer.option("txnAppId", app_id).option("txnVersion", str(batch_id))
    if not (table_dir / "_delta_log").is_dir():
        # Delta takes a new table's properties from the writer's "delta.*" options.
        for name, value in (properties or {}).items():
            writer = writer.option(name, value)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    with _remembered(table_dir, app_id, batch_id):
        writer.save(str(table_dir))
    return round(time.monotonic() - started, 3)


def batch_committed(table_dir: Path, app_id: str, batch_id: int) -> bool:
    """Whether ``(app_id, batch_id)`` is committed to the table (a replayed batch's is)."""
    last = _last_batch(table_dir, app_id)
    return last is not None and batch_id <= last


def _last_batch(table_dir: Path, app_id: str) -> int | None:
    """:func:`last_appended_batch`, from this process's memory once it has committed to the table."""
    identity = _first_commit_identity(table_dir)
    with _appended_lock:
        known = _appended.get((table_dir, app_id))
    if known is not None and identity is not None and known[0] == identity:
        return known[1]
    return last_appended_batch(table_dir, app_id)


@contextmanager
def _remembered(table_dir: Path, app_id: str, batch_id: int) -> Iterator[None]:
    """Around a commit of ``batch_id``: remembered once committed, forgotten if the commit failed
    (it may have landed before the failure, so the next attempt reads the log again)."""
    key = (table_dir, app_id)
    try:
        yield
    except BaseException:
        with _appended_lock:
            _appended.pop(key, None)
        raise
    identity = _first_commit_identity(table_dir)
    with _appended_lock:
        if identity is not None:
            _appended[key] = (identity, batch_id)


# Columns whose Parquet pages get a dictionary (the same as delta-spark's, see infra/spark.py): on
# sample values a dictionary never pays, and made silver's files ~50% larger and their writes slower.
DICTIONARY_COLUMNS = ("session_id", "device_id", "kafka_topic", "label", "kind", "reason", "model_name")
# Delta's default: statistics on a table's first 32 columns, strings cut to 32 characters (a longer
# string gets none here, rather than a cut maximum that would have to be rounded up).
_DEFAULT_STATS_COLUMNS = 32
_STATS_STRING_LENGTH = 32
# What an executor reports of each data file it wrote, for the driver's commit.
DATA_FILE_ARROW = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("partition_values", pa.string()),
        ("modification_time", pa.int64()),
        ("stats", pa.string()),
    ]
)


def file_statistics(rows: pa.Table, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """A data file's statistics as Delta records them in its ``add`` action: the row count, and the
    minimum, maximum and null count of ``columns`` (default: Delta's, the first 32) that hold
    numbers or text. Data skipping reads them; a column without them is simply never skipped on."""
    import pyarrow.compute as pc

    names = list(columns) if columns else rows.schema.names[:_DEFAULT_STATS_COLUMNS]
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in names:
        if name not in rows.schema.names:
            continue
        column = rows.column(name)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)):
            continue
        nulls[name] = column.null_count
        if column.null_count == len(column):
            continue
        if pa.types.is_floating(kind) and pc.any(pc.is_nan(column)).as_py():
            continue
        low, high = pc.min_max(column).values()
        if pa.types.is_string(kind) and max(len(low.as_py()), len(high.as_py())) > _STATS_STRING_LENGTH:
            continue
        minimum[name], maximum[name] = low.as_py(), high.as_py()
    return {"numRecords": rows.num_rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls}


def write_data_files(
    table_dir: Path,
    rows: pa.Table,
    partition_by: Sequence[str] = ("date",),
    stats_columns: Sequence[str] | None = None,
) -> pa.RecordBatch:
    """Executor side of :func:`commit_data_files`: ``rows`` as Parquet files in the table's folder,
    one per partition, described (``DATA_FILE_ARROW``) for the commit. Until committed, no reader
    sees them; a batch that never commits leaves them for VACUUM."""
    import uuid

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    described = []
    keys = rows.select(list(partition_by)).group_by(list(partition_by)).aggregate([]) if partition_by else None
    partitions = keys.to_pylist() if keys is not None else [{}]
    for values in partitions:
        part = rows
        # One partition (a stream's batch is nearly always one day) is the whole table: filtering
        # would copy every row of it, list columns too.
        if len(partitions) > 1:
            for name, value in values.items():
                part = part.filter(pc.equal(part.column(name), value))
        folder = "/".join(f"{name}={value}" for name, value in values.items())
        relative = f"{folder}/part-{uuid.uuid4()}.snappy.parquet" if folder else f"part-{uuid.uuid4()}.snappy.parquet"
        target = table_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = part.drop_columns(list(partition_by))
        pq.write_table(
            data,
            target,
            compression="snappy",
            use_dictionary=[name for name in DICTIONARY_COLUMNS if name in data.schema.names],
        )
        stat = target.stat()
        described.append(
            {
                "path": relative,
                "size": stat.st_size,
                "partition_values": json.dumps({name: str(value) for name, value in values.items()}),
                "modification_time": stat.st_mtime_ns // 1_000_000,
                "stats": json.dumps(file_statistics(data, stats_columns)),
            }
        )
    return pa.RecordBatch.from_pylist(described, schema=DATA_FILE_ARROW)


def commit_data_files(
    table_dir: Path,
    files: Sequence[Mapping[str, Any]],
    app_id: str,
    batch_id: int,
    schema: pa.Schema,
    metadata: Mapping[str, str] | None = None,
    partition_by: Sequence[str] = ("date",),
    properties: Mapping[str, str] | None = None,
) -> float:
    """Commit data files the executors wrote (:func:`write_data_files`) in one Delta transaction,
    with delta-rs, unless ``(app_id, batch_id)`` is already committed; the commit names its app and
    batch as :func:`spark_append`'s do (``userMetadata``, and Delta's app transaction). Without a
    table, the commit makes it (``schema``, ``partition_by``, table ``properties``), its first
    version holding these files as delta-spark's first append does; columns of ``schema`` a table
    lacks are added first. Returns the seconds.

    For the silver/gold stream's sample rows, delta-spark's own writer turned every row into a JVM
    row, computed its statistics and wrote it through parquet-mr: at 100 headsets that writer was
    most of silver's time (bench/lake_bench.py), where pyarrow writes the same files in a fraction."""
    from deltalake import Schema as DeltaSchema
    from deltalake.exceptions import DeltaError
    from deltalake.transaction import AddAction, CommitProperties, Transaction, create_table_with_add_actions

    started = time.monotonic()
    last = _last_batch(table_dir, app_id)
    if last is not None and batch_id <= last:
        log.info("%s: batch %d already committed by %s; skipped", table_dir.name, batch_id, app_id)
        return 0.0
    table = writable_table(table_dir)
    if table is not None:
        known = {field.name for field in table.schema().fields}
        missing = [field for field in schema if field.name not in known]
        if missing:
            # A schema that gained a field (BACKWARD-compatible .avsc change) adds the column.
            table.alter.add_columns(DeltaSchema.from_arrow(pa.schema(missing)).fields)
    actions = [
        AddAction(
            str(f["path"]),
            int(f["size"]),
            json.loads(f["partition_values"]),
            int(f["modification_time"]),
            True,
            str(f["stats"]),
        )
        for f in files
    ]
    user_metadata = json.dumps(
        {"neurolake.app_id": app_id, "neurolake.batch_id": str(batch_id), **(metadata or {})}, sort_keys=True
    )
    commit = CommitProperties(
        app_transactions=[Transaction(app_id=app_id, version=batch_id)],
        custom_metadata={"userMetadata": user_metadata},
    )
    with _remembered(table_dir, app_id, batch_id):
        if table is None:
            table_dir.mkdir(parents=True, exist_ok=True)
            try:
                create_table_with_add_actions(
                    str(table_dir),
                    DeltaSchema.from_arrow(schema),
                    actions,
                    mode="error",
                    partition_by=list(partition_by) or None,
                    configuration=new_table_configuration(properties),
                    commit_properties=commit,
                )
            except DeltaError:
                # Made meanwhile by another writer (two queries' first quarantined records at once):
                # append to it, rather than fail the batch and restart the query to replay it.
                table = writable_table(table_dir)
                if table is None:
                    raise
                last = _last_batch(table_dir, app_id)
                if last is not None and batch_id <= last:
                    log.info("%s: batch %d committed meanwhile by %s; skipped", table_dir.name, batch_id, app_id)
                    return round(time.monotonic() - started, 3)
                log.info("%s: created meanwhile by another writer; batch %d appended to it", table_dir.name, batch_id)
        if table is not None:
            table.create_write_transaction(
                actions,
                mode="append",
                schema=table.schema(),
                partition_by=table.metadata().partition_columns or None,
                commit_properties=commit,
            )
    write_version_checksums(table_dir)
    return round(time.monotonic() - started, 3)


# What a streaming sink's write job returns: one row per data file written, with its table.
WRITTEN_FILES = DATA_FILE_ARROW.append(pa.field("table", pa.string()))


def write_table_files(
    lake_root: Path,
    tables: Mapping[str, pa.Table],
    skip: Set[str] = frozenset(),
    partition_by: Sequence[str] = ("date",),
) -> Iterator[pa.RecordBatch]:
    """Executor side of a streaming sink: one task's rows of each table (qualified name -> rows) but
    those in ``skip`` (already holding the batch), as that table's Parquet files, described for
    :func:`commit_written_files` (``WRITTEN_FILES``)."""
    for name, rows in tables.items():
        if name in skip or rows.num_rows == 0:
            continue
        spec = TABLES[name]
        files = write_data_files(spec.path(lake_root), rows, partition_by, spec.stats_columns or None)
        yield files.append_column("table", pa.array([name] * files.num_rows, pa.string()))


def remove_written_files(lake_root: Path, written: Iterable[Mapping[str, Any]]) -> None:
    """Delete files a streaming sink's tasks wrote (``WRITTEN_FILES`` rows) that will not be
    committed: no reader ever saw them."""
    for row in written:
        (TABLES[str(row["table"])].path(lake_root) / str(row["path"])).unlink(missing_ok=True)


def commit_written_files(
    lake_root: Path,
    written: Iterable[Mapping[str, Any]],
    schemas: Mapping[str, pa.Schema],
    app_id: Callable[[str], str],
    batch_id: int,
    metadata: Mapping[str, str] | None = None,
    partition_by: Sequence[str] = ("date",),
) -> tuple[dict[str, float], dict[str, int]]:
    """Driver side of a streaming sink: the files of every task (``WRITTEN_FILES`` rows) committed
    per table, one transaction each (:func:`commit_data_files`), in the order of ``schemas`` (qualified
    name -> the table's schema): a table derived from another commits after it. Returns the seconds
    and the rows of each table committed."""
    files: dict[str, list[dict[str, Any]]] = {}
    for row in written:
        files.setdefault(str(row["table"]), []).append(dict(row))
    unordered = sorted(set(files) - set(schemas))
    if unordered:
        raise ValueError(f"files written for {unordered}, which the sink has no schema or commit order for")
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    for name, schema in schemas.items():
        if name not in files:
            continue
        spec = TABLES[name]
        seconds[name] = commit_data_files(
            spec.path(lake_root),
            files[name],
            app_id(name),
            batch_id,
            schema,
            metadata,
            partition_by,
            spec.table_properties,
        )
        rows[name] = sum(json.loads(f["stats"])["numRecords"] for f in files[name])
    return seconds, rows


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
    log, read its history. Named by the catalog's ``TableSpec``."""

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
            # Taken when this append creates the table.
            configuration=self.spec.table_properties or None,
            # A schema that gained a field (BACKWARD-compatible .avsc change) adds the column.
            schema_mode="merge",
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=app_id, version=batch_id)],
                custom_metadata={"neurolake.batch_id": str(batch_id)},
            ),
        )
        write_version_checksums(self.path)
        return True

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
