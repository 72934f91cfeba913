"""Every other sensor of the chosen session's Pi: its camera, the pulse waveform with the beats
found in it (dsp/heart.py), and the room sensors as time series."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dashboard import views
from dashboard.camera import stream_path
from dashboard.feed import CameraFrame

ROOM_PLOTS = (
    ("temperature_c", "room temperature (C)"),
    ("humidity_pct", "humidity (%)"),
    ("pressure_hpa", "pressure (hPa)"),
    ("motion", "motion: gyroscope (rad/s)"),
)


class SensorPanel:
    def __init__(self, window_s: float) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import ColumnDataSource, Div
        from bokeh.plotting import figure

        self.camera_caption = Div(text="no camera frame yet", name="camera_caption", width=360)
        # The image is the device's MJPEG stream (dashboard/camera.py), set once per device.
        self.camera = Div(text="", name="camera", width=360)
        self.beat_source = ColumnDataSource({"t": [], "v": []}, name="beats_source")
        self.pulse = figure(
            height=260,
            sizing_mode="stretch_width",
            title="Pulse (PPG) and detected beats",
            x_axis_label="seconds since session start",
            tools="xpan,reset,save",
            name="pulse",
        )
        # Redrawn once a second, not per block: with the pulse streamed at every push (a second
        # canvas redrawn per block) the tabs read their websockets late and pushes queued
        # (bench/dashboard_bench.py, 2 tabs, shared machine: p50 118 ms, 111 pushes; once a second:
        # p50 60-68 ms, 333-366 pushes, as before the console).
        self.pulse.x_range.follow = "end"
        self.pulse.x_range.follow_interval = window_s
        self.pulse.x_range.range_padding = 0
        self.pulse_source = ColumnDataSource({"t": [], "v": []}, name="pulse_source")
        self.pulse_cursor = 0
        self.pulse.line("t", "v", source=self.pulse_source, color="#d62728")
        self.pulse.scatter("t", "v", source=self.beat_source, size=9, marker="inverted_triangle", color="black")
        self.room_source = ColumnDataSource({"t": [], **{name: [] for name, _ in ROOM_PLOTS}}, name="room_source")
        plots = []
        for name, title in ROOM_PLOTS:
            plot = figure(height=200, width=300, title=title, x_axis_label="s", tools="xpan,reset,save", name=name)
            if plots:
                plot.x_range = plots[0].x_range
            plot.line("t", name, source=self.room_source, color="#1f77b4")
            plots.append(plot)
        self.room_note = Div(text="", name="room_note")
        self.layout = column(
            row(self.pulse, column(self.camera_caption, self.camera), sizing_mode="stretch_width"),
            self.room_note,
            row(*plots),
            sizing_mode="stretch_width",
        )
        self._camera_device: str | None = None
        self._room_until_us: int | None = None

    def reset(self) -> None:
        """A new session: nothing of the old one stays."""
        self.beat_source.data = {"t": [], "v": []}
        self.pulse_source.data = {"t": [], "v": []}
        self.pulse_cursor = 0
        self.room_source.data = {"t": [], **{name: [] for name, _ in ROOM_PLOTS}}
        self.pulse.title.text = "Pulse (PPG) and detected beats"
        self._room_until_us = None
        self.room_note.text = ""

    def show_pulse(
        self, update: tuple[int, np.ndarray, np.ndarray, bool], sample_rate_hz: float, column: int, limit: int
    ) -> None:
        """The pulse samples new since the last call (``SessionBuffer.since`` of ``pulse_cursor``)."""
        cursor, indices, raw, reset = update
        if len(indices):
            data = {"t": indices / sample_rate_hz, "v": raw[:, column].astype(np.float64)}
            if reset:
                self.pulse_source.data = {k: v[-limit:] for k, v in data.items()}
            else:
                self.pulse_source.stream(data, rollover=limit)
        self.pulse_cursor = cursor

    def show_beats(self, seconds: np.ndarray, pulse: np.ndarray | None, sample_rate_hz: float) -> None:
        if pulse is None:
            self.pulse.title.text = "Pulse: this session has no pulse channel"
            return
        beats, bpm = views.beats_and_bpm(pulse, sample_rate_hz)
        self.beat_source.data = {"t": seconds[beats], "v": pulse[beats].astype(np.float64)}
        shown = f"{bpm:.0f} bpm" if bpm else "too few beats for a rate"
        self.pulse.title.text = f"Pulse (PPG) and detected beats: {len(beats)} beats, {shown}"

    def show_room(self, readings: Sequence[Mapping[str, Any]], started_us: int, session_id: str) -> None:
        """Streams the readings not yet shown (the session's own; lab time on the x axis)."""
        mine = [r for r in readings if r["session_id"] == session_id]
        if not mine:
            if not self.room_source.data["t"]:
                self.room_note.text = "no room sensor readings for this session"
            return
        new = [r for r in mine if self._room_until_us is None or int(r["measured_us"]) > self._room_until_us]
        if new:
            self._room_until_us = int(new[-1]["measured_us"])
            self.room_source.stream(views.sensor_rows(new, started_us), rollover=len(readings) or None)
        latest = mine[-1]
        self.room_note.text = (
            "room: "
            + ", ".join(
                f"{title} {float(latest[name]):.1f}" for name, title in ROOM_PLOTS[:3] if latest.get(name) is not None
            )
            + f" ({html.escape(str(latest.get('sensor', '?')))})"
        )

    def show_camera(self, device: str, frame: CameraFrame | None, fps: float | None) -> None:
        """The device's camera stream, and a line on its newest frame (updated once a second)."""
        if frame is None:
            self.camera_caption.text = f"no camera frame from {html.escape(device)} yet"
            return
        if self._camera_device != device:
            self._camera_device = device
            # A new src (a device change) opens the stream anew; the same text never re-renders.
            self.camera.text = f"<img name='camera_frame' src='{html.escape(stream_path(device))}' width='360'>"
        rate = f"{fps:.1f} fps" if fps else "-- fps"
        age = time.monotonic() - frame.received_at
        stale = f" &middot; <b style='color:#b00'>no frame for {age:.0f} s</b>" if age > 3 else ""
        self.camera_caption.text = (
            f"camera {html.escape(device)} &middot; {frame.width}x{frame.height} &middot; {rate} &middot; "
            f"frame {frame.frame_index}{stale}"
        )
