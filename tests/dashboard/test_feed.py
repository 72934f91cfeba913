"""The dashboard feed's record handling, without Kafka: what a browser session is shown."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.feed import LiveFeed
from schemas.catalog import EEG_RAW, MARKERS, PREDICTIONS, SESSIONS
from schemas.codec import samples_to_bytes
from tests.schemas.samples import T0, sample_records


@pytest.fixture
def feed(make_settings) -> LiveFeed:  # type: ignore[no-untyped-def]
    feed = LiveFeed(make_settings())
    feed._handle(SESSIONS, sample_records()["session"], 0)
    return feed


def test_blocks_fill_the_session_buffer_in_order_and_a_replayed_block_is_ignored(feed: LiveFeed) -> None:
    block = sample_records()["eeg_block"]
    feed._handle(EEG_RAW, {**block, "first_sample_index": 0}, 1)
    feed._handle(EEG_RAW, {**block, "first_sample_index": 25}, 2)
    feed._handle(EEG_RAW, {**block, "first_sample_index": 0}, 3)  # a producer retry: already shown
    buffer = feed.sessions["s1"]
    assert buffer.total == 50 and buffer.next_index == 50
    assert feed.live_sessions() == ["s1"]


def test_a_block_before_its_session_record_waits_rather_than_guessing_the_layout(make_settings) -> None:  # type: ignore[no-untyped-def]
    feed = LiveFeed(make_settings())
    feed._handle(EEG_RAW, sample_records()["eeg_block"], 1)
    assert feed.sessions == {}


def test_a_block_that_contradicts_its_session_raises_for_the_reader_to_count(feed: LiveFeed) -> None:
    block = sample_records()["eeg_block"]
    narrow = np.zeros((25, 8), dtype=np.float32)
    with pytest.raises(ValueError):
        feed._handle(EEG_RAW, {**block, "n_channels": 8, "data": samples_to_bytes(narrow)}, 1)


def test_a_session_record_with_a_bad_rate_is_refused(make_settings) -> None:  # type: ignore[no-untyped-def]
    feed = LiveFeed(make_settings())
    with pytest.raises(ValueError, match="sample_rate_hz"):
        feed._handle(SESSIONS, {**sample_records()["session"], "sample_rate_hz": float("nan")}, 0)


def test_trials_follow_gold_marker_rule_a_start_without_duration_ends_at_its_end(feed: LiveFeed) -> None:
    feed._handle(EEG_RAW, {**sample_records()["eeg_block"], "first_sample_index": 0}, 1)
    marker = {"device_id": "pi-1", "session_id": "s1", "seq": 0, "label": "12Hz", "trial": 1, "stimulus_hz": 12.0}
    feed._handle(MARKERS, {**marker, "timestamp_us": T0, "event": "START", "duration_s": 4.0}, 2)
    feed._handle(
        MARKERS,
        {**marker, "timestamp_us": T0 + 6_000_000, "event": "START", "trial": 2, "label": "15Hz", "duration_s": None},
        3,
    )
    feed._handle(
        MARKERS,
        {**marker, "timestamp_us": T0 + 9_000_000, "event": "END", "trial": 2, "label": "15Hz", "duration_s": None},
        4,
    )
    assert feed.sessions["s1"].trial_intervals() == [
        (T0, T0 + 4_000_000, "12Hz"),
        (T0 + 6_000_000, T0 + 9_000_000, "15Hz"),
    ]


def test_predictions_are_kept_per_session(feed: LiveFeed) -> None:
    feed._handle(EEG_RAW, {**sample_records()["eeg_block"], "first_sample_index": 0}, 1)
    feed._handle(PREDICTIONS, {"session_id": "s1", "label": "12Hz"}, 2)
    feed._handle(PREDICTIONS, {"session_id": "unknown", "label": "12Hz"}, 3)
    assert [p["label"] for p in feed.sessions["s1"].predictions] == ["12Hz"]


def test_channel_names_from_records_are_shown_escaped(make_settings) -> None:  # type: ignore[no-untyped-def]
    from bokeh.document import Document

    from dashboard.app import LiveDocument

    feed = LiveFeed(make_settings())
    evil = "<img src=x onerror=alert(1)>"
    session = sample_records()["session"]
    feed._handle(SESSIONS, {**session, "channel_names": [evil, *session["channel_names"][1:]]}, 0)
    flat = np.zeros((25, 16), dtype=np.float32)  # every channel flat: the page names them all
    for index in range(0, 1000, 25):
        feed._handle(
            EEG_RAW, {**sample_records()["eeg_block"], "first_sample_index": index, "data": samples_to_bytes(flat)}, 1
        )
    page = LiveDocument(Document(), feed, make_settings())
    page.slow_tick()
    assert "flat channels" in page.status.text
    assert evil not in page.status.text and "&lt;img src=x onerror=alert(1)&gt;" in page.status.text


def test_the_page_shows_channel_quality_and_alerts_on_lost_blocks(make_settings) -> None:  # type: ignore[no-untyped-def]
    from bokeh.document import Document

    from dashboard.app import LiveDocument

    settings = make_settings()
    feed = LiveFeed(settings)
    feed._handle(SESSIONS, sample_records()["session"], 0)
    signal = np.random.default_rng(0).normal(0, 10, (25, 16)).astype(np.float32)
    signal[:, 3] = 0.0  # one electrode off
    for index in range(0, 1000, 25):
        if index in (500, 525):
            continue  # two blocks lost on the way, as a headset with a failing link drops them
        feed._handle(
            EEG_RAW, {**sample_records()["eeg_block"], "first_sample_index": index, "data": samples_to_bytes(signal)}, 1
        )
    page = LiveDocument(Document(), feed, settings)
    page.slow_tick()
    assert "lost 50 samples (0.2 s) in the last 10 s" in page.status.text
    quality = page.quality_source.data
    assert quality["channel"] == sample_records()["session"]["channel_names"]
    assert quality["status"][3] == "FLAT" and quality["status"].count("ok") == 15
    assert "flat channels: ch3" in page.status.text


def test_a_restarted_device_s_newest_session_is_the_one_with_data(make_settings) -> None:  # type: ignore[no-untyped-def]
    feed = LiveFeed(make_settings())
    session, block = sample_records()["session"], sample_records()["eeg_block"]
    for session_id, started in (("s1", T0), ("s2", T0 + 60_000_000), ("other", T0 + 90_000_000)):
        device = "pi-2" if session_id == "other" else "pi-1"
        feed._handle(SESSIONS, {**session, "session_id": session_id, "started_us": started, "device_id": device}, 0)
    feed._handle(EEG_RAW, {**block, "session_id": "s1", "first_sample_index": 0}, 1)
    assert feed.newest_session_of("pi-1") == "s1"
    feed._handle(EEG_RAW, {**block, "session_id": "s2", "first_sample_index": 0}, 2)
    assert feed.newest_session_of("pi-1") == "s2" and feed.newest_session_of("pi-9") is None


def test_acks_are_matched_to_the_commands_this_server_sent(make_settings) -> None:  # type: ignore[no-untyped-def]
    from dashboard.feed import CommandStatus
    from infra.commands import SignedCommand
    from schemas.catalog import COMMAND_ACKS

    feed = LiveFeed(make_settings())
    command = SignedCommand("c-7", "pi-1", "STOP", {}, T0, b"")
    feed.commands["c-7"] = status = CommandStatus(command, sent_at=0.0)
    ack = {**sample_records()["control"], "kind": "COMMAND_ACK", "in_reply_to": "c-7", "ok": True, "message": "stopped"}
    feed._handle(COMMAND_ACKS, {**ack, "device_id": "pi-2"}, 1)  # another device's word on pi-1's command
    feed._handle(COMMAND_ACKS, {**ack, "in_reply_to": "c-8"}, 1)  # not a command of this server
    assert status.ack is None
    feed._handle(COMMAND_ACKS, ack, 2)
    assert status.ack is not None and status.ack["message"] == "stopped" and status.ack_after_s is not None


def test_every_devices_frames_logs_and_room_readings_are_kept(make_settings) -> None:  # type: ignore[no-untyped-def]
    from schemas.catalog import CAMERA_FRAMES, DEVICE_LOGS, SENSORS_ENV

    feed = LiveFeed(make_settings(NEUROLAKE_DASHBOARD__SENSOR_HISTORY_S="10"))
    frame, reading, line = (
        sample_records()["camera_frame"],
        sample_records()["sensor_reading"],
        sample_records()["device_log"],
    )
    for device in ("pi-1", "pi-2"):
        feed._handle(CAMERA_FRAMES, {**frame, "device_id": device, "frame_index": 7, "width": 640, "height": 480}, 1)
        feed._handle(DEVICE_LOGS, {**line, "device_id": device}, 1)
    assert {d: (h.frame.frame_index, h.frame.width) for d, h in feed.devices.items() if h.frame} == {
        "pi-1": (7, 640), "pi-2": (7, 640)
    }  # fmt: skip
    assert [len(h.logs) for h in feed.devices.values()] == [1, 1]
    for second in range(30):
        feed._handle(SENSORS_ENV, {**reading, "measured_us": T0 + second * 1_000_000}, 1)
    history = feed.devices["pi-1"].sensor_history
    assert len(history) == 11 and history[-1]["measured_us"] == T0 + 29_000_000  # the last 10 s
