"""Every session's Python worker daemon: PySpark's own, from the installed package's compiled modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.python_daemon import prefer_installed_pyspark


def test_the_daemon_moves_the_installed_pysparks_zips_after_the_rest_of_the_path(tmp_path: Path) -> None:
    installed = tmp_path / "site-packages" / "pyspark"
    bundled = installed / "python" / "lib"
    bundled.mkdir(parents=True)
    other = tmp_path / "spark-3.5" / "python" / "lib"
    path = [
        str(bundled / "pyspark.zip"),
        str(bundled / "py4j-0.10.9.9-src.zip"),
        str(other / "pyspark.zip"),
        "/work/project",
        str(tmp_path / "site-packages"),
    ]
    assert prefer_installed_pyspark(path, installed) == [
        # Another Spark's zip may hold another version: it stays where Spark put it.
        str(other / "pyspark.zip"),
        "/work/project",
        str(tmp_path / "site-packages"),
        str(bundled / "pyspark.zip"),
        str(bundled / "py4j-0.10.9.9-src.zip"),
    ]
    # Reached through a link (a venv's folder linked elsewhere), they are the same files.
    (tmp_path / "linked").symlink_to(tmp_path / "site-packages")
    assert prefer_installed_pyspark([str(tmp_path / "linked/pyspark/python/lib/pyspark.zip"), "/x"], installed) == [
        "/x",
        str(tmp_path / "linked/pyspark/python/lib/pyspark.zip"),
    ]
    assert prefer_installed_pyspark(["/x", "/y"], installed) == ["/x", "/y"]


@pytest.mark.integration
def test_a_sessions_workers_import_the_installed_pyspark_from_the_lakes_daemon(spark: Any) -> None:
    from infra.spark import start_python_workers

    def worker_origin(batches: Any) -> Any:
        import os

        import pyarrow as pa
        import pyspark.instrumentation_utils

        for _ in batches:
            pass
        parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        yield pa.record_batch(
            {"parent": [parent], "daemon_pid": [os.getppid()], "pyspark_file": [pyspark.instrumentation_utils.__file__]}
        )

    started = start_python_workers(spark).result(timeout=240)
    (row,) = (
        spark.range(1, numPartitions=1)
        .mapInArrow(worker_origin, "parent string, daemon_pid long, pyspark_file string")
        .collect()
    )
    assert "infra.python_daemon" in row.parent
    assert ".zip" not in row.pyspark_file and "site-packages" in row.pyspark_file
    # The workers started ahead came from the daemon that a later Arrow task of the session uses.
    assert started == {row.daemon_pid}
