"""A session as a Recording: to and from the lake, blocks, gaps and marker annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from batch_jobs.recording import (
    Recording,
    RecordingError,
    annotations,
    list_sessions,
    markers_from_annotations,
    read_session,
    write_session,
)
from batch_jobs.sample_lake import SESSION_START_US, session_tables, simulate_session
from infra.delta import delta_dataset
from schemas.catalog import GOLD_EEG_WINDOWS, SILVER_EEG_SAMPLES
from streaming_jobs.silver_gold import processor_config


@pytest.fixture
def simulated(make_settings):  # type: ignore[no-untyped-def]
    settings = make_settings()
    return settings, simulate_session(settings, 0, 30.0, SESSION_START_US)


def _gold(root: Path, session_id: str):  # type: ignore[no-untyped-def]
    dataset, _ = delta_dataset(GOLD_EEG_WINDOWS.path(root))
    return dataset.to_table(filter=pc.field("session_id") == session_id).sort_by("window_start_index")


def test_backfill_gives_the_streaming_processors_rows_and_reads_back_exactly(simulated, spark) -> None:  # type: ignore[no-untyped-def]
    settings, session = simulated
    root = settings.paths.lake_root
    recording = session.recording()
    counts = write_session(root, recording, processor_config(settings), lambda: spark)
    assert counts["samples"] == 7500 and counts["markers"] == len(recording.markers) > 0
    expected, _ = session_tables(settings, session)
    gold = _gold(root, recording.session_id)
    assert gold.column("window_start_index").to_pylist() == expected.column("window_start_index").to_pylist()
    assert gold.column("label").to_pylist() == expected.column("label").to_pylist()
    np.testing.assert_allclose(
        np.array(gold.column("ssvep_score").to_pylist()), np.array(expected.column("ssvep_score").to_pylist())
    )
    samples, _ = delta_dataset(SILVER_EEG_SAMPLES.path(root))
    assert samples.count_rows() == 7500
    back = read_session(root, recording.session_id)
    np.testing.assert_array_equal(back.samples, recording.samples)
    np.testing.assert_array_equal(back.device_times_us, recording.device_times_us)
    assert back.present is None and back.session["channel_names"] == recording.channel_names
    assert [(m["timestamp_us"], m["event"], m["label"]) for m in back.markers] == [
        (m["timestamp_us"], m["event"], m["label"]) for m in recording.markers
    ]
    # A second backfill of the same session writes nothing (app transactions).
    write_session(root, recording, processor_config(settings), lambda: spark)
    assert _gold(root, recording.session_id).num_rows == gold.num_rows
    [listed] = list_sessions(root)
    assert listed["samples"] == 7500 and listed["duration_s"] == 30.0 and listed["markers"] == len(recording.markers)


def test_lost_blocks_become_a_mask_and_are_never_sent(simulated, spark) -> None:  # type: ignore[no-untyped-def]
    settings, session = simulated
    recording = session.recording()
    recording.present = np.ones(recording.n_samples, bool)
    recording.present[1000:1100] = False
    write_session(settings.paths.lake_root, recording, processor_config(settings), lambda: spark)
    back = read_session(settings.paths.lake_root, recording.session_id)
    assert back.present is not None and not back.present[1000:1100].any() and back.present[:1000].all()
    assert back.runs() == [(0, 1000), (1100, 7500)]
    firsts = [r["first_sample_index"] for r in back.block_records()]
    assert 1000 not in firsts and 1100 in firsts and len(firsts) == 296
    samples, _ = delta_dataset(SILVER_EEG_SAMPLES.path(settings.paths.lake_root))
    gap = samples.to_table(filter=pc.field("gap_before") > 0)
    assert gap.column("sample_index").to_pylist() == [1100] and gap.column("gap_before").to_pylist() == [100]


def test_markers_as_annotations_and_back(simulated) -> None:  # type: ignore[no-untyped-def]
    _, session = simulated
    recording = session.recording()
    items = annotations(recording)
    starts = [m for m in recording.markers if m["event"] == "START"]
    assert len(items) == len(starts) and all(d == 4.0 for _, d, _ in items)
    rebuilt = markers_from_annotations(items, recording.lab_start_us(), recording.duration_s)
    assert [(t, e, label) for t, e, label, _ in rebuilt] == [
        (m["timestamp_us"], m["event"], m["label"]) for m in recording.markers
    ]


def test_clear_errors(simulated, tmp_path: Path, spark) -> None:  # type: ignore[no-untyped-def]
    settings, session = simulated
    with pytest.raises(RecordingError, match="no sessions in the lake"):
        read_session(tmp_path / "empty", "x")
    write_session(settings.paths.lake_root, session.recording(), processor_config(settings), lambda: spark)
    with pytest.raises(RecordingError, match="unknown session 'sim-1'.*did you mean sim-1-1790000000000"):
        read_session(settings.paths.lake_root, "sim-1")
    recording = session.recording()
    broken = Recording(
        {**recording.session, "channel_names": recording.channel_names[:-1]},
        recording.samples,
        recording.device_times_us,
        recording.clock_offset_us,
    )
    with pytest.raises(RecordingError, match=r"channel_names \(16\).*one entry per data column \(17\)"):
        broken.validate()
    no_eeg = Recording(
        {**recording.session, "channel_types": ["aux"] * 17},
        recording.samples,
        recording.device_times_us,
        recording.clock_offset_us,
    )
    with pytest.raises(RecordingError, match="no EEG channel"):
        no_eeg.validate()
