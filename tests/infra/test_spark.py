"""The Spark session factory in local mode, including a Python UDF (needs PYSPARK_PYTHON right)."""

from __future__ import annotations

import pytest

from infra.spark import build_spark_session

pytestmark = pytest.mark.integration


def test_local_session_runs_python_workers(make_settings) -> None:
    settings = make_settings()
    spark = build_spark_session(settings, app_name="neurolake-test")
    try:
        assert spark.conf.get("spark.sql.shuffle.partitions") == str(settings.spark.shuffle_partitions)
        assert spark.conf.get("spark.ui.enabled") == "false"
        from pyspark.sql.functions import udf

        double = udf(lambda x: x * 2, "long")
        rows = spark.range(10).select(double("id").alias("d")).groupBy().sum("d").collect()
        assert rows[0][0] == 90
    finally:
        spark.stop()
