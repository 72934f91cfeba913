"""Recordings from files: BrainFlow CSV, OpenBCI GUI text (v5), EDF/EDF+/BDF/BDF+, GDF (BNCI
Horizon's format, through MNE) and XDF.

Each reader turns a file into a validated ``Recording`` before anything is written, so a file that
is the wrong type, lacks the channels asked for or holds no EEG gives one clear error and leaves the
lake untouched. Voltages are converted to microvolts (the lake's unit). EEG channel labels become
standard electrode names (``EEG FP1-REF`` -> ``Fp1``, dsp/channels.py); what was renamed is kept in
the session's metadata (``channel_renames``, JSON) and printed by ``neurolake import``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batch_jobs.formats import IMPORT_FORMATS
from batch_jobs.recording import Recording, RecordingError, markers_from_annotations, recording_from_arrays
from dsp.channels import ChannelNaming, normalise_channel_names, standard_name

log = logging.getLogger(__name__)

EXTENSIONS = {".edf": "edf", ".bdf": "bdf", ".gdf": "gdf", ".xdf": "xdf", ".xdfz": "xdf"}
TO_MICROVOLTS = {"uv": 1.0, "µv": 1.0, "microvolts": 1.0, "mv": 1e3, "v": 1e6, "volts": 1e6, "nv": 1e-3}
SKIP = "BAD_ACQ_SKIP"
# EDF+ signal label prefixes (the standard's "type" texts) and what they are here.
EDF_TYPES = {"EEG": "eeg", "EOG": "eog", "EMG": "emg", "ECG": "ecg", "PPG": "pulse", "PULSE": "pulse"}
NEUROLAKE_TYPES = ("eeg", "eog", "emg", "ecg", "pulse", "aux", "accel", "stim", "misc")


@dataclass(frozen=True)
class ImportOptions:
    subject: str | None = None
    task: str | None = None
    session_id: str | None = None
    device_id: str | None = None
    board: str | None = None  # BrainFlow CSV / OpenBCI: which board wrote the file
    channels: tuple[str, ...] = ()  # names (unnamed formats) or the channels to keep (named ones)
    montage: str = "standard_1020"
    stream: str | None = None  # XDF: the EEG stream's name


def detect_format(path: Path) -> str:
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    if path.suffix.lower() in EXTENSIONS:
        return EXTENSIONS[path.suffix.lower()]
    with path.open("rb") as handle:
        head = handle.read(4096)
    text = head.decode("utf-8", errors="replace")
    if text.startswith("%OpenBCI") or "\n%Sample Rate" in text or text.startswith("%Number of channels"):
        return "openbci"
    if head.startswith(b"0       ") or head[:1] == b"\xff" and head[1:8] == b"BIOSEMI":
        return "bdf" if head[:1] == b"\xff" else "edf"
    if head.startswith(b"GDF "):
        return "gdf"
    first_line = text.splitlines()[0] if text.strip() else ""
    try:
        values = [float(v) for v in first_line.split("\t")]
        if len(values) > 1:
            return "brainflow"
    except ValueError:
        pass
    raise RecordingError(
        f"{path}: cannot tell what kind of recording this is (expected .edf, .bdf, .gdf, .xdf, a BrainFlow "
        f"CSV or an OpenBCI GUI .txt); give --format {'|'.join(IMPORT_FORMATS)} if it is one of these"
    )


def read_recording(path: Path, fmt: str | None = None, options: ImportOptions = ImportOptions()) -> Recording:
    fmt = fmt or detect_format(path)
    if fmt not in IMPORT_FORMATS:
        raise RecordingError(f"unknown format {fmt!r}; choose {', '.join(IMPORT_FORMATS)}")
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    reader: Callable[[Path, ImportOptions, str], Recording] = {
        "brainflow": _read_brainflow,
        "openbci": _read_openbci,
        "edf": _read_edf,
        "bdf": _read_edf,
        "gdf": _read_gdf,
        "xdf": _read_xdf,
    }[fmt]
    recording = reader(path, options, _digest(path))
    naming = normalise_channel_names(recording.channel_names, recording.channel_types, standard_electrodes())
    recording.session["channel_names"] = list(naming.names)
    recording.session["metadata"] = {
        **recording.session["metadata"],
        "source_file": path.name,
        "source_format": fmt,
        **naming_metadata(naming),
    }
    return recording.validate()


def naming_metadata(naming: ChannelNaming) -> dict[str, str]:
    """What the import did to the channel labels, as session metadata (string values)."""
    metadata = {"channel_renames": json.dumps(naming.renamed)}
    if naming.kept or naming.duplicates:
        metadata["channels_not_standard"] = json.dumps([*naming.kept, *naming.duplicates])
    return metadata


@functools.lru_cache(maxsize=1)
def standard_electrodes() -> tuple[str, ...]:
    """Electrode names as MNE's standard_1005 montage spells them (10-20 and 10-05)."""
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE 1.13 renames the montage (colin27_1005) with a warning
        return tuple(mne.channels.make_standard_montage("standard_1005").ch_names)


