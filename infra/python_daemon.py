"""Spark's Python worker daemon for the lake's sessions: PySpark's own daemon, imported from the
installed, compiled PySpark.

Spark starts the daemon with its own copy of PySpark first on ``PYTHONPATH``
(``$SPARK_HOME/python/lib/pyspark.zip``). A zip holds no compiled modules, so the daemon compiled
every PySpark module it imports from source at every start (~0.65 s of its ~2.2 s on the 2-core
machine, on the path to a session's first Python task) and each worker again the modules its task
imports later. With PySpark installed as a package, ``SPARK_HOME`` is that package and the zip holds
the same version, so the daemon imports the installed copy, compiled at install time. Every session
of :func:`infra.spark.build_spark_session` names this module (``spark.python.daemon.module``); a
session whose tasks share heavy modules names one that calls :func:`serve` with them
(``streaming_jobs/python_daemon.py``).
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from infra.python_workers import freeze_long_lived_objects


def prefer_installed_pyspark(path: list[str], installed: Path) -> list[str]:
    """``path`` (a ``sys.path``) with the zips of ``installed`` (an installed PySpark package, the
    ``SPARK_HOME`` that Spark puts them on the path from) moved last. Zips of any other Spark stay
    where they are: only the installed package's are known to hold the same version."""
    bundled = (installed / "python" / "lib").resolve()
    moved = [entry for entry in path if entry.endswith(".zip") and Path(entry).resolve().parent == bundled]
    return [entry for entry in path if entry not in moved] + moved


# The schema of what :func:`report_daemon` yields.
DAEMON_PID_SCHEMA = "daemon_pid long"


def report_daemon(batches: Iterator[Any]) -> Iterator[Any]:
    """A task (``mapInArrow``) that does nothing but report the process id of the daemon that forked
    its worker (:func:`infra.spark.start_python_workers`)."""
    import pyarrow as pa

    for _ in batches:
        pass
    yield pa.record_batch({"daemon_pid": [os.getppid()]})


def serve(task_modules: Sequence[str] = ()) -> None:
    """Run PySpark's daemon from the installed PySpark, with ``task_modules`` imported (and frozen,
    :mod:`infra.python_workers`) before it forks its first worker."""
    sys.path[:] = prefer_installed_pyspark(sys.path, Path(sysconfig.get_paths()["purelib"]) / "pyspark")
    from pyspark import daemon

    for name in task_modules:
        importlib.import_module(name)
    if task_modules:
        freeze_long_lived_objects()
    daemon.manager()


if __name__ == "__main__":
    serve()
