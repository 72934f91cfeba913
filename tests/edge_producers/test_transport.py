"""The Kafka sender's bookkeeping between the spool and librdkafka, without a broker.

The producer here is a recording stand-in behind librdkafka's own interface (``produce`` with an
``on_delivery`` callback, ``poll``, ``purge``, ``list_topics``); tests/integration/test_edge.py runs the
same sender against the real broker, with restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from edge_producers.spool import Spool
from edge_producers.transport import KafkaSender


class RecordingProducer:
    """Keeps produced messages until the test answers their delivery reports."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.pending: list[tuple[str, bytes, Any]] = []
        self.produced: list[bytes] = []
        self.reachable = True
        self.queue_limit: int | None = None
        self.purged = False

    def produce(self, topic: str, key: bytes | None = None, value: bytes = b"", on_delivery: Any = None) -> None:
        if self.queue_limit is not None and len(self.pending) >= self.queue_limit:
            raise BufferError("queue full")
        self.pending.append((topic, value, on_delivery))
        self.produced.append(value)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def deliver(self, error: KafkaError | None = None) -> None:
        pending, self.pending = self.pending, []
        for _, value, callback in pending:
            if callback is not None:
                callback(error, value)

    def purge(self) -> None:
        self.purged = True
        self.pending = []

    def list_topics(self, timeout: float = 0) -> object:
        if not self.reachable:
            raise RuntimeError("broker down")
        return object()


@pytest.fixture
def spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Spool(tmp_path / "d.sqlite", 10_000_000) as spool:
        yield spool


def _sender(spool: Spool, **options: Any) -> tuple[KafkaSender, list[RecordingProducer]]:
    producers: list[RecordingProducer] = []

    def factory(config: dict[str, Any]) -> RecordingProducer:
        producers.append(RecordingProducer(config))
        return producers[-1]

    sender = KafkaSender({}, producer_factory=factory, **options)  # type: ignore[arg-type]
    sender.add_device("pi-1", spool)
    return sender, producers


def _append(spool: Spool, n: int) -> None:
    spool.append_many("eeg.raw", b"pi-1", [lambda seq: seq.to_bytes(8, "little")] * n)


def test_spooled_records_are_sent_in_order_and_marked_delivered_on_report(spool: Spool) -> None:
    sender, [producer] = _sender(spool)
    _append(spool, 5)
    assert sender.pump() == 5
    assert [int.from_bytes(v, "little") for v in producer.produced] == [0, 1, 2, 3, 4]
    assert spool.first_undelivered_id() is not None
    producer.deliver()
    sender.pump()
    sender.mark_delivered()  # pump writes the flags at most every MARK_DELIVERED_EVERY_S
    assert spool.first_undelivered_id() is None
    assert sender.sent_count("pi-1") == 5 and sender.stats().in_flight == 0


def test_a_failed_delivery_sends_again_from_the_first_undelivered_record(spool: Spool) -> None:
    sender, [producer] = _sender(spool)
    _append(spool, 3)
    sender.pump()
    producer.deliver(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert sender.stats().delivery_errors == 3
    sender.pump()
    assert [int.from_bytes(v, "little") for v in producer.produced] == [0, 1, 2, 0, 1, 2]


def test_a_full_librdkafka_queue_leaves_records_in_the_spool_for_the_next_pump(spool: Spool) -> None:
    sender, [producer] = _sender(spool)
    producer.queue_limit = 2
    _append(spool, 5)
    assert sender.pump() == 2
    producer.deliver()
    assert sender.pump() == 2
    producer.deliver()
    assert sender.pump() == 1
    assert len(producer.produced) == 5


def test_an_outage_holds_records_in_the_spool_and_recovery_resends_everything_unacknowledged(spool: Spool) -> None:
    sender, [producer] = _sender(spool)
    _append(spool, 2)
    sender.pump()
    producer.deliver()
    sender.pump()
    producer.reachable = False
    sender.on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    _append(spool, 2)
    assert sender.pump() == 0 and sender.stats().outages == 1
    producer.reachable = True
    sender._last_probe = 0.0
    sender.pump()
    # The in-memory broker may have lost what it had: the two delivered but unacknowledged go again.
    assert [int.from_bytes(v, "little") for v in producer.produced] == [0, 1, 0, 1, 2, 3]


def test_a_stalled_producer_is_rebuilt_and_the_unacknowledged_records_resent(spool: Spool) -> None:
    sender, producers = _sender(spool, stall_timeout_s=0.0)
    _append(spool, 2)
    sender.pump()
    sender._last_report -= 1.0  # no report since: stalled
    sender.pump()
    assert len(producers) == 2 and producers[0].purged and sender.stats().rebuilds == 1
    assert [int.from_bytes(v, "little") for v in producers[1].produced] == [0, 1]
