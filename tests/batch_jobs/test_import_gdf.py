"""GDF (BNCI Horizon's format) in through MNE, and channel labels normalised on every import."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from batch_jobs.importers import ImportOptions, detect_format, read_recording
from batch_jobs.recording import RecordingError, read_session
from neurolake.cli import main
from tests.batch_jobs.gdf import write_gdf
from tests.conftest import isolated_environ

LABELS = ["EEG-Fz", "EEG-C3", "EEG-Cz", "EEG-C4", "EEG-0", "EOG-left"]


def _bnci_like(path: Path, seconds: int = 12) -> np.ndarray:
    """A BCI Competition IV 2a-style file: labelled EEG, an unnamed electrode, an EOG channel, and
    events 768 (trial start) and 769/770 (cues)."""
    rng = np.random.default_rng(1)
    data = rng.normal(0, 15, (len(LABELS), seconds * 250))
    events = [(250, 768), (500, 769), (1500, 768), (1750, 770)]
    write_gdf(path, data, LABELS, 250, dt.datetime(2024, 5, 6, 7, 8, 9), events)
    return data


def test_a_gdf_file_is_read_through_mne(tmp_path: Path) -> None:
    path = tmp_path / "A01T.gdf"
    data = _bnci_like(path)
    assert detect_format(path) == "gdf"
    (tmp_path / "noext").write_bytes(path.read_bytes())
    assert detect_format(tmp_path / "noext") == "gdf"
    recording = read_recording(path, options=ImportOptions(subject="s01"))
    assert recording.channel_names == ["Fz", "C3", "Cz", "C4", "EEG-0", "EOG-left"]
    assert recording.channel_types == ["eeg"] * 5 + ["eog"]
    assert recording.sample_rate_hz == 250 and recording.n_samples == data.shape[1]
    np.testing.assert_allclose(recording.samples, data.T, atol=1e-3)  # microvolts, float32
    assert recording.session["started_us"] == int(dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC).timestamp() * 1e6)
    assert [(m["event"], m["label"]) for m in recording.markers] == [
        ("INSTANT", "768"),
        ("INSTANT", "769"),
        ("INSTANT", "768"),
        ("INSTANT", "770"),
    ]
    assert recording.markers[1]["timestamp_us"] - recording.session["started_us"] == 2_000_000
    metadata = recording.session["metadata"]
    assert json.loads(metadata["channel_renames"]) == {"EEG-Fz": "Fz", "EEG-C3": "C3", "EEG-Cz": "Cz", "EEG-C4": "C4"}
    assert json.loads(metadata["channels_not_standard"]) == ["EEG-0"]
    # --channels by the file's label or by the standard name.
    picked = read_recording(path, options=ImportOptions(channels=("Cz", "EEG-C4")))
    assert picked.channel_names == ["Cz", "C4"]
    with pytest.raises(RecordingError, match="no channel Oz"):
        read_recording(path, options=ImportOptions(channels=("Oz",)))


def test_a_file_that_says_gdf_but_is_not(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gdf"
    bad.write_bytes(b"GDF 1.25" + bytes(100))
    with pytest.raises(RecordingError, match="not a readable GDF file"):
        read_recording(bad)


def test_neurolake_import_prints_and_keeps_what_it_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in isolated_environ(tmp_path).items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "A01T.gdf"
    _bnci_like(path)
    assert main(["import", str(path), "--subject", "s01"]) == 0
    out = capsys.readouterr().out
    assert "channels: renamed EEG-Fz -> Fz, EEG-C3 -> C3, EEG-Cz -> Cz, EEG-C4 -> C4" in out
    assert "not standard electrode names, kept: EEG-0" in out
    session_id = out.split("imported session ")[1].split(":")[0]
    stored = read_session(tmp_path / "lake", session_id)
    assert stored.channel_names[:4] == ["Fz", "C3", "Cz", "C4"]
    assert json.loads(stored.session["metadata"]["channel_renames"])["EEG-Fz"] == "Fz"
