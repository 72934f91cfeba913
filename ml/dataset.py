"""Training sets from the lake: gold windows, labelled in lab time, filtered by quality, split by session.

The windows are read at one Delta version of ``gold.eeg_windows`` (recorded with every model as its
dataset version). Labels are re-derived here from ``silver.markers`` or ``silver.sensor_readings``
rather than taken from the gold ``label`` column, which is written before late markers arrive.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import NeurolakeError
from core.settings import MlSettings
from dsp.labels import intervals_from_markers, intervals_from_motion, label_windows
from infra.delta import LakeTable
from ml.features import FeatureLayoutError, windows_feature_frame
from ml.montage import ModelKey, key_for_session
from schemas.catalog import BRONZE_SESSIONS, GOLD_EEG_WINDOWS, SILVER_MARKERS, SILVER_SENSOR_READINGS

log = logging.getLogger(__name__)

KEY_COLUMNS = ["session_id", "device_id", "window_start_index", "window_end_index", "window_start_us", "window_end_us"]
WINDOW_COLUMNS = KEY_COLUMNS + [
    "band_power",
    "ssvep_hz",
    "ssvep_score",
    "railed_pct",
    "line_noise_ratio",
    "flat_channels",
]


class TrainingSetError(NeurolakeError):
    """The lake cannot give a usable training set; the message says what is missing."""


@dataclass
class TrainingSet:
    features: pd.DataFrame
    labels: np.ndarray
    sessions: np.ndarray
    keys: pd.DataFrame  # KEY_COLUMNS per row
    table_version: int
    label_source: str
    held_out_sessions: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    # The (task, montage, rate) of every session in the set (ml/montage.py); None: a lake whose
    # sessions have no session record, trained under the base model name as before.
    key: ModelKey | None = None

    @property
    def classes(self) -> list[str]:
        return sorted(map(str, set(self.labels)))

    def part(self, held_out: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        mask = np.isin(self.sessions, self.held_out_sessions)
        if not held_out:
            mask = ~mask
        return self.features[mask].reset_index(drop=True), self.labels[mask], self.sessions[mask]

    def summary(self) -> dict[str, object]:
        train_x, _, train_s = self.part(held_out=False)
        test_x, _, _ = self.part(held_out=True)
        return {
            "table_version": self.table_version,
            "label_source": self.label_source,
            "windows": len(self.labels),
            "train_windows": len(train_x),
            "held_out_windows": len(test_x),
            "train_sessions": sorted(map(str, set(train_s))),
            "held_out_sessions": self.held_out_sessions,
            "classes": self.classes,
            "dropped": self.dropped,
            "class_counts": {str(c): int(n) for c, n in zip(*np.unique(self.labels, return_counts=True))},
            "model_key": self.key.slug if self.key else None,
        }

    def save(self, path: Path) -> Path:
        """One Parquet file: features, label, session and keys, with the split in its metadata."""
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = pd.concat([self.keys.reset_index(drop=True), self.features.reset_index(drop=True)], axis=1)
        frame["label"] = self.labels
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = {
            "table_version": self.table_version,
            "label_source": self.label_source,
            "held_out_sessions": self.held_out_sessions,
            "dropped": self.dropped,
            "feature_columns": list(self.features.columns),
            "key": asdict(self.key) if self.key else None,
        }
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"neurolake.training_set": json.dumps(meta).encode()}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path

    @classmethod
    def load(cls, path: Path) -> TrainingSet:
        import json

        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"neurolake.training_set"])
        frame = table.to_pandas()
        key = meta.get("key")
        return cls(
            frame[meta["feature_columns"]],
            frame["label"].to_numpy(str),
            frame["session_id"].to_numpy(str),
            frame[KEY_COLUMNS],
            meta["table_version"],
            meta["label_source"],
            meta["held_out_sessions"],
            meta["dropped"],
            _key_from_dict(key) if key else None,
        )


def session_hash(session_id: str) -> float:
    """A stable number in [0, 1) per session: decides, once and for all, train or held out."""
    return int(hashlib.sha256(session_id.encode()).hexdigest()[:12], 16) / float(16**12)


def split_sessions(session_ids: list[str], holdout_fraction: float) -> list[str]:
    """Held-out sessions: those hashing below the fraction. With few sessions, at least one is held
    out (the lowest hash: it stays the lowest until a new session hashes lower) and one kept."""
    ranked = sorted(set(session_ids), key=session_hash)
    if len(ranked) < 2:
        raise TrainingSetError(
            f"need labelled windows from at least 2 sessions to hold one out, found {len(ranked)} "
            f"({ranked}); record another session (e.g. `neurolake edge simulate --stimulus`)"
        )
    held = [s for s in ranked if session_hash(s) < holdout_fraction] or ranked[:1]
    if len(held) == len(ranked):
        held = held[:-1]
    return sorted(map(str, held))


def label_intervals(lake_root: Path, settings: MlSettings, sessions: list[str]) -> pd.DataFrame:
    if settings.label_source == "markers":
        markers, _ = LakeTable(lake_root, SILVER_MARKERS).read_pandas(
            ["session_id", "time_us", "event", "label", "trial", "duration_s"]
        )
        markers = markers[markers["session_id"].isin(sessions)]
        if markers.empty:
            raise TrainingSetError(
                "no stimulus markers for the windows' sessions in silver.markers; run the stimulus "
                "task (`neurolake edge run` with edge.stimulus.enabled=true) or set "
                "ml.label_source=motion"
            )
        return intervals_from_markers(markers)
    readings, _ = LakeTable(lake_root, SILVER_SENSOR_READINGS).read_pandas()
    readings = readings[readings["session_id"].isin(sessions)] if not readings.empty else readings
    if readings.empty:
        raise TrainingSetError(
            "no room-sensor readings for the windows' sessions in silver.sensor_readings; enable "
            "edge.sensors.source (sense_hat or simulated) or set ml.label_source=markers"
        )
    return intervals_from_motion(readings, settings.motion_gyro_rad_s)


def quality_mask(windows: pd.DataFrame, settings: MlSettings) -> np.ndarray:
    mask: np.ndarray = (
        (windows["railed_pct"].to_numpy(float) <= settings.max_railed_pct)
        & (windows["line_noise_ratio"].to_numpy(float) <= settings.max_line_noise_ratio)
        & (windows["flat_channels"].to_numpy(int) <= settings.max_flat_channels)
    )
    return mask


def _key_from_dict(values: dict[str, Any]) -> ModelKey:
    return ModelKey(
        values["task"],
        values["montage"],
        float(values["sample_rate_hz"]),
        values.get("board", ""),
        tuple(values.get("channels", ())),
        tuple((str(label), float(hz)) for label, hz in values.get("stimulus", ())),
    )


def session_keys(lake_root: Path, sessions: list[str] | None = None) -> dict[str, ModelKey]:
    """The model key of every session with a record in bronze.sessions (the newest record wins)."""
    columns = ["session_id", "board", "sample_rate_hz", "channel_names", "channel_types", "task", "metadata"]
    frame, _ = LakeTable(lake_root, BRONZE_SESSIONS).read_pandas(columns)
    keys: dict[str, ModelKey] = {}
    for row in frame.to_dict("records"):
        if sessions is not None and row["session_id"] not in sessions:
            continue
        # A map column reads back as (key, value) pairs.
        metadata = row.get("metadata")
        row["metadata"] = dict(metadata) if metadata is not None else {}
        try:
            keys[str(row["session_id"])] = key_for_session(row)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("session %s: no model key from its record (%s)", row["session_id"], exc)
    return keys


def build_training_set(
    lake_root: Path, settings: MlSettings, version: int | None = None, key: ModelKey | None = None
) -> TrainingSet:
    """The training set of one (task, montage, rate): ``key``, or the only one the lake holds."""
    sets = build_training_sets(lake_root, settings, version, only=key)
    if len(sets) > 1:
        raise TrainingSetError(
            f"gold.eeg_windows holds {len(sets)} montages ({', '.join(str(s.key) for s in sets)}); "
            "train each (`neurolake train` trains them all) or name one"
        )
    return sets[0]


def build_training_sets(
    lake_root: Path, settings: MlSettings, version: int | None = None, only: ModelKey | None = None
) -> list[TrainingSet]:
    """One training set per (task, montage, rate) in the lake (ml/montage.py), largest first; the
    sessions' keys come from bronze.sessions. Sessions without a record there are dropped when
    others have one, and make one unkeyed set (the base model name) when none has."""
    windows, table_version = LakeTable(lake_root, GOLD_EEG_WINDOWS).read_pandas(WINDOW_COLUMNS, version)
    if table_version is None or windows.empty:
        raise TrainingSetError(
            f"gold.eeg_windows under {lake_root} has no windows yet; start the lake "
            "(`neurolake stream start all`) with a headset streaming, then train"
        )
    windows = windows.drop_duplicates(subset=["session_id", "window_start_index"]).reset_index(drop=True)
    keys = session_keys(lake_root, sorted(windows["session_id"].unique()))
    if not keys:
        return [_training_set(lake_root, settings, windows, int(table_version), {}, None)]
    keyed = windows["session_id"].isin(list(keys)).to_numpy()
    dropped = {"no_session_record": int((~keyed).sum())}
    if dropped["no_session_record"]:
        log.warning("%d windows of sessions without a session record are left out", dropped["no_session_record"])
    windows = windows[keyed].reset_index(drop=True)
    groups: dict[ModelKey, list[str]] = {}
    for session_id, session_key in keys.items():
        groups.setdefault(session_key, []).append(session_id)
    if only is not None:
        if only not in groups:
            raise TrainingSetError(
                f"no sessions of {only} in gold.eeg_windows (it holds {', '.join(map(str, groups))})"
            )
        groups = {only: groups[only]}
    sets, problems = [], []
    for group_key, ids in groups.items():
        part = windows[windows["session_id"].isin(ids)].reset_index(drop=True)
        try:
            sets.append(_training_set(lake_root, settings, part, int(table_version), dict(dropped), group_key))
        except TrainingSetError as exc:
            problems.append(f"{group_key}: {exc}")
    for problem in problems:
        log.warning("no training set for %s", problem)
    if not sets:
        raise TrainingSetError("; ".join(problems))
    return sorted(sets, key=lambda s: -len(s.labels))


def _training_set(
    lake_root: Path,
    settings: MlSettings,
    windows: pd.DataFrame,
    table_version: int,
    dropped: dict[str, int],
    key: ModelKey | None,
) -> TrainingSet:
    good = quality_mask(windows, settings)
    dropped["quality"] = int((~good).sum())
    windows = windows[good].reset_index(drop=True)
    if windows.empty:
        raise TrainingSetError(
            f"all {dropped['quality']} windows of gold.eeg_windows failed quality (ml.max_railed_pct="
            f"{settings.max_railed_pct}, ml.max_line_noise_ratio={settings.max_line_noise_ratio}, "
            f"ml.max_flat_channels={settings.max_flat_channels}); check the electrodes or relax them"
        )
    intervals = label_intervals(lake_root, settings, sorted(windows["session_id"].unique()))
    labels = label_windows(windows, intervals)
    labelled = np.array([label is not None for label in labels], dtype=bool)
    dropped["unlabelled"] = int((~labelled).sum())
    windows, labels = windows[labelled].reset_index(drop=True), labels[labelled].astype(str)
    if windows.empty:
        raise TrainingSetError(
            f"none of gold.eeg_windows' windows lies wholly inside a {settings.label_source} label "
            f"interval ({dropped['quality']} failed quality, {dropped['unlabelled']} unlabelled)"
        )
    if len(set(labels)) < 2:
        raise TrainingSetError(f"the labelled windows have one class only ({labels[0]}); need 2 or more")
    try:
        features = windows_feature_frame(windows)
    except FeatureLayoutError as exc:
        raise TrainingSetError(f"gold.eeg_windows: {exc}") from None
    sessions = windows["session_id"].to_numpy(str)
    held_out = split_sessions(list(sessions), settings.holdout_fraction)
    result = TrainingSet(
        features,
        labels,
        sessions,
        windows[KEY_COLUMNS],
        table_version,
        settings.label_source,
        held_out,
        dropped,
        key,
    )
    log.info("training set: %s", result.summary())
    return result