def _pick(described: list[tuple[int, str, str]], wanted: tuple[str, ...], what: str) -> list[tuple[int, str, str]]:
    """The channels ``--channels`` asks for, by the file's label or by its standard name."""
    standard = {name.lower(): name for name in standard_electrodes()}
    by_name: dict[str, tuple[int, str, str]] = {}
    for item in described:
        by_name.setdefault(item[1], item)
        by_name.setdefault(standard_name(item[1], standard) or item[1], item)
    missing = [c for c in wanted if c not in by_name]
    if missing:
        raise RecordingError(f"{what}: no channel {', '.join(missing)}; it has {', '.join(n for _, n, _ in described)}")
    return [by_name[c] for c in wanted]


def _digest(path: Path) -> str:
    sha = hashlib.sha1()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _ids(options: ImportOptions, digest: str, start_us: int) -> tuple[str, str]:
    """Defaults that depend only on the file: importing it again names the same session."""
    device = options.device_id or f"import-{digest[:8]}"
    return options.session_id or f"{device}-{start_us // 1000}", device


def _names_for(columns: int, options: ImportOptions, board_names: list[str] | None, what: str) -> list[str]:
    if options.channels:
        if len(options.channels) != columns:
            raise RecordingError(
                f"{what} has {columns} EEG columns but --channels names "
                f"{len(options.channels)}; give exactly one name per column"
            )
        return list(options.channels)
    if board_names and len(board_names) == columns:
        return board_names
    return [f"EXG{i}" for i in range(columns)]


def _brainflow_board(name: str | None, what: str) -> dict[str, Any]:
    from edge_producers.devices.eeg import BOARD_IDS, brainflow_module

    if not name:
        raise RecordingError(
            f"{what} does not say which board recorded it; give --board "
            f"({', '.join(b for b in BOARD_IDS if b != 'playback')})"
        )
    if name not in BOARD_IDS or name == "playback":
        raise RecordingError(f"--board {name!r} is not one of {', '.join(b for b in BOARD_IDS if b != 'playback')}")
    shim = brainflow_module()
    descr = shim.BoardShim.get_board_descr(getattr(shim.BoardIds, BOARD_IDS[name]).value)
    return {**descr, "board": name}


def _read_brainflow(path: Path, options: ImportOptions, digest: str) -> Recording:
    """``DataFilter.write_file`` output: one row per sample, one tab-separated column per board row."""
    board = _brainflow_board(options.board, f"{path.name} (a BrainFlow CSV)")
    try:
        table = np.loadtxt(path, delimiter="\t", ndmin=2)
    except ValueError as exc:
        raise RecordingError(f"{path}: not a BrainFlow CSV (tab-separated numbers): {exc}") from None
    if table.shape[1] != board["num_rows"]:
        raise RecordingError(
            f"{path}: {table.shape[1]} columns per sample, but board {board['board']} writes "
            f"{board['num_rows']}; is --board right?"
        )
    eeg_rows = list(board["eeg_channels"])
    names = board.get("eeg_names", "").split(",") if board.get("eeg_names") else None
    channel_names = _names_for(len(eeg_rows), options, names, path.name)
    times = np.rint(table[:, board["timestamp_channel"]] * 1e6).astype(np.int64)
    marker_column = table[:, board["marker_channel"]] if "marker_channel" in board else np.zeros(len(table))
    markers = [(int(times[i]), "INSTANT", f"marker_{marker_column[i]:g}", None) for i in np.nonzero(marker_column)[0]]
    session_id, device_id = _ids(options, digest, int(times[0]))
    return recording_from_arrays(
        session_id=session_id,
        device_id=device_id,
        samples=table[:, eeg_rows],
        sample_rate_hz=float(board["sampling_rate"]),
        channel_names=channel_names,
        channel_types=["eeg"] * len(eeg_rows),
        start_us=int(times[0]),
        board=str(board.get("name", board["board"])),
        device_times_us=times,
        markers=markers,
        subject_id=options.subject,
        task=options.task,
        montage=options.montage,
    )


