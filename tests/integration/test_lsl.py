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


def _lsl_lab(source_id: str, seconds: float, ready) -> None:  # type: ignore[no-untyped-def]
    """Stimulus software and an LSL-only amplifier: 16 channels at 250 Hz, and START/END markers."""
    import numpy as np
    import pylsl

    info = pylsl.StreamInfo("test amplifier", "EEG", 16, 250.0, pylsl.cf_float32, f"{source_id}-eeg")
    channels = info.desc().append_child("channels")
    for i in range(16):
        channel = channels.append_child("channel")
        channel.append_child_value("label", f"E{i + 1}")
        channel.append_child_value("type", "EEG")
    eeg = pylsl.StreamOutlet(info)
    markers = pylsl.StreamOutlet(
        pylsl.StreamInfo("test stimuli", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, f"{source_id}-markers")
    )
    ready.set()
    rng = np.random.default_rng(3)
    schedule = []  # (seconds from start, marker)
    at = 4.0
    for label in ("flicker_12hz", "flicker_8hz", "flicker_12hz", "flicker_8hz"):
        schedule += [(at, f"START {label}"), (at + 4.0, f"END {label}")]
        at += 7.0  # 3 s of rest: room for a whole 2 s window
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        elapsed = time.monotonic() - start
        due = int(elapsed * 250)
        if due > sent:
            eeg.push_chunk(rng.normal(0, 10, size=(due - sent, 16)).astype(np.float32))
            sent = due
        while schedule and schedule[0][0] <= elapsed:
            markers.push_sample([schedule.pop(0)[1]])
        time.sleep(0.01)


@pytest.mark.slow
def test_an_lsl_amplifier_and_marker_stream_recorded_through_the_edge_label_gold_windows(
    broker: BrokerStack,
) -> None:
    import multiprocessing

    import pyarrow.compute as pc

    from batch_jobs.rebuild import rebuild
    from infra.delta import LakeTable
    from infra.spark import build_spark_session
    from schemas.catalog import GOLD_EEG_WINDOWS
    from schemas.signing import Keyring, ensure_key
    from streaming_jobs.jobs import start_bronze
    from streaming_jobs.silver_gold import processor_config

    source_id = f"lsl-test-{time.time_ns()}"
    ready = multiprocessing.Event()
    lab = multiprocessing.Process(target=_lsl_lab, args=(source_id, 45.0, ready), daemon=True)
    lab.start()
    assert ready.wait(20)
    ensure_key(Keyring(broker.settings.security.keyring), "lsl-pi")
    env = {
        **broker.env,
        "NEUROLAKE_EDGE__DEVICE_ID": "lsl-pi",
        "NEUROLAKE_EDGE__BOARD": "lsl",
        "NEUROLAKE_EDGE__LSL_STREAM": f"source_id='{source_id}-eeg'",
        "NEUROLAKE_EDGE__LSL_MARKERS": f"source_id='{source_id}-markers'",
    }
    edge = subprocess.run(
        [*broker.cli_argv, "edge", "run", "--duration", "36"],
        env=env,
        cwd=broker.home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lab.terminate()
    assert edge.returncode == 0, edge.stderr[-3000:]
    spark = build_spark_session(broker.settings, "lsl-in-test")
    root = broker.settings.paths.lake_root
    try:
        query = start_bronze(spark, broker.settings, trigger_s=0.5, publish_acks=False)
        query.processAllAvailable()
        query.stop()
        rebuild(spark, root, root / "_checkpoints" / "silver_gold", processor_config(broker.settings))
    finally:
        spark.stop()
    windows = LakeTable(root, GOLD_EEG_WINDOWS).read_columns(["session_id", "label"])
    assert windows is not None and windows.num_rows > 50
    labels = pc.value_counts(windows.column("label")).to_pylist()
    counts = {item["values"]: item["counts"] for item in labels}
    # Windows wholly inside a flicker take its label, between trials "rest", as with the built-in task.
    assert counts.get("flicker_12hz", 0) >= 5 and counts.get("flicker_8hz", 0) >= 5, counts
    assert counts.get("rest", 0) >= 1, counts
