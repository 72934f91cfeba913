"""Commands from the hub on ``devices.control`` and the lake's spool acknowledgments.

The listener uses ``assign()`` from the end of the topic, without joining a consumer group: each Pi
reads every message and picks its own. Commands issued before the listener started, or already
seen, are ignored; spool acknowledgments are idempotent.

After a broker outage, or any failure of its consumer, the listener starts a fresh consumer where
it stopped reading (Kafka keeps the topic across restarts), and from the beginning of a partition it
had read nothing from yet, so nothing written while it was away is skipped. A position the topic no
longer has (a re-created topic) starts over from its beginning.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import ValidationError

from core.settings import EdgeSettings
from schemas.catalog import EDGE_CONTROL_GROUP
from schemas.codec import AvroCodec, CodecError
from schemas.signing import HUB, Keyring, SignatureError
from schemas.timebase import now_us

log = logging.getLogger(__name__)

COMMANDS = {"START", "STOP", "RESTART", "SET_CONFIG", "SHUTDOWN"}
# Settings a running device can change without a restart of the process.
LIVE_CONFIG_KEYS = {
    "block_size",
    "heartbeat_s",
    "camera.fps",
    "camera.jpeg_quality",
    "sensors.rate_hz",
    "stimulus.enabled",
    "stimulus.stimulus_s",
    "stimulus.rest_s",
    "simulation.ssvep_snr_db",
}


class CommandRefused(ValueError):
    """A command that cannot be carried out; the message goes back in the COMMAND_ACK."""


def apply_config(edge: EdgeSettings, updates: Mapping[str, str]) -> EdgeSettings:
    """A copy of ``edge`` with ``updates`` (dotted keys, string values) applied and validated."""
    if not updates:
        raise CommandRefused("SET_CONFIG carries no settings")
    unknown = sorted(set(updates) - LIVE_CONFIG_KEYS)
    if unknown:
        raise CommandRefused(f"cannot change {', '.join(unknown)} live; allowed: {', '.join(sorted(LIVE_CONFIG_KEYS))}")
    tree = edge.model_dump()
    for dotted, value in updates.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return EdgeSettings.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CommandRefused(f"invalid config: {problems}") from None


Handler = Callable[[dict[str, Any]], None]


class ControlListener:
    """Reads ``devices.control`` on a thread and hands valid messages to ``handler``."""

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topic: str,
        codec: AvroCodec,
        handler: Handler,
        not_before_us: int,
        keyring: Keyring,
        devices: set[str],
        max_age_us: int = 120_000_000,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self._config = {
            **consumer_config,
            "group.id": EDGE_CONTROL_GROUP,  # required by librdkafka; never joined
            "enable.auto.commit": False,
            # A position the topic no longer has (re-created, or cleaned up by retention): start over.
            "auto.offset.reset": "earliest",
            "logger": logging.getLogger("edge_producers.rdkafka.control"),
            "error_cb": self.on_client_error,
        }
        self._after_outage = False
        self._topic = topic
        self._codec = codec
        self._handler = handler
        self._not_before_us = not_before_us
        self._keyring = keyring
        self._devices = devices
        self._max_age_us = max_age_us
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Per partition, the next offset to read: where a fresh consumer resumes.
        self._next_offsets: dict[int, int] = {}
        self.following = threading.Event()  # set once the first consumer has its partitions
        self.refused = 0
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def on_client_error(self, error: KafkaError) -> None:
        """librdkafka's ``error_cb``: after every broker was lost the listener starts a fresh consumer."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._after_outage = True

    def _assign(self, consumer: Consumer, offset: int) -> bool:
        try:
            metadata = consumer.list_topics(self._topic, timeout=2)
        except KafkaException:
            return False
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return False
        positions = {p: self._next_offsets.get(p, offset) for p in topic.partitions}
        try:
            for partition, position in positions.items():
                if position == OFFSET_END:
                    # The end as a number now, not resolved lazily by the first fetch: a message
                    # written after `following` is set must be read.
                    watermarks = consumer.get_watermark_offsets(TopicPartition(self._topic, partition), timeout=2)
                    if watermarks is None:  # timed out
                        return False
                    positions[partition] = watermarks[1]
        except KafkaException:
            return False
        for partition, position in positions.items():
            if position >= 0:  # a number: where a fresh consumer resumes if nothing is read before
                self._next_offsets.setdefault(partition, position)
        consumer.assign([TopicPartition(self._topic, p, position) for p, position in positions.items()])
        return True

    def _run(self) -> None:
        # The listener must outlive anything one message or one outage throws: a Pi whose listener
        # died would never again free its spool or obey the hub, and nothing would say so.
        offset = OFFSET_END
        while not self._stop.is_set():
            consumer = Consumer(self._config)
            try:
                self._listen(consumer, offset)
            except Exception:
                self.failures += 1
                log.exception("control listener failed (%d so far); starting a fresh consumer", self.failures)
                self._stop.wait(1.0)
            finally:
                consumer.close()
            # A fresh consumer resumes where this one stood. A partition it never held (one added
            # since) is read from its beginning: acks are idempotent and commands deduplicated.
            offset = OFFSET_BEGINNING

    def _listen(self, consumer: Consumer, offset: int) -> None:
        while not self._stop.is_set() and not self._assign(consumer, offset):
            self._stop.wait(1.0)
        if self._stop.is_set():
            return
        if offset == OFFSET_BEGINNING:
            log.info(
                "control listener re-assigned %s (resuming at %s)", self._topic, self._next_offsets or "the beginning"
            )
        else:
            log.info("control listener following %s from its end", self._topic)
        self._after_outage = False
        self.following.set()
        while not self._stop.is_set():
            if self._after_outage:
                # Back to _run for a fresh consumer: librdkafka's cached metadata of a topic that
                # vanished with the broker would otherwise keep it from fetching again.
                return
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            partition, read = message.partition(), message.offset()
            if partition is not None and read is not None:
                self._next_offsets[partition] = read + 1
            try:
                self.accept(message.value(), message.key())
            except Exception:
                # Skipped, not retried: a message that breaks its handler would break it again.
                self.failures += 1
                log.exception(
                    "control message at %s[%d]@%d could not be handled (%d failures so far)",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    self.failures,
                )

    def accept(self, payload: bytes | None, message_key: bytes | None = None) -> None:
        """Authenticate and validate one raw control message and pass it on; refusals are counted
        and logged. Only the hub, signing with one of this Pi's device keys, is obeyed: a message must
        be signed for the device it names, be one of ours, and be fresh. Messages keyed to other
        devices are not ours to judge and are skipped."""
        if message_key is not None and message_key.decode(errors="replace") not in self._devices:
            return
        if payload is None:
            self._refuse("empty control message")
            return
        try:
            signed, key = self._keyring.verify(payload, self._topic, direction=HUB)
        except SignatureError as exc:
            self._refuse(str(exc))
            return
        try:
            _, record = self._codec.decode(signed, expected_type="control")
        except CodecError as exc:
            self._refuse(f"malformed control message ({exc})")
            return
        if record["device_id"] != key.device_id or record["device_id"] not in self._devices:
            self._refuse(f"{record['kind']} for {record['device_id']!r} signed with the key of {key.device_id!r}")
            return
        age_us = self._clock() - record["issued_us"]
        if abs(age_us) > self._max_age_us:
            self._refuse(
                f"{record['kind']} {record['command_id']} issued {age_us / 1e6:.0f} s from now "
                f"(more than {self._max_age_us / 1e6:.0f} s): a replay or a wrong clock"
            )
            return
        log.debug("control message %s for %s", record["kind"], record["device_id"])
        if record["kind"] in COMMANDS:
            if record["issued_us"] < self._not_before_us or record["command_id"] in self._seen:
                return
            self._seen[record["command_id"]] = None
            while len(self._seen) > 10_000:
                self._seen.popitem(last=False)
        self._handler(record)

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        log.warning("refused control message: %s; %d refused so far", reason, self.refused)
