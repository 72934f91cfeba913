"""A Spark streaming source over bronze's Delta log: what silver and gold read (never Kafka).

Bronze is what the lake acknowledged to the Pis, so whatever it holds can always reach silver and
gold, however often the broker restarts (the embedded one forgets everything when it does).

- An offset is ``{"eeg_blocks": v, "sessions": v, "markers": v, "clock_ms": t}``: the bronze table
  versions read so far, and the batch's clock. Spark writes it to the checkpoint's offset log before
  the batch runs, so a replayed batch sees the same files *and* the same clock: the processor's
  waits (a gap, a missing session record) end at the same point on replay, and a replay makes the
  same rows.
- A micro-batch is the Parquet files that ``eeg_blocks`` and ``sessions`` versions added since the
  last offset (``add`` actions with ``dataChange``, as Delta's own streaming source reads them).
  ``markers`` is only pinned: gold labels read it at that version.
- With no new bronze versions the clock still advances every ``idleTickS`` seconds, so sessions
  waiting on a gap are flushed when their wait runs out.

Options: ``root`` (the lake root), ``maxVersionsPerTrigger`` (bronze eeg_blocks versions per batch,
which bounds a catch-up batch), ``maxTasks``, ``idleTickS``.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from infra.delta import DataFile, added_files, latest_version

SOURCE_NAME = "bronze-delta"
STREAMED_TABLES = ("eeg_blocks", "sessions")
PINNED_TABLES = ("markers",)
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
        ("session_json", pa.string()),
    ]
)
ROWS_DDL = (
    "kind STRING, session_id STRING, device_id STRING, seq BIGINT, first_sample_index BIGINT, "
    "n_samples INT, n_channels INT, sample_rate_hz DOUBLE, data BINARY, device_times_us BINARY, "
    "clock_offset_us BIGINT, session_json STRING"
)


@dataclass(frozen=True)
class BronzeFiles(InputPartition):
    """What one Spark task reads: the batch's bronze files, ``(table, path)`` pairs, keeping only
    the sessions of its bucket. Every session of a batch then lands in exactly one task, which is
    what the session processor needs, without a shuffle to regroup the rows."""

    files: tuple[tuple[str, str], ...]
    bucket: int = 0
    buckets: int = 1


def session_bucket(session_id: str, buckets: int) -> int:
    """A session's task: stable across processes and runs (Python's own hash() is salted)."""
    return zlib.crc32(session_id.encode()) % buckets


def _in_bucket(batch: pa.RecordBatch, bucket: int, buckets: int) -> pa.RecordBatch:
    ids = batch.column(ROWS_ARROW.get_field_index("session_id")).to_pylist()
    of = {sid: session_bucket(sid or "", buckets) for sid in set(ids)}
    return batch.filter(pa.array([of[sid] == bucket for sid in ids], pa.bool_()))


def session_json(row: dict[str, Any]) -> str:
    record = dict(row)
    metadata = record.get("metadata")
    if isinstance(metadata, list):  # an Arrow map comes out as (key, value) pairs
        record["metadata"] = dict(metadata)
    return json.dumps({k: v for k, v in record.items() if not isinstance(v, bytes)})


def read_bronze_file(table: str, path: str) -> Iterator[pa.RecordBatch]:
    """One bronze Parquet file as rows of the source's schema."""
    if table == "eeg_blocks":
        data = pq.read_table(path, columns=list(BLOCK_COLUMNS))
        n = data.num_rows
        columns = {"kind": pa.array(["block"] * n, pa.string())}
        for name in BLOCK_COLUMNS:
            columns[name] = data.column(name).cast(ROWS_ARROW.field(name).type)
        columns["session_json"] = pa.nulls(n, pa.string())
    else:
        rows = pq.read_table(path).to_pylist()
        n = len(rows)
        columns = {name: pa.nulls(n, ROWS_ARROW.field(name).type) for name in ROWS_ARROW.names}
        columns["kind"] = pa.array(["session"] * n, pa.string())
        columns["session_id"] = pa.array([r["session_id"] for r in rows], pa.string())
        columns["device_id"] = pa.array([r["device_id"] for r in rows], pa.string())
        columns["session_json"] = pa.array([session_json(r) for r in rows], pa.string())
    yield from pa.table(columns, schema=ROWS_ARROW).to_batches(max_chunksize=4096)


def parse_offset(raw: Any) -> dict[str, int]:
    offset = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return {key: int(offset.get(key, -1)) for key in (*STREAMED_TABLES, *PINNED_TABLES, "clock_ms")}


class BronzeDeltaSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return ROWS_DDL

    def streamReader(self, schema: Any) -> BronzeStreamReader:
        return BronzeStreamReader(dict(self.options))


class BronzeStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        options = {key.lower(): value for key, value in options.items()}
        if "root" not in options:
            raise ValueError("the bronze-delta source needs option root=<lake root>")
        self.bronze = Path(options["root"]) / "bronze"
        self.max_versions = int(options.get("maxversionspertrigger", "20"))
        self.max_tasks = int(options.get("maxtasks", "2"))
        self.idle_tick_ms = int(float(options.get("idleticks", "5")) * 1000)
        if self.max_versions < 1 or self.max_tasks < 1:
            raise ValueError("maxVersionsPerTrigger and maxTasks must be >= 1")

    def initialOffset(self) -> dict:
        return {**{table: -1 for table in (*STREAMED_TABLES, *PINNED_TABLES)}, "clock_ms": 0}

    def latestOffset(self, start: dict, limit: Any = None) -> dict:
        begin = parse_offset(start)
        end: dict[str, int] = {}
        for table in (*STREAMED_TABLES, *PINNED_TABLES):
            end[table] = latest_version(self.bronze / table, known=begin[table])
        # Bound a catch-up batch; versions are whole commits, so the cut never splits one.
        end["eeg_blocks"] = min(end["eeg_blocks"], max(begin["eeg_blocks"], 0) + self.max_versions)
        now = time.time_ns() // 1_000_000
        moved = any(end[t] != begin[t] for t in (*STREAMED_TABLES, *PINNED_TABLES))
        end["clock_ms"] = now if moved or now - begin["clock_ms"] >= self.idle_tick_ms else begin["clock_ms"]
        return end

    def partitions(self, start: dict, end: dict) -> list[BronzeFiles]:
        begin, stop = parse_offset(start), parse_offset(end)
        files: list[tuple[str, DataFile]] = []
        for table in STREAMED_TABLES:
            files += [(table, f) for f in added_files(self.bronze / table, begin[table], stop[table])]
        if not files:
            return []
        paths = tuple((table, file.path) for table, file in files)
        return [BronzeFiles(paths, bucket, self.max_tasks) for bucket in range(self.max_tasks)]

    def read(self, partition: BronzeFiles) -> Iterator[pa.RecordBatch]:
        for table, path in partition.files:
            for batch in read_bronze_file(table, path):
                if partition.buckets > 1:
                    batch = _in_bucket(batch, partition.bucket, partition.buckets)
                if batch.num_rows:
                    yield batch

    def commit(self, end: dict) -> None:
        pass  # offsets live in Spark's checkpoint
