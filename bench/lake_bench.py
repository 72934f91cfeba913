"""Lake freshness: how old the newest sample in silver.eeg_samples is, while headsets stream.

Starts a private broker, the streaming process (`neurolake stream start all`) and N simulated
headsets; after a warm-up, every 0.5 s reads the newest sample time in silver from the Delta log's
file statistics and prints the age distribution (now - newest sample time, lab clock). This bounds
the sample -> silver row latency from above (it includes up to one polling interval). Also prints
whether the lake kept up: silver rows at the end vs samples produced.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import cli_environment, private_broker  # noqa: E402


def newest_sample_us(table_path: Path) -> int | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        actions = DeltaTable(str(table_path)).get_add_actions(flatten=True)
    except TableNotFoundError:
        return None
    if actions.num_rows == 0 or "max.time_us" not in actions.column_names:
        return None
    values = [v for v in actions.column("max.time_us").to_pylist() if v is not None]
    return max(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured, after warm-up")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    args = parser.parse_args()
    with private_broker() as settings:
        env = cli_environment(settings)
        cli = [sys.executable, "-m", "neurolake.cli"]
        logs = args.logs or settings.paths.home / "bench-logs"
        logs.mkdir(parents=True, exist_ok=True)
        streams = subprocess.Popen([*cli, "stream", "start", "all"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=open(logs / "streams.log", "w"),
                                   start_new_session=True)
        duration = args.warmup + args.seconds + 5
        headsets = subprocess.Popen(
            [*cli, "edge", "simulate", "--headsets", str(args.headsets), "--duration", str(duration)],
            env=env, stdout=subprocess.PIPE, stderr=open(logs / "headsets.log", "w"), text=True,
        )
        silver = settings.paths.lake_root / "silver" / "eeg_samples"
        ages = []
        try:
            start = time.monotonic()
            while time.monotonic() - start < args.warmup + args.seconds:
                newest = newest_sample_us(silver)
                if newest is not None and time.monotonic() - start >= args.warmup:
                    ages.append((time.time_ns() // 1000 - newest) / 1e6)
                time.sleep(0.5)
            summary = json.loads(headsets.communicate(timeout=120)[0])
            time.sleep(10)
            from batch_jobs.lake_sql import run_query

            rows = run_query(settings.paths.lake_root, "SELECT count(*) FROM silver.eeg_samples").rows[0][0]
        finally:
            os.killpg(streams.pid, signal.SIGTERM)
            try:
                streams.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(streams.pid, signal.SIGKILL)
            if headsets.poll() is None:
                headsets.kill()
        produced = sum(d["samples"] for d in summary["devices"])
        print(f"lake bench: {args.headsets} headsets (16 EEG + pulse at 250 Hz), bronze + silver/gold "
              f"queries in one local[2] Spark, {args.seconds:.0f} s measured after {args.warmup:.0f} s")
        if ages:
            a = np.array(ages)
            print(f"  newest silver sample age  p50 {np.percentile(a, 50):.2f} s  p95 "
                  f"{np.percentile(a, 95):.2f} s  max {a.max():.2f} s  ({len(a)} polls; target p95 <= 5 s)")
        else:
            print("  silver had no rows during the measurement")
        print(f"  silver rows {rows:,} of {produced:,} samples produced (10 s after the headsets stopped)")


if __name__ == "__main__":
    main()
