"""A recorded session as one object: its ``session`` record, every sample, its times and markers.

Import builds one from a file, replay and export from the lake; writing it to the lake runs the
streaming job's own session processor, so a backfilled session has the same silver and gold rows a
live one would. Pure numpy here; the lake readers and writers at the bottom wrap delta-rs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import NeurolakeError
from schemas.catalog import (
    BRONZE_EEG_BLOCKS,
    BRONZE_MARKERS,
    BRONZE_SESSIONS,
    EEG_RAW,
    MARKERS,
    SESSIONS,
    SILVER_MARKERS,
)
from schemas.records import MARKER_COLUMNS, identifier_problem, marker_record, session_record
from schemas.timebase import now_us

log = logging.getLogger(__name__)

VOLTAGE_TYPES = ("eeg", "eog", "emg", "ecg")
MARKER_EVENTS = ("START", "END", "INSTANT")
DEFAULT_BLOCK_SIZE = 25


class RecordingError(NeurolakeError):
    """A recording (a file, or a session in the lake) cannot be read, written or exported."""


@dataclass
class Recording:
    """``samples[i]`` is sample index ``i`` of the session; where ``present`` is False the sample
    was lost on the way (its values are zeros and it is never written or sent as data)."""

    session: dict[str, Any]  # a `session` record (schemas/avro/session.avsc)
    samples: np.ndarray  # (n, channels) float32, in the session's units
    device_times_us: np.ndarray  # (n,) int64, the device's clock
    clock_offset_us: np.ndarray  # (n,) int64, lab clock minus device clock
    markers: list[dict[str, Any]] = field(default_factory=list)  # `marker` records, lab time
    present: np.ndarray | None = None  # (n,) bool; None: every sample present

    @property
    def session_id(self) -> str:
        return str(self.session["session_id"])

    @property
    def device_id(self) -> str:
        return str(self.session["device_id"])

    @property
    def sample_rate_hz(self) -> float:
        return float(self.session["sample_rate_hz"])

    @property
    def channel_names(self) -> list[str]:
        return list(self.session["channel_names"])

    @property
    def channel_types(self) -> list[str]:
        return list(self.session["channel_types"])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def present_mask(self) -> np.ndarray:
        return np.ones(self.n_samples, bool) if self.present is None else self.present

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate_hz

    def validate(self) -> Recording:
        """Raises a RecordingError naming the field at fault; returns self."""
        s = self.session
        for name in ("device_id", "session_id"):
            if not s.get(name):
                raise RecordingError(f"session.{name} is empty; give one (--{name.split('_')[0]})")
            problem = identifier_problem(f"session.{name}", s[name])
            if problem:
                raise RecordingError(problem)
        if not s.get("sample_rate_hz") or not np.isfinite(s["sample_rate_hz"]) or s["sample_rate_hz"] <= 0:
            raise RecordingError(f"session.sample_rate_hz must be a positive number, got {s.get('sample_rate_hz')!r}")
        if self.samples.ndim != 2 or self.samples.shape[0] == 0 or self.samples.shape[1] == 0:
            raise RecordingError(f"no samples: expected a (samples, channels) array, got shape {self.samples.shape}")
        n, channels = self.samples.shape
        if len(s["channel_names"]) != channels or len(s["channel_types"]) != channels:
            raise RecordingError(
                f"session.channel_names ({len(s['channel_names'])}) and channel_types "
                f"({len(s['channel_types'])}) must both have one entry per data column ({channels})"
            )
        if len(set(s["channel_names"])) != channels:
            twice = sorted({c for c in s["channel_names"] if s["channel_names"].count(c) > 1})
            raise RecordingError(f"channel names must be unique; {', '.join(twice)} appear more than once")
        if "eeg" not in s["channel_types"]:
            raise RecordingError("the recording has no EEG channel (channel_types holds no 'eeg')")
        if self.device_times_us.shape != (n,) or self.clock_offset_us.shape != (n,):
            raise RecordingError(f"device_times_us and clock_offset_us need one value per sample ({n})")
        if self.present is not None and self.present.shape != (n,):
            raise RecordingError(f"present needs one flag per sample ({n})")
        if not np.all(np.isfinite(self.samples[self.present_mask])):
            bad = sorted({self.channel_names[c] for c in np.nonzero(~np.isfinite(self.samples).all(axis=0))[0]})
            raise RecordingError(f"channels {', '.join(bad)} hold NaN or infinite values")
        for i, marker in enumerate(self.markers):
            if marker.get("event") not in MARKER_EVENTS:
                raise RecordingError(f"marker {i}: event {marker.get('event')!r} is not one of {MARKER_EVENTS}")
        return self

    # -- time -----------------------------------------------------------------------------------

    def lab_time_line(self) -> tuple[float, float]:
        """(intercept_us, slope_us_per_sample): the lab time of sample ``i`` is ``a + b*i``, a
        least-squares line through the present samples' device time plus offset (the dejitter)."""
        index = np.nonzero(self.present_mask)[0]
        lab = self.device_times_us[index] + self.clock_offset_us[index]
        nominal = 1e6 / self.sample_rate_hz
        if len(index) < 2:
            return float(lab[0] - index[0] * nominal), nominal
        origin = int(lab[0])
        slope, intercept = np.polyfit(index.astype(np.float64), (lab - origin).astype(np.float64), 1)
        return origin + float(intercept), float(slope)

    def lab_start_us(self) -> int:
        return int(round(self.lab_time_line()[0]))

    def onset_s(self, lab_time_us: int, line: tuple[float, float] | None = None) -> float:
        """Seconds from sample 0 at the session's nominal rate (the time base of MNE and EDF);
        pass ``lab_time_line()`` when converting many times (the fit reads every sample)."""
        intercept, slope = line or self.lab_time_line()
        return (lab_time_us - intercept) / slope / self.sample_rate_hz

    # -- blocks ---------------------------------------------------------------------------------

    def runs(self) -> list[tuple[int, int]]:
        """(first, stop) of each run of present samples."""
        mask = self.present_mask.astype(np.int8)
        edges = np.diff(np.concatenate([[0], mask, [0]]))
        return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))

    def block_records(self, block_size: int | None = None, first_seq: int = 0) -> Iterator[dict[str, Any]]:
        """The present samples as ``eeg_block`` records, in order, as a headset publishes them."""
        from schemas.records import eeg_block_record

        size = int(block_size or self.session.get("block_size") or DEFAULT_BLOCK_SIZE)
        seq = first_seq
        for first, stop in self.runs():
            for start in range(first, stop, size):
                end = min(start + size, stop)
                times = self.device_times_us[start:end]
                yield eeg_block_record(
                    device_id=self.device_id,
                    session_id=self.session_id,
                    seq=seq,
                    first_sample_index=start,
                    samples=self.samples[start:end],
                    device_times_us=times,
                    sample_rate_hz=self.sample_rate_hz,
                    produced_us=int(times[-1]),
                    clock_offset_us=int(self.clock_offset_us[end - 1]),
                    clock_rtt_us=0,
                )
                seq += 1

    def moved(self, session_id: str, device_id: str, shift_us: int) -> Recording:
        """The same data as another session of another device, ``shift_us`` later (replay)."""
        session = {
            **self.session,
            "session_id": session_id,
            "device_id": device_id,
            "started_us": int(self.session["started_us"]) + shift_us,
            "metadata": {**self.session.get("metadata", {}), "replay_of": self.session_id},
        }
        markers = [
            {**m, "session_id": session_id, "device_id": device_id, "timestamp_us": int(m["timestamp_us"]) + shift_us}
            for m in self.markers
        ]
        return replace(self, session=session, device_times_us=self.device_times_us + shift_us, markers=markers)


