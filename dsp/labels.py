"""Window labels from lab-time intervals: one mechanism for every label source.

A label source turns its stream into intervals ``(session_id, start_us, end_us, label)``: stimulus
markers (a START and its duration) or a room sensor (runs of readings classified alike, e.g. still
or moving from the gyroscope). A window gets an interval's label only if it lies wholly inside it;
windows that straddle a change, or lie outside every interval, stay unlabelled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INTERVAL_COLUMNS = ["session_id", "start_us", "end_us", "label"]
REST_LABEL = "rest"


def intervals_from_markers(markers: pd.DataFrame) -> pd.DataFrame:
    """START markers with a duration (``silver.markers``: session_id, time_us, event, label,
    duration_s); a START without duration ends at the same trial's END marker."""
    if markers.empty:
        return pd.DataFrame(columns=INTERVAL_COLUMNS)
    markers = markers.drop_duplicates(subset=["session_id", "time_us", "event", "label"])
    starts = markers[markers["event"] == "START"].copy()
    ends = markers[markers["event"] == "END"]
    duration_us = (starts["duration_s"].astype(float) * 1e6).round()
    starts["end_us"] = starts["time_us"] + duration_us
    missing = starts["end_us"].isna()
    if missing.any() and "trial" in markers:
        end_of = ends.set_index(["session_id", "trial"])["time_us"]
        keys = list(zip(starts.loc[missing, "session_id"], starts.loc[missing, "trial"]))
        starts.loc[missing, "end_us"] = [end_of.get(key, np.nan) for key in keys]
    starts = starts.dropna(subset=["end_us"])
    return pd.DataFrame(
        {
            "session_id": starts["session_id"].to_numpy(),
            "start_us": starts["time_us"].astype(np.int64).to_numpy(),
            "end_us": starts["end_us"].astype(np.int64).to_numpy(),
            "label": starts["label"].to_numpy(),
        }
    )


def intervals_from_motion(readings: pd.DataFrame, gyro_threshold_rad_s: float) -> pd.DataFrame:
    """Still/moving runs from ``silver.sensor_readings`` (session_id, time_us, gyro_*_rad_s).

    Each reading stands for the time until the next one; consecutive readings with the same class
    merge into one interval.
    """
    needed = ["gyro_x_rad_s", "gyro_y_rad_s", "gyro_z_rad_s"]
    readings = readings.dropna(subset=needed)
    rows = []
    for session, group in readings.sort_values("time_us").groupby("session_id", sort=False):
        times = group["time_us"].to_numpy(np.int64)
        if len(times) < 2:
            continue
        speed = np.sqrt(np.sum(group[needed].to_numpy(float) ** 2, axis=1))
        moving = speed > gyro_threshold_rad_s
        change = np.flatnonzero(np.diff(moving.astype(np.int8))) + 1
        bounds = np.concatenate([[0], change, [len(times) - 1]])
        for begin, end in zip(bounds[:-1], bounds[1:]):
            if times[end] > times[begin]:
                rows.append((session, int(times[begin]), int(times[end]), "moving" if moving[begin] else "still"))
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def label_windows(windows: pd.DataFrame, intervals: pd.DataFrame) -> np.ndarray:
    """Label per window (session_id, window_start_us, window_end_us), None when not wholly inside
    exactly one interval."""
    labels = np.full(len(windows), None, dtype=object)
    if windows.empty or intervals.empty:
        return labels
    by_session = {s: g.sort_values("start_us") for s, g in intervals.groupby("session_id")}
    for session, positions in windows.groupby("session_id").indices.items():
        group = by_session.get(session)
        if group is None:
            continue
        starts = group["start_us"].to_numpy(np.int64)
        ends = group["end_us"].to_numpy(np.int64)
        names = group["label"].to_numpy(object)
        w0 = windows["window_start_us"].to_numpy(np.int64)[positions]
        w1 = windows["window_end_us"].to_numpy(np.int64)[positions]
        # The last interval starting at or before the window's start is the only one that can hold it.
        candidate = np.searchsorted(starts, w0, side="right") - 1
        ok = candidate >= 0
        safe = np.clip(candidate, 0, None)
        ok &= w1 < ends[safe]
        # A later interval that begins inside the window (overlapping intervals) spoils it.
        following = np.clip(safe + 1, 0, len(starts) - 1)
        ok &= ~((safe + 1 < len(starts)) & (starts[following] <= w1))
        labels[positions[ok]] = names[safe[ok]]
    return labels


def stimulus_labels(windows: pd.DataFrame, markers: pd.DataFrame) -> np.ndarray:
    """Gold's label per window: the stimulus shown for the whole window (``label_windows`` over the
    markers' intervals), ``REST_LABEL`` for a window that touches no trial and ends before a later
    trial starts (only a later trial proves the protocol went on past it), else None."""
    intervals = intervals_from_markers(markers)
    labels = label_windows(windows, intervals)
    if windows.empty or intervals.empty:
        return labels
    for session, positions in windows.groupby("session_id").indices.items():
        group = intervals[intervals["session_id"] == session]
        if group.empty:
            continue
        starts = group["start_us"].to_numpy(np.int64)
        ends = group["end_us"].to_numpy(np.int64)
        w0 = windows["window_start_us"].to_numpy(np.int64)[positions]
        w1 = windows["window_end_us"].to_numpy(np.int64)[positions]
        touches = ((starts[None, :] < w1[:, None]) & (w0[:, None] < ends[None, :])).any(axis=1)
        rest = ~touches & (w1 < starts.max()) & pd.isna(labels[positions])
        labels[positions[rest]] = REST_LABEL
    return labels
