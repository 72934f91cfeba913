"""The one way to build a Spark session. Jobs receive a session; they never build their own."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from infra.preflight import check_java, java_executable
from neurolake.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_environment(settings: Settings) -> dict[str, str]:
    """Variables Spark's launcher and Python workers read from the process environment."""
    env = {
        # Without these, Python workers fail with "Timed out while waiting for the Python worker
        # to connect back", and the driver may bind a non-loopback address.
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    java = java_executable(settings)
    env["JAVA_HOME"] = str(java.resolve().parent.parent)
    return env


def build_spark_session(settings: Settings, app_name: str = "neurolake") -> SparkSession:
    check_java(settings)
    # Spark's launcher reads these from the environment; this is the one place that sets them.
    os.environ.update(spark_environment(settings))
    from pyspark.sql import SparkSession

    spark_conf = settings.spark
    builder = (
        SparkSession.builder.appName(app_name)
        .master(spark_conf.master)
        .config("spark.driver.memory", spark_conf.driver_memory)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", str(spark_conf.shuffle_partitions))
        .config("spark.default.parallelism", str(spark_conf.shuffle_partitions))
        .config("spark.ui.enabled", str(spark_conf.ui_enabled).lower())
        .config("spark.ui.port", str(spark_conf.ui_port))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.local.dir", str(settings.paths.home / "spark-tmp"))
        .config("spark.sql.warehouse.dir", str(settings.paths.home / "spark-warehouse"))
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
