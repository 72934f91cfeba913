"""The live scorer's predictions in the lake: eeg.predictions -> bronze's devices query ->
gold.live_predictions, exactly once across a query restart, a scorer that republishes from the start
(its seqs starting over) and a lost checkpoint; queryable beside gold.predictions."""

from __future__ import annotations

import json
import shutil
import subprocess

import pyarrow as pa
import pytest
from confluent_kafka import Producer

from infra.delta import LakeTable, utc_date
from infra.spark import build_spark_session
from neurolake import lake
from schemas.catalog import GOLD_PREDICTIONS, PREDICTIONS
from schemas.codec import default_codec
from schemas.signing import Keyring, ensure_key
from schemas.timebase import now_us
from streaming_jobs.checkpoints import checkpoint_dir
from streaming_jobs.jobs import drain, start_bronze
from streaming_jobs.live_scorer import PredictionPublisher
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration

QUERY = "bronze_devices"  # the query that lands eeg.predictions


def _predictions(device: str, session: str, starts: range, version: str = "1") -> list[dict]:
    """What the live scorer publishes, numbered per device from 0 as a new scorer process does."""
    scored = now_us()
    return [
        {
            "device_id": device,
            "session_id": session,
            "seq": seq,
            "window_start_index": start,
            "window_end_index": start + 500,
            "window_end_us": scored - 1000,
            "label": "flicker_12hz" if start % 200 else "flicker_15hz",
            "probabilities": {"flicker_12hz": 0.7, "flicker_15hz": 0.3},
            "model_name": "neurolake-ssvep",
            "model_version": version,
            "scored_us": scored,
            "latency_us": 1000,
        }
        for seq, start in enumerate(starts)
    ]


def _run_query(spark, broker: BrokerStack) -> None:  # type: ignore[no-untyped-def]
    query = start_bronze(spark, broker.settings, QUERY, trigger_s=0.5, publish_acks=False)
    try:
        drain(query)
    finally:
        query.stop()


def test_live_predictions_land_in_gold_exactly_once(broker: BrokerStack) -> None:
    settings = broker.settings
    keyring = Keyring(settings.security.keyring)
    for device in ("pi-1", "pi-2"):
        ensure_key(keyring, device)  # the headsets are registered; the scorer signs as the hub
    producer = Producer(settings.kafka.producer_config())
    publish = PredictionPublisher(settings, producer)
    first = _predictions("pi-1", "pi-1-s1", range(0, 3000, 100)) + _predictions("pi-2", "pi-2-s1", range(0, 2000, 100))
    for prediction in first:
        publish(prediction)
    assert producer.flush(10) == 0
    started_us = now_us()
    spark = build_spark_session(settings, "live-predictions-test")
    try:
        _run_query(spark, broker)
        # The scorer restarts from the earliest offsets: it scores every window again with the same
        # model (seqs from 0 again), goes on with new windows, and a new champion scores some again.
        again = _predictions("pi-1", "pi-1-s1", range(0, 4000, 100)) + _predictions(
            "pi-2", "pi-2-s1", range(1000, 2000, 100), version="2"
        )
        for prediction in again:
            publish(prediction)
        # Someone on the network who is not the hub's scorer.
        forged = default_codec().encode("prediction", _predictions("pi-1", "pi-1-s1", range(9000, 9100, 100))[0])
        producer.produce(PREDICTIONS, key=b"pi-1", value=forged)
        assert producer.flush(10) == 0
        _run_query(spark, broker)  # restarted from its checkpoint
        # Bronze's checkpoint is lost: a new one reads the whole topic again.
        shutil.rmtree(checkpoint_dir(settings, QUERY))
        _run_query(spark, broker)
    finally:
        spark.stop()

    root = settings.paths.lake_root
    landed = lake.table("gold.live_predictions", lake_root=root)
    keys = list(
        zip(
            *(
                landed.column(c).to_pylist()
                for c in ("session_id", "window_start_index", "window_end_index", "model_name", "model_version")
            )
        )
    )
    assert len(keys) == len(set(keys)), "a prediction landed twice"
    # 30 + 20 first, then 10 new windows of pi-1 and 10 windows of pi-2 by version 2.
    assert landed.num_rows == 70
    assert sorted(set(landed.column("model_version").to_pylist())) == ["1", "2"]
    arrivals = landed.column("arrival_us").to_pylist()
    assert all(started_us <= a <= now_us() for a in arrivals)
    assert all(a >= s for a, s in zip(arrivals, landed.column("scored_us").to_pylist()))
    assert landed.column("probabilities").to_pylist()[0] == [("flicker_12hz", 0.7), ("flicker_15hz", 0.3)]
    quarantine = lake.table("bronze.quarantine", lake_root=root)
    reasons = [
        r
        for t, r in zip(quarantine.column("kafka_topic").to_pylist(), quarantine.column("reason").to_pylist())
        if t == PREDICTIONS
    ]
    assert reasons and all("unsigned record" in r for r in reasons)

    # Beside the batch scorer's gold.predictions, through `neurolake sql`.
    batch = pa.table(
        {
            "session_id": ["pi-1-s1", "pi-1-s1"],
            "window_start_index": pa.array([0, 100], pa.int64()),
            "label": ["flicker_15hz", "flicker_12hz"],
            "model_version": ["1", "1"],
            "date": [utc_date(now_us())] * 2,
        }
    )
    LakeTable(root, GOLD_PREDICTIONS).append(batch, "test", 0)
    result = subprocess.run(
        [
            *broker.cli_argv,
            "sql",
            "SELECT count(*) AS n, sum(CASE WHEN l.label = p.label THEN 1 ELSE 0 END) AS agree "
            "FROM gold.live_predictions l JOIN gold.predictions p "
            "ON l.session_id = p.session_id AND l.window_start_index = p.window_start_index "
            "AND l.model_version = p.model_version",
            "--format",
            "json",
        ],
        env=broker.env,
        cwd=broker.home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [{"n": 2, "agree": 2}]
