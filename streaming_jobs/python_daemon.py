"""Spark's Python worker daemon for the stream, with the stream's task modules imported once.

PySpark forks every Python worker from one daemon process, and each worker then imports what its
first task's function needs: ~1 s for silver's (scipy, pandas, the session processor) on the 2-core
machine, ~0.35 s for bronze's. A start runs six such workers within seconds (bronze's two, silver's
four: two tasks, each a stateful step and a writer), all while the JVM warms up and bronze drains
the start-up backlog. Imported here once, before the daemon forks, every worker starts with them
(shared copy-on-write), frozen out of the collections PySpark runs after each task
(:mod:`infra.python_workers`). The price is paid once, by bronze's first task, which waits for the
daemon to start.

Spark starts the daemon with its own copy of PySpark first on ``PYTHONPATH``
(``$SPARK_HOME/python/lib/pyspark.zip``). A zip holds no compiled modules, so the daemon compiled
every PySpark module it imports from source at every start: ~0.65 s of its ~2.2 s on the 2-core
machine, on the path to bronze's first batch, and again in each worker for the modules its task
imports later. With PySpark installed as a package, ``SPARK_HOME`` is that package and the zip holds
the same version, so the daemon imports the installed copy, compiled at install time.
"""

import importlib
import sys
import sysconfig
from pathlib import Path

from infra.python_workers import freeze_long_lived_objects

# What the stream's task functions need: bronze's decode and write, silver/gold's stateful step (its
# pandas frames) and writer.
TASK_MODULES = ("pandas", "pyspark.sql.pandas.serializers", "streaming_jobs.bronze", "streaming_jobs.silver_gold")


def prefer_installed_pyspark(path: list[str], installed: Path) -> list[str]:
    """``path`` (a ``sys.path``) with the zips of ``installed`` (an installed PySpark package, the
    ``SPARK_HOME`` that Spark puts them on the path from) moved last. Zips of any other Spark stay
    where they are: only the installed package's are known to hold the same version."""
    bundled = (installed / "python" / "lib").resolve()
    moved = [entry for entry in path if entry.endswith(".zip") and Path(entry).resolve().parent == bundled]
    return [entry for entry in path if entry not in moved] + moved


def run() -> None:
    sys.path[:] = prefer_installed_pyspark(sys.path, Path(sysconfig.get_paths()["purelib"]) / "pyspark")
    from pyspark import daemon

    for name in TASK_MODULES:
        importlib.import_module(name)
    freeze_long_lived_objects()
    daemon.manager()


if __name__ == "__main__":
    run()
