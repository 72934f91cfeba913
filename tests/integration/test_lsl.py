"""LSL out: a pylsl inlet reads `neurolake lsl serve`'s filtered EEG and predictions of a live session."""

from __future__ import annotations

import subprocess
import time

import pytest

from schemas.catalog import PREDICTIONS
from schemas.codec import default_codec
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration


def _resolve(pylsl, prop: str, value: str, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [
            s
            for s in pylsl.resolve_streams(wait_time=1.0)
            if getattr(s, prop)() == value
            or (prop == "type" and s.type() == value and s.source_id().startswith("neurolake-"))
        ]
        if found:
            return found[0]
    raise AssertionError(f"no LSL stream with {prop}={value} in {timeout_s:.0f} s")


def test_lsl_tools_read_a_live_sessions_filtered_eeg_and_predictions(broker: BrokerStack) -> None:
    import pylsl
    from confluent_kafka import Producer

    logs = broker.home / "lsl.log"
    serve = broker.neurolake("lsl", "serve", "--duration", "60", stdout=subprocess.DEVNULL, stderr=logs.open("w"))
    edge = broker.neurolake(
        "edge", "simulate", "--headsets", "1", "--duration", "40", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        eeg_info = _resolve(pylsl, "type", "EEG")
        session_id = eeg_info.source_id().removeprefix("neurolake-").removesuffix("-eeg")
        inlet = pylsl.StreamInlet(eeg_info)
        full = inlet.info(timeout=10)
        channel = full.desc().child("channels").child("channel")
        labels = []
        while not channel.empty():
            labels.append(channel.child_value("label"))
            channel = channel.next_sibling()
        assert full.channel_count() == len(labels) >= 16 and full.nominal_srate() == 250.0
        samples, stamps = [], []
        deadline = time.monotonic() + 20
        while len(samples) < 500 and time.monotonic() < deadline:
            chunk, times = inlet.pull_chunk(timeout=0.5)
            samples += chunk
            stamps += times
        assert len(samples) >= 500, logs.read_text()[-2000:]
        # Stamped in lab time on this machine's LSL clock: recent, in order.
        assert 0 <= pylsl.local_clock() - stamps[-1] < 5 and stamps == sorted(stamps)

        markers = pylsl.StreamInlet(_resolve(pylsl, "source_id", f"neurolake-{session_id}-predictions"))
        markers.open_stream(timeout=10)
        time.sleep(1.0)
        prediction = {
            "device_id": "sim-000",
            "session_id": session_id,
            "seq": 1,
            "window_start_index": 0,
            "window_end_index": 500,
            "window_end_us": time.time_ns() // 1000,
            "label": "flicker_12hz",
            "probabilities": {"flicker_12hz": 0.9},
            "model_name": "m",
            "model_version": "1",
            "scored_us": time.time_ns() // 1000,
            "latency_us": 1000,
        }
        producer = Producer(broker.settings.kafka.producer_config())
        producer.produce(PREDICTIONS, key=b"sim-000", value=default_codec().encode("prediction", prediction))
        assert producer.flush(10) == 0
        sample, stamp = markers.pull_sample(timeout=15)
        assert sample == ["flicker_12hz"] and abs(pylsl.local_clock() - stamp) < 5
    finally:
        for process in (edge, serve):
            process.terminate()
            process.wait(30)
