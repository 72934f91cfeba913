"""The data-quality bounds as a pure rule: each broken bound is named with its setting."""

from __future__ import annotations

from pathlib import Path

from batch_jobs.tasks import quality_problems
from core.settings import load_settings


def test_within_every_bound_there_is_no_problem(tmp_path: Path) -> None:
    lake = load_settings(environ={}, cwd=tmp_path).lake
    clocks = {"pi-1": {"offset_ms": lake.max_clock_offset_ms, "rtt_ms": lake.max_clock_rtt_ms}}
    assert quality_problems(lake, 0, lake.max_lost_fraction, lake.max_quarantine_growth, clocks) == []


def test_each_broken_bound_names_its_setting(tmp_path: Path) -> None:
    lake = load_settings(environ={}, cwd=tmp_path).lake
    clocks = {
        "pi-1": {"offset_ms": lake.max_clock_offset_ms + 1, "rtt_ms": 0.0},
        "pi-2": {"offset_ms": 0.0, "rtt_ms": lake.max_clock_rtt_ms + 1},
    }
    problems = quality_problems(lake, 500, lake.max_lost_fraction + 0.01, lake.max_quarantine_growth + 1, clocks)
    assert len(problems) == 4
    assert "lake.max_lost_fraction" in problems[0] and "500 samples lost" in problems[0]
    assert "lake.max_quarantine_growth" in problems[1]
    assert problems[2].startswith("pi-1: clock offset") and "lake.max_clock_offset_ms" in problems[2]
    assert problems[3].startswith("pi-2: clock probe round trip") and "lake.max_clock_rtt_ms" in problems[3]


def test_the_check_reads_a_lake_on_disk(make_settings, spark) -> None:  # type: ignore[no-untyped-def]
    from batch_jobs.recording import write_session
    from batch_jobs.sample_lake import SESSION_START_US, simulate_session
    from batch_jobs.tasks import data_quality
    from streaming_jobs.silver_gold import processor_config

    settings = make_settings()
    session = simulate_session(settings, 0, 6.0, SESSION_START_US)
    write_session(settings.paths.lake_root, session.recording(), processor_config(settings), lambda: spark)
    report = data_quality(settings)
    assert report["counts"]["silver.eeg_samples"] == 1500
    assert report["samples_lost"] == 0 and report["problems"] == [] and report["quarantine_growth"] == 0
