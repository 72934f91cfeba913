"""DeviceRunner without Kafka: devices -> records in the spool, as the sender would read them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.settings import EdgeSettings
from edge_producers.clock import ClockProbe
from edge_producers.devices.eeg import DeviceError
from edge_producers.runtime import DeviceRunner
from edge_producers.spool import Spool
from schemas.codec import default_codec, eeg_block_samples
from tests.conftest import free_port


def _runner(tmp_path: Path, **edge_fields) -> DeviceRunner:
    edge = EdgeSettings(**edge_fields)
    spool = Spool(tmp_path / "spool.sqlite", 100_000_000)
    clock = ClockProbe("127.0.0.1", free_port(), probes_per_round=1, timeout_s=0.01)
    return DeviceRunner(edge, spool, clock)


def _records(runner: DeviceRunner) -> list[tuple[str, dict]]:
    codec = default_codec()
    return [(r.topic, codec.decode(r.value)[1]) for r in runner.spool.fetch_after(0, 100_000)]


def test_blocks_are_contiguous_and_session_comes_first(tmp_path: Path) -> None:
    runner = _runner(tmp_path, block_size=25)
    runner.start_session()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        runner.tick()
        time.sleep(0.02)
    runner.stop_session()
    records = _records(runner)
    assert records[0][0] == "sessions"
    session = records[0][1]
    assert session["sample_rate_hz"] == 250 and len(session["channel_names"]) == 17
    blocks = [r for topic, r in records if topic == "eeg.raw"]
    assert [b["seq"] for b in blocks] == list(range(len(blocks)))
    index = 0
    for block in blocks:
        assert block["first_sample_index"] == index
        assert eeg_block_samples(block).shape == (block["n_samples"], 17)
        index += block["n_samples"]
    assert index == runner.counters.samples
    assert 300 <= index <= 420  # ~1.5 s at 250 Hz
    assert all(b["n_samples"] == 25 for b in blocks[:-1])  # the last one may be partial
    statuses = [r for topic, r in records if topic == "devices.status"]
    assert statuses and statuses[0]["state"] in ("STREAMING", "STARTING")


def test_a_headset_made_to_drop_blocks_leaves_gaps_in_the_sample_index(tmp_path: Path) -> None:
    runner = _runner(tmp_path, block_size=25, simulation={"drop_block_every": 3})
    runner.start_session()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        runner.tick()
        time.sleep(0.02)
    runner.stop_session()
    starts = [r["first_sample_index"] for topic, r in _records(runner) if topic == "eeg.raw"]
    # Blocks 3, 6, 9 ... never left the headset: their 25 samples are missing from the index.
    assert starts[:4] == [0, 25, 75, 100]
    assert [b["seq"] for topic, b in _records(runner) if topic == "eeg.raw"] == list(range(len(starts)))


def test_oversized_frames_are_refused_and_counted(tmp_path: Path) -> None:
    runner = _runner(
        tmp_path,
        camera={
            "source": "test_pattern",
            "width": 640,
            "height": 480,
            "jpeg_quality": 100,
            "max_frame_bytes": 1024,
            "fps": 50,
        },
    )
    runner.start_session()
    for _ in range(5):
        runner.tick()
        time.sleep(0.03)
    runner.stop_session()
    assert runner.counters.frames_refused >= 2 and runner.counters.frames == 0
    assert not [1 for topic, _ in _records(runner) if topic == "camera.frames"]


def test_missing_camera_degrades_but_eeg_flows(tmp_path: Path) -> None:
    runner = _runner(tmp_path, camera={"source": "picamera2"})
    runner.start_session()
    assert runner.state == "DEGRADED"
    time.sleep(0.3)
    runner.tick()
    runner.stop_session()
    assert runner.counters.samples > 0
    status = [r for t, r in _records(runner) if t == "devices.status"][0]
    assert status["state"] == "DEGRADED" and "picamera2 is not installed" in status["message"]


def test_board_that_cannot_start_reports_error_and_retries(tmp_path: Path) -> None:
    attempts = []

    def failing_source(edge, stimulus_at=None, to_lab_us=None):
        attempts.append(1)
        raise DeviceError("cannot start cyton on /dev/ttyUSB9: unable to open port")

    runner = _runner(tmp_path)
    runner._source_factory = failing_source
    runner.start_session()
    runner.tick()
    assert runner.state == "ERROR"
    status = [r for t, r in _records(runner) if t == "devices.status"][-1]
    assert status["state"] == "ERROR" and "ttyUSB9" in status["message"]
    runner._retry_at_us = 0
    runner.tick()
    assert len(attempts) == 2


def test_commands(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    runner.start_session()
    ok, message = runner.handle({"kind": "SET_CONFIG", "config": {"block_size": "50"}})
    assert ok and runner.edge.block_size == 50
    ok, message = runner.handle({"kind": "SET_CONFIG", "config": {"serial_port": "x"}})
    assert not ok and "cannot change serial_port live" in message
    first = runner.session_id
    assert runner.handle({"kind": "RESTART"})[0] and runner.session_id != first
    assert runner.handle({"kind": "STOP"}) == (True, "stopped") and runner.state == "STOPPED"
    assert runner.handle({"kind": "START"})[0] and runner.streaming
    # A too-short trial (which would spin the schedule) is refused with the bound it breaks.
    ok, message = runner.handle(
        {"kind": "SET_CONFIG", "config": {"stimulus.stimulus_s": "1e-7", "stimulus.rest_s": "0"}}
    )
    assert not ok and "stimulus.stimulus_s" in message and "stimulus.rest_s" in message
    # SHUTDOWN: only by name, and only where this Pi's own settings allow it.
    assert runner.handle({"kind": "SHUTDOWN", "device_id": "*"})[0] is False
    ok, message = runner.handle({"kind": "SHUTDOWN", "device_id": runner.edge.device_id})
    assert not ok and "allow_remote_shutdown" in message and runner.streaming
    runner.edge = runner.edge.model_copy(update={"allow_remote_shutdown": True})
    assert runner.handle({"kind": "SHUTDOWN", "device_id": runner.edge.device_id})[0]
    assert runner.shutdown_requested
    sessions = [r for t, r in _records(runner) if t == "sessions"]
    assert len(sessions) == 3


def test_markers_follow_the_schedule(tmp_path: Path) -> None:
    runner = _runner(tmp_path, stimulus={"enabled": True, "lead_in_s": 0.1, "stimulus_s": 0.3, "rest_s": 0.1})
    runner.start_session()
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        runner.tick()
        time.sleep(0.02)
    runner.stop_session()
    markers = [r for t, r in _records(runner) if t == "markers"]
    events = [m["event"] for m in markers]
    assert events[:4] == ["START", "END", "START", "END"]
    assert events.count("START") == events.count("END")  # a cut-short trial still ends
    assert np.all(np.diff([m["timestamp_us"] for m in markers]) >= 0)


def test_a_640x480_camera_at_24_fps_is_within_bounds_and_keeps_its_rate(tmp_path: Path, monkeypatch) -> None:
    from core.settings import load_settings
    from edge_producers import runtime

    env = {
        "NEUROLAKE_EDGE__CAMERA__SOURCE": "test_pattern",
        "NEUROLAKE_EDGE__CAMERA__WIDTH": "640",
        "NEUROLAKE_EDGE__CAMERA__HEIGHT": "480",
        "NEUROLAKE_EDGE__CAMERA__FPS": "24",
    }
    edge = load_settings(environ=env, cwd=tmp_path).edge
    clock = [1_800_000_000_000_000]
    monkeypatch.setattr(runtime, "now_us", lambda: clock[0])
    runner = _runner(tmp_path, **edge.model_dump(include={"camera"}))
    runner.start_session()
    # Ticks that come 10 ms apart (the loop's own pace) must not slow a 24 fps camera to 20.
    for _ in range(500):
        clock[0] += 10_000
        runner.tick()
        assert runner.next_frame_in_s(clock[0]) is not None and runner.next_frame_in_s(clock[0]) <= 1 / 24
    runner.stop_session()
    frames = [r for t, r in _records(runner) if t == "camera.frames"]
    assert runner.counters.frames_refused == 0
    assert len(frames) in (120, 121)  # 5 s at 24 fps
    assert {(f["width"], f["height"]) for f in frames} == {(640, 480)}
    assert max(len(f["data"]) for f in frames) < edge.camera.max_frame_bytes


def test_the_heartbeat_carries_the_hosts_cpu_memory_and_temperature(tmp_path: Path) -> None:
    from edge_producers.host import HostMonitor

    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    runner = _runner(tmp_path)
    runner._host = HostMonitor(thermal_zone=zone, min_interval_s=0)
    time.sleep(0.1)  # the host's CPU times tick every 10 ms: let some pass between two samples
    runner.publish_status()
    status = [r for t, r in _records(runner) if t == "devices.status"][-1]
    assert status["soc_temperature_c"] == 48.312
    assert 0 <= status["cpu_pct"] <= 100 and 0 < status["memory_pct"] < 100
    runner._host = HostMonitor(thermal_zone=tmp_path / "none", min_interval_s=0)
    runner.publish_status()
    assert [r for t, r in _records(runner) if t == "devices.status"][-1]["soc_temperature_c"] is None
