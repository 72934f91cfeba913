from collections import Counter

import numpy as np
import pytest

from core.settings import StimulusSettings
from edge_producers.frames import fit_sinusoid
from edge_producers.stimulus import StimulusSchedule, luminance, stimulus_targets


def test_schedule_blocks_show_each_class_per_repetition() -> None:
    settings = StimulusSettings(repetitions=3, stimulus_s=1.0, rest_s=0.5, lead_in_s=1.0, seed=4)
    schedule = StimulusSchedule(settings, start_us=10_000_000)
    events = schedule.events_between(0, 10_000_000 + 100_000_000)
    starts = [e for e in events if e.event == "START"]
    first_block = [e.trial.label for e in starts[:12]]
    assert Counter(first_block) == {label: 3 for label in settings.classes}
    assert starts[0].time_us == 11_000_000
    assert all(b.time_us - a.time_us == 1_500_000 for a, b in zip(starts, starts[1:]))
    assert [e.trial.trial for e in starts] == list(range(len(starts)))


def test_frequency_at_matches_events() -> None:
    settings = StimulusSettings(stimulus_s=2.0, rest_s=1.0, lead_in_s=0.5)
    schedule = StimulusSchedule(settings, start_us=0)
    first = schedule.events_between(-1, 10_000_000)[0].trial
    times = np.array([0, first.start_us - 1, first.start_us, first.end_us - 1, first.end_us])
    hz = schedule.frequency_at(times)
    assert np.isnan(hz[0]) and np.isnan(hz[1]) and np.isnan(hz[4])
    assert hz[2] == hz[3] == first.hz


def test_events_are_reported_once_across_polls() -> None:
    schedule = StimulusSchedule(StimulusSettings(), start_us=0)
    seen, last = [], 0
    for now in range(0, 60_000_000, 333_333):
        seen += schedule.events_between(last, now)
        last = now
    assert seen == schedule.events_between(0, last)


def test_the_benchmark_grid_is_the_tsinghua_layout() -> None:
    targets = stimulus_targets(StimulusSettings(layout="benchmark40"))
    assert len(targets) == 40 and len({t.label for t in targets}) == 40
    assert [t.hz for t in targets[:5]] == [8.0, 8.2, 8.4, 8.6, 8.8] and targets[-1].hz == 15.8
    assert [round(t.phase / (np.pi / 2)) for t in targets[:6]] == [0, 1, 2, 3, 0, 1]
    grid = {(t.row, t.column): t.hz for t in targets}
    assert len(grid) == 40 and grid[(0, 0)] == 8.0 and grid[(0, 7)] == 15.0 and grid[(4, 7)] == 15.8
    assert grid[(1, 0)] == 8.2  # down a column: +0.2 Hz; along a row: +1 Hz


def test_the_lab_classes_sit_on_a_square_grid_with_phase_zero() -> None:
    targets = stimulus_targets(StimulusSettings())
    assert [(t.row, t.column) for t in targets] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [t.hz for t in targets] == [8.0, 10.0, 12.0, 15.0] and all(t.phase == 0 for t in targets)


def test_a_cue_precedes_each_flicker_and_the_schedule_keeps_its_shape() -> None:
    settings = StimulusSettings(lead_in_s=1.0, cue_s=0.5, stimulus_s=2.0, rest_s=0.5, layout="benchmark40")
    schedule = StimulusSchedule(settings, start_us=0)
    starts = [e for e in schedule.events_between(-1, 200_000_000) if e.event == "START"]
    assert starts[0].time_us == 1_500_000 and starts[0].trial.cue_us == 1_000_000
    assert all(b.time_us - a.time_us == 3_000_000 for a, b in zip(starts, starts[1:]))
    assert Counter(e.trial.label for e in starts[:40]) == {t.label: 1 for t in schedule.targets}
    first = starts[0].trial
    assert (first.hz, first.phase) == (schedule.targets[first.target].hz, schedule.targets[first.target].phase)


def test_upcoming_trials_are_those_a_display_must_know_of() -> None:
    settings = StimulusSettings(lead_in_s=1.0, cue_s=0.5, stimulus_s=2.0, rest_s=0.5)
    schedule = StimulusSchedule(settings, start_us=0)
    assert schedule.upcoming(0, 999_999) == []
    assert [t.trial for t in schedule.upcoming(0, 1_000_000)] == [0]  # its cue starts then
    assert [t.trial for t in schedule.upcoming(3_400_000, 4_000_000)] == [0, 1]  # 0 still on
    assert [t.trial for t in schedule.upcoming(3_500_000, 4_000_000)] == [1]


def test_sampled_sinusoid_luminance() -> None:
    frames = np.arange(60)
    values = luminance(frames, 15.0, 0.0, 60.0)
    assert values[0] == 0.5 and np.isclose(values[1], 1.0) and np.isclose(values[3], 0.0)
    assert values.min() >= 0 and values.max() <= 1
    # 13 Hz on a 60 Hz screen (not a divisor): the frames are samples of the 13 Hz sinusoid.
    fit = fit_sinusoid(frames / 60.0, luminance(frames, 13.0, np.pi / 2, 60.0), 13.0)
    assert abs(fit.hz - 13.0) < 1e-6 and abs(fit.phase - np.pi / 2) < 1e-6


def test_the_session_names_every_target_frequency_for_the_lake() -> None:
    from dsp.session import session_record_problem
    from edge_producers.runtime import stimulus_metadata

    metadata = stimulus_metadata(StimulusSettings(layout="benchmark40", presenter=True))
    frequencies = {k: float(v) for k, v in metadata.items() if k.startswith("stimulus.")}
    assert len(frequencies) == 40 and frequencies["stimulus.flicker_8.2hz"] == 8.2
    assert float(metadata["stimulus_phase.flicker_8.2hz"]) == pytest.approx(np.pi / 2, abs=1e-6)
    assert metadata["stimulus_layout"] == "benchmark40" and metadata["stimulus_markers"] == "frames"
    record = {"sample_rate_hz": 250.0, "channel_names": ["O1"], "channel_types": ["eeg"], "metadata": metadata}
    assert session_record_problem(record) is None  # the lake takes such a session
    lab = stimulus_metadata(StimulusSettings())
    assert lab == {
        "stimulus.flicker_8hz": "8.0",
        "stimulus.flicker_10hz": "10.0",
        "stimulus.flicker_12hz": "12.0",
        "stimulus.flicker_15hz": "15.0",
        "stimulus_layout": "classes",
    }