def recording_from_arrays(
    *,
    session_id: str,
    device_id: str,
    samples: np.ndarray,
    sample_rate_hz: float,
    channel_names: list[str],
    channel_types: list[str],
    start_us: int,
    board: str,
    device_times_us: np.ndarray | None = None,
    markers: list[tuple[int, str, str, float | None]] = (),
    subject_id: str | None = None,
    task: str | None = None,
    montage: str = "standard_1020",
    metadata: dict[str, str] | None = None,
) -> Recording:
    """A recording from plain arrays, as importers find them. ``markers`` are (lab time us, event,
    label, duration_s); without device times, samples are evenly spaced from ``start_us``."""
    from core import __version__

    n = samples.shape[0]
    if device_times_us is None:
        device_times_us = start_us + np.rint(np.arange(n) * 1e6 / sample_rate_hz).astype(np.int64)
    try:
        session = session_record(
            device_id=device_id,
            session_id=session_id,
            started_us=int(start_us),
            board=board,
            sample_rate_hz=float(sample_rate_hz),
            channel_names=list(channel_names),
            channel_types=list(channel_types),
            montage=montage,
            block_size=DEFAULT_BLOCK_SIZE,
            subject_id=subject_id,
            task=task,
            software_version=f"neurolake-import {__version__}",
            metadata=dict(metadata or {}),
        )
    except ValueError as exc:
        raise RecordingError(str(exc)) from None
    trials: dict[str, int] = {}
    marker_records = []
    for seq, (time_us, event, label, duration_s) in enumerate(sorted(markers, key=lambda m: m[0])):
        if event != "END":
            trials[label] = trials.get(label, 0) + 1
        marker_records.append(
            marker_record(
                device_id=device_id,
                session_id=session_id,
                seq=seq,
                timestamp_us=int(time_us),
                event=event,
                label=label,
                trial=trials.get(label, 0),
                stimulus_hz=stimulus_hz(label, metadata or {}),
                duration_s=duration_s,
            )
        )
    return Recording(
        session,
        np.ascontiguousarray(samples, dtype=np.float32),
        np.asarray(device_times_us, dtype=np.int64),
        np.zeros(n, np.int64),
        marker_records,
    )


