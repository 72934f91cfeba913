"""Bronze end to end: simulated headsets -> broker -> Spark -> Delta, exactly once, quarantine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable

from infra.spark import build_spark_session
from schemas.catalog import SILVER_SENSOR_READINGS
from schemas.codec import default_codec
from schemas.signing import new_key, sign
from streaming_jobs.jobs import BRONZE_QUERIES, start_bronze
from tests.integration.conftest import BrokerStack, read_topic, signed
from tests.schemas.samples import sample_records

pytestmark = pytest.mark.integration


def _table(root, name):
    dt = DeltaTable(str(root / "bronze" / name))
    return ds.dataset(dt.file_uris(), format="parquet").to_table()


def _positions_of(broker: BrokerStack, topics: list[str], values: list[bytes]) -> set[tuple]:
    """Where ``values`` sit in ``topics``: quarantine is compared with what the topics hold (each
    Kafka record quarantined once), not with what was sent."""
    wanted = set(values)
    return {
        (topic, m.partition(), m.offset())
        for topic in topics
        for m in read_topic(broker.settings, topic, idle_s=1)
        if m.value() in wanted
    }


def _quarantined_once(quarantine) -> set[tuple]:
    positions = list(
        zip(
            quarantine.column("kafka_topic").to_pylist(),
            quarantine.column("kafka_partition").to_pylist(),
            quarantine.column("kafka_offset").to_pylist(),
        )
    )
    assert len(positions) == len(set(positions)), "a Kafka record was quarantined twice"
    return set(positions)


def test_bronze_exactly_once_with_quarantine_and_acks(broker: BrokerStack) -> None:
    process = broker.simulate(2, 10, "--stimulus", "--sensors")
    summary = json.loads(process.communicate(timeout=120)[0])
    # sim-000's Pi gets a new SD card: its spool starts over at seq 0, under a new epoch.
    shutil.rmtree(broker.settings.edge.spool.directory)
    process = broker.simulate(1, 5)
    reset = json.loads(process.communicate(timeout=120)[0])["devices"][0]
    # Garbage, truncated and wrong-schema records mixed into the topics.
    codec = default_codec()
    good = codec.encode("eeg_block", sample_records()["eeg_block"])
    bad_block = dict(sample_records()["eeg_block"], device_id="bad-dev", n_channels=3)
    producer = Producer(broker.settings.kafka.producer_config())
    malformed = [
        signed(broker.settings, "eeg.raw", value, device)
        for value, device in [
            (b"garbage that is not Avro at all", "x"),
            (good[:40], "x"),
            (codec.encode("marker", sample_records()["marker"]), "pi-1"),
            (codec.encode("eeg_block", bad_block), "bad-dev"),
        ]
    ]
    # Forgeries: unsigned, signed with a key the hub never registered, a device's key used for another
    # device, and a block with a huge seq (meant to make bronze ack and drop everything after it).
    stranger = new_key("sim-000")
    forged_seq = dict(sample_records()["eeg_block"], device_id="sim-000", seq=2**62)
    malformed += [
        codec.encode("eeg_block", forged_seq),
        sign(codec.encode("eeg_block", forged_seq), "eeg.raw", stranger),
        signed(broker.settings, "eeg.raw", codec.encode("eeg_block", forged_seq), "bad-dev"),
        signed(broker.settings, "eeg.raw", codec.encode("eeg_block", forged_seq), "sim-000"),
    ]
    for value in malformed:
        producer.produce("eeg.raw", key=b"x", value=value)
    # A duplicate of a real block, as the edge sends after an outage.
    first = read_topic(broker.settings, "eeg.raw", idle_s=1)[0]
    producer.produce("eeg.raw", key=first.key(), value=first.value())
    assert producer.flush(10) == 0

    spark = build_spark_session(broker.settings, "bronze-test")
    try:
        for _ in range(2):  # a second run over the same checkpoints adds nothing
            for name in BRONZE_QUERIES:
                query = start_bronze(spark, broker.settings, name, trigger_s=0.5)
                query.processAllAvailable()
                query.stop()
    finally:
        spark.stop()
    root = broker.settings.paths.lake_root
    blocks = _table(root, "eeg_blocks")
    stored = list(
        zip(
            blocks.column("device_id").to_pylist(),
            blocks.column("spool_epoch").to_pylist(),
            blocks.column("seq").to_pylist(),
        )
    )
    epochs = {device: sorted({e for d, e, _ in stored if d == device}) for device in ("sim-000", "sim-001")}
    assert len(epochs["sim-000"]) == 2 and len(epochs["sim-001"]) == 1
    runs = {
        ("sim-000", epochs["sim-000"][0]): summary["devices"][0],
        ("sim-001", epochs["sim-001"][0]): summary["devices"][1],
        ("sim-000", epochs["sim-000"][1]): reset,
    }
    for (device_id, epoch), device in runs.items():
        seqs = sorted(s for d, e, s in stored if (d, e) == (device_id, epoch))
        assert seqs == list(range(device["next_seq"]["eeg.raw"])), (device_id, epoch)
    quarantine = _table(root, "quarantine")
    reasons = quarantine.column("reason").to_pylist()
    malformed_in_topic = _positions_of(broker, ["eeg.raw"], malformed)
    assert _quarantined_once(quarantine) == malformed_in_topic, reasons
    assert len(malformed_in_topic) >= 8
    assert any("single-object marker" in r for r in reasons)
    assert any("not authenticated: unsigned record" in r for r in reasons)
    assert any("not authenticated: signed by unknown key" in r for r in reasons)
    assert any("signed with key" in r and "of device 'bad-dev'" in r for r in reasons)
    assert any("jumps" in r for r in reasons)  # the validly signed huge seq: quarantined, not indexed
    assert any("expected a eeg_block record, got marker" in r for r in reasons)
    assert any("n_samples*n_channels*4" in r for r in reasons)
    assert set(quarantine.column("value").to_pylist()) == set(malformed)
    markers = _table(root, "markers")
    assert markers.num_rows == sum(d["markers"] for d in summary["devices"])
    assert _table(root, "sessions").num_rows == 3  # two headsets, and sim-000 again after its reset
    # Lab-time projections written with bronze.
    readings = ds.dataset(DeltaTable(str(SILVER_SENSOR_READINGS.path(root))).file_uris(), format="parquet").to_table()
    assert readings.num_rows == sum(d["sensor_readings"] for d in summary["devices"])
    assert "time_us" in readings.column_names and "accel_z_g" in readings.column_names
    # The edge learns what bronze holds.
    acks = [codec.decode(m.value())[1] for m in read_topic(broker.settings, "devices.control", idle_s=1)]
    eeg_acks = {
        (a["device_id"], a["acked_epoch"]): a["acked_seq"]
        for a in acks
        if a["kind"] == "SPOOL_ACK" and a["acked_topic"] == "eeg.raw"
    }
    for key, device in runs.items():
        assert eeg_acks[key] == device["next_seq"]["eeg.raw"] - 1
    # The batches holding the resend and the forged seq wrote their files twice (before and after
    # the driver's verdicts): the first files are gone, not left beside the table.
    for name in ("eeg_blocks", "markers", "quarantine"):
        table_dir = root / "bronze" / name
        on_disk = {path.resolve() for path in table_dir.rglob("*.parquet")}
        in_table = {Path(uri.removeprefix("file://")).resolve() for uri in DeltaTable(str(table_dir)).file_uris()}
        assert on_disk == in_table, name


@pytest.mark.slow
def test_a_thousand_malformed_records_are_quarantined_and_the_query_keeps_going(broker: BrokerStack) -> None:
    codec = default_codec()
    rng = __import__("random").Random(7)
    producer = Producer(broker.settings.kafka.producer_config())
    good = []
    for seq in range(200):
        record = dict(sample_records()["eeg_block"], device_id="dev-good", seq=seq)
        good.append(codec.encode("eeg_block", record))
    valid = good[0]
    malformed = []
    for i in range(1000):
        kind = i % 4
        if kind == 0:
            value = bytes(rng.getrandbits(8) for _ in range(rng.randint(10, 200)))  # garbage
        elif kind == 1:
            value = valid[: rng.randint(11, len(valid) - 1)]  # truncated
        elif kind == 2:
            value = codec.encode("device_log", sample_records()["device_log"])  # wrong schema
        else:
            value = valid[:2] + bytes(8) + valid[10:]  # unknown writer fingerprint
        malformed.append(value)
    topics = ["eeg.raw", "markers", "sensors.env", "devices.status"]
    stream = [("eeg.raw", v) for v in good] + [(topics[i % 4], v) for i, v in enumerate(malformed)]
    rng.shuffle(stream)
    for topic, value in stream:
        producer.produce(topic, key=b"k", value=signed(broker.settings, topic, value, "dev-good"))
    assert producer.flush(30) == 0

    spark = build_spark_session(broker.settings, "bronze-malformed")
    try:
        from streaming_jobs.jobs import drain

        for name in BRONZE_QUERIES:
            query = start_bronze(spark, broker.settings, name, trigger_s=0.5, publish_acks=False)
            drain(query)
            assert query.isActive and query.exception() is None
            query.stop()
    finally:
        spark.stop()
    root = broker.settings.paths.lake_root
    quarantine = _table(root, "quarantine")
    malformed = [signed(broker.settings, topic, value, "dev-good") for topic, value in stream if value not in good]
    assert _quarantined_once(quarantine) == _positions_of(broker, topics, malformed)
    assert set(quarantine.column("value").to_pylist()) == set(malformed)
    assert quarantine.num_rows >= 1000
    assert all(quarantine.column("reason").to_pylist())
    blocks = _table(root, "eeg_blocks")
    assert sorted(blocks.column("seq").to_pylist()) == list(range(200))
