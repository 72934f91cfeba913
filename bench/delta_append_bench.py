"""What a small delta-spark append costs, with Delta's own app transaction and with the lake's.

Every batch of the lake's streams appends a few hundred to a few thousand rows per table and must
not append a replayed batch twice. Delta's app transaction (``txnAppId``/``txnVersion``) does that
by looking the app up in the table's state, which delta-spark rebuilds from the log (a Spark job)
on every commit; ``infra.delta.spark_append`` reads the app's last batch from the log's newest
commits once and then remembers it. This bench appends the same rows N times to two fresh tables in
one local Spark session configured as the lake's, alternating the two ways so both see the same
machine, and prints per-append seconds: the first append (batch 0 goes the app-transaction way
first, so that one pays the cold JVM's first Delta write), the median and p95 of the rest, and the
ratio of the medians.

    python bench/delta_append_bench.py              # 40 appends of 500 rows each way
    python bench/delta_append_bench.py --appends 100 --rows 5000
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import load_settings
from infra.delta import spark_append
from infra.spark import build_spark_session

log = logging.getLogger("bench.delta_append")


def delta_app_transaction_append(frame, table: Path, app_id: str, batch_id: int) -> float:  # type: ignore[no-untyped-def]
    """The baseline: Delta's own idempotent append, as the lake wrote before."""
    started = time.monotonic()
    (
        frame.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", str(batch_id))
        .partitionBy("date")
        .save(str(table))
    )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=40)
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args(argv)
    if args.appends < 3 or args.rows < 1:
        parser.error("--appends must be at least 3 and --rows at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="delta-append-bench-") as scratch:
        root = Path(scratch)
        settings = load_settings()
        started = time.monotonic()
        spark = build_spark_session(settings, "delta-append-bench")
        spark.sparkContext.setLogLevel("ERROR")
        print(
            f"delta append bench: Spark session up in {time.monotonic() - started:.1f} s; {args.appends} appends of {args.rows} rows each way"
        )
        from pyspark.sql import functions as F

        frame = spark.range(args.rows).select(
            F.lit("2026-12-05").alias("date"), F.col("id").alias("time_us"), (F.col("id") * 0.5).alias("value")
        )
        seconds: dict[str, list[float]] = {"delta app transaction": [], "spark_append (log read)": []}
        try:
            for batch_id in range(args.appends):
                # Alternate which goes first, so that neither always follows the other's commit.
                order = list(seconds) if batch_id % 2 == 0 else list(reversed(seconds))
                for name in order:
                    if name == "delta app transaction":
                        took = delta_app_transaction_append(frame, root / "txn", "bench:txn", batch_id)
                    else:
                        begun = time.monotonic()
                        spark_append(frame, root / "lake", "bench:lake", batch_id)
                        took = time.monotonic() - begun
                    seconds[name].append(took)
                if batch_id % 10 == 9:
                    print(f"  {batch_id + 1}/{args.appends} appends each way", flush=True)
            # A replay must write nothing: the guarantee both ways keep.
            replayed = spark_append(frame, root / "lake", "bench:lake", args.appends - 1)
        finally:
            spark.stop()
    medians = {}
    for name, values in seconds.items():
        rest = np.array(values[1:])
        medians[name] = float(np.median(rest))
        print(
            f"  {name:<24} first (cold) {values[0]:.2f} s   then median {medians[name]:.3f} s  "
            f"p95 {np.percentile(rest, 95):.3f} s  max {rest.max():.3f} s"
        )
    ratio = medians["spark_append (log read)"] / medians["delta app transaction"]
    print(f"  replayed batch appended again: {'no' if replayed == 0.0 else 'YES'}")
    print(
        f"delta_append: txn_median_s={medians['delta app transaction']:.3f} "
        f"lake_median_s={medians['spark_append (log read)']:.3f} ratio={ratio:.2f}"
    )
    return 0 if replayed == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
