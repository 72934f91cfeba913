"""Rebuild: silver and gold again from bronze with new settings; a second rebuild writes nothing;
late blocks are included; the stream's state lock keeps a rebuild out while the stream runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from batch_jobs.rebuild import rebuild
from batch_jobs.recording import write_session
from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from core.errors import NeurolakeError
from infra.delta import delta_dataset, read_commit_metadata
from schemas.catalog import SILVER_EEG_SAMPLES
from streaming_jobs.silver_gold import StateLock, processor_config, rebuilds_dir
from tests.conftest import isolated_environ

TABLES = ("silver/eeg_samples", "silver/heart_rate", "gold/eeg_windows")


def _versions(root: Path) -> dict[str, int]:
    return {t: DeltaTable(str(root / t)).version() for t in TABLES}


def _filtered(root: Path, session_id: str) -> np.ndarray:
    dataset, _ = delta_dataset(SILVER_EEG_SAMPLES.path(root))
    table = dataset.to_table(filter=pc.field("session_id") == session_id).sort_by("sample_index")
    return np.array(table.column("filtered").to_pylist()[:2000])


@pytest.fixture
def lake(tmp_path: Path, make_settings, spark):  # type: ignore[no-untyped-def]
    settings = make_settings()
    recording = simulate_session(settings, 0, 20.0, SESSION_START_US).recording()
    write_session(settings.paths.lake_root, recording, processor_config(settings), lambda: spark)
    return settings, recording.session_id, spark


def test_new_band_rewrites_silver_and_gold_then_a_second_rebuild_writes_nothing(lake) -> None:  # type: ignore[no-untyped-def]
    settings, session_id, spark = lake
    root = settings.paths.lake_root
    checkpoint = root / "_checkpoints" / "silver_gold"
    before = _filtered(root, session_id)
    samples_before = delta_dataset(SILVER_EEG_SAMPLES.path(root))[0].count_rows()
    unchanged = rebuild(spark, root, checkpoint, processor_config(settings))
    assert unchanged.rebuilt == [] and unchanged.up_to_date == [session_id]

    narrower = replace(processor_config(settings), band_high_hz=30.0)
    report = rebuild(spark, root, checkpoint, narrower)
    assert report.rebuilt == [session_id]
    after = _filtered(root, session_id)
    assert after.shape == before.shape and not np.allclose(after, before)
    for table in TABLES:
        metadata = read_commit_metadata(root / table)
        assert metadata["neurolake.settings_fingerprint"] == narrower.fingerprint, table
        assert json.loads(metadata["neurolake.settings"])["band_high_hz"] == 30.0
    dataset, _ = delta_dataset(SILVER_EEG_SAMPLES.path(root))
    assert dataset.count_rows() == report.rows["silver.eeg_samples"] == samples_before

    versions = _versions(root)
    again = rebuild(spark, root, checkpoint, narrower)
    assert again.rebuilt == [] and _versions(root) == versions


def test_a_rebuild_waits_for_no_running_stream(lake) -> None:  # type: ignore[no-untyped-def]
    settings, _, spark = lake
    root = settings.paths.lake_root
    checkpoint = root / "_checkpoints" / "silver_gold"
    stream = StateLock(rebuilds_dir(checkpoint))
    assert stream.acquire("the silver/gold stream")
    try:
        with pytest.raises(NeurolakeError, match="stream .* is running; stop it first"):
            rebuild(spark, root, checkpoint, processor_config(settings), force=True)
    finally:
        stream.release()
    with pytest.raises(NeurolakeError, match="no EEG blocks in bronze for session"):
        rebuild(spark, root, checkpoint, processor_config(settings), sessions=["nope"])


def test_the_cli_rebuilds_in_a_spark_session_of_its_own(  # type: ignore[no-untyped-def]
    lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`neurolake lake rebuild` (it once passed the lake's path where rebuild() takes a Spark session)."""
    from neurolake.cli import main

    _, session_id, _ = lake
    for name, value in isolated_environ(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main(["lake", "rebuild", "--force", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rebuilt"] == [session_id] and report["rows"]["silver.eeg_samples"] == 20 * 250
