"""A Kafka source for Spark Structured Streaming, written with PySpark 4's Python Data Source API.

Spark's own Kafka source needs JVM jars from Maven Central, which this machine cannot reach; this
source reads with confluent-kafka instead and runs on any Spark whose workers have the package.

- ``assign()`` with explicit offsets (no consumer group): Spark's checkpoint holds the offsets.
- Exact ranges per partition per micro-batch: ``{"topic": {"id": topic_id, "p": {"0": next}}}``.
- The true end of each partition is found by reading, not trusted from the high watermark: the
  embedded broker reports the start of its last batch plus one, hiding the batch's other records.
- A topic recreated under the same name (a restarted in-memory broker) has a new topic id; its
  partitions are then read again from their beginning rather than from a stale position.

Options: ``subscribe`` (comma-separated topics), ``startingOffsets`` (earliest | latest | JSON
``{"topic": {"0": offset}}``), ``maxRecordsPerTrigger``, ``startupMaxRecords`` (the first batch a
query plans takes at most this many: it commits quickly, the backlog follows), ``probeTrueEnd``
(true), and ``kafka.*``
(librdkafka client properties such as ``kafka.bootstrap.servers``, SASL and TLS settings).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

log = logging.getLogger(__name__)

SOURCE_NAME = "kafka-py"
SCHEMA = "topic STRING, partition INT, offset BIGINT, key BINARY, value BINARY, timestamp_ms BIGINT"
READ_STALL_TIMEOUT_S = 60.0
QUIET_S = 0.15
# The probe only has to get past the records the watermark hides; under continuous production it
# never sees a quiet moment, so it is also bounded in time (any record it saw is a valid end).
PROBE_MAX_S = 0.5


@dataclass(frozen=True)
class KafkaRange:
    topic: str
    partition: int
    start: int
    until: int  # exclusive


@dataclass(frozen=True)
class KafkaRanges(InputPartition):
    """The ranges one Spark task reads with one consumer (consumers are slow to set up)."""

    ranges: tuple[KafkaRange, ...]
    client: tuple[tuple[str, str], ...]


def client_config(options: dict[str, str]) -> dict[str, str]:
    config = {key[len("kafka.") :]: value for key, value in options.items() if key.startswith("kafka.")}
    if "bootstrap.servers" not in config:
        raise ValueError("the kafka-py source needs option kafka.bootstrap.servers")
    return config


def _consumer(config: dict[str, str]):  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer

    return Consumer(
        {
            **config,
            "group.id": "neurolake-spark-source",  # required by librdkafka; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        }
    )


class KafkaPyDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: Any) -> KafkaStreamReader:
        return KafkaStreamReader(dict(self.options))


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        # Spark passes option names lower-cased; accept either spelling.
        options = {key.lower(): value for key, value in options.items()}
        topics = [t.strip() for t in options.get("subscribe", "").split(",") if t.strip()]
        if not topics:
            raise ValueError("the kafka-py source needs option subscribe=topic[,topic...]")
        self.topics = topics
        self.config = client_config(options)
        self.starting = options.get("startingoffsets", "earliest")
        limit = options.get("maxrecordspertrigger")
        self.max_records = int(limit) if limit else None
        if self.max_records is not None and self.max_records < 1:
            raise ValueError(f"maxRecordsPerTrigger must be >= 1, got {limit}")
        startup = options.get("startupmaxrecords")
        self.startup_records = int(startup) if startup else None
        if self.startup_records is not None and self.startup_records < 1:
            raise ValueError(f"startupMaxRecords must be >= 1, got {startup}")
        self._planned_a_batch = False
        self.probe_true_end = options.get("probetrueend", "true").lower() == "true"
        self.max_tasks = int(options.get("maxtasks", "2"))
        self._consumer_instance = None
        self._admin_instance = None
        self._last_latest: dict | None = None
        # The topic layout latestOffset just saw, for the partitions() call of the same batch.
        self._planned_layout: dict[str, tuple[str, list[int]]] | None = None

    # -- driver side: offsets ------------------------------------------------------------------

    @property
    def _consumer(self):  # type: ignore[no-untyped-def]
        if self._consumer_instance is None:
            self._consumer_instance = _consumer(self.config)
        return self._consumer_instance

    def _topic_layout(self) -> dict[str, tuple[str, list[int]]]:
        """``{topic: (topic_id, partitions)}`` for the topics that exist now."""
        from confluent_kafka import TopicCollection
        from confluent_kafka.admin import AdminClient

        if self._admin_instance is None:
            self._admin_instance = AdminClient(self.config)
        layout = {}
        futures = self._admin_instance.describe_topics(TopicCollection(self.topics))
        for topic, future in futures.items():
            try:
                description = future.result(10)
            except Exception:  # topic not (yet) there: nothing to read from it
                continue
            layout[topic] = (str(description.topic_id), [p.id for p in description.partitions])
        return layout

    def _ends(
        self, layout: dict[str, tuple[str, list[int]]], known: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """(earliest, true end) per partition."""
        from confluent_kafka import TopicPartition

        consumer = self._consumer
        bounds: dict[tuple[str, int], tuple[int, int]] = {}
        probes = []
        for topic, (_, partitions) in layout.items():
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
                bounds[(topic, partition)] = (low, high)
                read_to = known.get((topic, partition), 0)
                # A watermark at or below what was read already means no new batch: nothing to probe.
                if self.probe_true_end and high > low and high > read_to:
                    probes.append(TopicPartition(topic, partition, max(low, high - 1, read_to)))
        if probes:
            consumer.assign(probes)
            last_seen: dict[tuple[str, int], int] = {}
            unseen = {(p.topic, p.partition) for p in probes}
            quiet_since = probe_start = time.monotonic()
            # Done once each probed partition showed its last batch (a fetch delivers whole batches,
            # and any record seen is a valid end); QUIET_S bounds a partition that shows nothing.
            while time.monotonic() - quiet_since < QUIET_S and time.monotonic() - probe_start < PROBE_MAX_S:
                # Once all were seen, one last call takes what the same fetches delivered.
                finishing = not unseen
                messages = consumer.consume(10_000, timeout=0 if finishing else QUIET_S / 3)
                useful = [m for m in messages if m.error() is None]
                for message in useful:
                    key = (message.topic(), message.partition())
                    last_seen[key] = max(last_seen.get(key, -1), message.offset())
                    unseen.discard(key)
                if finishing:
                    break
                if useful:
                    quiet_since = time.monotonic()
            consumer.unassign()
            for key, offset in last_seen.items():
                low, high = bounds[key]
                bounds[key] = (low, max(high, offset + 1))
        return bounds

    def initialOffset(self) -> dict:
        layout = self._topic_layout()
        if self.starting not in ("earliest", "latest"):
            try:
                explicit = json.loads(self.starting)
            except json.JSONDecodeError:
                raise ValueError(
                    f"startingOffsets must be earliest, latest or JSON {{topic: {{partition: "
                    f"offset}}}}, got {self.starting!r}"
                ) from None
            return {
                topic: {
                    "id": layout.get(topic, ("", []))[0],
                    "p": {str(p): int(o) for p, o in explicit.get(topic, {}).items()},
                }
                for topic in self.topics
            }
        bounds = self._ends(layout, {}) if self.starting == "latest" else {}
        offsets = {}
        for topic in self.topics:
            topic_id, partitions = layout.get(topic, ("", []))
            offsets[topic] = {
                "id": topic_id,
                "p": {str(p): (bounds[(topic, p)][1] if self.starting == "latest" else 0) for p in partitions},
            }
        return offsets

    def latestOffset(self, start: dict, limit: Any = None) -> dict:
        layout = self._planned_layout = self._topic_layout()
        known = {}
        for topic, (topic_id, partitions) in layout.items():
            previous = start.get(topic, {})
            if previous.get("id") == topic_id:
                for p in partitions:
                    known[(topic, p)] = int(previous.get("p", {}).get(str(p), 0))
        bounds = self._ends(layout, known)
        end: dict[str, Any] = {}
        budget = self.max_records
        if not self._planned_a_batch and self.startup_records is not None:
            budget = min(budget or self.startup_records, self.startup_records)
        planned = 0
        for topic in self.topics:
            topic_id, partitions = layout.get(topic, ("", []))
            previous = start.get(topic, {})
            same_topic = previous.get("id") == topic_id
            if not same_topic and previous.get("id"):
                log.warning(
                    "topic %s was recreated (id %s -> %s); reading it from the start",
                    topic,
                    previous.get("id"),
                    topic_id,
                )
            positions = {}
            for p in partitions:
                low, true_end = bounds[(topic, p)]
                begin = int(previous.get("p", {}).get(str(p), 0)) if same_topic else 0
                begin = max(begin, low)
                stop = max(begin, true_end)
                if budget is not None:
                    stop = min(stop, begin + budget)
                    budget -= stop - begin
                planned += stop - begin
                positions[str(p)] = stop
            end[topic] = {"id": topic_id, "p": positions}
        if planned:
            self._planned_a_batch = True
        self._last_latest = {
            topic: {"id": layout[topic][0], "p": {str(p): bounds[(topic, p)][1] for p in layout[topic][1]}}
            for topic in layout
        }
        return end

    def reportLatestOffset(self) -> dict | None:
        """The true ends seen at the last trigger, for lag in the query's progress."""
        return self._last_latest

    def partitions(self, start: dict, end: dict) -> list[KafkaRanges]:
        # A batch replayed after a restart has no fresh layout: ask the broker.
        current, self._planned_layout = self._planned_layout or self._topic_layout(), None
        ranges = []
        for topic, spec in end.items():
            if spec.get("id") and topic in current and current[topic][0] != spec["id"]:
                # Planned before the broker lost the topic (a restarted in-memory broker), and
                # replayed after a restart: those offsets now name other records or none, and a
                # read would wait for them for ever. Whatever of the range bronze did not commit
                # was never acknowledged, so the Pis still hold it and resend it, and the next
                # batch reads the new topic from its start. A topic that is merely not there (broker down) is not skipped: the
                # read fails and the query retries.
                log.warning(
                    "topic %s was recreated after this batch was planned (id %s -> %s): its planned "
                    "range is skipped; the producers resend what was not acknowledged",
                    topic,
                    spec["id"],
                    current[topic][0],
                )
                continue
            previous = start.get(topic, {})
            same_topic = previous.get("id") == spec.get("id")
            for p, until in spec.get("p", {}).items():
                begin = int(previous.get("p", {}).get(p, 0)) if same_topic else 0
                if until > begin:
                    ranges.append(KafkaRange(topic, int(p), begin, int(until)))
        # Largest first, dealt round-robin: tasks of similar size, at most max_tasks of them.
        ranges.sort(key=lambda r: r.until - r.start, reverse=True)
        tasks = min(self.max_tasks, len(ranges))
        client = tuple(sorted(self.config.items()))
        return [KafkaRanges(tuple(ranges[i::tasks]), client) for i in range(tasks)]

    def commit(self, end: dict) -> None:
        pass  # offsets live in Spark's checkpoint

    def stop(self) -> None:
        if self._consumer_instance is not None:
            self._consumer_instance.close()
            self._consumer_instance = None

    # -- executor side: records ----------------------------------------------------------------

    def read(self, partition: KafkaRanges) -> Iterator[tuple]:
        from confluent_kafka import TopicPartition

        consumer = _consumer(dict(partition.client))
        try:
            wanted = {(r.topic, r.partition): r for r in partition.ranges}
            last = {key: r.start - 1 for key, r in wanted.items()}
            consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in partition.ranges])
            progress = time.monotonic()
            while any(last[key] < r.until - 1 for key, r in wanted.items()):
                # Ask for exactly what is missing: consume() otherwise waits out its whole timeout
                # when the range ends at the partition's end, as it does in every live batch.
                missing = sum(r.until - 1 - last[key] for key, r in wanted.items() if last[key] < r.until - 1)
                for message in consumer.consume(min(5_000, missing), timeout=0.2):
                    if message.error() is not None:
                        continue
                    key = (message.topic(), message.partition())
                    r = wanted.get(key)
                    offset = message.offset()
                    if r is None or offset >= r.until or offset <= last[key]:
                        if r is not None and offset >= r.until:
                            last[key] = r.until - 1
                            consumer.pause([TopicPartition(*key)])
                        continue
                    last[key] = offset
                    progress = time.monotonic()
                    yield (
                        message.topic(),
                        message.partition(),
                        offset,
                        message.key(),
                        message.value(),
                        message.timestamp()[1],
                    )
                    if offset >= r.until - 1:
                        consumer.pause([TopicPartition(*key)])
                if time.monotonic() - progress > READ_STALL_TIMEOUT_S:
                    behind = {
                        f"{t}[{p}]": (last[(t, p)], r.until)
                        for (t, p), r in wanted.items()
                        if last[(t, p)] < r.until - 1
                    }
                    raise RuntimeError(
                        f"no record for {READ_STALL_TIMEOUT_S:.0f} s while reading "
                        f"(last read, end wanted): {behind}; the broker may have lost the data"
                    )
        finally:
            consumer.close()
