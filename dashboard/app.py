"""The Bokeh server app: one document per browser tab, fed from the shared :class:`LiveFeed`.

Traces are pushed as their blocks arrive (and every ``dashboard.refresh_ms`` to catch up) with
``ColumnDataSource.stream`` over the websocket; the browser never polls. Each tab filters with its
own controls (the feed keeps the raw signal) and follows its device to a new session after a
restart. Spectra, spectrogram, head map, pulse beats, room sensors, predictions and the fleet are
recomputed once a second; the camera streams to the page as MJPEG (dashboard/camera.py). A history
tab browses past sessions from the Delta tables.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any

import numpy as np

from core.settings import Settings
from dashboard import views
from dashboard.camera import camera_handler
from dashboard.controls import SignalControls
from dashboard.feed import LiveFeed, SessionBuffer
from dashboard.fleet import FleetPanel
from dashboard.sensors import SensorPanel
from dashboard.widgets import PALETTE, data_table
from dsp.features import BANDS
from infra.delta import LakeTable
from schemas.catalog import BRONZE_SESSIONS, SILVER_EEG_SAMPLES

log = logging.getLogger(__name__)


class LiveDocument:
    """The widgets and sources of one browser session."""

    def __init__(self, doc: Any, feed: LiveFeed, settings: Settings) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import (
            ColorBar,
            ColumnDataSource,
            Div,
            FixedTicker,
            LinearColorMapper,
            RadioButtonGroup,
            Select,
            TabPanel,
            Tabs,
        )
        from bokeh.plotting import figure

        self.doc, self.feed, self.settings = doc, feed, settings
        self.session_id: str | None = None
        self.device_id: str | None = None  # followed to its next session after a restart
        self.cursor = 0
        self.scales: np.ndarray | None = None
        self.centres: np.ndarray | None = None
        self.mode = "filtered"
        self.history_filter: views.FilteredHistory | None = None
        self.sos: np.ndarray | None = None
        self.filter_description = "none yet"
        self.shown: list[int] = []
        arguments = doc.session_context.request.arguments if doc.session_context else {}
        self.requested = arguments["session"][0].decode() if arguments.get("session") else None
        self.requested_device = arguments["device"][0].decode() if arguments.get("device") else None

        self.message = Div(text="", name="message", styles={"color": "#b00", "font-weight": "bold"})
        self.picker = Select(title="Live session", options=[], name="session_picker", width=360)
        self.picker.on_change("value", lambda attr, old, new: self.select(new))
        self.mode_buttons = RadioButtonGroup(labels=["filtered", "raw"], active=0, name="trace_mode")
        self.mode_buttons.on_change("active", lambda attr, old, new: self._set_mode(new))
        self.status = Div(text="waiting for live sessions...", name="session_status")
        self.controls = SignalControls(settings.lake, self._filter_changed, self._channels_changed)
        self.controls.show_filter("the lake's (lake.*), once a session is chosen")

        # Stacked EEG columns c0..cN, NaN for hidden channels.
        self.trace_source = ColumnDataSource({"t": []}, name="traces_source")
        self.traces = figure(
            height=420,
            sizing_mode="stretch_width",
            title="EEG (10 s)",
            x_axis_label="seconds since session start",
            tools="xpan,reset,save",
            name="traces",
        )
        self.traces.x_range.follow = "end"
        self.traces.x_range.follow_interval = settings.dashboard.window_s
        self.traces.x_range.range_padding = 0
        # Renderers are pooled per column and only shown or hidden: each renderer added to a live
        # document makes Bokeh walk the whole document again.
        self.trace_lines: dict[int, Any] = {}
        self.trace_ticker = FixedTicker(ticks=[])
        self.traces.yaxis.ticker = self.trace_ticker

        self.psd_source = ColumnDataSource({"f": []}, name="psd_source")
        self.spectrum = figure(
            height=300,
            width=420,
            y_axis_type="log",
            title="Spectrum (PSD, uV^2/Hz)",
            x_axis_label="Hz",
            x_range=(0, 70),
            name="spectrum",
        )
        self.psd_lines: dict[int, Any] = {}
        self.spec_channel = Select(title="Spectrogram channel", options=[], width=160)
        self.spec_mapper = LinearColorMapper(palette="Viridis256")
        self.spec_source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.spectrogram = figure(
            height=300, width=420, title="Spectrogram (dB)", x_axis_label="s", y_axis_label="Hz", name="spectrogram"
        )
        self.spectrogram.image(
            image="image", x="x", y="y", dw="dw", dh="dh", source=self.spec_source, color_mapper=self.spec_mapper
        )

        self.band = Select(title="Head map band", options=list(BANDS), value="alpha", width=160)
        self.head_mapper = LinearColorMapper(palette="Viridis256", nan_color=(0, 0, 0, 0))
        self.head_source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []}, name="headmap_source")
        self.electrodes = ColumnDataSource({"x": [], "y": [], "name": []})
        self.headmap = figure(
            height=320,
            width=340,
            x_range=(-1.15, 1.15),
            y_range=(-1.15, 1.15),
            title="Head map: log10 band power",
            match_aspect=True,
            tools="save",
            name="headmap",
        )
        self.headmap.image(
            image="image", x="x", y="y", dw="dw", dh="dh", source=self.head_source, color_mapper=self.head_mapper
        )
        self.headmap.circle(x=0, y=0, radius=1.0, fill_alpha=0, line_color="black")
        self.headmap.scatter(x="x", y="y", source=self.electrodes, size=5, color="black")
        self.headmap.text(
            x="x", y="y", text="name", source=self.electrodes, text_font_size="8pt", x_offset=4, y_offset=-4
        )
        self.headmap.add_layout(ColorBar(color_mapper=self.head_mapper, width=10), "right")
        self.headmap.axis.visible = False
        self.headmap.grid.visible = False

        self.prob_source = ColumnDataSource({"t": []}, name="predictions_source")
        self.trial_source = ColumnDataSource({"left": [], "right": [], "label": [], "color": []})
        self.predictions = figure(
            height=260,
            sizing_mode="stretch_width",
            y_range=(0, 1.05),
            title="Predictions: class probabilities (bands: stimulus shown)",
            x_axis_label="seconds since session start",
            name="predictions",
        )
        self.predictions.quad(
            left="left", right="right", bottom=0, top=1.05, color="color", alpha=0.15, source=self.trial_source
        )
        self.prob_lines: dict[str, Any] = {}
        self.prediction_text = Div(
            text="no predictions yet (is the live scorer running with a champion?)", name="prediction_text"
        )
        self.sensors = SensorPanel(settings.dashboard.window_s)
        self.quality_source, self.quality = data_table(
            "quality",
            {
                "channel": "channel",
                "status": "signal",
                "sd_uv": "SD uV",
                "railed_pct": "railed %",
                "line_pct": "mains %",
            },
            height=200,
            width=520,
        )

        live = column(
            row(self.picker, self.mode_buttons, self.status),
            self.message,
            self.controls.layout,
            self.traces,
            row(self.spectrum, column(self.spec_channel, self.spectrogram), column(self.band, self.headmap)),
            self.sensors.layout,
            self.prediction_text,
            self.predictions,
            self.quality,
            sizing_mode="stretch_width",
        )
        self.fleet = FleetPanel(feed, settings)
        self.history = HistoryPanel(settings)
        self.tabs = Tabs(
            tabs=[
                TabPanel(child=live, title="Live"),
                TabPanel(child=self.fleet.layout, title="Fleet"),
                TabPanel(child=self.history.layout, title="History"),
            ],
            sizing_mode="stretch_width",
            name="tabs",
        )
        doc.add_root(self.tabs)
        doc.title = "neurolake live"
        # Traces and frames are pushed when they arrive (the feed calls _on_arrival from its
        # thread); the periodic tick only catches up after a reconnect or a missed wake-up.
        self._push_pending = False
        feed.subscribe(self._on_arrival)
        if doc.session_context is not None:
            doc.on_session_destroyed(lambda _context: feed.unsubscribe(self._on_arrival))
        doc.add_periodic_callback(self.fast_tick, settings.dashboard.refresh_ms)
        doc.add_periodic_callback(self.slow_tick, 1000)
        self.slow_tick()

    def _on_arrival(self, sessions: set[str]) -> None:
        """Called on the feed's thread: schedule one push on this document's own loop."""
        if self.session_id in sessions and not self._push_pending:
            self._push_pending = True
            self.doc.add_next_tick_callback(self._push)

    def _push(self) -> None:
        self._push_pending = False
        self.fast_tick()

    # --- selection and controls ----------------------------------------------------------------
    def select(self, session_id: str | None) -> None:
        if not session_id or session_id == self.session_id:
            return
        with self.feed.lock:
            buffer = self.feed.sessions.get(session_id)
        if buffer is None:
            return
        if self.device_id is not None and buffer.device_id == self.device_id and self.session_id is not None:
            log.info("dashboard tab follows %s from %s to %s", self.device_id, self.session_id, session_id)
        self.session_id, self.device_id = session_id, buffer.device_id
        self.controls.set_channels([buffer.channel_names[i] for i in buffer.eeg_columns])
        self.shown = self.controls.shown()
        self._apply_filter(buffer)
        self._build_channel_glyphs(buffer)
        self.sensors.reset()
        self.message.text = ""
        self._restart_traces()

    def _restart_traces(self) -> None:
        """The next push redraws the whole buffer (filtered anew with this tab's filter)."""
        self.cursor, self.scales, self.history_filter = 0, None, None

    def _set_mode(self, active: int) -> None:
        self.mode = "filtered" if active == 0 else "raw"
        self._restart_traces()

    def _buffer(self) -> SessionBuffer | None:
        if self.session_id is None:
            return None
        with self.feed.lock:
            return self.feed.sessions.get(self.session_id)

    def _apply_filter(self, buffer: SessionBuffer) -> bool:
        try:
            spec, sos = views.fitted_filter(self.controls.choice(), buffer.sample_rate_hz)
        except ValueError as exc:
            self.controls.show_filter(self.filter_description, str(exc))
            return False
        self.sos = sos
        self.filter_description = spec.describe() + f" at {buffer.sample_rate_hz:g} Hz"
        self.controls.show_filter(self.filter_description)
        return True

    def _filter_changed(self) -> None:
        buffer = self._buffer()
        if buffer is not None and self._apply_filter(buffer):
            self._restart_traces()

    def _channels_changed(self) -> None:
        buffer = self._buffer()
        if buffer is None:
            return
        self.shown = self.controls.shown()
        self._build_channel_glyphs(buffer)
        self._restart_traces()

    def _build_channel_glyphs(self, buffer: SessionBuffer) -> None:
        names = [buffer.channel_names[i] for i in buffer.eeg_columns]
        shown = self.shown
        with self.doc.models.freeze():  # one walk of the document for all new renderers
            for k in range(len(names)):
                color = PALETTE[k % len(PALETTE)]
                if k not in self.trace_lines:
                    self.trace_lines[k] = self.traces.line("t", f"c{k}", source=self.trace_source, color=color)
                if k not in self.psd_lines:
                    self.psd_lines[k] = self.spectrum.line("f", f"c{k}", source=self.psd_source, color=color)
        for k, line in self.trace_lines.items():
            line.visible = k in shown
        for k, line in self.psd_lines.items():
            line.visible = k in shown
        self.trace_source.data = {"t": [], **{f"c{k}": [] for k in range(len(self.trace_lines))}}
        self.psd_source.data = {"f": [], **{f"c{k}": [] for k in range(len(self.psd_lines))}}
        n = len(shown)
        self.trace_ticker.ticks = list(range(n))
        self.traces.yaxis.major_label_overrides = {n - 1 - row: names[k] for row, k in enumerate(shown)}
        if self.spec_channel.options != names:
            self.spec_channel.options = names
            occipital = [name for name in names if name.upper().startswith("O")]
            self.spec_channel.value = occipital[0] if occipital else names[0]
        positions = views.scalp_positions(tuple(names), buffer.montage)
        self.electrodes.data = {
            "x": [p[0] for p in positions.values()],
            "y": [p[1] for p in positions.values()],
            "name": list(positions),
        }
        self.prob_source.data = {"t": []}
        self.trial_source.data = {"left": [], "right": [], "label": [], "color": []}

    # --- ticks -------------------------------------------------------------------------------
    def fast_tick(self) -> None:
        if self.fleet.waiting():
            self.fleet.update_acks()
        if self.session_id is None:
            return
        with self.feed.lock:
            buffer = self.feed.sessions.get(self.session_id)
            if buffer is None:
                return
            cursor, indices, raw, reset = buffer.since(self.cursor)
            last_sample_ms = buffer.last_sample_ms_for(cursor) if len(indices) else None
        if not len(indices) or self.sos is None:
            return
        eeg = buffer.eeg_columns
        if reset or self.history_filter is None:
            self.history_filter = views.FilteredHistory(self.sos, buffer.capacity, len(eeg))
            reset = True
        filtered = self.history_filter.push(indices, raw[:, eeg].astype(np.float64))
        values = (filtered if self.mode == "filtered" else raw[:, eeg].astype(np.float64))[:, self.shown]
        if self.scales is None or reset:
            self.scales, self.centres = views.channel_scales(values), np.median(values, axis=0)
            reset = True
        assert self.centres is not None
        stacked = views.stack(values, self.scales, self.centres)
        columns = np.full((len(indices), len(self.trace_lines)), np.nan)  # hidden channels: NaN
        columns[:, self.shown] = stacked
        data = {"t": indices / buffer.sample_rate_hz, **{f"c{k}": columns[:, k] for k in range(columns.shape[1])}}
        limit = int(self.settings.dashboard.window_s * buffer.sample_rate_hz)
        if reset:
            self.trace_source.data = {k: v[-limit:] for k, v in data.items()}
        else:
            self.trace_source.stream(data, rollover=limit)
        self.cursor = cursor
        if last_sample_ms is not None:
            # The newest sample's lab time -> now, when its data leaves for the browser.
            self.feed.push_latencies_ms.append(time.time() * 1000 - last_sample_ms)

    def _follow_device(self, sessions: list[str]) -> None:
        """A tab that shows a device moves to its newest session (after a restart or a STOP and
        START the old session is dead); a tab opened with ?device=ID waits for that device."""
        if self.device_id is None:
            return
        with self.feed.lock:
            newest = self.feed.newest_session_of(self.device_id)
        if newest is not None and newest != self.session_id and newest in sessions:
            self.picker.value = newest
            self.select(newest)

    def slow_tick(self) -> None:
        sessions = self.feed.live_sessions()
        self.picker.options = sessions
        if self.requested_device and self.device_id is None:
            self.device_id = self.requested_device
        if self.requested and self.session_id is None:
            if self.requested in sessions:
                self.picker.value = self.requested
                self.select(self.requested)
            else:
                self.message.text = (
                    f"unknown session {html.escape(self.requested)!s}: it is not live now; "
                    "pick a live session above, or browse past ones in the History tab"
                )
        self._follow_device(sessions)
        if self.session_id is None and sessions and not self.requested and not self.requested_device:
            self.picker.value = sessions[0]
            self.select(sessions[0])
        self.fleet.update()
        if self.feed.connection_error:
            self.message.text = html.escape(self.feed.connection_error) + " (is `neurolake up` running?)"
        if self.session_id is None:
            waiting = f" from {html.escape(self.requested_device)}" if self.requested_device else ""
            self.status.text = f"no live session{waiting} yet: start a headset (neurolake edge run / simulate)"
            return
        with self.feed.lock:
            buffer = self.feed.sessions[self.session_id]
            raw = buffer.raw[:, buffer.eeg_columns].astype(np.float64)
            pulse = None if buffer.pulse_column is None else buffer.raw[:, buffer.pulse_column].astype(np.float64)
            pulse_update = buffer.since(self.sensors.pulse_cursor) if pulse is not None else None
            seconds = buffer.seconds
            idle = time.monotonic() - buffer.last_block_at
            predictions = list(buffer.predictions)
            trials = buffer.trial_intervals()
            health = self.feed.devices.get(buffer.device_id)
            readings = list(health.sensor_history) if health is not None else []
            frame = health.frame if health is not None else None
            fps = health.camera_fps() if health is not None and frame is not None else None
        window = self.history_filter.values if self.history_filter is not None else np.empty((0, raw.shape[1]))
        names = [buffer.channel_names[i] for i in buffer.eeg_columns]
        fs = buffer.sample_rate_hz
        notes = []
        if idle > self.settings.dashboard.stale_after_s:
            notes.append(
                f"<b style='color:#b00'>no data from {html.escape(buffer.device_id)} for "
                f"{idle:.0f} s (headset stopped or disconnected)</b>"
            )
        dashboard = self.settings.dashboard
        with self.feed.lock:
            lost = buffer.samples_lost_since(time.monotonic() - dashboard.loss_alert_s)
        if lost:
            notes.append(
                f"<b style='color:#b00'>{html.escape(buffer.device_id)} lost {lost} samples "
                f"({lost / fs:.1f} s) in the last {dashboard.loss_alert_s:.0f} s</b>"
            )
        quality = views.channel_quality_rows(
            raw[-int(2 * fs) :], names, fs, self.settings.lake.notch_hz, dashboard.flat_uv, dashboard.line_noise_max
        )
        self.quality_source.data = quality
        flagged = {
            s: [n for n, st in zip(quality["channel"], quality["status"]) if st == s] for s in ("FLAT", "RAILED")
        }
        for status, channels in flagged.items():
            if channels:
                notes.append(
                    f"<b style='color:#b00'>{status.lower()} channels: {html.escape(', '.join(channels))}</b>"
                    + (" (electrode off?)" if status == "FLAT" else " (amplifier at its limit)")
                )
        self.status.text = (
            f"{html.escape(self.session_id)} &middot; {len(names)} EEG channels at "
            f"{fs:g} Hz &middot; showing {self.mode} " + " ".join(notes)
        )
        if pulse_update is not None and buffer.pulse_column is not None:
            limit = int(dashboard.window_s * fs)
            self.sensors.show_pulse(pulse_update, fs, buffer.pulse_column, limit)
        self.sensors.show_beats(seconds, pulse, fs)
        self.sensors.show_room(readings, buffer.started_us, self.session_id)
        self.sensors.show_camera(buffer.device_id, frame, fps)
        if len(window) >= fs:
            # The spectrum averages this tab's filtered seconds in windows of the chosen length;
            # the head map shows band power of the newest window of gold's length (with the lake's
            # filter, gold's own figures).
            freqs, power = views.psd(window, fs, self.controls.segment_s)
            floor = np.full(len(freqs), np.nan)
            self.psd_source.data = {
                "f": freqs,
                **{
                    f"c{k}": np.maximum(power[:, k], 1e-3) if k < power.shape[1] else floor
                    for k in range(len(self.psd_lines))
                },
            }
            recent = window[-int(self.settings.lake.window_s * fs) :]
            channel = names.index(self.spec_channel.value) if self.spec_channel.value in names else 0
            f, t, db = views.spectrogram_db(window[:, channel], fs)
            self.spec_source.data = {
                "image": [db],
                "x": [0],
                "y": [0],
                "dw": [max(t[-1], 1e-3) if len(t) else 1],
                "dh": [f[-1] if len(f) else 1],
            }
            positions = views.scalp_positions(tuple(names), buffer.montage)
            if positions:
                picked = [names.index(n) for n in positions]
                values = views.band_power_per_channel(recent[:, picked], fs, self.band.value)
                grid = views.topomap_grid(values, list(positions.values()))
                self.head_mapper.low, self.head_mapper.high = float(np.nanmin(values)), float(np.nanmax(values))
                self.head_source.data = {"image": [grid], "x": [-1], "y": [-1], "dw": [2], "dh": [2]}
        self._update_predictions(buffer, predictions, trials)

    def _update_predictions(self, buffer: SessionBuffer, predictions: list[dict], trials: list) -> None:
        if not predictions:
            return
        classes = sorted(predictions[-1]["probabilities"])
        fs = buffer.sample_rate_hz
        data = {"t": [p["window_end_index"] / fs for p in predictions]}
        for label in classes:
            data[label] = [p["probabilities"].get(label, 0.0) for p in predictions]
            if label not in self.prob_lines:
                color = PALETTE[len(self.prob_lines) % len(PALETTE)]
                self.prob_lines[label] = self.predictions.line(
                    "t", label, source=self.prob_source, color=color, legend_label=label, line_width=2
                )
        self.prob_source.data = data
        colors = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(self.prob_lines)}
        start_us = buffer.started_us
        self.trial_source.data = {
            "left": [(s - start_us) / 1e6 for s, _, _ in trials],
            "right": [(e - start_us) / 1e6 for _, e, _ in trials],
            "label": [label for _, _, label in trials],
            "color": [colors.get(label, "#999") for _, _, label in trials],
        }
        latest = predictions[-1]
        windows = [(*views.prediction_span_us(p, fs), p["label"]) for p in predictions]
        accuracy, n = views.running_accuracy(windows, trials)
        accuracy_text = (
            f"running accuracy {accuracy:.0%} over {n} windows in trials"
            if accuracy is not None
            else "running accuracy: no window inside a known trial yet"
        )
        self.prediction_text.text = (
            f"prediction: <b>{html.escape(latest['label'])}</b> "
            f"(p={max(latest['probabilities'].values()):.2f}) &middot; model "
            f"{html.escape(latest['model_name'])} v{html.escape(latest['model_version'])}"
            f" &middot; {accuracy_text}"
        )


