"""Sends spooled records to Kafka, for every device a process hosts, and survives broker trouble.

- A broker that is down is not an error: records wait in the spool, librdkafka reconnects with
  backoff (first retry well within 5 s).
- After an outage, everything not yet acknowledged by the lake is sent again (Kafka keeps what it
  acknowledged on disk; this guards against a broker that lost its disk); bronze drops the duplicates.
- A producer with records in flight and no delivery report for ``stall_timeout_s`` is rebuilt,
  because an idempotent producer stalls forever after the broker forgets its producer id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

from edge_producers.spool import Spool

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 20_000
MARK_DELIVERED_EVERY_S = 0.1
FETCH_BATCH = 500


@dataclass
class DeviceCursor:
    spool: Spool
    after_id: int = 0  # last spool row handed to the producer
    sent: int = 0  # delivery reports received (including resends)
    delivered_ids: list[int] = field(default_factory=list)


@dataclass
class TransportStats:
    in_flight: int
    outages: int
    rebuilds: int
    delivery_errors: int
    connected: bool


class KafkaSender:
    def __init__(
        self,
        producer_config: dict[str, Any],
        stall_timeout_s: float = 10.0,
        reconnect_backoff_max_s: float = 5.0,
        resend_unacked_after_outage: bool = True,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self._config = {
            **producer_config,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": int(reconnect_backoff_max_s * 1000),
            # Java-compatible key hashing, so a key lands where a JVM producer would put it.
            "partitioner": "murmur2_random",
            # Records wait in the spool, not in librdkafka, while the broker is away.
            "message.timeout.ms": 30_000,
            "error_cb": self.on_client_error,
            # librdkafka's own log lines go through logging (and so to devices.logs), not stderr.
            "logger": logging.getLogger("edge_producers.rdkafka.producer"),
        }
        self._factory = producer_factory
        self._stall_timeout_s = stall_timeout_s
        self._resend_after_outage = resend_unacked_after_outage
        self._devices: dict[str, DeviceCursor] = {}
        self._lock = threading.Lock()
        self._work = threading.Event()
        self._in_flight = 0
        self._last_report = time.monotonic()
        self._outage = False
        self._rewind_requested = False
        self._connected = False
        self._last_probe = 0.0
        self._marked_at = 0.0
        self.outages = 0
        self.rebuilds = 0
        self.delivery_errors = 0
        self._producer = self._factory(self._config)

    # -- devices -----------------------------------------------------------------------------

    def add_device(self, device_id: str, spool: Spool) -> None:
        """Start sending a device's spool.

        With ``resend_unacked_after_outage`` a start counts as a recovery: while this process was
        down the broker may have lost what it had (a disk, an unclean leader election), so everything
        the lake has not acknowledged is sent again. Otherwise sending starts at the first undelivered record.
        """
        if self._resend_after_outage:
            after_id = 0
        else:
            first = spool.first_undelivered_id()
            after_id = (first - 1) if first is not None else spool.last_id()
        cursor = DeviceCursor(spool, after_id=after_id)
        with self._lock:
            self._devices[device_id] = cursor

    def sent_count(self, device_id: str) -> int:
        with self._lock:
            cursor = self._devices.get(device_id)
            return cursor.sent if cursor else 0

    # -- direct, unspooled sends (heartbeats, command acks) -----------------------------------

    def send_now(self, topic: str, key: bytes | None, value: bytes) -> bool:
        try:
            self._producer.produce(topic, key=key, value=value)
            return True
        except BufferError:
            return False

    # -- the loop ----------------------------------------------------------------------------

    def notify(self) -> None:
        """Records were spooled: wake the sending thread now."""
        self._work.set()

    def wait_for_work(self, timeout_s: float) -> None:
        self._work.wait(timeout_s)
        self._work.clear()

    def pump(self, poll_timeout_s: float = 0.0) -> int:
        """Hand spooled records to the producer and serve delivery reports. Returns records handed."""
        self._maybe_recover()
        handed = 0
        with self._lock:
            cursors = list(self._devices.items())
        for device_id, cursor in cursors:
            # While the broker is away, records wait in the spool rather than in librdkafka.
            if self._outage:
                break
            handed += self._hand_over(device_id, cursor)
        self._producer.poll(poll_timeout_s)
        # Delivery flags are written in batches: each spool commit is a disk flush, and a flag lost to
        # a power cut only means the record is sent again (bronze drops the duplicate).
        now = time.monotonic()
        if now - self._marked_at >= MARK_DELIVERED_EVERY_S:
            self._marked_at = now
            self.mark_delivered()
        return handed

    def mark_delivered(self) -> None:
        """Write the delivery reports received so far into the spools."""
        with self._lock:
            cursors = list(self._devices.values())
        for cursor in cursors:
            if cursor.delivered_ids:
                ids, cursor.delivered_ids = cursor.delivered_ids, []
                cursor.spool.mark_delivered(ids)

    def _hand_over(self, device_id: str, cursor: DeviceCursor) -> int:
        """Produce a device's spooled records after its cursor, until caught up, the in-flight
        bound, or a full librdkafka queue."""
        handed = 0
        # The spool's newest id is kept in memory: an idle device costs no query.
        while self._in_flight < MAX_IN_FLIGHT and cursor.after_id < cursor.spool.last_id():
            rows = cursor.spool.fetch_after(cursor.after_id, FETCH_BATCH)
            if not rows:
                break
            for row in rows:
                try:
                    self._producer.produce(
                        row.topic,
                        key=row.key,
                        value=row.value,
                        on_delivery=self._report(device_id, row.id),
                    )
                except BufferError:
                    self._producer.poll(0.05)
                    return handed
                cursor.after_id = row.id
                self._in_flight += 1
                handed += 1
        return handed

    def _report(self, device_id: str, row_id: int) -> Callable[[KafkaError | None, Any], None]:
        def on_delivery(error: KafkaError | None, _message: Any) -> None:
            self._in_flight -= 1
            self._last_report = time.monotonic()
            cursor = self._devices.get(device_id)
            if error is not None:
                self.delivery_errors += 1
                self._rewind_requested = True
                return
            self._connected = True
            if cursor is not None:
                cursor.sent += 1
                cursor.delivered_ids.append(row_id)

        return on_delivery

    def on_client_error(self, error: KafkaError) -> None:
        """librdkafka's ``error_cb``: a lost broker puts the sender in an outage (records stay spooled)."""
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if not self._outage:
                log.warning("broker unreachable (%s); records stay in the spool", error.str())
                self.outages += 1
            self._outage = True
            self._connected = False
        else:
            log.debug("kafka error: %s", error)

    def _maybe_recover(self) -> None:
        if self._outage:
            now = time.monotonic()
            if not self._connected and now - self._last_probe >= 1.0:
                self._last_probe = now
                self.probe_connection(0.5)
            if self._connected:
                log.info(
                    "broker reachable again; resending %s",
                    "every unacknowledged record" if self._resend_after_outage else "the backlog",
                )
                self._outage = False
                self._last_report = time.monotonic()
                self._rewind(all_unacked=self._resend_after_outage)
            return
        stalled = self._in_flight > 0 and time.monotonic() - self._last_report > self._stall_timeout_s
        if stalled:
            log.warning(
                "producer stalled: %d records in flight, no delivery report for %.0f s; rebuilding",
                self._in_flight,
                self._stall_timeout_s,
            )
            self._rebuild()
            self._rewind(all_unacked=self._resend_after_outage)
        elif self._rewind_requested:
            self._rewind(all_unacked=False)

    def _rebuild(self) -> None:
        old = self._producer
        old.purge()
        old.poll(0)
        self._producer = self._factory(self._config)
        self._in_flight = 0
        self._last_report = time.monotonic()
        self.rebuilds += 1

    def _rewind(self, all_unacked: bool) -> None:
        self._rewind_requested = False
        with self._lock:
            for cursor in self._devices.values():
                if all_unacked:
                    cursor.after_id = 0
                else:
                    first = cursor.spool.first_undelivered_id()
                    if first is not None:
                        cursor.after_id = min(cursor.after_id, first - 1)

    def probe_connection(self, timeout_s: float = 1.0) -> bool:
        """Ask for metadata; marks the connection up (ending an outage) when it answers."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except Exception:  # KafkaException while the broker is away
            return False
        self._connected = True
        return True

    def stats(self) -> TransportStats:
        return TransportStats(self._in_flight, self.outages, self.rebuilds, self.delivery_errors, self._connected)

    def flush(self, timeout_s: float = 10.0) -> int:
        """Send what is spooled and wait for reports; returns records still in flight."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump(0.05)
            if self._in_flight == 0 and all(c.after_id >= c.spool.last_id() for c in self._devices.values()):
                break
        self.pump(0)
        self.mark_delivered()
        return self._in_flight
