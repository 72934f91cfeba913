"""The fleet view: every device's heartbeat, per-device start/stop/restart/set-config buttons that
send hub-signed commands (through the feed, i.e. infra/commands.py) and show the device's signed
ack, and the devices' log lines."""

from __future__ import annotations

import contextlib
import html
import logging
import time
from typing import Any

from core.errors import NeurolakeError
from core.settings import Settings
from dashboard import views
from dashboard.feed import CommandStatus, LiveFeed
from dashboard.widgets import data_table
from edge_producers.control import LIVE_CONFIG_KEYS

log = logging.getLogger(__name__)

BUTTON_KINDS = ("START", "STOP", "RESTART")
LOG_ROWS_SHOWN = 200
ALL_DEVICES = "all devices"


class FleetPanel:
    """The widgets of the fleet tab of one browser session."""

    def __init__(self, feed: LiveFeed, settings: Settings) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import Div, Select

        self.feed, self.settings = feed, settings
        self.source, self.table = data_table("fleet", views.FLEET_COLUMNS, height=220)
        self.controls = column(name="fleet_controls", sizing_mode="stretch_width")
        self.device_rows: dict[str, dict[str, Any]] = {}
        self.last_command: dict[str, CommandStatus | str] = {}  # a status, or why it was not sent
        self.log_device = Select(title="Log lines of", options=[ALL_DEVICES], value=ALL_DEVICES, width=220)
        self.log_level = Select(title="at least", options=list(views.LOG_LEVELS), value="INFO", width=120)
        self.log_source, self.logs = data_table("device_logs", views.LOG_COLUMNS, height=320)
        for widget in (self.log_device, self.log_level):
            widget.on_change("value", lambda attr, old, new: self.update_logs())
        note = (
            "Commands are signed by this hub with the device's key and acknowledged by the device."
            if settings.dashboard.allow_commands
            else "Read-only: dashboard.allow_commands is false."
        )
        self.layout = column(
            Div(text=f"<b>Fleet</b> &middot; {note}"),
            self.table,
            self.controls,
            row(self.log_device, self.log_level),
            self.logs,
            sizing_mode="stretch_width",
        )

    def _add_device(self, device: str) -> None:
        from bokeh.layouts import row
        from bokeh.models import Button, Div, Select, TextInput

        allowed = self.settings.dashboard.allow_commands
        widgets: dict[str, Any] = {"label": Div(text=f"<b>{html.escape(device)}</b>", width=140)}
        for kind in BUTTON_KINDS:
            button = Button(label=kind.lower(), width=70, name=f"{kind.lower()}:{device}", disabled=not allowed)
            button.on_click(lambda _event=None, kind=kind: self.command(device, kind))
            widgets[kind] = button
        widgets["key"] = Select(
            options=sorted(LIVE_CONFIG_KEYS), value="camera.fps", width=190, name=f"config_key:{device}"
        )
        widgets["value"] = TextInput(placeholder="value", width=90, name=f"config_value:{device}")
        widgets["set"] = Button(label="set config", width=90, name=f"set_config:{device}", disabled=not allowed)
        widgets["set"].on_click(lambda _event=None: self._set_config(device))
        widgets["ack"] = Div(text="", name=f"ack:{device}", width=520)
        self.device_rows[device] = widgets
        self.controls.children.append(
            row(
                widgets["label"], *(widgets[k] for k in BUTTON_KINDS), widgets["key"], widgets["value"],
                widgets["set"], widgets["ack"],
            )
        )  # fmt: skip

    def _set_config(self, device: str) -> None:
        widgets = self.device_rows[device]
        key, value = widgets["key"].value, (widgets["value"].value or "").strip()
        if not value:
            self.last_command[device] = f"set config: give {key} a value first"
            self.update_acks()
            return
        self.command(device, "SET_CONFIG", {key: value})

    def command(self, device: str, kind: str, config: dict[str, str] | None = None) -> None:
        if not self.settings.dashboard.allow_commands:
            self.last_command[device] = "dashboard.allow_commands is false: this dashboard is read-only"
        else:
            try:
                self.last_command[device] = self.feed.send_command(device, kind, config)
            except NeurolakeError as exc:
                self.last_command[device] = f"{kind}: {exc}"
            except Exception as exc:  # the broker refused the produce (queue full, no broker)
                log.warning("dashboard: %s to %s failed: %s", kind, device, exc)
                self.last_command[device] = f"{kind}: not sent ({exc})"
        self.update_acks()

    def waiting(self) -> bool:
        """Whether a command still waits for its ack (the page then refreshes acks more often)."""
        return any(
            isinstance(s, CommandStatus) and s.ack is None and s.error is None for s in self.last_command.values()
        )

    def update_acks(self) -> None:
        now = time.monotonic()
        wait_s = self.settings.dashboard.command_wait_s
        for device, status in self.last_command.items():
            widgets = self.device_rows.get(device)
            if widgets is None:
                continue
            if isinstance(status, str):
                text = f"<b style='color:#b00'>{html.escape(status)}</b>"
            else:
                with self.feed.lock:
                    ack, after, error = status.ack, status.ack_after_s, status.error
                text = views.command_html(status.command.kind, now - status.sent_at, ack, after, error, wait_s)
            if widgets["ack"].text != text:
                widgets["ack"].text = text

    def update(self) -> None:
        now = time.monotonic()
        with self.feed.lock:
            statuses = {
                device: (dict(h.status), None if h.status_at is None else now - h.status_at)
                for device, h in self.feed.devices.items()
                if h.status
            }
            devices = sorted(self.feed.devices)
        new = [device for device in devices if device not in self.device_rows]
        if new:
            document = self.controls.document
            # One walk of the document for all new rows (a fleet appears at once when a page opens).
            with document.models.freeze() if document is not None else contextlib.nullcontext():
                for device in new:
                    self._add_device(device)
        rows = views.fleet_rows(statuses)
        if rows != self.source.data:  # every change is a document patch to the browser
            self.source.data = rows
        options = [ALL_DEVICES, *devices]
        if self.log_device.options != options:
            self.log_device.options = options
        self.update_acks()
        self.update_logs()

    def update_logs(self) -> None:
        device = None if self.log_device.value == ALL_DEVICES else self.log_device.value
        with self.feed.lock:
            lines = [
                line
                for d, h in self.feed.devices.items()
                if device is None or d == device
                for line in list(h.logs)[-LOG_ROWS_SHOWN:]
            ]
        rows = views.log_rows(lines, device, self.log_level.value, LOG_ROWS_SHOWN)
        if rows != self.log_source.data:
            self.log_source.data = rows