class HistoryPanel:
    """Past sessions from the lake: pick one, slide through its filtered samples 10 s at a time."""

    def __init__(self, settings: Settings) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import Button, ColumnDataSource, Div, Select, Slider
        from bokeh.plotting import figure

        self.settings = settings
        self.sessions = Select(title="Past session", options=[], width=360)
        self.refresh = Button(label="refresh list", width=120)
        self.start = Slider(title="start (s)", start=0, end=600, step=1, value=0, width=500)
        self.info = Div(text="")
        self.source = ColumnDataSource({"t": []})
        self.plot = figure(
            height=420,
            sizing_mode="stretch_width",
            title="History (filtered, from silver)",
            x_axis_label="seconds since session start",
        )
        self.lines: list[Any] = []
        self.rates: dict[str, float] = {}  # each session's own sample rate, from bronze.sessions
        self.refresh.on_click(lambda: self.load_sessions())
        self.sessions.on_change("value", lambda attr, old, new: self.show())
        self.start.on_change("value_throttled", lambda attr, old, new: self.show())
        self.layout = column(
            row(self.sessions, self.refresh), self.start, self.info, self.plot, sizing_mode="stretch_width"
        )

    def load_sessions(self) -> None:
        frame, _ = LakeTable(self.settings.paths.lake_root, BRONZE_SESSIONS).read_pandas(
            ["session_id", "started_us", "sample_rate_hz"]
        )
        if frame.empty:
            self.info.text = f"no sessions in {self.settings.paths.lake_root} yet (is the lake running?)"
            return
        self.rates = dict(zip(frame["session_id"], frame["sample_rate_hz"].astype(float)))
        self.sessions.options = (
            frame.sort_values("started_us", ascending=False)["session_id"].drop_duplicates().tolist()
        )

    def show(self) -> None:
        import pyarrow.dataset as ds

        from infra.delta import delta_dataset

        session_id = self.sessions.value
        if not session_id:
            return
        samples, _ = delta_dataset(SILVER_EEG_SAMPLES.path(self.settings.paths.lake_root))
        if samples is None:
            self.info.text = "silver.eeg_samples is empty"
            return
        fs = self.rates.get(session_id)
        if fs is None:
            self.info.text = f"{html.escape(session_id)}: no session record in bronze.sessions (its rate is unknown)"
            return
        first = int(self.start.value * fs)
        table = samples.to_table(
            columns=["sample_index", "filtered"],
            filter=(ds.field("session_id") == session_id)
            & (ds.field("sample_index") >= first)
            & (ds.field("sample_index") < first + int(10 * fs)),
        )
        if table.num_rows == 0:
            self.info.text = f"{html.escape(session_id)}: no samples from {self.start.value} s"
            return
        frame = table.to_pandas().sort_values("sample_index")
        values = np.stack(frame["filtered"].to_numpy())
        stacked = views.stack(values, views.channel_scales(values), np.median(values, axis=0))
        for line in self.lines:
            line.visible = False
        self.source.data = {
            "t": frame["sample_index"].to_numpy() / fs,
            **{f"c{i}": stacked[:, i] for i in range(stacked.shape[1])},
        }
        self.lines = [
            self.plot.line("t", f"c{i}", source=self.source, color=PALETTE[i % len(PALETTE)])
            for i in range(stacked.shape[1])
        ]
        self.info.text = f"{html.escape(session_id)}: {len(frame)} samples, {stacked.shape[1]} channels"


