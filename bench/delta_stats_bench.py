"""What Delta's file statistics cost a silver append: every column (Delta's default) against the
catalog's stats columns for ``silver.eeg_samples`` (``TableSpec.stats_columns``).

Delta computes each new file's min, max and null counts row by row as it writes; on the sample rows'
float arrays they serve no query. The bench appends the same rows (100 sessions x 1,400 samples, about
what one silver batch holds at 100 headsets) through ``infra.delta.spark_append`` to two tables in one
local Spark session, alternating, after a warm-up append to a third, and prints the first append
(the one that makes the table) and the median of the others.

    python bench/delta_stats_bench.py
    python bench/delta_stats_bench.py --sessions 20 --appends 10
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import load_settings
from infra.delta import spark_append
from infra.spark import build_spark_session
from schemas.catalog import SILVER_EEG_SAMPLES
from streaming_jobs.lake_rows import samples_table

LAB_TIME_US = 1_790_000_000_000_000


def sample_rows(sessions: int, samples: int, channels: int) -> pa.Table:
    rng = np.random.default_rng(0)
    runs = []
    for number in range(sessions):
        index = np.arange(samples)
        run = {
            "device_id": f"bench-{number:03d}",
            "sample_index": index,
            "seq": index // 25,
            "time_us": LAB_TIME_US + index * 4000,
            "device_time_us": index * 4000,
            "raw": rng.normal(size=(samples, channels)).astype(np.float32),
            "filtered": rng.normal(size=(samples, channels)).astype(np.float32),
            "gap_before": np.zeros(samples, np.int64),
        }
        runs.append(samples_table(f"bench-session-{number:03d}", [run]))
    return pa.concat_tables(runs)


def add_row_arguments(parser: argparse.ArgumentParser, appends_help: str) -> None:
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1400, help="per session and append")
    parser.add_argument("--channels", type=int, default=17)
    parser.add_argument("--appends", type=int, default=6, help=appends_help)


@contextmanager
def sample_frame(args: argparse.Namespace, app_name: str) -> Iterator[tuple[Any, Path, Any, int]]:
    """A local Spark session, a scratch folder, and the bench's sample rows as a cached DataFrame
    (with its row count); the session stops and the folder goes on leaving."""
    with tempfile.TemporaryDirectory(prefix=f"{app_name}-") as tmp:
        root = Path(tmp)
        settings = load_settings(
            environ={"NEUROLAKE_PATHS__HOME": str(root / "state"), "NEUROLAKE_PATHS__LAKE_ROOT": str(root / "lake")}
        )
        source = root / "rows.parquet"
        pq.write_table(sample_rows(args.sessions, args.samples, args.channels), source)
        spark = build_spark_session(settings, app_name)
        try:
            frame = spark.read.parquet(str(source)).repartition(2).cache()
            yield spark, root, frame, frame.count()
        finally:
            spark.stop()


def print_appends(seconds: dict[str, list[float]], width: int) -> dict[str, float]:
    """One line per variant: its first append and the median of the others (returned)."""
    medians = {}
    for name, times in seconds.items():
        medians[name] = statistics.median(times[1:]) if len(times) > 1 else times[0]
        print(f"  {name:{width}s} first {times[0]:5.2f} s   median after {medians[name]:5.2f} s")
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_row_arguments(parser, "per table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with sample_frame(args, "delta-stats-bench") as (_, root, frame, rows):
        tables = {
            "every column (Delta's default)": {},
            f"stats columns ({', '.join(SILVER_EEG_SAMPLES.stats_columns)})": SILVER_EEG_SAMPLES.table_properties,
        }
        # The session's first write warms the JVM for both: a scratch table takes it.
        spark_append(frame, root / "warm-up", "bench:stats", 0)
        seconds: dict[str, list[float]] = {name: [] for name in tables}
        for batch_id in range(args.appends):
            for number, (name, properties) in enumerate(tables.items()):
                seconds[name].append(
                    spark_append(frame, root / f"table-{number}", "bench:stats", batch_id, properties=properties)
                )
    print(
        f"delta stats bench: {rows:,} silver sample rows per append ({args.sessions} sessions x {args.samples}, "
        f"{args.channels} channels), {args.appends} appends per table, local Spark"
    )
    medians = print_appends(seconds, 60)
    default, keyed = medians.values()
    first_default, first_keyed = (times[0] for times in seconds.values())
    print(f"  stats columns / every column: first {first_keyed / first_default:.2f}x, after {keyed / default:.2f}x")


if __name__ == "__main__":
    main()