def stimulus_hz(label: str, metadata: dict[str, str]) -> float | None:
    value = metadata.get(f"stimulus.{label}")
    return float(value) if value is not None else None


def annotations(recording: Recording) -> list[tuple[float, float, str]]:
    """The markers as (onset s, duration s, label): a START with its duration (or its END) is one
    interval, an INSTANT a point; an END already covered by its START adds nothing."""
    result, open_starts = [], {}
    line = recording.lab_time_line()
    for marker in sorted(recording.markers, key=lambda m: (m["timestamp_us"], m["seq"])):
        onset = recording.onset_s(int(marker["timestamp_us"]), line)
        key = (marker["label"], marker.get("trial"))
        if marker["event"] == "START":
            if marker.get("duration_s") is not None:
                result.append((onset, float(marker["duration_s"]), marker["label"]))
            else:
                open_starts[key] = (onset, len(result))
                result.append((onset, 0.0, marker["label"]))
        elif marker["event"] == "END":
            if key in open_starts:
                start, at = open_starts.pop(key)
                result[at] = (start, onset - start, marker["label"])
        else:
            result.append((onset, 0.0, marker["label"]))
    return result


def markers_from_annotations(
    items: list[tuple[float, float, str]], lab_start_us: int, duration_s: float
) -> list[tuple[int, str, str, float | None]]:
    """The inverse of ``annotations``: an interval is a START with its duration, and an END if
    that falls inside the recording (the lake never saw an END after the session stopped)."""
    result: list[tuple[int, str, str, float | None]] = []
    for onset, duration, label in items:
        at = lab_start_us + int(round(onset * 1e6))
        if duration > 0:
            result.append((at, "START", label, float(duration)))
            if onset + duration <= duration_s + 1e-6:
                result.append((at + int(round(duration * 1e6)), "END", label, None))
        else:
            result.append((at, "INSTANT", label, None))
    return result


# -- the lake ----------------------------------------------------------------------------------


