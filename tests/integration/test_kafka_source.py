"""The Spark Kafka source against the real broker, including its high-watermark bug."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from infra.spark import build_spark_session
from streaming_jobs.kafka_source import KafkaPyDataSource, KafkaStreamReader
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


def test_a_batch_planned_before_the_broker_lost_its_topic_is_not_waited_for(broker: BrokerStack) -> None:
    producer = Producer(broker.settings.kafka.producer_config())
    for i in range(20):
        producer.produce("eeg.raw", key=b"dev-0", value=str(i).encode())
    assert producer.flush(10) == 0
    reader = KafkaStreamReader(
        {"subscribe": "eeg.raw", "kafka.bootstrap.servers": broker.settings.kafka.bootstrap_servers}
    )
    try:
        start = reader.initialOffset()
        planned = reader.latestOffset(start)
        assert [r for task in reader.partitions(start, planned) for r in task.ranges]
        # The streaming process is killed with this batch planned, the broker restarts, and the
        # Pis resend fewer records than were planned: the replayed batch skips the old range.
        broker.stop_broker()
        broker.start_broker()
        producer = Producer(broker.settings.kafka.producer_config())
        for i in range(3):
            producer.produce("eeg.raw", key=b"dev-0", value=str(i).encode())
        assert producer.flush(10) == 0
        assert reader.partitions(start, planned) == []
        # The next batch reads the new topic from its start.
        following = reader.latestOffset(planned)
        ranges = [r for task in reader.partitions(planned, following) for r in task.ranges]
        assert sum(r.until - r.start for r in ranges) == 3 and all(r.start == 0 for r in ranges)
    finally:
        reader.stop()
