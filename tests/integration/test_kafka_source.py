"""The Spark Kafka source against the real broker, including its high-watermark bug."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from infra.spark import build_spark_session
from streaming_jobs.kafka_source import KafkaPyDataSource
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration


def _stream(spark, broker: BrokerStack, checkpoint, topic: str, sink, **options):
    reader = (
        spark.readStream.format("kafka-py")
        .option("subscribe", topic)
        .option("kafka.bootstrap.servers", broker.settings.kafka.bootstrap_servers)
    )
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load().writeStream.foreachBatch(sink).option("checkpointLocation", str(checkpoint)).start()


def test_last_record_arrives_without_a_later_one_and_restarts_resume(broker: BrokerStack, tmp_path) -> None:
    producer = Producer(broker.settings.kafka.producer_config())
    total = 1500
    for i in range(total):
        producer.produce("eeg.raw", key=f"dev-{i % 3}".encode(), value=str(i).encode())
        if i % 101 == 0:
            producer.flush(5)
    assert producer.flush(10) == 0

    spark = build_spark_session(broker.settings, "kafka-source-test")
    spark.dataSource.register(KafkaPyDataSource)
    seen: list[int] = []
    batches: list[int] = []

    def sink(df, batch_id):
        rows = df.collect()
        batches.append(len(rows))
        seen.extend(int(row.value) for row in rows)

    try:
        query = _stream(
            spark, broker, tmp_path / "ckpt", "eeg.raw", sink, maxRecordsPerTrigger="400", startupMaxRecords="100"
        )
        query.processAllAvailable()
        query.stop()
        # Every record, the very last one included, with no record produced after it.
        assert sorted(seen) == list(range(total))
        # A small first batch (quick to commit after a start), then full ones for the backlog.
        assert batches[0] <= 100 < max(batches) <= 400

        # A restart from the checkpoint reads only what came after.
        for i in range(total, total + 10):
            producer.produce("eeg.raw", key=b"dev-0", value=str(i).encode())
        producer.flush(10)
        seen.clear()
        query = _stream(spark, broker, tmp_path / "ckpt", "eeg.raw", sink)
        query.processAllAvailable()
        query.stop()
        assert sorted(seen) == list(range(total, total + 10))

        # The broker restarts (memory storage: topics recreated empty); new records are not
        # skipped because the checkpoint's offsets belong to the old topic.
        broker.stop_broker()
        broker.start_broker()
        producer = Producer(broker.settings.kafka.producer_config())
        for i in range(5):
            producer.produce("eeg.raw", key=b"dev-1", value=str(10_000 + i).encode())
        producer.flush(10)
        seen.clear()
        query = _stream(spark, broker, tmp_path / "ckpt", "eeg.raw", sink)
        query.processAllAvailable()
        query.stop()
        assert sorted(seen) == [10_000 + i for i in range(5)]
    finally:
        spark.stop()
