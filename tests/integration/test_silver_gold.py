"""Silver and gold from a simulated SSVEP session: exact sample counts, one-pass-equal filtering,
the expected windows with labels; the stateful step's buckets spread over its state partitions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable
from scipy.signal import sosfilt

from batch_jobs.rebuild import made_with
from core.errors import NeurolakeError
from dsp.filters import FilterSpec, design_sos
from infra.spark import build_spark_session
from streaming_jobs.jobs import BRONZE_QUERIES, drain, start_bronze
from streaming_jobs.silver_gold import (
    BUCKETS_PER_STATE_PARTITION,
    LAYOUT_FILE,
    balanced_bucket_ids,
    checkpoint_layout,
    processor_config,
    session_bucket,
    start_silver_gold,
)
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration


def _table(root, layer, name):
    return ds.dataset(DeltaTable(str(root / layer / name)).file_uris(), format="parquet").to_table()


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~3 min here: bronze's EEG and silver take their backlog in steps
def test_silver_and_gold_from_a_simulated_session(broker: BrokerStack) -> None:
    # A clear response (+6 dB, over the simulated alpha near 10 Hz): gold's SSVEP scores must match
    # the markers' labels in nearly every window, which checks the alignment, not a decoder at the
    # realistic default SNR (where a 2 s window's plain score misses now and then, as on real data).
    broker.env["NEUROLAKE_EDGE__SIMULATION__SSVEP_SNR_DB"] = "6"
    process = broker.simulate(1, 20, "--stimulus", "--sensors", "--camera")
    device = json.loads(process.communicate(timeout=120)[0])["devices"][0]
    spark = build_spark_session(broker.settings, "silver-gold-test")
    # Bronze's EEG and silver take their backlog a few records and files at a time, so that each
    # writes several files (which the maintenance below compacts) and silver's state crosses batches.
    in_steps = broker.settings.model_copy(
        update={
            "lake": broker.settings.lake.model_copy(
                update={"max_records_per_trigger": 150, "max_bronze_files_per_trigger": 1}
            )
        }
    )
    try:
        for name in BRONZE_QUERIES:
            bronze = start_bronze(
                spark, in_steps if name == "bronze" else broker.settings, name, trigger_s=0.5, publish_acks=False
            )
            drain(bronze)
            bronze.stop()
        for _ in range(2):  # restarting from the checkpoint adds nothing
            query = start_silver_gold(spark, in_steps, trigger_s=0.5)
            drain(query)
            query.stop()
        # What a rebuild reads to find the sessions made with other settings: the buckets' states.
        (session_id,) = device["sessions"]
        checkpoint = broker.settings.paths.lake_root / "_checkpoints" / "silver_gold"
        assert made_with(spark, checkpoint) == {session_id: frozenset({processor_config(broker.settings).fingerprint})}
    finally:
        spark.stop()
    root = broker.settings.paths.lake_root
    samples = _table(root, "silver", "eeg_samples").sort_by("sample_index")
    assert samples.num_rows == device["samples"]
    np.testing.assert_array_equal(samples.column("sample_index").to_numpy(), np.arange(device["samples"]))
    raw = np.array(samples.column("raw").to_pylist(), dtype=np.float64)
    filtered = np.array(samples.column("filtered").to_pylist(), dtype=np.float64)
    expected = sosfilt(design_sos(FilterSpec(250.0)), raw.astype(np.float32).astype(np.float64), axis=0)
    np.testing.assert_allclose(filtered, expected, atol=1e-3)
    times = samples.column("time_us").to_numpy()
    assert np.all(np.diff(times) > 0) and np.std(np.diff(times)) < 50  # dejittered: steady 4 ms
    windows = _table(root, "gold", "eeg_windows")
    assert windows.num_rows == (device["samples"] - 500) // 100 + 1
    labelled = windows.filter(pc.invert(pc.is_null(windows.column("label"))))
    stimulus = labelled.filter(pc.starts_with(labelled.column("label"), "flicker"))
    assert stimulus.num_rows >= 5
    beats = _table(root, "silver", "heart_rate")
    assert beats.num_rows >= 20  # ~1.1 Hz for 20 s
    bpm = [b for b in beats.column("bpm").to_pylist() if b is not None]
    assert 55 < np.median(bpm) < 85
    markers = _table(root, "silver", "markers")
    assert markers.num_rows == device["markers"]
    hits = 0
    for row in stimulus.to_pylist():
        hz = row["ssvep_hz"][int(np.argmax(row["ssvep_score"]))]
        hits += row["label"] == f"flicker_{hz:g}hz"
    assert hits / stimulus.num_rows > 0.9
    _every_table_reads_in_delta_rs_duckdb_and_polars(root)
    _maintenance_compacts_and_keeps_every_row(broker, root)


def _every_table_reads_in_delta_rs_duckdb_and_polars(root) -> None:  # type: ignore[no-untyped-def]
    """The tables the streams wrote (bronze by delta-spark, silver and gold as executor-written files
    committed by delta-rs) keep to Delta features that delta-rs, DuckDB's Delta extension and Polars
    read: the same row count from each. (OPTIMIZE below reads them through Spark.)"""
    import polars as pl

    from batch_jobs.lake_sql import connect
    from batch_jobs.lake_tables import discover_tables

    tables = discover_tables(root)
    assert len(tables) >= 12, sorted(tables)  # bronze's tables, silver's and gold's
    con = connect()
    try:
        for name, path in tables.items():
            rows = ds.dataset(DeltaTable(str(path)).file_uris(), format="parquet").count_rows()
            (duck,) = con.execute(f"SELECT count(*) FROM delta_scan('{path}')").fetchone()
            polars = pl.read_delta(str(path)).height
            assert rows == duck == polars, (name, rows, duck, polars)
    finally:
        con.close()


def _maintenance_compacts_and_keeps_every_row(broker: BrokerStack, root) -> None:  # type: ignore[no-untyped-def]
    """The maintenance DAG's tasks: OPTIMIZE ... ZORDER BY through Spark leaves fewer files and the
    same rows; VACUUM within the retention deletes nothing time travel needs."""
    from batch_jobs import tasks
    from batch_jobs.lake_sql import run_query

    path = root / "silver" / "eeg_samples"
    files_before = len(DeltaTable(str(path)).file_uris())
    rows_before = run_query(root, "SELECT count(*) FROM silver.eeg_samples").rows[0][0]
    version_before = DeltaTable(str(path)).version()
    report = tasks.optimize(broker.settings)
    assert report["silver.eeg_samples"]["files_removed"] >= 2
    assert len(DeltaTable(str(path)).file_uris()) < files_before
    assert run_query(root, "SELECT count(*) FROM silver.eeg_samples").rows[0][0] == rows_before
    assert DeltaTable(str(path)).history(1)[0]["operation"] == "OPTIMIZE"
    tasks.vacuum(broker.settings)
    travelled = run_query(root, f"SELECT count(*) FROM silver.eeg_samples VERSION AS OF {version_before}")
    assert travelled.rows[0][0] == rows_before


def test_a_new_checkpoint_gives_each_state_partition_as_many_buckets(spark, tmp_path) -> None:
    """Spark's own hash partitioning (the shuffle before the stateful step) sends the bucket ids a new
    checkpoint chose evenly over its state partitions, and sessions only into those buckets; the ids
    stay with the checkpoint, and a layout written before ids were chosen reads as 16 buckets, 0-15."""
    from pyspark.sql import functions as F

    spark.sparkContext.setJobGroup("bucket-ids", "choosing bucket ids")
    ids = balanced_bucket_ids(spark, 2, 1)
    assert spark.sparkContext.statusTracker().getJobIdsForGroup("bucket-ids") == []  # no job at a start
    spark.sparkContext.setJobGroup("tests", "the rest")
    for partitions, per_partition in ((2, 1), (2, 3), (5, 2)):
        ids = balanced_bucket_ids(spark, partitions, per_partition)
        assert len(set(ids)) == partitions * per_partition
        placed = (
            spark.createDataFrame([(bucket,) for bucket in ids], "bucket long")
            .repartition(partitions, "bucket")
            .groupBy(F.spark_partition_id().alias("partition"))
            .count()
            .collect()
        )
        assert sorted(row["count"] for row in placed) == [per_partition] * partitions
        sessions = spark.createDataFrame([(f"session-{n}",) for n in range(200)], "session_id string")
        found = {row["bucket"] for row in sessions.select(session_bucket(ids).alias("bucket")).collect()}
        assert found == set(ids)

    checkpoint = tmp_path / "checkpoint"
    layout = checkpoint_layout(checkpoint, spark, 2)
    assert layout is not None and len(layout.bucket_ids) == 2 * BUCKETS_PER_STATE_PARTITION
    assert json.loads((checkpoint / LAYOUT_FILE).read_text())["bucket_ids"] == list(layout.bucket_ids)
    assert checkpoint_layout(checkpoint, spark, 3) == layout
    (checkpoint / LAYOUT_FILE).write_text(json.dumps({"state_key": "bucket", "buckets": 16}))
    before = checkpoint_layout(checkpoint, spark, 2)
    assert before is not None and before.bucket_ids == tuple(range(16))
    (checkpoint / LAYOUT_FILE).write_text(json.dumps({"state_key": "bucket", "bucket_ids": [0, 0, -1]}))
    with pytest.raises(NeurolakeError, match="bucket ids"):
        checkpoint_layout(checkpoint, spark, 2)
