"""Every session's Python worker daemon: PySpark's own, from the installed package's compiled modules."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from infra.python_daemon import WARM_DAEMON_ENV, prefer_installed_pyspark, warm_daemon


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


def launch_daemon(**env: str) -> subprocess.Popen[bytes]:
    """The daemon process as Spark launches it: ``python -m <daemon module> pyspark.worker``, the
    port it listens at written to its stdout, told to end by its stdin closing."""
    return subprocess.Popen(
        [sys.executable, "-m", "infra.python_daemon", "pyspark.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0", **env},
    )


def listening_port(process: subprocess.Popen[bytes]) -> int:
    assert process.stdout is not None
    return int(struct.unpack("!i", process.stdout.read(4))[0])


def listens_at(pid: int, port: int) -> bool:
    return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.Process(pid).net_connections())


def ended(pid: int, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_daemon_started_ahead_takes_over_the_streams_of_the_one_spark_launches(monkeypatch: Any) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with warm_daemon("infra.python_daemon") as warm:
        assert os.environ[WARM_DAEMON_ENV]
        launched = launch_daemon()
        port = listening_port(launched)
        # The daemon started ahead listens, with the launched one's stdout (where the port came).
        assert listens_at(warm.pid, port) and not listens_at(launched.pid, port)
        assert os.readlink(f"/proc/{warm.pid}/fd/1") == os.readlink(f"/proc/{launched.pid}/fd/1")
        assert launched.stdin is not None
        launched.stdin.close()  # how a stopping JVM ends its daemon
        assert launched.wait(15) == 0
        assert ended(warm.pid)
    assert WARM_DAEMON_ENV not in os.environ


def test_spark_stopping_the_launched_daemon_stops_the_one_that_took_over(monkeypatch: Any) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with warm_daemon("infra.python_daemon") as warm:
        launched = launch_daemon()
        assert listens_at(warm.pid, listening_port(launched))
        launched.terminate()  # Spark's Process.destroy()
        launched.wait(15)
        assert ended(warm.pid)


def test_the_launched_daemon_serves_itself_when_the_one_ahead_cannot_serve_it(monkeypatch: Any, tmp_path: Path) -> None:
    # Started with another hash seed, the daemon ahead would give the workers other string hashes.
    monkeypatch.setenv("PYTHONHASHSEED", "7")
    with warm_daemon("infra.python_daemon") as warm:
        launched = launch_daemon(PYTHONHASHSEED="0")
        assert listens_at(launched.pid, listening_port(launched))
        assert warm.poll() is None  # still waiting, for a daemon it can serve
        socket_folder = Path(os.environ[WARM_DAEMON_ENV]).parent
        launched.terminate()
        launched.wait(15)
    assert warm.poll() is not None and not socket_folder.exists()
    # With no daemon ahead (its socket gone), a launched daemon serves itself as well.
    launched = launch_daemon(**{WARM_DAEMON_ENV: str(tmp_path / "gone.sock")})
    assert listens_at(launched.pid, listening_port(launched))
    launched.terminate()
    launched.wait(15)


def test_a_daemon_started_ahead_ends_with_the_process_that_started_it() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from infra.python_daemon import warm_daemon\n"
            "with warm_daemon('infra.python_daemon') as warm:\n"
            "    print(warm.pid, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    warm = int(parent.stdout.readline())
    parent.kill()  # a SIGKILLed stream runs no cleanup
    parent.wait(15)
    assert ended(warm)
