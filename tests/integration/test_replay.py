"""Replay: a 60 s session that went through Kafka and the Spark jobs, replayed from the lake at x10
through Kafka and the same jobs, gives the same gold windows. Also reads gold through Spark."""

from __future__ import annotations

import re
import subprocess
import time

import numpy as np
import pyarrow.compute as pc
import pytest

from batch_jobs.replay import publish
from batch_jobs.sample_lake import simulate_session
from infra.spark import build_spark_session
from neurolake import lake
from streaming_jobs.jobs import drain, start_bronze
from streaming_jobs.silver_gold import start_silver_gold
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration


def _run_streams(spark, settings) -> None:  # type: ignore[no-untyped-def]
    bronze = start_bronze(spark, settings, trigger_s=0.5, publish_acks=False)
    drain(bronze)
    bronze.stop()
    silver_gold = start_silver_gold(spark, settings, trigger_s=0.5)
    drain(silver_gold)
    silver_gold.stop()


@pytest.mark.slow
def test_replay_at_x10_gives_the_same_gold_windows(broker: BrokerStack) -> None:
    settings = broker.settings
    root = settings.paths.lake_root
    start_us = (time.time_ns() // 1000) - 120 * 10**6
    # The original run: a headset's 60 s session published to Kafka (all at once, as the edge's
    # store-and-forward does after an outage), then bronze and silver/gold.
    original = simulate_session(settings, 3, 60.0, start_us).recording()
    publish(settings, original, speed=0)
    spark = build_spark_session(settings, "replay-test")
    try:
        _run_streams(spark, settings)
        began = time.monotonic()
        replay = broker.neurolake(
            "replay", original.session_id, "--speed", "10", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err = replay.communicate(timeout=120)
        took = time.monotonic() - began
        assert replay.returncode == 0, err
        _run_streams(spark, settings)
        via_spark = lake.spark_table("gold.eeg_windows", spark=spark, lake_root=root)
        spark_count = via_spark.count()
        spark_sessions = {r.session_id for r in via_spark.select("session_id").distinct().collect()}
        first_version = lake.spark_table("gold.eeg_windows", version=0, spark=spark, lake_root=root).count()
    finally:
        spark.stop()
    # Paced: 60 s at x10 is 6 s of publishing (the last block is due 6.0 s in). The ceiling only
    # tells x10 from x1 apart, with room for a loaded machine; start-up is not in this figure.
    paced_s = float(re.search(r"markers in ([0-9.]+) s", out).group(1))
    assert "as session" in out and 5.9 <= paced_s < 30, (out, took)
    windows = lake.table("gold.eeg_windows", lake_root=root)
    replayed_id = next(s for s in set(windows.column("session_id").to_pylist()) if s != original.session_id)
    assert replayed_id.startswith(original.session_id + "~r")

    def of(session_id: str):  # type: ignore[no-untyped-def]
        return windows.filter(pc.field("session_id") == session_id).sort_by("window_start_index")

    before, after = of(original.session_id), of(replayed_id)
    assert before.num_rows == (60 * 250 - 500) // 100 + 1 and after.num_rows == before.num_rows
    assert after.column("window_start_index").to_pylist() == before.column("window_start_index").to_pylist()
    for column in ("band_power", "ssvep_score", "railed_pct", "line_noise_ratio"):
        np.testing.assert_array_equal(
            np.array(after.column(column).to_pylist(), dtype=np.float64),
            np.array(before.column(column).to_pylist(), dtype=np.float64),
            err_msg=column,
        )
    assert after.column("label").to_pylist() == before.column("label").to_pylist()
    assert sum(label is not None for label in before.column("label").to_pylist()) > 10
    shifts = after.column("window_start_us").to_numpy() - before.column("window_start_us").to_numpy()
    assert np.ptp(shifts) <= 2  # the same windows, moved in time by one constant (dejitter rounding)
    assert spark_count == windows.num_rows and spark_sessions == {original.session_id, replayed_id}
    assert 0 < first_version < spark_count
