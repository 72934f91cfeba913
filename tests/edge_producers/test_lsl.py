"""LSL marker strings -> the marker records gold labels windows with."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from core.settings import EdgeSettings
from edge_producers.clock import ClockProbe
from edge_producers.devices.lsl import MarkerEvent, parse_marker
from edge_producers.runtime import DeviceRunner
from edge_producers.spool import Spool
from schemas.codec import default_codec
from tests.conftest import free_port


def test_start_end_and_instant_markers() -> None:
    start, trial = parse_marker("START flicker_12hz 4", 0)
    assert start == MarkerEvent("START", "flicker_12hz", 1, 4.0, 12.0) and trial == 1
    end, trial = parse_marker("end flicker_12hz", trial)
    assert end == MarkerEvent("END", "flicker_12hz", 1, None, 12.0) and trial == 1
    open_ended, trial = parse_marker("Start rest", trial)
    assert open_ended == MarkerEvent("START", "rest", 2, None, None) and trial == 2
    for text in ("response left", "START", "START x -3", "START x nan"):
        event, trial = parse_marker(text, trial)
        assert event.duration_s is None
    assert parse_marker("response left", 5)[0] == MarkerEvent("INSTANT", "response left", None, None, None)


def test_every_parsed_marker_encodes_as_a_marker_record() -> None:
    from schemas.codec import default_codec
    from schemas.records import marker_record

    trial = 0
    for text in ("START flicker_12hz 4", "END flicker_12hz", "response left", "START rest"):
        event, trial = parse_marker(text, trial)
        record = marker_record(device_id="pi-1", session_id="s1", timestamp_us=1, event=event.event,
                               label=event.label, trial=event.trial, stimulus_hz=event.stimulus_hz,
                               duration_s=event.duration_s)  # fmt: skip
        default_codec().encode("marker", record)


@pytest.mark.parametrize("board", ["simulated", "synthetic"])
def test_lsl_markers_are_recorded_beside_a_board(tmp_path: Path, board: str) -> None:
    """PsychoPy-style markers over LSL, with a simulated headset or a BrainFlow board recording the
    EEG; the marker outlet appears after the recording started, as stimulus software usually does."""
    import pylsl

    name = f"neurolake-test-markers-{uuid.uuid4().hex[:8]}"
    edge = EdgeSettings(board=board, lsl_markers=f"name='{name}'", lsl_timeout_s=5.0)
    clock = ClockProbe("127.0.0.1", free_port(), probes_per_round=1, timeout_s=0.01)
    runner = DeviceRunner(edge, Spool(tmp_path / "spool.sqlite", 10**8), clock)
    runner.start_session()
    assert runner.streaming
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "Markers", 1, 0, "string", name))
    sent: list[float] = []
    deadline = time.monotonic() + 15
    texts = ["START flicker_12hz 1.5", "END flicker_12hz", "response left"]
    while time.monotonic() < deadline and len(sent) < len(texts):
        runner.tick()
        if outlet.have_consumers():
            time.sleep(0.2)
            for text in texts:
                sent.append(time.time())
                outlet.push_sample([text])
                time.sleep(0.05)
        time.sleep(0.02)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        runner.tick()
        time.sleep(0.02)
    runner.stop_session()
    del outlet
    codec = default_codec()
    records = runner.spool.fetch_after(0, 100_000)
    markers = [codec.decode(r.value)[1] for r in records if r.topic == "markers"]
    assert len(sent) == 3, "the marker stream was never taken"
    assert [(m["event"], m["label"]) for m in markers] == [
        ("START", "flicker_12hz"),
        ("END", "flicker_12hz"),
        ("INSTANT", "response left"),
    ]
    assert markers[0]["duration_s"] == 1.5 and markers[0]["stimulus_hz"] == 12.0
    # Stamped with LSL's clock on this machine, in lab time: within a few ms of when they were pushed.
    for marker, pushed in zip(markers, sent):
        assert abs(marker["timestamp_us"] / 1e6 - pushed) < 0.05
    assert any(r.topic == "eeg.raw" for r in records)
