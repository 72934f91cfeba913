"""What the dashboard draws, as plain numpy/scipy/MNE functions (no Bokeh, no Kafka)."""

from __future__ import annotations

import datetime as dt
import html
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.signal import spectrogram as scipy_spectrogram

from dsp.features import BANDS, band_powers, channel_quality, welch_psd
from dsp.filters import FilterSpec, LineFilter, design_sos, filter_indexed
from dsp.heart import detect_beats
from dsp.labels import label_windows


def channel_scales(window: np.ndarray, floor_uv: float = 1.0) -> np.ndarray:
    """Per-channel scale for stacked traces: a robust spread (4 x MAD), never below ``floor_uv``."""
    if len(window) == 0:
        return np.ones(window.shape[1])
    centred = window - np.median(window, axis=0)
    return np.maximum(4.0 * 1.4826 * np.median(np.abs(centred), axis=0), floor_uv)


def stack(window: np.ndarray, scales: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Channel k centred, scaled to about +-0.5 and shifted to row ``n_channels - 1 - k`` (first on top)."""
    n = window.shape[1]
    return (window - centres) / scales + (n - 1 - np.arange(n))


def channel_quality_rows(
    raw: np.ndarray,
    names: Sequence[str],
    sample_rate_hz: float,
    line_hz: float | None,
    flat_uv: float,
    line_noise_max: float,
) -> dict[str, list[Any]]:
    """The quality table: per channel its status (ok, FLAT, RAILED, LINE NOISE), spread, railed share
    and mains share, by the same measure gold's quality columns use."""
    if len(raw) < max(2, int(sample_rate_hz / 2)):
        return {"channel": [], "status": [], "sd_uv": [], "railed_pct": [], "line_pct": []}
    q = channel_quality(raw, sample_rate_hz, line_hz=line_hz or 60.0, flat_uv=flat_uv)
    status = []
    for flat, railed, line in zip(q["flat"], q["railed_pct"], q["line_noise_ratio"]):
        if flat:
            status.append("FLAT")
        elif railed > 1.0:
            status.append("RAILED")
        elif line_hz and line > line_noise_max:
            status.append("LINE NOISE")
        else:
            status.append("ok")
    return {
        "channel": list(names),
        "status": status,
        "sd_uv": [round(float(v), 1) for v in raw.std(axis=0)],
        "railed_pct": [round(float(v), 1) for v in q["railed_pct"]],
        "line_pct": [round(float(v) * 100, 1) for v in q["line_noise_ratio"]],
    }


def psd(window: np.ndarray, sample_rate_hz: float, segment_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD per channel (uV^2/Hz), frequencies up to Nyquist: (freqs, (n_freqs, n_channels)).
    ``segment_s`` is the spectrum's window: resolution 1 / segment_s Hz, averaged over ``window``."""
    return welch_psd(window, sample_rate_hz, max(2, min(len(window), int(segment_s * sample_rate_hz))))


def spectrogram_db(
    signal: np.ndarray, sample_rate_hz: float, max_hz: float = 60.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(freqs, times, power dB (freqs x times)) for one channel, half-second segments."""
    nperseg = max(8, min(len(signal), int(sample_rate_hz // 2)))
    freqs, times, power = scipy_spectrogram(signal, fs=sample_rate_hz, nperseg=nperseg, noverlap=nperseg // 2)
    keep = freqs <= max_hz
    return freqs[keep], times, 10 * np.log10(np.maximum(power[keep], 1e-12))


@lru_cache(maxsize=32)
def scalp_positions(channel_names: tuple[str, ...], montage: str = "standard_1020") -> dict[str, tuple[float, float]]:
    """2-D electrode positions in [-1, 1] from MNE's standard montage (MNE's own EEG layout
    projection); channels the montage does not know are left out."""
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE's deprecation notice for the montage's old name
        known = set(mne.channels.make_standard_montage(montage).ch_names)
        names = [n for n in channel_names if n in known]
        if len(names) < 3:
            return {}
        info = mne.create_info(names, 250.0, "eeg")
        info.set_montage(montage, on_missing="ignore")
        layout = mne.channels.make_eeg_layout(info)
    centres = layout.pos[:, :2] + layout.pos[:, 2:] / 2
    centres = (centres - 0.5) * 2 * 0.85  # inside the head circle
    return {name: (float(x), float(y)) for name, (x, y) in zip(layout.names, centres)}


def prediction_span_us(prediction: Mapping[str, Any], sample_rate_hz: float) -> tuple[int, int]:
    """Lab times of a predicted window's first and last samples, from the window the record names
    (its length and the session's rate travel with the data; no window length is assumed)."""
    last_sample = prediction["window_end_index"] - 1  # the end index is exclusive
    span_us = round((last_sample - prediction["window_start_index"]) / sample_rate_hz * 1e6)
    return int(prediction["window_end_us"]) - span_us, int(prediction["window_end_us"])


def band_power_per_channel(window: np.ndarray, sample_rate_hz: float, band: str) -> np.ndarray:
    """log10 power of one band per channel: gold's ``band_power`` row for the same window."""
    return band_powers(window, sample_rate_hz)[list(BANDS).index(band)]


@lru_cache(maxsize=32)
def _head_geometry(positions: tuple[tuple[float, float], ...], resolution: int) -> tuple[Any, ...]:
    """What depends only on the electrodes: their triangulation, the grid points inside the head, and
    each point's nearest electrode (used outside the electrodes' hull). Computed once per montage."""
    from scipy.spatial import Delaunay, cKDTree

    axis = np.linspace(-1, 1, resolution)
    gx, gy = np.meshgrid(axis, axis)
    inside = gx**2 + gy**2 <= 1.0
    points = np.asarray(positions)
    query = np.column_stack([gx[inside], gy[inside]])
    return Delaunay(points), inside, query, cKDTree(points).query(query)[1]


def topomap_grid(values: np.ndarray, positions: Sequence[tuple[float, float]], resolution: int = 64) -> np.ndarray:
    """Values interpolated over the unit-circle head (cubic inside the electrodes' hull, nearest
    out to the rim), NaN outside the head; shape (resolution, resolution), row 0 at the bottom."""
    from scipy.interpolate import CloughTocher2DInterpolator

    triangulation, inside, query, nearest = _head_geometry(tuple(map(tuple, positions)), resolution)
    values = np.asarray(values, dtype=np.float64)
    cubic = CloughTocher2DInterpolator(triangulation, values)(query)
    grid = np.full(inside.shape, np.nan)
    grid[inside] = np.where(np.isnan(cubic), values[nearest], cubic)
    return grid


def running_accuracy(
    predictions: Sequence[tuple[int, int, str]], trials: Sequence[tuple[int, int, str]]
) -> tuple[float | None, int]:
    """Share of predictions (window start, end, label) matching the trial that holds the window by
    gold's labelling rule (:func:`~dsp.labels.label_windows`); (None, 0) while no window is
    known to lie in a trial."""
    if not predictions or not trials:
        return None, 0
    windows = pd.DataFrame(list(predictions), columns=["window_start_us", "window_end_us", "label"])
    intervals = pd.DataFrame(list(trials), columns=["start_us", "end_us", "label"])
    truth = label_windows(windows.assign(session_id=""), intervals.assign(session_id=""))
    known = pd.notna(truth)
    total = int(known.sum())
    hits = int((truth[known] == windows["label"].to_numpy(object)[known]).sum())
    return (hits / total if total else None), total


# --- a tab's own signal controls -----------------------------------------------------------------

LineChoice = Literal["off", "notch", "bandstop"]
LINE_CHOICES: tuple[LineChoice, ...] = ("off", "notch", "bandstop")


@dataclass(frozen=True)
class TraceFilter:
    """A tab's filter, in the lake's terms (it is a :class:`dsp.filters.FilterParams`)."""

    band_low_hz: float
    band_high_hz: float
    notch_hz: float | None
    line_filter: LineFilter = "notch"
    notch_q: float = 30.0
    bandstop_width_hz: float = 2.0
    bandstop_order: int = 2


def trace_filter(
    band_low_hz: float, band_high_hz: float, line: LineChoice, centre_hz: float, width_hz: float, order: int
) -> TraceFilter:
    """The filter a tab's controls describe: one width for both line filters (the notch's -3 dB
    width sets its Q, the band-stop's edges are centre +- width / 2). Raises ValueError, naming the
    control, for values no filter can have."""
    if line not in LINE_CHOICES:
        raise ValueError(f"line filter {line!r} is not one of {', '.join(LINE_CHOICES)}")
    for name, value in (("band-pass low", band_low_hz), ("band-pass high", band_high_hz), ("line width", width_hz)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of Hz, got {value}")
    if line != "off" and not (math.isfinite(centre_hz) and centre_hz > 0):
        raise ValueError(f"line centre must be a positive number of Hz, got {centre_hz}")
    return TraceFilter(
        band_low_hz,
        band_high_hz,
        None if line == "off" else centre_hz,
        "bandstop" if line == "bandstop" else "notch",
        notch_q=centre_hz / width_hz if line == "notch" else 30.0,
        bandstop_width_hz=width_hz,
        bandstop_order=int(order),
    )


def fitted_filter(choice: TraceFilter, sample_rate_hz: float) -> tuple[FilterSpec, np.ndarray]:
    """The filter fitted to a session's rate and its sections; ValueError says what cannot be."""
    spec = FilterSpec.of(choice, sample_rate_hz)
    return spec, design_sos(spec)


@dataclass
class FilteredHistory:
    """One tab's filtered copy of a session's newest samples: the feed keeps the raw signal, each tab
    filters what it is pushed with its own filter, its state carried from push to push (settled on
    the first sample of each run of consecutive indices, so a tab joining a session late shows no
    DC-offset transient). Any chunking of the pushes gives the same samples."""

    sos: np.ndarray
    capacity: int
    n_channels: int
    state: np.ndarray | None = None
    next_index: int | None = None
    indices: np.ndarray = field(init=False)
    values: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.indices = np.empty(0, np.int64)
        self.values = np.empty((0, self.n_channels))

    def push(self, indices: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Filter the next samples (their sample indices, raw values); returns them filtered."""
        filtered, self.state = filter_indexed(self.sos, self.state, self.next_index, indices, raw, settle=True)
        if len(indices):
            self.next_index = int(indices[-1]) + 1
            self.indices = np.concatenate([self.indices, indices])[-self.capacity :]
            self.values = np.concatenate([self.values, filtered])[-self.capacity :]
        return filtered


def shown_channels(n_channels: int, shown: Iterable[int], solo: int | None) -> list[int]:
    """The channels a tab draws, in order: the solo channel alone, else those ticked."""
    if solo is not None and 0 <= solo < n_channels:
        return [solo]
    return sorted({i for i in shown if 0 <= i < n_channels})


def beats_and_bpm(pulse: np.ndarray, sample_rate_hz: float) -> tuple[np.ndarray, float | None]:
    """Beats (sample positions in ``pulse``) and the median-interval heart rate, None under 3 beats."""
    if len(pulse) < 2 * sample_rate_hz:
        return np.empty(0, np.int64), None
    beats = detect_beats(pulse.astype(np.float64), sample_rate_hz)
    if len(beats) < 3:
        return beats, None
    return beats, float(60.0 * sample_rate_hz / np.median(np.diff(beats)))


ROOM_VALUES = ("temperature_c", "humidity_pct", "pressure_hpa")


def sensor_rows(readings: Sequence[Mapping[str, Any]], started_us: int) -> dict[str, list[float]]:
    """Room sensor readings as columns over seconds since the session started (lab time): the
    room's temperature, humidity and pressure, and motion as the gyroscope's magnitude (rad/s).
    A value a sensor does not measure is NaN (a gap in its line)."""
    columns: dict[str, list[float]] = {"t": [], **{name: [] for name in ROOM_VALUES}, "motion": []}
    for reading in readings:
        columns["t"].append((int(reading["measured_us"]) + int(reading["clock_offset_us"]) - started_us) / 1e6)
        for name in ROOM_VALUES:
            value = reading.get(name)
            columns[name].append(math.nan if value is None else float(value))
        gyro = [reading.get(f"gyro_{axis}_rad_s") for axis in "xyz"]
        measured = [float(g) for g in gyro if g is not None]
        columns["motion"].append(math.sqrt(sum(g * g for g in measured)) if len(measured) == 3 else math.nan)
    return columns


def _fixed(value: Any, digits: int, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    rounded = round(float(value) * scale, digits)
    return f"{rounded if rounded else 0.0:.{digits}f}"  # never "-0.0"


FLEET_COLUMNS = {
    "device": "device", "state": "state", "session": "session", "rate": "Hz", "losses": "losses",
    "spool": "spool depth", "spool_mb": "spool MB", "offset": "clock offset ms", "cpu": "CPU %",
    "memory": "memory %", "soc": "Pi C", "heartbeat": "heartbeat s ago", "message": "message",
}  # fmt: skip


def fleet_rows(statuses: Mapping[str, tuple[Mapping[str, Any], float | None]]) -> dict[str, list[Any]]:
    """The fleet table: one row per device from its newest heartbeat and that heartbeat's age (s).
    Values a heartbeat does not carry (an older edge: no CPU, memory or temperature) show as -."""
    rows: dict[str, list[Any]] = {name: [] for name in FLEET_COLUMNS}
    for device, (status, age_s) in sorted(statuses.items()):
        rows["device"].append(device)
        rows["state"].append(status.get("state", "?"))
        rows["session"].append(status.get("session_id") or "-")
        rows["rate"].append(_fixed(status.get("sample_rate_hz"), 1))
        rows["losses"].append(status.get("losses", "-"))
        rows["spool"].append(status.get("spool_depth", "-"))
        rows["spool_mb"].append(_fixed(status.get("spool_bytes"), 2, 1e-6))
        rows["offset"].append(_fixed(status.get("clock_offset_us"), 1, 1e-3))
        rows["cpu"].append(_fixed(status.get("cpu_pct"), 0))
        rows["memory"].append(_fixed(status.get("memory_pct"), 0))
        rows["soc"].append(_fixed(status.get("soc_temperature_c"), 1))
        rows["heartbeat"].append(_fixed(age_s, 0))
        rows["message"].append(status.get("message") or "")
    return rows


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_COLUMNS = {"time": "time (UTC)", "device": "device", "level": "level", "logger": "logger", "message": "message"}


def log_rows(
    lines: Iterable[Mapping[str, Any]], device: str | None, min_level: str, limit: int
) -> dict[str, list[Any]]:
    """The newest ``limit`` log lines (newest first) of one device or all, at ``min_level`` or above."""
    floor = LOG_LEVELS.index(min_level) if min_level in LOG_LEVELS else 0
    picked = [
        line
        for line in lines
        if (device is None or line["device_id"] == device)
        and (LOG_LEVELS.index(line["level"]) if line["level"] in LOG_LEVELS else len(LOG_LEVELS)) >= floor
    ]
    picked.sort(key=lambda line: int(line["timestamp_us"]), reverse=True)
    picked = picked[:limit]
    return {
        "time": [
            dt.datetime.fromtimestamp(int(line["timestamp_us"]) / 1e6, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
            for line in picked
        ],
        "device": [line["device_id"] for line in picked],
        "level": [line["level"] for line in picked],
        "logger": [line["logger"] for line in picked],
        "message": [line["message"] for line in picked],
    }


def command_html(
    kind: str,
    age_s: float,
    ack: Mapping[str, Any] | None,
    ack_after_s: float | None,
    error: str | None,
    wait_s: float,
) -> str:
    """What became of a command, for the fleet view (record text escaped)."""
    if error is not None:
        return f"<b style='color:#b00'>{kind}: {html.escape(error)}</b>"
    if ack is not None:
        verdict = "ok" if ack.get("ok") else "refused"
        colour = "#070" if ack.get("ok") else "#b00"
        took = f" (ack after {ack_after_s * 1000:.0f} ms)" if ack_after_s is not None else ""
        return (
            f"<span style='color:{colour}'>{kind}: <b>{verdict}</b>: {html.escape(str(ack.get('message') or ''))}"
            f"{took}</span>"
        )
    if age_s > wait_s:
        return (
            f"<b style='color:#b00'>{kind}: no ack within {wait_s:.0f} s</b> (is the Pi running, and its clock "
            "within security.control_max_age_s of the hub?)"
        )
    return f"{kind}: sent {age_s:.1f} s ago, waiting for the device's ack..."
