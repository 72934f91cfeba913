"""``neurolake.lake`` and ``neurolake sql``: formats, versions, time travel, filters, MNE sessions,
and the errors a data scientist meets first."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import polars as pl
import pytest

from batch_jobs.lake_sql import run_query
from batch_jobs.recording import write_session
from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from core.errors import NeurolakeError
from core.settings import load_settings
from neurolake import lake
from streaming_jobs.silver_gold import processor_config
from tests.conftest import isolated_environ


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, spark_settings):  # type: ignore[no-untyped-def]
    """gold.eeg_windows v0 with one session, v1 with two; the time between the commits. Written once
    for the module: its tests only read."""
    from infra.spark import build_spark_session

    home = tmp_path_factory.mktemp("lake-api")
    settings = load_settings(environ=isolated_environ(home), cwd=home)
    spark = build_spark_session(spark_settings, "neurolake-tests")
    first = simulate_session(settings, 0, 12.0, SESSION_START_US).recording()
    write_session(settings.paths.lake_root, first, processor_config(settings), lambda: spark)
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    second = simulate_session(settings, 1, 12.0, SESSION_START_US + 10**9).recording()
    write_session(settings.paths.lake_root, second, processor_config(settings), lambda: spark)
    return settings, first, second, between


def test_table_formats_versions_and_time_travel(two_versions) -> None:  # type: ignore[no-untyped-def]
    settings, first, second, between = two_versions
    root = settings.paths.lake_root
    latest = lake.table("gold.eeg_windows", lake_root=root)
    assert set(latest.column("session_id").to_pylist()) == {first.session_id, second.session_id}
    assert latest.schema.metadata[b"delta_version"] == b"1"
    old = lake.table("gold.eeg_windows", version=0, format="pandas", lake_root=root)
    assert isinstance(old, pd.DataFrame) and set(old["session_id"]) == {first.session_id}
    at = lake.table("gold.eeg_windows", as_of=between, format="polars", lake_root=root)
    assert isinstance(at, pl.DataFrame) and at["session_id"].unique().to_list() == [first.session_id]
    assert lake.version("gold.eeg_windows", as_of=between.isoformat(), lake_root=root) == 0
    picked = lake.table(
        "silver.eeg_samples",
        columns=["sample_index", "raw"],
        lake_root=root,
        where=[("session_id", "=", second.session_id), ("sample_index", "<", 10)],
    )
    assert picked.column_names == ["sample_index", "raw"] and sorted(picked.column("sample_index").to_pylist()) == list(
        range(10)
    )
    np.testing.assert_array_equal(
        np.array(picked.sort_by("sample_index").column("raw").to_pylist(), np.float32), second.samples[:10]
    )
    assert [c["version"] for c in lake.history("gold.eeg_windows", lake_root=root)] == [1, 0]
    chosen = lake.table(
        "gold.eeg_windows", columns=["session_id"], lake_root=root, where=("session_id", "in", [second.session_id])
    )
    assert set(chosen.column("session_id").to_pylist()) == {second.session_id}
    sessions = lake.sessions(lake_root=root)
    assert list(sessions["session_id"]) == [first.session_id, second.session_id]


def test_table_errors_name_the_fix(two_versions) -> None:  # type: ignore[no-untyped-def]
    settings, *_ = two_versions
    root = settings.paths.lake_root
    with pytest.raises(NeurolakeError, match=r"unknown table 'eeg_windows' \(names are layer.table"):
        lake.table("eeg_windows", lake_root=root)
    with pytest.raises(NeurolakeError, match=r"has versions 0..1; version 7 does not exist"):
        lake.table("gold.eeg_windows", version=7, lake_root=root)
    with pytest.raises(NeurolakeError, match="did not exist at 2001-01-01"):
        lake.table("gold.eeg_windows", as_of="2001-01-01", lake_root=root)
    with pytest.raises(NeurolakeError, match="is not an ISO time"):
        lake.table("gold.eeg_windows", as_of="yesterday", lake_root=root)
    with pytest.raises(NeurolakeError, match="no column 'nope'"):
        lake.table("gold.eeg_windows", where=("nope", "=", 1), lake_root=root)
    with pytest.raises(NeurolakeError, match="has no column bogus"):
        lake.table("gold.eeg_windows", columns=["bogus"], lake_root=root)
    with pytest.raises(NeurolakeError, match="format 'csv'"):
        lake.table("gold.eeg_windows", format="csv", lake_root=root)  # type: ignore[arg-type]


def test_session_is_an_mne_raw_with_montage_units_and_markers(two_versions) -> None:  # type: ignore[no-untyped-def]
    settings, first, *_ = two_versions
    raw = lake.session(first.session_id, lake_root=settings.paths.lake_root)
    assert raw.ch_names == first.channel_names and raw.info["sfreq"] == 250
    assert raw.get_channel_types()[:16] == ["eeg"] * 16 and raw.get_channel_types()[16] == "bio"
    np.testing.assert_allclose(raw.get_data()[:, :100], first.samples[:100].T * 1e-6, rtol=1e-6)
    positions = raw.get_montage().get_positions()["ch_pos"]
    assert "O1" in positions and np.linalg.norm(positions["O1"]) > 0
    starts = [m for m in first.markers if m["event"] == "START"]
    assert list(raw.annotations.description) == [m["label"] for m in starts]
    np.testing.assert_allclose(raw.annotations.onset, [(m["timestamp_us"] - SESSION_START_US) / 1e6 for m in starts])
    assert raw.info["meas_date"] == dt.datetime.fromtimestamp(SESSION_START_US / 1e6, dt.UTC)


def test_sql_time_travel_in_the_query_or_for_every_table(two_versions) -> None:  # type: ignore[no-untyped-def]
    settings, first, second, between = two_versions
    root = settings.paths.lake_root
    count = "SELECT count(DISTINCT session_id) FROM gold.eeg_windows"
    assert run_query(root, count).rows == [(2,)]
    assert run_query(root, count, version=0).rows == [(1,)]
    assert run_query(root, count, as_of=between.isoformat()).rows == [(1,)]
    both = run_query(
        root,
        "SELECT (SELECT count(DISTINCT session_id) FROM gold.eeg_windows VERSION AS OF 0), "
        "(SELECT count(DISTINCT session_id) FROM gold.eeg_windows), "
        f"(SELECT count(*) FROM silver.markers TIMESTAMP AS OF '{between.isoformat()}')",
    )
    assert both.rows == [(1, 2, len(first.markers))]
    assert ("gold.eeg_windows", 0) in both.versions and ("gold.eeg_windows", 1) in both.versions
    with pytest.raises(NeurolakeError, match="version 9 does not exist"):
        run_query(root, "SELECT * FROM gold.eeg_windows VERSION AS OF 9")