def make_app(feed: LiveFeed, settings: Settings):  # type: ignore[no-untyped-def]
    def build(doc: Any) -> None:
        LiveDocument(doc, feed, settings)

    return build


def serve(settings: Settings, duration_s: float | None = None) -> int:
    """Run the dashboard server until interrupted; a ``/stats`` page gives push latencies."""
    import json
    import signal

    from bokeh.server.server import Server
    from tornado.web import RequestHandler

    feed = LiveFeed(settings).start()

    def camera_rates() -> dict[str, float]:
        with feed.lock:
            rates = {device: health.camera_fps() for device, health in feed.devices.items()}
        return {device: fps for device, fps in rates.items() if fps is not None}

    class StatsHandler(RequestHandler):
        def get(self) -> None:
            latencies = list(feed.push_latencies_ms)
            self.set_header("Content-Type", "application/json")
            self.write(
                json.dumps(
                    {
                        "push_latencies_ms": latencies[-5000:],
                        "sessions": feed.live_sessions(),
                        "undecodable": feed.undecodable,
                        "unauthenticated": feed.unauthenticated,
                        "rejected": feed.rejected,
                        "camera_fps": camera_rates(),
                    }
                )
            )

    address, port = settings.dashboard.host, settings.dashboard.port
    server = Server(
        {"/": make_app(feed, settings)},
        address=address,
        port=port,
        allow_websocket_origin=[f"{address}:{port}", f"localhost:{port}"],
        extra_patterns=[("/stats", StatsHandler), (r"/camera/([^/]+)\.mjpg", camera_handler(feed))],
    )
    server.start()
    log.info("dashboard at http://%s:%d/ (a session: /?session=ID)", address, port)
    if duration_s:
        server.io_loop.call_later(duration_s, server.io_loop.stop)
    signal.signal(signal.SIGTERM, lambda *_: server.io_loop.add_callback_from_signal(server.io_loop.stop))
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        feed.stop()
    return 0
