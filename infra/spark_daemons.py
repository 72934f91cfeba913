"""Commands and environment for a local Spark standalone cluster's daemons (a master and its
workers), run from the pyspark package: its wheel has no ``sbin/start-*.sh`` but ships
``bin/spark-class``, which starts any Spark main class with the package's jars."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.settings import Settings
from infra.preflight import java_executable


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def spark_daemon_command(settings: Settings, main_class: str, *args: str) -> list[str]:
    return [str(spark_home() / "bin" / "spark-class"), main_class, *args]


def spark_daemon_environment(settings: Settings, name: str) -> dict[str, str]:
    """What ``spark-class`` and the executors a worker starts read from the environment. Executors
    start the lake's Python (this venv's) and find Delta's and Kafka's jars on their class path,
    which the driver's session names (``spark.executor.extraClassPath``)."""
    java = java_executable(settings).resolve()
    logs = settings.paths.log_dir / "spark"
    logs.mkdir(parents=True, exist_ok=True)
    return {
        "SPARK_HOME": str(spark_home()),
        "JAVA_HOME": str(java.parent.parent),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(logs),
        "SPARK_WORKER_DIR": str(settings.paths.home / "spark" / name),
        # Daemons are small; the executors they start get spark.executor.memory each.
        "SPARK_DAEMON_MEMORY": "256m",
        # Whose daemons these are (a test session's sweep finds leaked ones by it).
        "NEUROLAKE_PATHS__HOME": str(settings.paths.home),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
