"""Silver and gold from a simulated SSVEP session: exact sample counts, one-pass-equal filtering,
the expected windows with labels."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable
from scipy.signal import sosfilt

from dsp.filters import FilterSpec, design_sos
from infra.spark import build_spark_session
from streaming_jobs.jobs import drain, start_bronze
from streaming_jobs.silver_gold import start_silver_gold
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration


def _table(root, layer, name):
    return ds.dataset(DeltaTable(str(root / layer / name)).file_uris(), format="parquet").to_table()


@pytest.mark.slow
def test_silver_and_gold_from_a_simulated_session(broker: BrokerStack) -> None:
    process = broker.neurolake(
        "edge",
        "simulate",
        "--headsets",
        "1",
        "--duration",
        "20",
        "--stimulus",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    device = json.loads(process.communicate(timeout=120)[0])["devices"][0]
    spark = build_spark_session(broker.settings, "silver-gold-test")
    try:
        bronze = start_bronze(spark, broker.settings, trigger_s=0.5, publish_acks=False)
        drain(bronze)
        bronze.stop()
        for _ in range(2):  # restarting from the checkpoint adds nothing
            query = start_silver_gold(spark, broker.settings, trigger_s=0.5)
            drain(query)
            query.stop()
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
