"""A recording as MNE Raw, as EDF+/BDF+ (markers as annotations) and as a BIDS folder.

EDF+ stores 16-bit integers and BDF+ 24-bit integers per sample, each channel scaled between a
physical minimum and maximum. We pick a symmetric range per channel just wide enough for its data,
so the rounding error is at most half a step: range/65535 for EDF, range/16777215 for BDF (which is
float32's own precision at the channel's peak). Lost samples are written as zeros and annotated
``BAD_ACQ_SKIP`` (MNE's convention); so is the padding of the last data record.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batch_jobs.formats import EXPORT_FORMATS
from batch_jobs.recording import Recording, RecordingError, annotations
from batch_jobs.xdf import XdfStream, offsets_every, write_xdf

log = logging.getLogger(__name__)

SKIP = "BAD_ACQ_SKIP"
MNE_TYPES = {"eeg": "eeg", "eog": "eog", "emg": "emg", "ecg": "ecg", "pulse": "bio", "stim": "stim"}
TO_VOLTS = {"uV": 1e-6, "µV": 1e-6, "mV": 1e-3, "V": 1.0, "nV": 1e-9}
DIGITAL_RANGE = {"edf": (-32768, 32767), "bdf": (-8388608, 8388607)}


def _volts_per_unit(recording: Recording) -> float:
    units = recording.session.get("units", "uV")
    if units not in TO_VOLTS:
        raise RecordingError(f"session units {units!r} are not a voltage unit ({', '.join(TO_VOLTS)})")
    return TO_VOLTS[units]


def skipped_spans(recording: Recording) -> list[tuple[int, int]]:
    """(first, stop) sample index of each run of lost samples."""
    spans, previous = [], 0
    for first, stop in recording.runs():
        if first > previous:
            spans.append((previous, first))
        previous = stop
    if previous < recording.n_samples:
        spans.append((previous, recording.n_samples))
    return spans


def to_mne(recording: Recording) -> Any:
    """``mne.io.RawArray`` in volts (the session's units apply to every channel), pulse as ``bio``,
    other non-EEG channels as ``misc``; montage positions; markers and lost samples as annotations."""
    import mne

    recording.validate()
    scale = _volts_per_unit(recording)
    types = [MNE_TYPES.get(t, "misc") for t in recording.channel_types]
    info = mne.create_info(recording.channel_names, recording.sample_rate_hz, types)
    data = recording.samples.T.astype(np.float64) * scale
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_meas_date(dt.datetime.fromtimestamp(recording.lab_start_us() / 1e6, dt.UTC))
    with raw.info._unlock():
        raw.info["description"] = f"neurolake session {recording.session_id}"
        raw.info["device_info"] = {"type": str(recording.session.get("board", "")), "model": recording.device_id}
        if recording.session.get("subject_id"):
            raw.info["subject_info"] = {"his_id": str(recording.session["subject_id"])}
    montage = recording.session.get("montage") or "standard_1020"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            raw.set_montage(montage, on_missing="ignore", verbose="error")
        except ValueError as exc:
            log.warning("session %s: montage %s not applied: %s", recording.session_id, montage, exc)
    onsets, durations, texts = [], [], []
    for onset, duration, label in annotations(recording):
        onsets.append(onset), durations.append(duration), texts.append(label)
    fs = recording.sample_rate_hz
    for first, stop in skipped_spans(recording):
        onsets.append(first / fs), durations.append((stop - first) / fs), texts.append(SKIP)
    if onsets:
        raw.set_annotations(mne.Annotations(onsets, durations, texts, orig_time=raw.info["meas_date"]))
    return raw


def _header_number(value: float) -> str:
    """``value`` as EDF writes it: at most 8 ASCII characters, no exponent."""
    for decimals in range(6, -1, -1):
        text = f"{value:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{value:.0f}"
        if len(text) <= 8:
            return text
    raise RecordingError(f"value {value} does not fit in an EDF header field (8 characters)")


def physical_range(column: np.ndarray) -> float:
    """R of a symmetric range +-R just above the column's peak: 3 significant digits (fewer when
    the EDF header's 8 characters, minus sign included, cannot hold them), never below the peak."""
    peak = float(np.max(np.abs(column))) if column.size else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return 1.0
    if peak > 9_990_000:
        raise RecordingError(
            f"a channel peaks at {peak:g}, beyond what an EDF header can scale; export in larger units"
        )
    digits = 2 - math.floor(math.log10(peak))
    while True:
        scaled = (
            math.ceil(peak * 10**digits) / 10**digits if digits >= 0 else math.ceil(peak / 10**-digits) * 10**-digits
        )
        value = float(_header_number(-scaled).lstrip("-"))
        if value >= peak:
            return value
        digits -= 1


def _labels(recording: Recording) -> list[str]:
    labels = [f"EEG {n}" if t == "eeg" else n for n, t in zip(recording.channel_names, recording.channel_types)]
    too_long = [label for label in labels if len(label) > 16]
    if too_long:
        raise RecordingError(f"EDF channel labels are at most 16 characters: {', '.join(too_long)}")
    return labels


def write_edf(
    recording: Recording, path: Path, fmt: str = "edf", progress: Callable[[int], None] | None = None
) -> Path:
    """EDF+ (16-bit) or BDF+ (24-bit) with the markers and lost samples as annotations."""
    import pyedflib

    recording.validate()
    fs = recording.sample_rate_hz
    if abs(fs - round(fs)) > 1e-9:
        raise RecordingError(
            f"EDF data records need a whole number of samples per second; {fs} Hz has none (resample first)"
        )
    spr = int(round(fs))
    digital_min, digital_max = DIGITAL_RANGE[fmt]
    padded = -recording.n_samples % spr
    data = np.zeros((recording.n_samples + padded, recording.samples.shape[1]), np.float64)
    data[: recording.n_samples] = np.where(recording.present_mask[:, None], recording.samples, 0.0)
    start_us = recording.lab_start_us()
    start = dt.datetime.fromtimestamp(start_us // 1_000_000, dt.UTC).replace(tzinfo=None)
    headers, digital = [], []
    for column, label, channel_type in zip(data.T, _labels(recording), recording.channel_types):
        peak = physical_range(column)
        lo, hi = -peak, peak
        steps = (column - lo) / (hi - lo) * (digital_max - digital_min) + digital_min
        digital.append(np.clip(np.rint(steps), digital_min, digital_max).astype(np.int32))
        headers.append(
            {
                "label": label,
                "dimension": recording.session.get("units", "uV"),
                "sample_frequency": spr,
                "physical_min": lo,
                "physical_max": hi,
                "digital_min": digital_min,
                "digital_max": digital_max,
                "transducer": channel_type,
                "prefilter": "",
            }
        )
    file_type = pyedflib.FILETYPE_EDFPLUS if fmt == "edf" else pyedflib.FILETYPE_BDFPLUS
    writer = pyedflib.EdfWriter(str(path), len(headers), file_type=file_type)
    try:
        writer.setSignalHeaders(headers)
        writer.setStartdatetime(start)
        writer.setPatientCode(_edf_text(recording.session.get("subject_id") or "X"))
        writer.setEquipment(_edf_text(str(recording.session.get("board", ""))))
        writer.setRecordingAdditional(_edf_text(f"neurolake {recording.session_id}")[:40])
        # pyedflib 0.1.42 passes microseconds*100 where edflib wants units of 100 ns (so starts
        # with >= 0.1 s are refused): set the sub-second start ourselves, after the last setter.
        from pyedflib._extensions._pyedflib import set_starttime_subsecond

        if set_starttime_subsecond(writer.handle, (start_us % 1_000_000) * 10) != 0:
            raise RecordingError(f"EDF writer refused the sub-second start time of {recording.session_id}")
        for onset, duration, label in annotations(recording):
            writer.writeAnnotation(onset, duration, label)
        for first, stop in skipped_spans(recording) + (
            [(recording.n_samples, recording.n_samples + padded)] if padded else []
        ):
            writer.writeAnnotation(first / fs, (stop - first) / fs, SKIP)
        # Whole data records at a time: a progress bar moves and memory stays bounded.
        step = spr * 60
        for begin in range(0, data.shape[0], step):
            writer.writeSamples([d[begin : begin + step] for d in digital], digital=True)
            if progress:
                progress(min(step, recording.n_samples - begin) if begin < recording.n_samples else 0)
    finally:
        writer.close()
    return path


def _edf_text(text: str) -> str:
    """EDF header text: printable ASCII, spaces as underscores (EDF+ separates subfields by space)."""
    return "".join(c if 32 < ord(c) < 127 else "_" for c in text)


def write_bids(recording: Recording, root: Path, line_freq_hz: float | None, fmt: str = "EDF") -> Path:
    """A BIDS EEG dataset (mne-bids): the recording, channels, events and sidecars."""
    import mne_bids

    raw = to_mne(recording)
    with raw.info._unlock():
        raw.info["line_freq"] = line_freq_hz
    subject = _bids_label(recording.session.get("subject_id") or recording.device_id)
    task = _bids_label(recording.session.get("task") or "recording")
    session = _bids_label(recording.session_id)
    path = mne_bids.BIDSPath(subject=subject, session=session, task=task, datatype="eeg", root=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne_bids.write_raw_bids(raw, path, format=fmt, allow_preload=True, overwrite=False, verbose="error")
    return path.fpath


def _bids_label(text: str) -> str:
    """BIDS labels are alphanumeric only."""
    return "".join(c for c in text if c.isalnum()) or "unknown"


def xdf_streams(
    recording: Recording, sensors: pd.DataFrame | None = None, predictions: pd.DataFrame | None = None
) -> list[XdfStream]:
    """The session's streams for XDF: EEG on the device clock with the edge's clock offsets; markers,
    room sensors (silver.sensor_readings) and predictions (gold.predictions) in lab time."""
    present = recording.present_mask
    device_us = recording.device_times_us[present]
    names = recording.channel_names
    streams = [
        XdfStream(
            f"{recording.session_id} EEG",
            "EEG",
            names,
            device_us / 1e6,
            recording.samples[present].astype(np.float32),
            nominal_srate=recording.sample_rate_hz,
            channel_types=recording.channel_types,
            unit=str(recording.session.get("units", "uV")),
            clock_offsets=offsets_every(device_us, recording.clock_offset_us[present]),
            source_id=f"neurolake-{recording.session_id}-eeg",
        )
    ]
    markers = sorted(recording.markers, key=lambda m: (m["timestamp_us"], m.get("seq", 0)))
    streams.append(
        XdfStream(
            f"{recording.session_id} markers",
            "Markers",
            ["marker"],
            np.array([m["timestamp_us"] / 1e6 for m in markers], dtype=np.float64),
            [
                [f"{m['event']} {m['label']}" + (f" {m['duration_s']:g}" if m.get("duration_s") else "")]
                for m in markers
            ],
            source_id=f"neurolake-{recording.session_id}-markers",
        )
    )
    if sensors is not None and not sensors.empty:
        sensors = sensors.sort_values("time_us")
        columns = [c for c in sensors.columns if c.endswith(("_c", "_pct", "_hpa", "_g", "_rad_s"))]
        streams.append(
            XdfStream(
                f"{recording.session_id} room sensors",
                "Environment",
                columns,
                sensors["time_us"].to_numpy(np.float64) / 1e6,
                sensors[columns].to_numpy(np.float64),
                source_id=f"neurolake-{recording.session_id}-sensors",
            )
        )
    if predictions is not None and not predictions.empty:
        predictions = predictions.sort_values("window_end_us")
        streams.append(
            XdfStream(
                f"{recording.session_id} predictions",
                "Markers",
                ["label"],
                predictions["window_end_us"].to_numpy(np.float64) / 1e6,
                [[str(label)] for label in predictions["label"]],
                source_id=f"neurolake-{recording.session_id}-predictions",
            )
        )
    return streams


def export(
    recording: Recording,
    fmt: str,
    out_dir: Path,
    line_freq_hz: float | None = None,
    progress: Callable[[int], None] | None = None,
    sensors: pd.DataFrame | None = None,
    predictions: pd.DataFrame | None = None,
) -> list[Path]:
    """Write into ``out_dir`` (which must be empty or absent), through a temporary folder that is
    moved into place at the end: an export that fails leaves nothing behind."""
    if fmt not in EXPORT_FORMATS:
        raise RecordingError(f"unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RecordingError(
            f"--out {out_dir} is not an empty directory; give a new or empty one (nothing was written)"
        )
    recording.validate()  # the session id becomes a file name: validate() refuses "../x"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if fmt == "bids":
            write_bids(recording, staging, line_freq_hz)
            if progress:
                progress(recording.n_samples)
        elif fmt == "xdf":
            write_xdf(staging / f"{recording.session_id}.xdf", xdf_streams(recording, sensors, predictions))
            if progress:
                progress(recording.n_samples)
        else:
            write_edf(recording, staging / f"{recording.session_id}.{fmt}", fmt, progress)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(p for p in out_dir.rglob("*") if p.is_file())
