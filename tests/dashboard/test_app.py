"""Dashboard panels over a real lake on disk (no browser; the browser test is in tests/integration)."""

from __future__ import annotations

import numpy as np
import pytest

from batch_jobs.recording import write_session
from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from dashboard.app import HistoryPanel
from streaming_jobs.silver_gold import processor_config


def test_the_history_tab_places_samples_at_the_sessions_own_rate(make_settings, spark) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(NEUROLAKE_EDGE__SIMULATION__SAMPLE_RATE_HZ="200")
    session = simulate_session(settings, 0, 12.0, SESSION_START_US)
    recording = session.recording()
    write_session(settings.paths.lake_root, recording, processor_config(settings), lambda: spark)
    panel = HistoryPanel(settings)
    panel.load_sessions()
    assert panel.sessions.options == [recording.session_id]
    panel.sessions.value = recording.session_id
    panel.show()
    seconds = np.asarray(panel.source.data["t"])
    # The first 10 s at 200 Hz: 2,000 samples, the last at 9.995 s (250 Hz would put 2,400 at 9.596 s).
    assert len(seconds) == 2000
    assert seconds[-1] == pytest.approx(1999 / 200)


# --- the live page, without a browser: two tabs over one feed --------------------------------


def _simulated_session(feed, session_id: str, seconds: float, started_us: int, device: str = "sim-000") -> None:  # type: ignore[no-untyped-def]
    """A simulated headset's session (8 EEG + pulse at 250 Hz, 60 Hz mains) put through the feed."""
    from core.settings import SimulationSettings
    from edge_producers.devices.simulated import SimulatedEeg, layout_for
    from schemas.catalog import EEG_RAW, SESSIONS
    from schemas.codec import samples_to_bytes, times_to_bytes
    from tests.schemas.samples import sample_records

    simulation = SimulationSettings(seed=2, n_eeg_channels=8, mains_uv=20.0)
    layout = layout_for(simulation)
    session = {**sample_records()["session"], "session_id": session_id, "device_id": device, "started_us": started_us,
               "channel_names": list(layout.channel_names), "channel_types": list(layout.channel_types)}  # fmt: skip
    feed._handle(SESSIONS, session, 0)
    data = SimulatedEeg(simulation).generate(int(seconds * 250))
    for first in range(0, len(data), 25):
        block = data[first : first + 25]
        times = started_us + (first + np.arange(len(block))) * 4000
        record = {**sample_records()["eeg_block"], "session_id": session_id, "device_id": device,
                  "first_sample_index": first, "n_samples": len(block), "n_channels": block.shape[1],
                  "data": samples_to_bytes(block), "device_times_us": times_to_bytes(times), "clock_offset_us": 0}  # fmt: skip
        feed._handle(EEG_RAW, record, 1)


def _page(feed, settings):  # type: ignore[no-untyped-def]
    from bokeh.document import Document

    from dashboard.app import LiveDocument

    page = LiveDocument(Document(), feed, settings)
    page.fast_tick()
    page.slow_tick()
    return page


def _mains_ratio(page) -> float:  # type: ignore[no-untyped-def]
    """Median over channels of the PSD at 60 Hz over the PSD at 45-55 Hz, as the page shows it."""
    data = page.psd_source.data
    f = np.asarray(data["f"])
    ratios = [np.asarray(data[k])[f == 60.0][0] / np.median(np.asarray(data[k])[(f >= 45) & (f <= 55)])
              for k in data if k != "f"]  # fmt: skip
    return float(np.median(ratios))


def test_each_tab_filters_with_its_own_controls_and_the_feed_keeps_the_raw_signal(make_settings) -> None:  # type: ignore[no-untyped-def]
    from dashboard.feed import LiveFeed

    settings = make_settings()
    feed = LiveFeed(settings)
    _simulated_session(feed, "s1", 12.0, 1_790_000_000_000_000)
    raw_before = feed.sessions["s1"].raw.copy()
    a, b = _page(feed, settings), _page(feed, settings)
    assert "notch 60 Hz" in a.controls.status.text  # a tab starts with the lake's filter
    a.controls.line.active = 0  # off
    b.controls.line.active = 2  # band-stop, the lab's 59-61 Hz order 2
    for page in (a, b):
        page.fast_tick()
        page.slow_tick()
    assert "band-stop 59-61 Hz (order 2)" in b.controls.status.text and "notch" not in a.controls.status.text
    assert _mains_ratio(a) > 10 and _mains_ratio(b) < 2
    np.testing.assert_array_equal(feed.sessions["s1"].raw, raw_before)
    # An impossible filter is refused by name and the tab keeps the filter it had.
    b.controls.band_low.value = 80.0
    assert "band-stop 59-61 Hz (order 2) at 250 Hz" in b.controls.status.text
    assert "not applied: band-pass needs 0 &lt; low &lt; high, got 80.0-60.0 Hz" in b.controls.status.text
    b.fast_tick()
    b.slow_tick()
    assert _mains_ratio(b) < 2


