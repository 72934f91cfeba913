"""What Delta's version checksums save Delta's streaming source on tables that delta-rs commits.

The lake's bronze tables are committed with delta-rs (``infra.delta.commit_data_files``), and the
silver/gold stream reads them with Delta's streaming source, which takes a new snapshot of each
table at every micro-batch. A snapshot needs the table's protocol and metadata: from the newest
version's checksum (``_delta_log/N.crc``) when there is one, else from a Spark job over the log's
commits since the last checkpoint. delta-rs writes no checksum; the lake's writers now do
(``infra.delta.write_version_checksums``).

Two tables grow side by side in one Spark session configured as the lake's, one commit each per
round (a few files, as a bronze batch makes), one of them with its checksums removed after each
commit. A streaming query per table (``readStream.format("delta")``, a no-op sink) runs a batch per
round; the bench prints each query's ``latestOffset`` and whole trigger time (median and p95) and
the ratio of the medians, alternating which table commits first.

    python bench/delta_checksum_bench.py              # 60 rounds after 60 commits
    python bench/delta_checksum_bench.py --rounds 100 --history 90
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import load_settings
from infra.delta import commit_data_files, latest_version, write_data_files
from infra.spark import build_spark_session

SCHEMA = pa.schema(
    [("date", pa.string()), ("session_id", pa.string()), ("time_us", pa.int64()), ("value", pa.float64())]
)


def commit_round(table: Path, batch_id: int, rows: int, keep_checksums: bool) -> None:
    batch = pa.table(
        {
            "date": ["2026-12-06"] * rows,
            "session_id": [f"s{i % 100}" for i in range(rows)],
            "time_us": np.arange(rows, dtype=np.int64) + batch_id * rows,
            "value": np.ones(rows),
        },
        schema=SCHEMA,
    )
    files = write_data_files(table, batch, ("date",), ("time_us",)).to_pylist()
    commit_data_files(table, files, "bench:t", batch_id, SCHEMA)
    if not keep_checksums:
        for checksum in (table / "_delta_log").glob("*.crc"):
            checksum.unlink()


def start_query(spark: Any, table: Path, checkpoint: Path) -> Any:
    return (
        spark.readStream.format("delta")
        .option("startingVersion", "0")
        .load(str(table))
        .writeStream.foreachBatch(lambda frame, batch_id: None)
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime="100 milliseconds")
        .start()
    )


def read_version(progress: Any, offset: str) -> int:
    """The table version a progress report's start or end offset stands at (-1 before any)."""
    value = progress["sources"][0][offset] or "{}"
    return int((json.loads(value) if isinstance(value, str) else value).get("reservoirVersion", -1))


def wait_for_version(query: Any, table: Path, version: int, limit_s: float = 60.0) -> None:
    """Until the query has read ``version`` of the table (its offset's reservoir version passes it)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        progress = query.lastProgress
        if progress and progress["sources"]:
            if read_version(progress, "endOffset") > version:
                return
        time.sleep(0.02)
    raise TimeoutError(f"the query on {table.name} did not read version {version} within {limit_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="measured commits per table")
    parser.add_argument("--history", type=int, default=60, help="commits before the queries start")
    parser.add_argument("--rows", type=int, default=2000, help="rows per commit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="neurolake-checksum-bench-") as home:
        root = Path(home)
        settings = load_settings(environ={"NEUROLAKE_PATHS__HOME": str(root / "state")}, cwd=root)
        spark = build_spark_session(settings, "checksum-bench")
        tables = {"with checksums": root / "with", "without": root / "without"}
        for batch_id in range(args.history):
            for name, table in tables.items():
                commit_round(table, batch_id, args.rows, name == "with checksums")
        queries = {name: start_query(spark, table, root / f"checkpoint-{table.name}") for name, table in tables.items()}
        figures: dict[str, dict[str, list[float]]] = {
            name: {"latestOffset": [], "triggerExecution": []} for name in tables
        }
        try:
            for name, table in tables.items():
                wait_for_version(queries[name], table, latest_version(table))
            for round_number in range(args.rounds):
                order = list(tables.items()) if round_number % 2 == 0 else list(reversed(tables.items()))
                for name, table in order:
                    query = queries[name]
                    seen = query.lastProgress["batchId"] if query.lastProgress else -1
                    commit_round(table, args.history + round_number, args.rows, name == "with checksums")
                    wait_for_version(query, table, latest_version(table))
                    for progress in query.recentProgress:
                        # A batch that read a new commit (a no-op sink counts no input rows).
                        if progress["batchId"] > seen and read_version(progress, "endOffset") > read_version(
                            progress, "startOffset"
                        ):
                            for phase in figures[name]:
                                figures[name][phase].append(progress["durationMs"].get(phase, 0) / 1000)
        finally:
            for query in queries.values():
                query.stop()
            spark.stop()
    print(
        f"delta checksum bench: Delta's streaming source over two tables committed with delta-rs "
        f"({args.history} commits, then {args.rounds} measured, {args.rows} rows each), local Spark as the lake's"
    )
    medians = {}
    for name, phases in figures.items():
        parts = []
        for phase, seconds in phases.items():
            parts.append(
                f"{phase} median {np.median(seconds) * 1000:.0f} ms p95 {np.percentile(seconds, 95) * 1000:.0f} ms"
            )
        medians[name] = np.median(phases["latestOffset"]), np.median(phases["triggerExecution"])
        print(f"  {name:<15} {len(phases['latestOffset'])} batches; " + "; ".join(parts))
    with_, without = medians["with checksums"], medians["without"]
    print(
        f"delta checksum: latestOffset {with_[0] / without[0]:.2f}x, trigger {with_[1] / without[1]:.2f}x "
        "(with checksums / without)"
    )


if __name__ == "__main__":
    main()
