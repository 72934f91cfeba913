"""Silver's writer: delta-spark's append against Parquet files written by the executors with pyarrow
and committed from the driver with delta-rs (what the silver/gold stream does now).

Both take the same rows (100 sessions x 1,400 samples, about what one silver batch holds at 100
headsets) from one cached Spark DataFrame in one local Spark session, into tables made with the
catalog's stats columns for ``silver.eeg_samples``, alternating, after a warm-up append of each to a
scratch table; the first append (the one that makes the table) and the median of the others.

- delta-spark: ``infra.delta.spark_append`` (a JVM row per sample, its statistics row by row,
  parquet-mr);
- executor files + delta-rs commit: ``mapInArrow`` over ``infra.delta.write_data_files``, the file
  descriptions collected, ``infra.delta.commit_data_files``.

    python bench/silver_writer_bench.py
    python bench/silver_writer_bench.py --sessions 20 --appends 10
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.delta_stats_bench import add_row_arguments, print_appends, sample_frame
from infra.delta import DATA_FILE_ARROW, commit_data_files, spark_append, write_data_files
from schemas.catalog import SILVER_EEG_SAMPLES
from streaming_jobs.bronze import spark_struct
from streaming_jobs.lake_rows import SAMPLES_SCHEMA

DELTA_SPARK = "delta-spark append"
EXECUTOR_FILES = "executor files + delta-rs commit"


def write_task(table_dir: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    received = list(batches)
    if received:
        yield write_data_files(
            Path(table_dir), pa.Table.from_batches(received), ("date",), SILVER_EEG_SAMPLES.stats_columns
        )


def executor_files_append(frame: object, table_dir: Path, batch_id: int) -> float:
    started = time.monotonic()
    files = frame.mapInArrow(  # type: ignore[attr-defined]
        functools.partial(write_task, str(table_dir)), spark_struct(DATA_FILE_ARROW)
    ).collect()
    commit_data_files(
        table_dir,
        [row.asDict() for row in files],
        "bench:writer",
        batch_id,
        SAMPLES_SCHEMA,
        properties=SILVER_EEG_SAMPLES.table_properties,
    )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_row_arguments(parser, "per writer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    properties = SILVER_EEG_SAMPLES.table_properties
    writers = {
        DELTA_SPARK: lambda frame, table, batch: spark_append(
            frame, table, "bench:writer", batch, properties=properties
        ),
        EXECUTOR_FILES: executor_files_append,
    }
    with sample_frame(args, "silver-writer-bench") as (_, root, frame, rows):
        for number, write in enumerate(writers.values()):  # the JVM and the Python workers warm
            write(frame, root / f"warm-up-{number}", 0)
        seconds: dict[str, list[float]] = {name: [] for name in writers}
        for batch_id in range(args.appends):
            for number, (name, write) in enumerate(writers.items()):
                seconds[name].append(write(frame, root / f"table-{number}", batch_id))
    print(
        f"silver writer bench: {rows:,} silver sample rows per append ({args.sessions} sessions x {args.samples}, "
        f"{args.channels} channels), {args.appends} appends per writer, local Spark, stats columns "
        f"({', '.join(SILVER_EEG_SAMPLES.stats_columns)})"
    )
    medians = print_appends(seconds, 35)
    print(
        f"  executor files / delta-spark: first {seconds[EXECUTOR_FILES][0] / seconds[DELTA_SPARK][0]:.2f}x, "
        f"after {medians[EXECUTOR_FILES] / medians[DELTA_SPARK]:.2f}x"
    )


if __name__ == "__main__":
    main()