def test_a_solo_channel_is_drawn_alone_and_hidden_channels_leave_the_spectrum(make_settings) -> None:  # type: ignore[no-untyped-def]
    from dashboard.feed import LiveFeed

    settings = make_settings()
    feed = LiveFeed(settings)
    _simulated_session(feed, "s1", 6.0, 1_790_000_000_000_000)
    page = _page(feed, settings)

    def drawn() -> list[str]:
        data = page.trace_source.data
        return sorted(k for k in data if k.startswith("c") and not np.isnan(np.asarray(data[k])).all())

    assert drawn() == sorted(f"c{i}" for i in range(8))
    page.controls.solo.value = "O1"
    page.fast_tick()
    assert drawn() == ["c6"] and len(page.trace_source.data["t"]) == 1500
    assert [page.trace_lines[k].visible for k in range(8)] == [False] * 6 + [True, False]
    page.controls.solo.value = "(none)"
    page.controls.channels.active = [0, 1]
    page.fast_tick()
    assert drawn() == ["c0", "c1"]
    assert [page.psd_lines[k].visible for k in range(8)] == [True, True] + [False] * 6
    # Renderers are reused, not added, when channels or sessions change.
    assert len(page.traces.renderers) == 8


def test_a_tab_follows_its_device_to_the_session_after_a_restart(make_settings) -> None:  # type: ignore[no-untyped-def]
    from dashboard.feed import LiveFeed

    settings = make_settings()
    feed = LiveFeed(settings)
    _simulated_session(feed, "sim-000-a", 4.0, 1_790_000_000_000_000)
    _simulated_session(feed, "pi-7-a", 4.0, 1_790_000_000_000_000, device="pi-7")
    page = _page(feed, settings)
    page.picker.value = "sim-000-a"
    page.fast_tick()
    _simulated_session(feed, "sim-000-b", 3.0, 1_790_000_100_000_000)  # the device restarted
    page.slow_tick()
    page.fast_tick()
    assert page.session_id == "sim-000-b" and page.picker.value == "sim-000-b"
    assert page.trace_source.data["t"][0] == 0.0 and len(page.trace_source.data["t"]) == 750


