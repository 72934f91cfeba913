"""`neurolake sample-lake` sessions are sessions like any other: listed, exported, and never derived
twice by a silver/gold stream that reads their blocks in bronze."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from batch_jobs.recording import read_session
from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from dsp.session import SessionState, process
from infra.delta import LakeTable
from neurolake.cli import main
from schemas.catalog import BRONZE_EEG_BLOCKS, BRONZE_MARKERS, BRONZE_SESSIONS, GOLD_EEG_WINDOWS, SILVER_MARKERS
from streaming_jobs.bronze import bronze_schema, projection_schema
from streaming_jobs.checkpoints import checkpoint_dir
from streaming_jobs.silver_gold import QUERY_NAME, StreamContext, adopt_rebuild, processor_config, rebuilds_dir
from tests.conftest import isolated_environ


def run(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_lake_sessions_are_listed_exported_and_not_derived_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, make_settings
) -> None:  # type: ignore[no-untyped-def]
    for key, value in isolated_environ(tmp_path).items():
        monkeypatch.setenv(key, value)
    settings = make_settings()
    code, _, err = run(capsys, "sample-lake", "--sessions", "2", "--seconds", "20")
    assert code == 0, err

    code, out, err = run(capsys, "sessions", "--json")
    assert code == 0, err
    sessions = json.loads(out)
    assert len(sessions) == 2
    for number, listed in enumerate(sessions):
        expected = simulate_session(settings, number, 20.0, SESSION_START_US + number * 80_000_000)
        assert listed["session_id"] == expected.session_id
        assert listed["samples"] == sum(b.samples.shape[0] for b in expected.blocks)
        assert listed["markers"] == len(expected.marker_records()) > 0
        # Bronze holds exactly the samples the sample lake simulated (and derived its windows from).
        recording = read_session(settings.paths.lake_root, expected.session_id)
        np.testing.assert_array_equal(recording.samples, np.concatenate([b.samples for b in expected.blocks]))

    session_id = sessions[0]["session_id"]
    code, _, err = run(capsys, "export", session_id, "--format", "edf", "--out", str(tmp_path / "out"))
    assert code == 0, err
    [exported] = (tmp_path / "out").iterdir()
    assert exported.stat().st_size > 0

    # Typed as the stream's own writes type them (it appends to the same tables, and delta-spark
    # refuses a column of another type: trial as int64 failed every bronze commit of the demo).
    for spec, schema in (
        (SILVER_MARKERS, projection_schema("markers")),
        (BRONZE_MARKERS, bronze_schema("marker")),
        (BRONZE_EEG_BLOCKS, bronze_schema("eeg_block")),
    ):
        held = LakeTable(settings.paths.lake_root, spec).read_columns(schema.names).schema
        assert [(f.name, f.type) for f in held] == [(f.name, f.type) for f in schema], spec

    # A rerun writes nothing twice.
    root = settings.paths.lake_root
    blocks = LakeTable(root, BRONZE_EEG_BLOCKS).read_columns(["session_id"]).num_rows
    windows = LakeTable(root, GOLD_EEG_WINDOWS).read_columns(["session_id"])
    code, _, err = run(capsys, "sample-lake", "--sessions", "2", "--seconds", "20")
    assert code == 0, err
    assert LakeTable(root, BRONZE_EEG_BLOCKS).read_columns(["session_id"]).num_rows == blocks
    # Each session's record is in bronze.sessions once (training reads its montage from there).
    assert sorted(LakeTable(root, BRONZE_SESSIONS).read_columns(["session_id"]).column("session_id").to_pylist()) == (
        sorted(s["session_id"] for s in sessions)
    )

    # What the silver/gold stream does with a session it meets in bronze: it adopts the state the
    # sample lake left, and the session's blocks make no second set of windows.
    config = processor_config(settings)
    context = StreamContext(config, str(rebuilds_dir(checkpoint_dir(settings, QUERY_NAME))))
    expected = simulate_session(settings, 0, 20.0, SESSION_START_US)
    state = adopt_rebuild(context, session_id, SessionState())
    output, _ = process(state, expected.blocks, 0, config)
    assert output.windows == [] and output.duplicates == len(expected.blocks)
    assert pc.sum(pc.equal(windows.column("session_id"), session_id)).as_py() > 0
