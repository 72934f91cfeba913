from __future__ import annotations

import numpy as np
import pandas as pd

from dsp.labels import (
    REST_LABEL,
    intervals_from_markers,
    intervals_from_motion,
    label_windows,
    stimulus_labels,
)


def _windows(*spans: tuple[int, int], session: str = "s1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": [session] * len(spans),
            "window_start_us": [a for a, _ in spans],
            "window_end_us": [b for _, b in spans],
        }
    )


def test_markers_label_only_windows_wholly_inside_a_trial() -> None:
    markers = pd.DataFrame(
        {
            "session_id": ["s1"] * 4,
            "time_us": [1_000, 5_000, 7_000, 11_000],
            "event": ["START", "END", "START", "END"],
            "label": ["a", "a", "b", "b"],
            "trial": [0, 0, 1, 1],
            "duration_s": [0.004, None, None, None],
        }
    )
    intervals = intervals_from_markers(markers)
    # Trial 0 ends by its duration, trial 1 (no duration) at its END marker.
    assert intervals[["start_us", "end_us", "label"]].values.tolist() == [[1_000, 5_000, "a"], [7_000, 11_000, "b"]]
    labels = label_windows(_windows((1_000, 4_999), (2_000, 6_000), (5_500, 6_500), (8_000, 10_000)), intervals)
    assert list(labels) == ["a", None, None, "b"]


def test_windows_of_other_sessions_stay_unlabelled() -> None:
    intervals = pd.DataFrame({"session_id": ["s1"], "start_us": [0], "end_us": [10_000], "label": ["a"]})
    assert list(label_windows(_windows((100, 200), session="s2"), intervals)) == [None]


def test_motion_runs_become_still_and_moving_intervals() -> None:
    times = np.arange(0, 10) * 500_000
    gyro = np.array([0.0, 0.0, 0.0, 0.9, 0.8, 0.9, 0.9, 0.0, 0.0, 0.0])
    readings = pd.DataFrame(
        {"session_id": "s1", "time_us": times, "gyro_x_rad_s": gyro, "gyro_y_rad_s": 0.0, "gyro_z_rad_s": 0.0}
    )
    intervals = intervals_from_motion(readings, gyro_threshold_rad_s=0.1)
    assert intervals["label"].tolist() == ["still", "moving", "still"]
    assert intervals[["start_us", "end_us"]].values.tolist() == [
        [0, 1_500_000],
        [1_500_000, 3_500_000],
        [3_500_000, 4_500_000],
    ]
    labels = label_windows(_windows((1_600_000, 3_400_000), (1_000_000, 2_000_000)), intervals)
    assert list(labels) == ["moving", None]


def test_gold_labels_call_a_window_rest_only_between_trials() -> None:
    s = 1_000_000
    markers = pd.DataFrame(
        {
            "session_id": ["s1"] * 4,
            "time_us": [10 * s, 14 * s, 20 * s, 24 * s],
            "event": ["START", "END", "START", "END"],
            "label": ["12", "12", "8", "8"],
            "trial": [0, 0, 1, 1],
            "duration_s": [4.0, None, None, None],  # the second ends at its END
        }
    )
    windows = _windows(
        (0, 2 * s),
        (int(10.5 * s), int(12.5 * s)),
        (13 * s, 15 * s),
        (15 * s, 17 * s),
        (21 * s, 23 * s),
        (25 * s, 27 * s),
    )
    windows = pd.concat([windows, _windows((0, 2 * s), session="s2")], ignore_index=True)
    assert list(stimulus_labels(windows, markers)) == [
        REST_LABEL,  # before the first trial, and a later trial proves the protocol went on
        "12",  # inside the first trial
        None,  # straddles its end
        REST_LABEL,  # between trials
        "8",  # inside the second trial (its end from the END marker)
        None,  # after the last trial: nothing proves it is a rest yet
        None,  # a session without markers
    ]
