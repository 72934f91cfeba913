"""A silver/gold checkpoint made before the session buckets (its state keyed by session) is carried
over when the stream starts: its planned batch finished, every session going on from its state, no
sample lost or written twice, filtering continuous across the change."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable
from scipy.signal import sosfilt

from batch_jobs.rebuild import made_with
from dsp.filters import FilterSpec, design_sos
from infra.spark import build_spark_session
from streaming_jobs.checkpoints import checkpoint_dir, spark_log_batches
from streaming_jobs.jobs import BRONZE_QUERIES, drain, start_bronze
from streaming_jobs.silver_gold import (
    LAYOUT_FILE,
    QUERY_NAME,
    StreamContext,
    processor_config,
    rebuilds_dir,
    start_silver_gold,
    stateful_writer,
)
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration


def _table(root, layer, name):  # type: ignore[no-untyped-def]
    return ds.dataset(DeltaTable(str(root / layer / name)).file_uris(), format="parquet").to_table()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_checkpoint_keyed_by_session_is_carried_over_losing_and_repeating_nothing(broker: BrokerStack) -> None:
    process = broker.simulate(1, 12, "--stimulus")
    device = json.loads(process.communicate(timeout=120)[0])["devices"][0]
    settings = broker.settings
    in_steps = settings.model_copy(
        update={
            "lake": settings.lake.model_copy(update={"max_records_per_trigger": 10, "max_bronze_files_per_trigger": 1})
        }
    )
    root = settings.paths.lake_root
    checkpoint = checkpoint_dir(settings, QUERY_NAME)
    spark = build_spark_session(settings, "silver-gold-carry-over-test")
    try:
        for name in BRONZE_QUERIES:
            bronze = start_bronze(
                spark, in_steps if name == "bronze" else settings, name, trigger_s=0.5, publish_acks=False
            )
            drain(bronze)
            bronze.stop()
        # The stream as it was: state keyed by session, a few of bronze's files taken.
        spark.conf.set("spark.sql.shuffle.partitions", str(settings.lake.silver_tasks))
        context = StreamContext(processor_config(settings), str(rebuilds_dir(checkpoint)))
        old = stateful_writer(spark, in_steps, checkpoint, context, by_session=True)
        query = old.trigger(processingTime="0.5 seconds").start()
        while (query.lastProgress or {}).get("batchId", -1) < 2:
            assert query.exception() is None, query.exception()
            query.awaitTermination(0.2)
        query.stop()
        # Killed after its last batch's rows were committed, before Spark's own commit of it.
        last = max(spark_log_batches(checkpoint / "commits"))
        (checkpoint / "commits" / str(last)).unlink()
        (checkpoint / "commits" / f".{last}.crc").unlink(missing_ok=True)
        partial = _table(root, "silver", "eeg_samples").num_rows
        assert 0 < partial < device["samples"]

        for _ in range(2):  # carried over at the first start; the second goes on from the new checkpoint
            query = start_silver_gold(spark, in_steps, trigger_s=0.5)
            drain(query)
            query.stop()
        assert (checkpoint / LAYOUT_FILE).exists()
        assert (checkpoint.with_name(f"{checkpoint.name}.by-session") / "state").is_dir()
        fingerprint = processor_config(settings).fingerprint
        (session_id,) = device["sessions"]
        assert made_with(spark, checkpoint) == {session_id: frozenset({fingerprint})}
    finally:
        spark.stop()
    samples = _table(root, "silver", "eeg_samples").sort_by("sample_index")
    np.testing.assert_array_equal(samples.column("sample_index").to_numpy(), np.arange(device["samples"]))
    raw = np.array(samples.column("raw").to_pylist(), dtype=np.float64)
    filtered = np.array(samples.column("filtered").to_pylist(), dtype=np.float64)
    expected = sosfilt(design_sos(FilterSpec(250.0)), raw.astype(np.float32).astype(np.float64), axis=0)
    np.testing.assert_allclose(filtered, expected, atol=1e-3)  # the filter's memory crossed the change
    windows = _table(root, "gold", "eeg_windows")
    assert windows.num_rows == (device["samples"] - 500) // 100 + 1
    starts = windows.column("window_start_us").to_pylist()
    assert len(set(starts)) == len(starts)