def test_the_pulse_its_beats_and_the_room_are_shown_for_the_chosen_session(make_settings) -> None:  # type: ignore[no-untyped-def]
    from dashboard.feed import LiveFeed
    from schemas.catalog import CAMERA_FRAMES, SENSORS_ENV
    from tests.schemas.samples import sample_records

    settings = make_settings()
    feed = LiveFeed(settings)
    started = 1_790_000_000_000_000
    _simulated_session(feed, "s1", 10.0, started)
    reading = {**sample_records()["sensor_reading"], "session_id": "s1", "device_id": "sim-000", "clock_offset_us": 0}
    for i in range(5):
        feed._handle(SENSORS_ENV, {**reading, "measured_us": started + i * 500_000, "temperature_c": 21 + i}, 1)
    frame = {**sample_records()["camera_frame"], "session_id": "s1", "device_id": "sim-000", "frame_index": 41}
    feed._handle(CAMERA_FRAMES, frame, 1)
    page = _page(feed, settings)
    assert len(page.sensors.pulse_source.data["v"]) == 2500
    assert 8 <= len(page.sensors.beat_source.data["t"]) <= 14 and "bpm" in page.sensors.pulse.title.text
    assert page.sensors.room_source.data["t"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert page.sensors.room_source.data["temperature_c"] == [21, 22, 23, 24, 25]
    assert "camera sim-000 &middot; 320x240" in page.sensors.camera_caption.text
    assert "frame 41" in page.sensors.camera_caption.text
    assert "src='/camera/sim-000.mjpg'" in page.sensors.camera.text


def test_a_camera_frame_is_one_part_of_the_mjpeg_stream() -> None:
    from dashboard.camera import BOUNDARY, CONTENT_TYPE, frame_part
    from dashboard.feed import CameraFrame

    part = frame_part(CameraFrame("s1", 3, 640, 480, "JPEG", b"\xff\xd8jpeg\xff\xd9", 0.0))
    assert CONTENT_TYPE == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    assert part == (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\n\r\n".encode() + b"\xff\xd8jpeg\xff\xd9\r\n"
    )


def test_the_fleet_shows_every_device_and_its_commands_fate(make_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dashboard.feed import CommandStatus, LiveFeed
    from infra.commands import SignedCommand
    from schemas.catalog import DEVICE_STATUS
    from tests.schemas.samples import sample_records

    settings = make_settings()
    feed = LiveFeed(settings)
    for device in ("pi-1", "pi-2"):
        feed._handle(DEVICE_STATUS, {**sample_records()["device_status"], "device_id": device}, 1)
    sent: list = []

    def send(device, kind, config=None):  # type: ignore[no-untyped-def]
        sent.append((device, kind, config))
        status = CommandStatus(SignedCommand(f"c{len(sent)}", device, kind, config or {}, 0, b""), sent_at=0.0)
        feed.commands[status.command.command_id] = status
        return status

    monkeypatch.setattr(feed, "send_command", send)
    page = _page(feed, settings)
    assert page.fleet.source.data["device"] == ["pi-1", "pi-2"] and page.fleet.source.data["cpu"] == ["24", "24"]
    rows = page.fleet.device_rows
    rows["pi-2"]["STOP"]._trigger_event(_click(rows["pi-2"]["STOP"]))
    rows["pi-1"]["value"].value = "12"
    rows["pi-1"]["set"]._trigger_event(_click(rows["pi-1"]["set"]))
    assert sent == [("pi-2", "STOP", None), ("pi-1", "SET_CONFIG", {"camera.fps": "12"})]
    assert page.fleet.waiting()
    feed.commands["c1"].ack, feed.commands["c1"].ack_after_s = {"ok": True, "message": "stopped"}, 0.05
    page.fast_tick()
    assert "STOP: <b>ok</b>: stopped (ack after 50 ms)" in rows["pi-2"]["ack"].text
    assert "no ack within" in rows["pi-1"]["ack"].text  # sent "long ago" (monotonic 0)

    read_only = make_settings(NEUROLAKE_DASHBOARD__ALLOW_COMMANDS="false")
    page = _page(feed, read_only)
    assert page.fleet.device_rows["pi-1"]["STOP"].disabled
    page.fleet.command("pi-1", "STOP")
    assert "read-only" in page.fleet.device_rows["pi-1"]["ack"].text and len(sent) == 2


def _click(button):  # type: ignore[no-untyped-def]
    from bokeh.events import ButtonClick

    return ButtonClick(button)


def test_the_camera_stream_serves_a_devices_newest_frames_to_the_dashboards_own_page(make_settings) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from tornado.httpclient import AsyncHTTPClient, HTTPClientError
    from tornado.web import Application

    from dashboard.camera import BOUNDARY, camera_handler
    from dashboard.feed import LiveFeed
    from schemas.catalog import CAMERA_FRAMES
    from tests.conftest import free_port
    from tests.schemas.samples import sample_records

    feed = LiveFeed(make_settings())
    frame = {**sample_records()["camera_frame"], "device_id": "pi-1", "data": b"\xff\xd8first\xff\xd9"}
    feed._handle(CAMERA_FRAMES, frame, 1)

    async def exercise() -> tuple[bytes, list[int]]:
        port = free_port()
        server = Application([(r"/camera/([^/]+)\.mjpg", camera_handler(feed))]).listen(port, address="127.0.0.1")
        client = AsyncHTTPClient()
        received = bytearray()
        refused = []
        try:
            for path, headers in (
                ("/camera/pi-9.mjpg", {}),
                ("/camera/pi-1.mjpg", {"Sec-Fetch-Site": "cross-site"}),
            ):
                try:
                    await client.fetch(f"http://127.0.0.1:{port}{path}", headers=headers)
                except HTTPClientError as exc:
                    refused.append(exc.code)

            def more(chunk: bytes) -> None:
                received.extend(chunk)
                if received.count(b"--" + BOUNDARY.encode()) == 1 and b"first" in received:
                    feed._handle(CAMERA_FRAMES, {**frame, "frame_index": 4, "data": b"\xff\xd8second\xff\xd9"}, 2)

            fetch = client.fetch(
                f"http://127.0.0.1:{port}/camera/pi-1.mjpg", streaming_callback=more, request_timeout=1.5
            )
            try:
                await fetch
            except HTTPClientError:
                pass  # the stream never ends: the client's timeout closes it
        finally:
            server.stop()
        return bytes(received), refused

    received, refused = asyncio.run(exercise())
    assert refused == [404, 403]
    assert received.startswith(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: 9\r\n\r\n".encode())
    assert b"\xff\xd8first\xff\xd9" in received and b"\xff\xd8second\xff\xd9" in received
