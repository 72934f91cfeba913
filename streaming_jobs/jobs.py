"""Wiring of the streaming queries: Spark's Kafka source -> bronze's foreachBatch writer; the CLI starts these."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.settings import Settings
from schemas.catalog import (
    CAMERA_FRAMES,
    CONTROL,
    DEVICE_LOGS,
    DEVICE_STATUS,
    EEG_RAW,
    MARKERS,
    PREDICTIONS,
    SENSORS_ENV,
    SESSIONS,
)
from schemas.codec import default_codec
from schemas.records import control_record
from schemas.signing import HUB, Keyring, sign
from schemas.timebase import now_us
from streaming_jobs.bronze import BronzeBatchWriter
from streaming_jobs.checkpoints import checkpoint_dir, clear_unfinished_writes, interruptible

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)


def kafka_stream(
    spark: SparkSession,
    settings: Settings,
    topics: tuple[str, ...],
    max_records_per_trigger: int | None = None,
) -> DataFrame:
    """Spark's own Kafka source over ``topics``: offsets live in the query's checkpoint; a new
    checkpoint starts from the earliest record Kafka keeps."""
    reader = (
        spark.readStream.format("kafka")
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", "earliest")
        # Records Kafka deleted before bronze read them (retention) fail the query loudly.
        .option("failOnDataLoss", "true")
    )
    for key, value in settings.kafka.java_client_config().items():
        reader = reader.option(f"kafka.{key}", value)
    if max_records_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_records_per_trigger))
    return reader.load()


class AckPublisher:
    """Publishes the lake's SPOOL_ACKs on devices.control (one record per device and topic)."""

    def __init__(self, settings: Settings, sender: str = "bronze") -> None:
        from confluent_kafka import Producer

        self._producer = Producer(settings.kafka.producer_config())
        self._codec = default_codec()
        self._sender = sender
        self._keyring = Keyring(settings.security.keyring)
        self._keyless: set[str] = set()

    def __call__(self, contiguous: dict[tuple[str, str, int], int]) -> None:
        now = now_us()
        self._keyring.reload()
        for (topic, device_id, epoch), seq in contiguous.items():
            # Signed with the device's own key: its Pi obeys nothing else.
            key = self._keyring.active_key(device_id)
            if key is None:
                if device_id not in self._keyless:
                    self._keyless.add(device_id)
                    log.warning(
                        "no active key for %s: its spool acks are not sent (`neurolake keys add %s`)",
                        device_id,
                        device_id,
                    )
                continue
            record = control_record(
                device_id=device_id,
                kind="SPOOL_ACK",
                sender=self._sender,
                issued_us=now,
                acked_topic=topic,
                acked_seq=seq,
                acked_epoch=epoch,
            )
            self._producer.produce(
                CONTROL, key=device_id.encode(), value=sign(self._codec.encode("control", record), CONTROL, key, HUB)
            )
        self._producer.poll(0)
        self._producer.flush(5)


@dataclass(frozen=True)
class BronzeQuery:
    """One of bronze's two queries: the EEG path silver waits on, commits as often as it can; the
    devices' own streams (heartbeats, room sensors, camera frames) and the live scorer's predictions
    (into gold.live_predictions) are records that nothing downstream waits on, so they commit less
    often and never delay an EEG commit."""

    name: str
    topics: tuple[str, ...]

    def trigger_s(self, settings: Settings) -> float:
        return settings.lake.trigger_s if self.name == "bronze" else settings.lake.device_trigger_s


BRONZE_QUERIES = {
    query.name: query
    for query in (
        BronzeQuery("bronze", (EEG_RAW, SESSIONS, MARKERS, DEVICE_LOGS)),
        BronzeQuery("bronze_devices", (DEVICE_STATUS, SENSORS_ENV, CAMERA_FRAMES, PREDICTIONS)),
    )
}


def bronze_writer(settings: Settings, query: str = "bronze", publish_acks: bool = True) -> BronzeBatchWriter:
    """A bronze query's foreachBatch writer, seeded from what bronze holds (needs no Spark session,
    so a start can build it while the JVM starts)."""
    return BronzeBatchWriter(
        settings.paths.lake_root,
        query,
        publish_acks=AckPublisher(settings) if publish_acks else None,
        keyring=Keyring(settings.security.keyring) if settings.security.require_signed_records else None,
        topics=BRONZE_QUERIES[query].topics,
        tasks=settings.lake.silver_tasks,
        # Camera frames keep Spark's byte limit on an Arrow batch: each may be most of a megabyte.
        arrow_records_per_batch=None
        if CAMERA_FRAMES in BRONZE_QUERIES[query].topics
        else settings.lake.arrow_records_per_batch,
    )


def start_bronze(
    spark: SparkSession,
    settings: Settings,
    query: str = "bronze",
    trigger_s: float | None = None,
    publish_acks: bool = True,
    writer: BronzeBatchWriter | None = None,
) -> StreamingQuery:
    """``writer``: one built by :func:`bronze_writer` just before; by default a new one."""
    spec = BRONZE_QUERIES[query]
    trigger_s = spec.trigger_s(settings) if trigger_s is None else trigger_s
    writer = writer or bronze_writer(settings, query, publish_acks)
    checkpoint = checkpoint_dir(settings, query)
    clear_unfinished_writes(checkpoint)
    return (
        kafka_stream(spark, settings, spec.topics, max_records_per_trigger=settings.lake.max_records_per_trigger)
        .writeStream.queryName(query)
        .foreachBatch(interruptible(writer.for_checkpoint(checkpoint)))
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{trigger_s} seconds")
        .start()
    )


def drain(query: StreamingQuery, timeout_s: float = 300.0, settle_s: float = 2.0) -> None:
    """Wait until ``query`` has consumed everything available: at least one batch done and no data
    available for ``settle_s``. (``processAllAvailable`` never returns for a query with
    processing-time timers, which keep running empty batches.)"""
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    while time.monotonic() < deadline:
        if query.exception() is not None:
            raise RuntimeError(f"query {query.name} failed: {query.exception()}")
        status = query.status
        done_a_batch = bool(query.recentProgress)
        if done_a_batch and not status["isDataAvailable"]:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle_s:
                return
        else:
            idle_since = None
        time.sleep(0.2)
    raise TimeoutError(f"query {query.name} still had data after {timeout_s:.0f} s")