_OPENBCI_BOARDS = {"cytondaisy": "cyton_daisy", "cyton": "cyton", "ganglion": "ganglion", "synthetic": "synthetic"}


def _read_openbci(path: Path, options: ImportOptions, digest: str) -> Recording:
    """OpenBCI GUI v5 text: ``%`` header lines, a column header line, comma-separated rows."""
    import pandas as pd

    header: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        skip = 0
        for line in handle:
            if not line.startswith("%"):
                break
            skip += 1
            key, _, value = line[1:].partition("=")
            header[key.strip().lower()] = value.strip()
    if "sample rate" not in header:
        raise RecordingError(f"{path}: no '%Sample Rate = ... Hz' header line; not an OpenBCI GUI v5 recording")
    try:
        rate = float(header["sample rate"].split()[0])
        frame = pd.read_csv(path, skiprows=skip, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as exc:
        raise RecordingError(f"{path}: unreadable OpenBCI GUI recording: {exc}") from None
    frame.columns = [c.strip() for c in frame.columns]
    exg = [c for c in frame.columns if c.startswith("EXG Channel")]
    if not exg:
        raise RecordingError(f"{path}: no 'EXG Channel N' columns; it has {', '.join(frame.columns[:8])}...")
    board_text = header.get("board", "").lower().replace("_", "")
    board = options.board or next((v for k, v in _OPENBCI_BOARDS.items() if k in board_text), None)
    names = None
    if board:
        descr = _brainflow_board(board, path.name)
        names = descr.get("eeg_names", "").split(",") if descr.get("eeg_names") else None
    channel_names = _names_for(len(exg), options, names, path.name)
    extra = [c for c in frame.columns if c.startswith(("Accel Channel", "Analog Channel"))]
    samples = frame[exg + extra].to_numpy(np.float64)
    if "Timestamp" not in frame.columns:
        raise RecordingError(f"{path}: no 'Timestamp' column (unix seconds per sample)")
    times = np.rint(frame["Timestamp"].to_numpy(np.float64) * 1e6).astype(np.int64)
    markers = []
    if "Marker Channel" in frame.columns:
        values = frame["Marker Channel"].to_numpy(np.float64)
        markers = [(int(times[i]), "INSTANT", f"marker_{values[i]:g}", None) for i in np.nonzero(values)[0]]
    types = ["eeg"] * len(exg) + ["accel" if c.startswith("Accel") else "aux" for c in extra]
    session_id, device_id = _ids(options, digest, int(times[0]))
    return recording_from_arrays(
        session_id=session_id,
        device_id=device_id,
        samples=samples,
        sample_rate_hz=rate,
        channel_names=channel_names + [c.replace(" Channel ", "") for c in extra],
        channel_types=types,
        start_us=int(times[0]),
        board=header.get("board") or (board or "openbci"),
        device_times_us=times,
        markers=markers,
        subject_id=options.subject,
        task=options.task,
        montage=options.montage,
    )


def _edf_channel(label: str, transducer: str, dimension: str, montage_names: set[str]) -> tuple[str, str]:
    """(name, type) of an EDF signal: ``EEG Fp1`` is EEG Fp1 (EDF+); our own exports put the type
    in the transducer field; a bare electrode name with a voltage unit is EEG."""
    label = label.strip()
    prefix, _, rest = label.partition(" ")
    if transducer.strip() in NEUROLAKE_TYPES:
        return (rest if prefix.upper() in EDF_TYPES and rest else label), transducer.strip()
    if prefix.upper() in EDF_TYPES and rest:
        return rest.strip(), EDF_TYPES[prefix.upper()]
    if label.upper() in ("STATUS", "TRIGGER"):
        return label, "stim"
    if label in montage_names or dimension.strip().lower() in TO_MICROVOLTS:
        return label, "eeg"
    return label, "aux"


def _read_edf(path: Path, options: ImportOptions, digest: str) -> Recording:
    import mne
    import pyedflib

    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as exc:
        raise RecordingError(f"{path}: not a readable EDF/BDF file: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MNE's deprecation notice for standard_1020's name
            montage_names = set(mne.channels.make_standard_montage(options.montage).ch_names)
        headers = reader.getSignalHeaders()
        rates = [h["sample_frequency"] or h.get("sample_rate") for h in headers]
        rate = max(rates)
        keep = [i for i, r in enumerate(rates) if r == rate]
        skipped = [headers[i]["label"] for i in range(len(headers)) if i not in keep]
        if skipped:
            log.warning(
                "%s: channels %s have another sample rate than %g Hz; not imported", path.name, ", ".join(skipped), rate
            )
        described = [
            (
                i,
                *_edf_channel(
                    headers[i]["label"], headers[i].get("transducer", ""), headers[i]["dimension"], montage_names
                ),
            )
            for i in keep
        ]
        if options.channels:
            described = _pick(described, options.channels, str(path))
        columns = []
        for i, _, kind in described:
            values = reader.readSignal(i)
            unit = headers[i]["dimension"].strip().lower()
            columns.append(
                values * TO_MICROVOLTS[unit]
                if kind in ("eeg", "eog", "emg", "ecg") and unit in TO_MICROVOLTS
                else values
            )
        start = reader.getStartdatetime().replace(microsecond=0)
        start_subsecond_us = int(reader.starttime_subsecond) // 10  # edflib: units of 100 ns
        onsets, durations, texts = reader.readAnnotations()
        subject = options.subject or (reader.getPatientCode().strip() or None)
        equipment = reader.getEquipment().strip()
    finally:
        reader.close()
    samples = np.stack(columns, axis=1)
    # EDF has local time without a zone: taken as UTC.
    start_us = int(start.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000 + start_subsecond_us
    items = [(float(o), float(d) if d and d > 0 else 0.0, str(t)) for o, d, t in zip(onsets, durations, texts)]
    present = np.ones(len(samples), bool)
    for onset, duration, text in items:
        if text == SKIP:
            present[int(round(onset * rate)) : int(round((onset + duration) * rate))] = False
    # Trailing skipped samples are a data record's padding, not part of the session.
    n = len(present) - int(np.argmax(present[::-1])) if present.any() else 0
    session_id, device_id = _ids(options, digest, start_us)
    recording = recording_from_arrays(
        session_id=session_id,
        device_id=device_id,
        samples=samples[:n],
        sample_rate_hz=float(rate),
        channel_names=[name for _, name, _ in described],
        channel_types=[kind for _, _, kind in described],
        start_us=start_us,
        board=equipment or "edf",
        markers=markers_from_annotations([i for i in items if i[2] != SKIP], start_us, n / rate),
        subject_id=subject if subject != "X" else None,
        task=options.task,
        montage=options.montage,
    )
    if not present[:n].all():
        recording.present = present[:n]
    return recording


# Signal types MNE gives GDF channels, as neurolake's channel types.
MNE_TYPES = {"eeg": "eeg", "eog": "eog", "emg": "emg", "ecg": "ecg", "stim": "stim", "misc": "misc", "bio": "aux"}


def _read_gdf(path: Path, options: ImportOptions, digest: str) -> Recording:
    """GDF 1.x/2.x (BNCI Horizon, BCI Competition) through ``mne.io.read_raw_gdf``. Labels such as
    ``EOG-left`` give the channel's type; events become markers named by their GDF event code."""
    import mne

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MNE warns about GDF header fields it fills in itself
            raw = mne.io.read_raw_gdf(str(path), preload=True, verbose="error")
    except Exception as exc:  # MNE raises bare ValueError/KeyError/struct errors for files that are not GDF
        raise RecordingError(f"{path}: not a readable GDF file: {exc}") from None
    types = []
    for name, kind in zip(raw.ch_names, raw.get_channel_types()):
        prefix = name.strip().split("-")[0].split(" ")[0].upper()
        types.append(EDF_TYPES.get(prefix, MNE_TYPES.get(kind, "misc")))
    described = [(i, name, kind) for i, (name, kind) in enumerate(zip(raw.ch_names, types))]
    if options.channels:
        described = _pick(described, options.channels, str(path))
    picks = [i for i, _, _ in described]
    # MNE holds volts; the lake microvolts (for the voltage types).
    volts = raw.get_data(picks=picks).T
    scale = np.array([1e6 if kind in ("eeg", "eog", "emg", "ecg") else 1.0 for _, _, kind in described])
    rate = float(raw.info["sfreq"])
    meas_date = raw.info["meas_date"]
    start_us = int(round(meas_date.timestamp() * 1e6)) if meas_date is not None else int(path.stat().st_mtime * 1e6)
    # A GDF event lasting a sample or less is an instant, not an interval.
    items = [
        (float(a["onset"]), float(a["duration"]) if a["duration"] > 1.5 / rate else 0.0, str(a["description"]))
        for a in raw.annotations
    ]
    session_id, device_id = _ids(options, digest, start_us)
    subject = options.subject or (raw.info.get("subject_info") or {}).get("his_id") or None
    return recording_from_arrays(
        session_id=session_id,
        device_id=device_id,
        samples=volts * scale,
        sample_rate_hz=rate,
        channel_names=[name.strip() for _, name, _ in described],
        channel_types=[kind for _, _, kind in described],
        start_us=start_us,
        board="gdf",
        markers=markers_from_annotations(items, start_us, volts.shape[0] / rate),
        subject_id=subject,
        task=options.task,
        montage=options.montage,
    )


def _read_xdf(path: Path, options: ImportOptions, digest: str) -> Recording:
    import pyxdf

    try:
        streams, header = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises bare exceptions for files that are not XDF
        raise RecordingError(f"{path}: not a readable XDF file: {exc}") from None

    def info(stream: dict[str, Any], key: str) -> str:
        value = stream["info"].get(key, [""])
        return str(value[0] if isinstance(value, list) else value)

    eeg = [s for s in streams if info(s, "type").lower() == "eeg" and len(s["time_stamps"])]
    if options.stream:
        eeg = [s for s in eeg if info(s, "name") == options.stream]
    if not eeg:
        names = ", ".join(f"{info(s, 'name')} ({info(s, 'type')})" for s in streams)
        raise RecordingError(
            f"{path}: no EEG stream{' named ' + options.stream if options.stream else ''}; streams: {names or 'none'}"
        )
    stream = max(eeg, key=lambda s: np.asarray(s["time_series"]).shape[1])
    data = np.asarray(stream["time_series"], dtype=np.float64)
    rate = float(info(stream, "nominal_srate") or 0) or float(stream["info"].get("effective_srate", 0))
    labels, units = [], []
    try:
        for channel in stream["info"]["desc"][0]["channels"][0]["channel"]:
            labels.append(channel["label"][0])
            units.append(channel.get("unit", ["microvolts"])[0])
    except (KeyError, IndexError, TypeError):
        labels, units = [f"EXG{i}" for i in range(data.shape[1])], ["microvolts"] * data.shape[1]
    if options.channels:
        missing = [c for c in options.channels if c not in labels]
        if missing:
            raise RecordingError(f"{path}: no channel {', '.join(missing)}; it has {', '.join(labels)}")
        picks = [labels.index(c) for c in options.channels]
        data, labels, units = data[:, picks], [labels[i] for i in picks], [units[i] for i in picks]
    data = data * np.array([TO_MICROVOLTS.get(u.lower(), 1.0) for u in units])
    # LSL times count from the recording host's boot; the file header says when it was written.
    origin = min(float(s["time_stamps"][0]) for s in streams if len(s["time_stamps"]))
    written = header.get("info", {}).get("datetime", [None])[0]
    wall = dt.datetime.fromisoformat(written).timestamp() if written else path.stat().st_mtime

    def to_us(t: np.ndarray) -> np.ndarray:
        return np.rint((wall + (np.asarray(t, dtype=np.float64) - origin)) * 1e6).astype(np.int64)

    times = to_us(stream["time_stamps"])
    markers = []
    for marker_stream in (s for s in streams if info(s, "type").lower() == "markers"):
        for t, value in zip(to_us(marker_stream["time_stamps"]), marker_stream["time_series"]):
            markers.append((int(t), "INSTANT", str(value[0] if isinstance(value, list | tuple) else value), None))
    session_id, device_id = _ids(options, digest, int(times[0]))
    return recording_from_arrays(
        session_id=session_id,
        device_id=device_id,
        samples=data,
        sample_rate_hz=rate,
        channel_names=labels,
        channel_types=["eeg"] * len(labels),
        start_us=int(times[0]),
        board=f"lsl:{info(stream, 'name')}",
        device_times_us=times,
        markers=markers,
        subject_id=options.subject,
        task=options.task,
        montage=options.montage,
    )
