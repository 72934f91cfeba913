"""The stream's Python worker daemon: its workers start with the task modules imported and frozen,
from the installed PySpark's compiled modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from streaming_jobs import bronze, silver_gold
from streaming_jobs.python_daemon import TASK_MODULES
from tests.conftest import isolated_environ

TASK_FUNCTIONS = (
    bronze.bronze_task,
    silver_gold.process_sessions,
    silver_gold.process_session,
    silver_gold.write_task,
    silver_gold.unpack_task,
)


def test_the_daemon_imports_the_module_of_every_task_function_the_stream_runs() -> None:
    assert {function.__module__ for function in TASK_FUNCTIONS} <= set(TASK_MODULES)


# Run in a process of its own: the daemon is chosen when a JVM starts, and the tests share one.
PROBE = """
import contextlib, json, sys
from core.settings import load_settings
from infra.python_daemon import warm_daemon
from infra.spark import build_spark_session
from infra.spark import start_python_workers
from streaming_jobs.runner import STREAM_SPARK_CONF

def probe(batches):
    import gc, os, sys
    import pyarrow as pa
    imported_after_fork = "pyspark.instrumentation_utils" not in sys.modules
    import pyspark.instrumentation_utils  # the daemon did not import it: the worker does, now
    for _ in batches:
        pass
    parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
    yield pa.record_batch({
        "imported": [json.dumps(sorted(m for m in sys.modules if m.startswith("streaming_jobs.")))],
        "frozen": [gc.get_freeze_count()],
        "parent": [parent],
        "pyspark_files": [json.dumps([pyspark.__file__, pyspark.instrumentation_utils.__file__])],
        "imported_after_fork": [imported_after_fork],
        "daemon_pid": [os.getppid()],
    })

ahead = warm_daemon(STREAM_SPARK_CONF["spark.python.daemon.module"]) if sys.argv[1] == "ahead" else contextlib.nullcontext()
with ahead as warm:
    spark = build_spark_session(load_settings(), "neurolake-test-daemon", STREAM_SPARK_CONF)
    started_daemons = start_python_workers(spark).result(timeout=240)
    rows = spark.range(2).coalesce(1).mapInArrow(probe, "imported string, frozen long, parent string, pyspark_files string, imported_after_fork boolean, daemon_pid long").collect()
    spark.stop()
print(json.dumps([{**row.asDict(), "started_daemons": sorted(started_daemons), "warm_pid": warm.pid if warm else None} for row in rows]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("daemon", ["ahead", "launched"])
def test_stream_workers_fork_from_the_daemon_with_the_task_modules_imported(tmp_path: Path, daemon: str) -> None:
    """``ahead``: the stream starts its daemon with its own process (``warm_daemon``), and the one
    Spark launches hands over to it; ``launched``: Spark's own, as any session without one ahead."""
    env = {**os.environ, **isolated_environ(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, daemon], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout.strip().splitlines()[-1])
    # The probe itself imports nothing of the stream's: the daemon did, before it forked the worker.
    assert {"streaming_jobs.bronze", "streaming_jobs.silver_gold"} <= set(json.loads(row["imported"]))
    assert row["frozen"] > 10_000
    assert "streaming_jobs.python_daemon" in row["parent"]
    # The workers started ahead of the queries came from the daemon that a later Arrow task uses.
    assert row["started_daemons"] == [row["daemon_pid"]]
    # The installed package's compiled modules, not the zip Spark puts first on the path, for what
    # the daemon imported and for what a worker imports after the fork.
    assert row["imported_after_fork"]
    for file in json.loads(row["pyspark_files"]):
        assert ".zip" not in file and "site-packages" in file
    if daemon == "ahead":
        # The workers' daemon is the one started ahead, and it ended with the session.
        assert row["daemon_pid"] == row["warm_pid"] and "--warm" in row["parent"]
        assert not psutil.pid_exists(row["warm_pid"])
