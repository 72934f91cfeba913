"""LSL marker strings -> the marker records gold labels windows with."""

from __future__ import annotations

from edge_producers.devices.lsl import MarkerEvent, parse_marker


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