def read_session(lake_root: Path, session_id: str) -> Recording:
    """A session as bronze holds it (exactly the records the lake received)."""
    import pyarrow.compute as pc

    from infra.delta import delta_dataset

    sessions, _ = delta_dataset(BRONZE_SESSIONS.path(lake_root))
    if sessions is None:
        raise RecordingError(f"no sessions in the lake at {lake_root} (bronze.sessions is empty)")
    rows = sessions.to_table(filter=pc.field("session_id") == session_id).to_pylist()
    if not rows:
        known = sessions.to_table(columns=["session_id"]).column("session_id").to_pylist()
        close = [k for k in known if session_id in k or k in session_id][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RecordingError(
            f"unknown session {session_id!r}: not in bronze.sessions{hint}; `neurolake sessions` lists them"
        )
    session = {k: v for k, v in rows[-1].items() if not k.startswith("kafka_") and k not in ("ingest_us", "date")}
    session["metadata"] = dict(session.get("metadata") or {})
    blocks_ds, _ = delta_dataset(BRONZE_EEG_BLOCKS.path(lake_root))
    columns = ["seq", "first_sample_index", "n_samples", "n_channels", "data", "device_times_us", "clock_offset_us"]
    blocks = (
        blocks_ds.to_table(columns=columns, filter=pc.field("session_id") == session_id)
        if blocks_ds is not None
        else None
    )
    if blocks is None or blocks.num_rows == 0:
        raise RecordingError(f"session {session_id!r} has no EEG blocks in bronze.eeg_blocks")
    blocks = blocks.sort_by("first_sample_index")
    firsts = blocks.column("first_sample_index").to_numpy()
    counts = blocks.column("n_samples").to_numpy()
    n, channels = int((firsts + counts).max()), len(session["channel_names"])
    samples = np.zeros((n, channels), np.float32)
    times = np.zeros(n, np.int64)
    offsets = np.zeros(n, np.int64)
    present = np.zeros(n, bool)
    for first, count, width, data, stamps, offset in zip(
        firsts,
        counts,
        blocks.column("n_channels").to_numpy(),
        blocks.column("data").to_pylist(),
        blocks.column("device_times_us").to_pylist(),
        blocks.column("clock_offset_us").to_numpy(),
    ):
        if width != channels:
            raise RecordingError(f"session {session_id!r}: a block has {width} channels, the session record {channels}")
        samples[first : first + count] = np.frombuffer(data, "<f4").reshape(count, width)
        times[first : first + count] = np.frombuffer(stamps, "<i8")
        offsets[first : first + count] = offset
        present[first : first + count] = True
    markers_ds, _ = delta_dataset(BRONZE_MARKERS.path(lake_root))
    markers = []
    if markers_ds is not None:
        markers = (
            markers_ds.to_table(columns=list(MARKER_COLUMNS), filter=pc.field("session_id") == session_id)
            .sort_by([("timestamp_us", "ascending"), ("seq", "ascending")])
            .to_pylist()
        )
    return Recording(session, samples, times, offsets, markers, None if present.all() else present)


def list_sessions(lake_root: Path) -> list[dict[str, Any]]:
    """Every session in bronze with its size: samples (present), markers, duration."""
    from infra.delta import delta_dataset

    sessions, _ = delta_dataset(BRONZE_SESSIONS.path(lake_root))
    if sessions is None:
        return []
    columns = [
        "session_id",
        "device_id",
        "subject_id",
        "task",
        "started_us",
        "board",
        "sample_rate_hz",
        "channel_names",
    ]
    rows = {r["session_id"]: r for r in sessions.to_table(columns=columns).to_pylist()}
    counts: dict[str, int] = {}
    blocks, _ = delta_dataset(BRONZE_EEG_BLOCKS.path(lake_root))
    if blocks is not None:
        grouped = (
            blocks.to_table(columns=["session_id", "n_samples"])
            .group_by("session_id")
            .aggregate([("n_samples", "sum")])
        )
        counts = dict(zip(grouped.column("session_id").to_pylist(), grouped.column("n_samples_sum").to_pylist()))
    markers: dict[str, int] = {}
    markers_ds, _ = delta_dataset(BRONZE_MARKERS.path(lake_root))
    if markers_ds is not None:
        grouped = markers_ds.to_table(columns=["session_id"]).group_by("session_id").aggregate([([], "count_all")])
        markers = dict(zip(grouped.column("session_id").to_pylist(), grouped.column("count_all").to_pylist()))
    result = []
    for session_id, row in sorted(rows.items(), key=lambda kv: kv[1]["started_us"]):
        samples = int(counts.get(session_id, 0))
        result.append(
            {
                "session_id": session_id,
                "device_id": row["device_id"],
                "subject_id": row["subject_id"],
                "task": row["task"],
                "started_us": row["started_us"],
                "board": row["board"],
                "sample_rate_hz": row["sample_rate_hz"],
                "channels": len(row["channel_names"]),
                "samples": samples,
                "duration_s": round(samples / row["sample_rate_hz"], 3),
                "markers": int(markers.get(session_id, 0)),
            }
        )
    return result


def bronze_table(record_type: str, records: list[dict[str, Any]], topic: str, source: str = "import"):  # type: ignore[no-untyped-def]
    """Records as bronze rows, as if read from ``<source>:<topic>`` (no Kafka offsets of their own)."""
    import pyarrow as pa

    from infra.delta import utc_date
    from streaming_jobs.bronze import TIME_FIELD, bronze_schema

    now = now_us()
    # Imported records come from no spool: epoch 0, as the schema's default says.
    rows = [
        {
            "spool_epoch": 0,
            **r,
            "kafka_topic": f"{source}:{topic}",
            "kafka_partition": -1,
            "kafka_offset": int(r["seq"]),
            "ingest_us": now,
            "date": utc_date(int(r[TIME_FIELD[record_type]])),
        }
        for r in records
    ]
    table = pa.Table.from_pylist(rows, schema=bronze_schema(record_type))
    # Typed and nullable as the stream's own writes make the table: whichever writer creates a bronze
    # table, the other appends to it (delta-spark refuses a column whose type differs).
    return table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))


