"""A recording published into Kafka as a headset would: the session record, then EEG blocks and
markers paced at real time or N times faster, so the dashboard, the live scorer and the lake's
streaming jobs take it exactly like a live session.

A replay of a session already in the lake is a new session of a new device (``SESSION~rNNN`` on
``DEVICE~rNNN``), its times moved so that it starts now: bronze deduplicates by (device, seq), so
reusing the original ids would make the lake drop every block as a duplicate.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batch_jobs.recording import Recording, RecordingError
from core.settings import Settings
from schemas import timebase
from schemas.catalog import EEG_RAW, MARKERS, SESSIONS
from schemas.signing import Keyring, ensure_key, sign

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    session_id: str
    device_id: str
    blocks: int
    markers: int
    seconds: float


def as_new_session(
    recording: Recording, now_us: int | None = None, session_id: str | None = None, device_id: str | None = None
) -> Recording:
    """The recording as a new session of a new device (default ids: ``~r<start ms>`` appended),
    its first sample now."""
    now_us = now_us if now_us is not None else timebase.now_us()
    tag = f"~r{now_us // 1000}"
    return recording.moved(
        session_id or recording.session_id + tag,
        device_id or recording.device_id + tag,
        now_us - recording.lab_start_us(),
    )


def publish(
    settings: Settings,
    recording: Recording,
    speed: float = 1.0,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    flush_timeout_s: float = 30.0,
) -> ReplayResult:
    """Publish ``recording`` with its own ids and times. ``speed`` 1 is real time, 10 ten times
    faster, 0 as fast as the producer takes it. Raises if any record is not delivered."""
    from confluent_kafka import Producer

    from schemas.codec import default_codec

    if speed < 0:
        raise RecordingError(f"--speed must be >= 0 (0: as fast as possible), got {speed}")
    recording.validate()
    codec = default_codec()
    fs = recording.sample_rate_hz
    start_us = recording.lab_start_us()
    # (due seconds after the start at speed 1, order, topic, key, record type, record)
    timeline: list[tuple[float, int, str, str, str, dict[str, Any]]] = []
    for record in recording.block_records():
        end_s = (record["first_sample_index"] + record["n_samples"]) / fs
        timeline.append((end_s, len(timeline), EEG_RAW, record["device_id"], "eeg_block", record))
    for marker in recording.markers:
        timeline.append(
            (
                max(0.0, (marker["timestamp_us"] - start_us) / 1e6),
                len(timeline),
                MARKERS,
                marker["session_id"],
                "marker",
                marker,
            )
        )
    heapq.heapify(timeline)
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(settings.kafka.producer_config())
    # A replay runs on the hub and speaks for the recording's device: it signs with that device's key.
    signing_key = ensure_key(Keyring(settings.security.keyring), recording.device_id)
    blocks = markers = 0
    began = time.monotonic()
    try:
        producer.produce(
            SESSIONS,
            key=recording.session_id.encode(),
            value=sign(codec.encode("session", recording.session), SESSIONS, signing_key),
            on_delivery=delivered,
        )
        while timeline and not (stop and stop.is_set()):
            due_s, _, topic, key, record_type, record = heapq.heappop(timeline)
            if speed > 0:
                wait = began + due_s / speed - time.monotonic()
                if wait > 0 and (stop.wait(wait) if stop else time.sleep(wait) or False):
                    break
            if record_type == "eeg_block":
                record = {**record, "produced_us": timebase.now_us()}
                blocks += 1
                if progress:
                    progress(record["n_samples"])
            else:
                markers += 1
            producer.produce(
                topic,
                key=key.encode(),
                value=sign(codec.encode(record_type, record), topic, signing_key),
                on_delivery=delivered,
            )
            producer.poll(0)
        left = producer.flush(flush_timeout_s)
    finally:
        producer.poll(0)
    if left or failures:
        raise RecordingError(
            f"replay of {recording.session_id}: {left} records undelivered after "
            f"{flush_timeout_s:g} s, {len(failures)} failed ({failures[:1]}); is the broker at "
            f"{settings.kafka.bootstrap_servers} up? (`neurolake up`)"
        )
    return ReplayResult(recording.session_id, recording.device_id, blocks, markers, time.monotonic() - began)
