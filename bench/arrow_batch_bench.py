"""What Spark's byte limit on Arrow batches costs the lake's EEG queries, against batches by row count.

Spark sends a Python worker its rows in Arrow batches, closed at ``maxRecordsPerBatch`` rows or at
``maxBytesPerBatch`` bytes, which it measures after every row. Arrow measures a list or text column
by walking back over its nulls since the column's last value, so rows whose columns are mostly null
cost time quadratic in a batch's rows. Bronze's decoded rows are such rows: four kinds of record
in one wide row of 74 columns (``streaming_jobs.bronze.wide_schema``), an EEG block's 20 or so
filled. This bench hands one task of such rows (a session record, then EEG blocks) to a Python
function that only counts them, with Spark's limits (10,000 rows, 64 MB measured) and with the
lake's (``infra.spark.arrow_batches_by_records``: rows only, ``lake.arrow_records_per_batch``),
alternating, in the lake's own local Spark session.

    python bench/arrow_batch_bench.py                      # 2,000, 10,000 and 40,000 rows
    python bench/arrow_batch_bench.py --rows 5000 --repeats 7

A micro-batch of bronze at 100 headsets holds ~1,000 blocks a second of data per task; a batch
catching up after a start holds tens of thousands.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import load_settings
from infra.spark import arrow_batches_by_records, build_spark_session
from streaming_jobs.bronze import wide_schema

SPARK_DEFAULT_BYTES = 64 * 1024 * 1024
SPARK_DEFAULT_RECORDS = 10_000


def bronze_like_rows(rows: int, channels: int = 17, samples: int = 25) -> pa.Table:
    """A session record then ``rows - 1`` EEG blocks, in bronze's wide decoded schema."""
    schema = wide_schema()
    columns: dict[str, pa.Array] = {f.name: pa.nulls(rows, f.type) for f in schema}
    block_bytes = np.random.default_rng(0).bytes(channels * samples * 4)
    filled = {
        "device_id": pa.array(["pi-001"] * rows),
        "session_id": pa.array(["pi-001-session"] * rows),
        "seq": pa.array(np.arange(rows, dtype=np.int64)),
        "kafka_topic": pa.array(["sessions"] + ["eeg.raw"] * (rows - 1)),
        "kafka_partition": pa.array(np.zeros(rows, dtype=np.int32)),
        "kafka_offset": pa.array(np.arange(rows, dtype=np.int64)),
        "data": pa.array([None] + [block_bytes] * (rows - 1), pa.binary()),
        "device_times_us": pa.array([None] + [bytes(samples * 8)] * (rows - 1), pa.binary()),
        "channel_names": pa.array([[f"ch{c}" for c in range(channels)]] + [None] * (rows - 1), pa.list_(pa.string())),
        "date": pa.array(["2026-12-06"] * rows),
    }
    columns.update({name: array.cast(schema.field(name).type) for name, array in filled.items()})
    return pa.table([columns[f.name] for f in schema], schema=schema)


def count_rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    n = batches_seen = 0
    for batch in batches:
        n += batch.num_rows
        batches_seen += 1
    yield pa.record_batch({"rows": [n], "batches": [batches_seen]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000, 10_000, 40_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="neurolake-arrow-bench-") as home:
        settings = load_settings(environ={"NEUROLAKE_PATHS__HOME": str(Path(home) / "state")}, cwd=Path(home))
        records = settings.lake.arrow_records_per_batch
        spark = build_spark_session(settings, "arrow-batch-bench")
        print(
            f"arrow batch bench: one task of bronze's wide rows (a session record, then EEG blocks of "
            f"17 channels x 25 samples), counted by a Python function; Spark's limits ({SPARK_DEFAULT_RECORDS:,} "
            f"rows, {SPARK_DEFAULT_BYTES // 2**20} MB measured per row) against the lake's ({records:,} rows, "
            f"bytes unmeasured); median of {args.repeats}, alternating"
        )
        try:
            for rows in args.rows:
                frame = spark.createDataFrame(bronze_like_rows(rows)).coalesce(1).cache()
                frame.count()
                timings: dict[str, list[float]] = {"spark": [], "lake": []}
                for round_number in range(args.repeats + 1):  # round 0 warms both up, uncounted
                    for name in timings:
                        if name == "spark":
                            spark.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", str(SPARK_DEFAULT_BYTES))
                            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(SPARK_DEFAULT_RECORDS))
                        else:
                            arrow_batches_by_records(spark, records)
                        started = time.perf_counter()
                        counted = frame.mapInArrow(count_rows, "rows long, batches long").collect()
                        if round_number:
                            timings[name].append(time.perf_counter() - started)
                        assert sum(r["rows"] for r in counted) == rows
                spark_s, lake_s = statistics.median(timings["spark"]), statistics.median(timings["lake"])
                print(
                    f"  {rows:>7,} rows: Spark's limits {spark_s * 1000:7.0f} ms, by rows {lake_s * 1000:6.0f} ms, "
                    f"ratio {lake_s / spark_s:.2f}x"
                )
                frame.unpersist()
        finally:
            spark.stop()


if __name__ == "__main__":
    main()