def write_bronze(
    lake_root: Path,
    recording: Recording,
    app: str,
    version: int = 0,
    source: str = "import",
    block_size: int | None = None,
) -> tuple[list[dict[str, Any]], Any]:
    """A recording's session, markers and EEG blocks into bronze, as if its headset had sent them
    (``kafka_topic`` is ``SOURCE:TOPIC``); each commit carries the app transaction ``(app,
    version)``, so a rerun writes nothing twice. Returns the block records and the bronze markers
    (an Arrow table; None without markers)."""
    from infra.delta import LakeTable

    LakeTable(lake_root, BRONZE_SESSIONS).append(
        bronze_table("session", [recording.session], SESSIONS, source), app, version
    )
    markers = bronze_table("marker", recording.markers, MARKERS, source) if recording.markers else None
    if markers is not None:
        LakeTable(lake_root, BRONZE_MARKERS).append(markers, app, version)
    records = list(recording.block_records(block_size))
    LakeTable(lake_root, BRONZE_EEG_BLOCKS).append(bronze_table("eeg_block", records, EEG_RAW, source), app, version)
    return records, markers


def write_session(
    lake_root: Path,
    recording: Recording,
    config: Any,
    spark: Callable[[], Any],
    checkpoint: Path | None = None,
) -> dict[str, int]:
    """Backfill a recording into bronze (session, blocks, markers); silver and gold are derived from
    bronze as for any session: here by a rebuild of this session (the streaming job's own code
    path, in the Spark session ``spark()`` makes), or by the silver/gold stream when it is running
    (it reads what bronze gained). Each bronze commit carries the app transaction
    ``import:SESSION``: a rerun writes nothing twice."""
    from batch_jobs.rebuild import rebuild
    from infra.delta import LakeTable
    from streaming_jobs.bronze import silver_projections
    from streaming_jobs.silver_gold import StateLock, rebuilds_dir

    recording.validate()
    app = f"import:{recording.session_id}"
    records, markers = write_bronze(lake_root, recording, app)
    if markers is not None:
        LakeTable(lake_root, SILVER_MARKERS).append(silver_projections({"markers": markers})["markers"], app, 0)
    counts = {
        "blocks": len(records),
        "samples": sum(r["n_samples"] for r in records),
        "markers": len(recording.markers),
        "windows": 0,
    }
    checkpoint = checkpoint or lake_root / "_checkpoints" / "silver_gold"
    probe = StateLock(rebuilds_dir(checkpoint))
    if not probe.acquire("an import"):
        log.info(
            "session %s is in bronze; the running silver/gold stream derives its silver and gold", recording.session_id
        )
        return counts
    probe.release()
    report = rebuild(spark(), lake_root, checkpoint, config, "all", [recording.session_id])
    counts["windows"] = report.rows.get("gold.eeg_windows", 0)
    return counts
