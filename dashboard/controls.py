"""A tab's own signal controls: band-pass edges, the mains line filter (off, notch or band-stop:
centre, width, order), the spectrum's window, and which channels are drawn (show/hide, solo).
They change what this tab draws only; the server's feed keeps the raw signal."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from core.settings import LakeSettings
from dashboard import views

LINE_LABELS = {"off": "off", "notch": "notch", "bandstop": "band-stop"}
SPECTRUM_WINDOWS_S = ("0.5", "1", "2", "4", "8")
NO_SOLO = "(none)"


class SignalControls:
    def __init__(self, lake: LakeSettings, on_filter: Callable[[], None], on_channels: Callable[[], None]) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import CheckboxGroup, Div, RadioButtonGroup, Select, Spinner

        line = "off" if lake.notch_hz is None else lake.line_filter
        width = lake.bandstop_width_hz if lake.line_filter == "bandstop" or lake.notch_hz is None else (
            lake.notch_hz / lake.notch_q
        )  # fmt: skip
        self.band_low = Spinner(title="band-pass low (Hz)", low=0.01, step=0.5, value=lake.band_low_hz, width=120)
        self.band_high = Spinner(title="band-pass high (Hz)", low=0.1, step=1, value=lake.band_high_hz, width=120)
        self.line = RadioButtonGroup(
            labels=list(LINE_LABELS.values()), active=list(LINE_LABELS).index(line), name="line_filter"
        )
        self.centre = Spinner(title="line centre (Hz)", low=0.1, step=1, value=lake.notch_hz or 60.0, width=110)
        self.width = Spinner(title="line width (Hz)", low=0.05, step=0.5, value=round(width, 3), width=110)
        self.order = Spinner(title="band-stop order", low=1, high=8, step=1, value=lake.bandstop_order, width=110)
        self.spectrum = Select(title="spectrum window (s)", options=list(SPECTRUM_WINDOWS_S), value="1", width=130)
        self.status = Div(text="", name="filter_status")
        self.channels = CheckboxGroup(labels=[], active=[], inline=True, name="channels_shown")
        self.solo = Select(title="solo", options=[NO_SOLO], value=NO_SOLO, width=120, name="solo_channel")
        for spinner in (self.band_low, self.band_high, self.centre, self.width, self.order):
            spinner.on_change("value", lambda attr, old, new: on_filter())
        self.line.on_change("active", lambda attr, old, new: on_filter())
        self.channels.on_change("active", lambda attr, old, new: on_channels())
        self.solo.on_change("value", lambda attr, old, new: on_channels())
        self.layout = column(
            row(
                self.band_low, self.band_high, column(Div(text="mains line filter"), self.line), self.centre,
                self.width, self.order, self.spectrum,
            ),
            self.status,
            row(self.solo, column(Div(text="channels shown"), self.channels)),
            sizing_mode="stretch_width",
        )  # fmt: skip

    def choice(self) -> views.TraceFilter:
        """The filter these controls describe; ValueError names what is impossible."""

        def number(widget: Any, name: str) -> float:
            if widget.value is None:
                raise ValueError(f"{name} is empty")
            return float(widget.value)

        line = list(LINE_LABELS)[self.line.active or 0]
        return views.trace_filter(
            number(self.band_low, "band-pass low"),
            number(self.band_high, "band-pass high"),
            line,  # type: ignore[arg-type]
            number(self.centre, "line centre"),
            number(self.width, "line width"),
            int(number(self.order, "band-stop order")),
        )

    def show_filter(self, description: str, problem: str | None = None) -> None:
        text = f"filter: {html.escape(description)}"
        if problem:
            text += f" &middot; <b style='color:#b00'>not applied: {html.escape(problem)}</b>"
        self.status.text = text

    @property
    def segment_s(self) -> float:
        return float(self.spectrum.value)

    def set_channels(self, names: list[str]) -> None:
        """A new session's channels, every one shown."""
        self.channels.labels = list(names)
        self.channels.active = list(range(len(names)))
        self.solo.options = [NO_SOLO, *names]
        self.solo.value = NO_SOLO

    def shown(self) -> list[int]:
        labels = list(self.channels.labels)
        solo = labels.index(self.solo.value) if self.solo.value in labels else None
        return views.shown_channels(len(labels), self.channels.active, solo)
