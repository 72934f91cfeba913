"""What PySpark's reused Python workers pay after every task: a full ``gc.collect()``.

A worker of the lake's queries holds PySpark's worker, pyarrow, pandas, numpy, scipy and the lake's
stream modules, and PySpark's daemon collects garbage after each task a worker is reused for. This
bench runs bronze's task (decode, and the files written to a scratch lake) on 1,000 signed EEG blocks
(100 headsets' second) in a fresh process
with those modules imported, then the collection as PySpark runs it: first with the heap thawed
before each collection (the worker before ``infra.python_workers``), then as the task leaves it
(frozen). It prints the task's and the collection's median times and their ratio; the lake bench's
CPU line shows what the collections come to at 100 headsets.

    python bench/python_worker_bench.py [--tasks 20]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas  # noqa: F401  (a worker of the lake's queries has these imported)
import pyspark.worker  # noqa: F401
import scipy.signal  # noqa: F401

import streaming_jobs.silver_gold  # noqa: F401
from infra.python_workers import freeze_long_lived_objects
from schemas.catalog import EEG_RAW
from schemas.codec import default_codec
from schemas.records import eeg_block_record
from schemas.signing import Keyring, ensure_key, sign
from streaming_jobs.bronze import DecodeContext, SessionFacts, bronze_task


def kafka_rows(keys: Path, headsets: int = 100, blocks: int = 10) -> tuple[pa.Table, DecodeContext]:
    """A second of ``headsets`` headsets' signed blocks as Spark's Kafka source hands them over."""
    codec, keyring, rng = default_codec(), Keyring(keys), np.random.default_rng(0)
    values, sessions = [], {}
    for number in range(headsets):
        device_id = f"bench-{number:03d}"
        key, session_id = ensure_key(keyring, device_id), f"bench-{number:03d}-1"
        sessions[session_id] = SessionFacts(17, 250.0, 1)
        for seq in range(blocks):
            record = eeg_block_record(
                device_id=device_id, session_id=session_id, seq=seq, first_sample_index=seq * 25,
                samples=rng.standard_normal((25, 17)).astype(np.float32),
                device_times_us=1_800_000_000_000_000 + seq * 100_000 + np.arange(25, dtype=np.int64) * 4_000,
                sample_rate_hz=250.0, produced_us=1, clock_offset_us=0, clock_rtt_us=0, spool_epoch=1,
            )  # fmt: skip
            values.append(sign(codec.encode("eeg_block", record), EEG_RAW, key))
    rows = pa.table(
        {
            "topic": [EEG_RAW] * len(values),
            "partition": [0] * len(values),
            "offset": list(range(len(values))),
            "key": [b"k"] * len(values),
            "value": values,
        }
    )
    return rows, DecodeContext(Keyring(keys), sessions, 1_800_000_000_000_000)


def tasks(rows: pa.Table, context: DecodeContext, lake: Path, count: int, thaw: bool) -> tuple[float, float, int]:
    """Median ms of the task and of the collection after it, and the objects the last one walked."""
    task_ms, collect_ms = [], []
    for _ in range(count):
        started = time.perf_counter()
        for _batch in bronze_task(str(lake), context, None, iter(rows.to_batches())):
            pass
        task_ms.append((time.perf_counter() - started) * 1000)
        if thaw:
            gc.unfreeze()
        started = time.perf_counter()
        gc.collect()
        collect_ms.append((time.perf_counter() - started) * 1000)
    return statistics.median(task_ms), statistics.median(collect_ms), len(gc.get_objects())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows, context = kafka_rows(Path(scratch) / "keys")
        lake = Path(scratch) / "lake"
        plain_task, plain_gc, plain_objects = tasks(rows, context, lake, args.tasks, thaw=True)
        freeze_long_lived_objects.modules_when_frozen = 0  # a fresh worker's first task
        frozen_task, frozen_gc, frozen_objects = tasks(rows, context, lake, args.tasks, thaw=False)
    print(
        f"python worker bench: bronze's task (decode and write) on {rows.num_rows:,} blocks, then PySpark's gc.collect()"
    )
    print(f"  heap not frozen: task {plain_task:.1f} ms, collection {plain_gc:.1f} ms ({plain_objects:,} objects)")
    print(
        f"  heap frozen:     task {frozen_task:.1f} ms, collection {frozen_gc:.2f} ms ({frozen_objects:,} objects); "
        f"collection {frozen_gc / plain_gc:.3f}x, task + collection {(frozen_task + frozen_gc) / (plain_task + plain_gc):.2f}x"
    )


if __name__ == "__main__":
    main()
