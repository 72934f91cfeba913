from collections import Counter

import numpy as np

from core.settings import StimulusSettings
from edge_producers.stimulus import StimulusSchedule


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
