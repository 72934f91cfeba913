"""The Spark session factory in local mode, including a Python UDF (needs PYSPARK_PYTHON right)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_arrow_batches_by_records_bounds_python_batches_by_rows_alone(spark) -> None:
    import pyarrow as pa

    from infra.spark import ARROW_BYTES_UNMEASURED, arrow_batches_by_records

    # A query's own session, as each streaming query has: the shared one keeps Spark's limits.
    session = spark.newSession()
    arrow_batches_by_records(session, 7)

    def batch_sizes(batches):  # type: ignore[no-untyped-def]
        for batch in batches:
            yield pa.record_batch({"rows": [batch.num_rows]})

    sizes = [row["rows"] for row in session.range(20).coalesce(1).mapInArrow(batch_sizes, "rows long").collect()]
    assert sizes == [7, 7, 6]
    assert session.conf.get("spark.sql.execution.arrow.maxBytesPerBatch") == str(ARROW_BYTES_UNMEASURED)
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "10000"
    shared = [row["rows"] for row in spark.range(20).coalesce(1).mapInArrow(batch_sizes, "rows long").collect()]
    assert shared == [20]


def test_the_class_archive_is_keyed_by_spark_and_java(make_settings, tmp_path) -> None:
    from infra.spark import class_archive_path

    settings = make_settings()
    path = class_archive_path(settings)
    assert path.suffix == ".jsa" and path == class_archive_path(settings)
    other_java = tmp_path / "jdk" / "bin" / "java"
    other_java.parent.mkdir(parents=True)
    other_java.write_text("#!/bin/sh\n")
    other = settings.model_copy(update={"spark": settings.spark.model_copy(update={"java_home": tmp_path / "jdk"})})
    assert class_archive_path(other) != path


def test_the_class_archive_is_recorded_by_the_java_it_is_named_for(make_settings, tmp_path, monkeypatch) -> None:
    import infra.spark
    from infra.spark import class_archive_path, record_class_archive

    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    settings = make_settings()
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"java_home": tmp_path / "jdk"})})
    monkeypatch.setenv("JAVA_HOME", "/somewhere/else")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    seen: dict[str, str] = {}

    def training(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
        env = options["env"]
        assert isinstance(env, dict)
        seen.update(env)
        Path(command[-1]).write_bytes(b"archive")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(infra.spark.subprocess, "run", training)
    assert record_class_archive(settings) == class_archive_path(settings)
    assert seen["JAVA_HOME"] == str(tmp_path / "jdk")


def test_sessions_start_from_the_recorded_class_archive(make_settings) -> None:
    from infra.spark import class_archive_path, driver_java_options

    settings = make_settings()
    if not class_archive_path(settings).is_file():
        pytest.fail(
            f"no class archive at {class_archive_path(settings)}: `make setup` records it (python -m infra.spark)"
        )
    spark = build_spark_session(settings, app_name="neurolake-test")
    try:
        options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
        assert f"-XX:SharedArchiveFile={class_archive_path(settings)}" in options
    finally:
        spark.stop()
    assert settings.spark.java_options in options
    off = settings.model_copy(update={"spark": settings.spark.model_copy(update={"class_archive": False})})
    assert driver_java_options(off) == settings.spark.java_options
    bare = off.model_copy(update={"spark": off.spark.model_copy(update={"java_options": ""})})
    assert driver_java_options(bare) is None


def test_executors_on_a_standalone_master_get_the_drivers_jvm_options(make_settings) -> None:
    from infra.spark import standalone_conf

    settings = make_settings()
    assert standalone_conf(settings) == {}  # local mode: the executors are the driver's JVM
    cluster = settings.model_copy(update={"spark": settings.spark.model_copy(update={"master": "spark://hub:7077"})})
    conf = standalone_conf(cluster)
    assert conf["spark.executor.extraJavaOptions"] == settings.spark.java_options
    assert "-XX:TieredStopAtLevel=1" in conf["spark.executor.extraJavaOptions"]
    bare = cluster.model_copy(update={"spark": cluster.spark.model_copy(update={"java_options": ""})})
    assert "spark.executor.extraJavaOptions" not in standalone_conf(bare)
