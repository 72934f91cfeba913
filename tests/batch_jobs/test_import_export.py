"""Import (BrainFlow, OpenBCI GUI, EDF/BDF, XDF) and export (EDF+/BDF+, BIDS) through the CLI:
round trips, real third-party files, and one clear error for each kind of bad input."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from batch_jobs.exporters import export, physical_range
from batch_jobs.lake_tables import discover_tables
from batch_jobs.recording import RecordingError, read_session, write_session
from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from infra.spark import build_spark_session
from neurolake.cli import main
from streaming_jobs.silver_gold import processor_config
from tests.conftest import isolated_environ


@pytest.fixture
def lake(tmp_path: Path, monkeypatch, make_settings, spark):  # type: ignore[no-untyped-def]
    for key, value in isolated_environ(tmp_path).items():
        monkeypatch.setenv(key, value)
    return make_settings()


def run(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _simulated_in_lake(settings, seconds: float = 20.0, start_us: int = SESSION_START_US + 123_456):  # type: ignore[no-untyped-def]
    """A simulated session starting at a time with microseconds (EDF+ keeps sub-second starts)."""
    recording = simulate_session(settings, 0, seconds, start_us).recording()
    # The test session's Spark (the `lake` fixture made it), as the CLI's own import gets it too.
    write_session(
        settings.paths.lake_root, recording, processor_config(settings), lambda: build_spark_session(settings)
    )
    return recording


def _imported_session(out: str) -> str:
    return out.split("imported session ")[1].split(":")[0]


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_round_trip_lake_export_import_same_samples_and_markers(lake, capsys, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    original = _simulated_in_lake(lake)
    code, out, err = run(capsys, "export", original.session_id, "--format", fmt, "--out", str(tmp_path / "out"))
    assert code == 0, err
    [exported] = (tmp_path / "out").iterdir()
    code, out, err = run(capsys, "import", str(exported), "--subject", "s01")
    assert code == 0, err
    back = read_session(lake.paths.lake_root, _imported_session(out))
    assert back.session_id != original.session_id and back.session["subject_id"] == "s01"
    assert back.channel_names == original.channel_names and back.channel_types == original.channel_types
    assert back.n_samples == original.n_samples and back.present is None
    for channel in range(original.samples.shape[1]):
        limit = physical_range(original.samples[:, channel])
        error = np.abs(back.samples[:, channel].astype(np.float64) - original.samples[:, channel]).max()
        if fmt == "bdf":  # 24 bits: float32's own precision at the channel's full scale
            assert error <= 1.5 * np.spacing(np.float32(limit)), (channel, error)
        else:  # 16 bits: half a step of the channel's range
            assert error <= limit / 65535 * 1.01, (channel, error)
    assert back.lab_start_us() == original.lab_start_us()
    assert [(m["event"], m["label"]) for m in back.markers] == [(m["event"], m["label"]) for m in original.markers]
    # EDF+ annotation onsets as pyedflib writes them have 100 us resolution (1/40 of a sample).
    times = np.array([m["timestamp_us"] for m in back.markers]) - [m["timestamp_us"] for m in original.markers]
    assert np.abs(times).max() <= 100
    # Imported again: the same session id, nothing written twice.
    code, out, _ = run(capsys, "import", str(exported))
    assert code == 0 and "already in the lake; nothing written" in out


def test_brainflow_synthetic_board_recording_imports(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams
    from brainflow.data_filter import DataFilter

    board = BoardShim(BoardIds.SYNTHETIC_BOARD.value, BrainFlowInputParams())
    board.prepare_session()
    try:
        board.start_stream()
        time.sleep(1.0)
        board.insert_marker(3)
        time.sleep(1.5)
        data = board.get_board_data()
        board.stop_stream()
    finally:
        board.release_session()
    path = tmp_path / "synthetic.csv"
    DataFilter.write_file(data, str(path), "w")
    code, _, err = run(capsys, "import", str(path))
    assert code == 2 and "give --board" in err and not discover_tables(lake.paths.lake_root)
    code, out, err = run(capsys, "import", str(path), "--board", "synthetic", "--subject", "bf")
    assert code == 0, err
    session = read_session(lake.paths.lake_root, _imported_session(out))
    assert session.channel_names[:3] == ["Fz", "C3", "Cz"] and len(session.channel_names) == 16
    assert session.n_samples == data.shape[1] and session.sample_rate_hz == 250
    written = np.loadtxt(path, delimiter="\t")  # BrainFlow writes 6 decimals
    np.testing.assert_array_equal(session.samples, written[:, 1:17].astype(np.float32))
    np.testing.assert_allclose(session.samples, data[1:17].T, atol=1e-6)
    assert [m["label"] for m in session.markers] == ["marker_3"]


def test_pyedflib_edf_with_its_own_labels_imports_and_missing_channels_are_refused(
    lake, capsys, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import pyedflib

    path = tmp_path / "third_party.edf"
    rng = np.random.default_rng(1)
    signals = rng.normal(0, 20, (4, 256 * 10))
    names = ["Fp1", "Cz", "O1", "O2"]
    writer = pyedflib.EdfWriter(str(path), 4, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders(
        [
            {
                "label": n,
                "dimension": "uV",
                "sample_frequency": 256,
                "physical_max": 200.0,
                "physical_min": -200.0,
                "digital_max": 32767,
                "digital_min": -32768,
                "transducer": "AgAgCl electrode",
                "prefilter": "",
            }
            for n in names
        ]
    )
    writer.writeSamples(list(signals))
    writer.writeAnnotation(2.5, 1.0, "target")
    writer.writeAnnotation(6.0, -1, "blink")
    writer.close()
    code, _, err = run(capsys, "import", str(path), "--channels", "Fp1,Pz,Oz")
    assert code == 2 and "no channel Pz, Oz; it has Fp1, Cz, O1, O2" in err
    assert not discover_tables(lake.paths.lake_root)
    code, out, err = run(capsys, "import", str(path), "--channels", "O1,O2,Cz")
    assert code == 0, err
    session = read_session(lake.paths.lake_root, _imported_session(out))
    assert session.channel_names == ["O1", "O2", "Cz"] and set(session.channel_types) == {"eeg"}
    np.testing.assert_allclose(session.samples, signals[[2, 3, 1]].T, atol=400 / 65535)
    assert [(m["event"], m["label"]) for m in session.markers] == [
        ("START", "target"),
        ("END", "target"),
        ("INSTANT", "blink"),
    ]


def test_openbci_gui_text_recording_imports(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    rows = 500
    exg = rng.normal(0, 30, (rows, 8))
    start = 1_790_000_000.0
    lines = [
        "%OpenBCI Raw EXG Data",
        "%Number of channels = 8",
        "%Sample Rate = 250 Hz",
        "%Board = OpenBCI_GUI$BoardCytonSerial",
        "Sample Index, "
        + ", ".join(f"EXG Channel {i}" for i in range(8))
        + ", Accel Channel 0, Accel Channel 1, Accel Channel 2, Marker Channel, Timestamp, Timestamp (Formatted)",
    ]
    for i in range(rows):
        marker = 7.0 if i == 250 else 0.0
        lines.append(
            ", ".join(
                [
                    str(i % 256),
                    *(f"{v:.6f}" for v in exg[i]),
                    "0.0",
                    "0.0",
                    "1.0",
                    f"{marker}",
                    f"{start + i / 250:.6f}",
                    "2026-09-21 14:13:20.000",
                ]
            )
        )
    path = tmp_path / "OpenBCI-RAW-2026-09-21_14-13-20.txt"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "import", str(path))
    assert code == 0, err
    session = read_session(lake.paths.lake_root, _imported_session(out))
    assert session.channel_names[:8] == ["Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"]
    assert session.channel_types == ["eeg"] * 8 + ["accel"] * 3
    np.testing.assert_allclose(session.samples[:, :8], exg, atol=1e-4)
    assert [m["label"] for m in session.markers] == ["marker_7"]
    assert session.markers[0]["timestamp_us"] == int(round((start + 1.0) * 1e6))


def _xdf_chunk(tag: int, content: bytes) -> bytes:
    return struct.pack("<BIH", 4, len(content) + 2, tag) + content


def _write_xdf(path: Path, eeg: np.ndarray, rate: float, marker_times: list[float], t0: float) -> None:
    """A minimal XDF 1.0 file (what LabRecorder writes): an EEG stream and a string marker stream."""
    channels = "".join(
        f"<channel><label>{n}</label><unit>microvolts</unit><type>EEG</type></channel>" for n in ("Oz", "O1", "O2")
    )
    parts = [
        b"XDF:",
        _xdf_chunk(
            1, b"<?xml version='1.0'?><info><version>1.0</version><datetime>2026-09-21T14:13:20+00:00</datetime></info>"
        ),
    ]
    parts.append(
        _xdf_chunk(
            2,
            struct.pack("<I", 1)
            + (
                f"<?xml version='1.0'?><info><name>OpenBCI</name><type>EEG</type><channel_count>3</channel_count>"
                f"<nominal_srate>{rate}</nominal_srate><channel_format>float32</channel_format>"
                f"<desc><channels>{channels}</channels></desc></info>"
            ).encode(),
        )
    )
    parts.append(
        _xdf_chunk(
            2,
            struct.pack("<I", 2)
            + (
                b"<?xml version='1.0'?><info><name>Task</name><type>Markers</type><channel_count>1</channel_count>"
                b"<nominal_srate>0</nominal_srate><channel_format>string</channel_format></info>"
            ),
        )
    )
    body = b"".join(struct.pack("<Bd", 8, t0 + i / rate) + row.astype("<f4").tobytes() for i, row in enumerate(eeg))
    parts.append(_xdf_chunk(3, struct.pack("<IBI", 1, 4, len(eeg)) + body))
    body = b"".join(struct.pack("<Bd", 8, t) + struct.pack("<BB", 1, 4) + b"go!!" for t in marker_times)
    parts.append(_xdf_chunk(3, struct.pack("<IBI", 2, 4, len(marker_times)) + body))
    path.write_bytes(b"".join(parts))


def test_xdf_recording_imports(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    eeg = np.random.default_rng(3).normal(0, 10, (1000, 3)).astype(np.float32)
    path = tmp_path / "lab.xdf"
    _write_xdf(path, eeg, 250.0, [5002.0], t0=5000.0)
    code, out, err = run(capsys, "import", str(path), "--task", "ssvep")
    assert code == 0, err
    session = read_session(lake.paths.lake_root, _imported_session(out))
    assert session.channel_names == ["Oz", "O1", "O2"] and session.session["task"] == "ssvep"
    np.testing.assert_array_equal(session.samples, eeg)
    start_us = 1_790_000_000 * 1_000_000  # the file's datetime is the first timestamp's wall time
    assert session.lab_start_us() == start_us
    assert [(m["timestamp_us"], m["label"]) for m in session.markers] == [(start_us + 2_000_000, "go!!")]


def test_bad_input_one_clear_error_each_and_nothing_partial(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    code, _, err = run(capsys, "import", str(picture))
    assert code == 2 and "cannot tell what kind of recording this is" in err and "--format" in err
    code, _, err = run(capsys, "import", str(picture), "--format", "edf")
    assert code == 2 and "not a readable EDF/BDF file" in err
    assert not discover_tables(lake.paths.lake_root)
    code, _, err = run(capsys, "export", "no-such-session", "--format", "edf", "--out", str(tmp_path / "x"))
    assert code == 2 and "no sessions in the lake" in err and not (tmp_path / "x").exists()
    original = _simulated_in_lake(lake, seconds=5.0)
    code, _, err = run(capsys, "export", "no-such-session", "--format", "edf", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown session 'no-such-session'" in err and not (tmp_path / "x").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    for fmt in ("edf", "bids"):
        code, _, err = run(capsys, "export", original.session_id, "--format", fmt, "--out", str(busy))
        assert code == 2 and "is not an empty directory" in err
        assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_bids_export_is_a_valid_layout(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import mne_bids

    original = _simulated_in_lake(lake, seconds=12.0)
    code, out, err = run(capsys, "export", original.session_id, "--format", "bids", "--out", str(tmp_path / "bids"))
    assert code == 0, err
    [path] = mne_bids.find_matching_paths(tmp_path / "bids", datatypes="eeg", extensions=".edf")
    raw = mne_bids.read_raw_bids(path, verbose="error")
    assert raw.ch_names[:2] == ["Fp1", "Fp2"] and raw.info["sfreq"] == 250
    labels = [a["description"] for a in raw.annotations]
    assert labels[:1] == [original.markers[0]["label"]]
    description = json.loads((tmp_path / "bids" / "dataset_description.json").read_text())
    assert description["BIDSVersion"]


def test_session_ids_that_would_leave_the_output_folder_are_refused(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = _simulated_in_lake(lake, seconds=5.0)
    exported = tmp_path / "edf"
    assert run(capsys, "export", original.session_id, "--format", "edf", "--out", str(exported))[0] == 0
    [edf] = exported.iterdir()
    for bad in ("../escape", "a/b", ".hidden", "<script>"):
        code, _, err = run(capsys, "import", str(edf), "--session", bad)
        assert code == 2 and "session.session_id" in err and "letters, digits" in err, err
    moved = original.moved("../../outside", original.device_id, 0)
    with pytest.raises(RecordingError, match="no '..'"):
        export(moved, "edf", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "outside.edf").exists()


def test_xdf_export_opens_in_pyxdf_with_every_stream_on_the_lab_clock(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd
    import pyxdf

    original = _simulated_in_lake(lake, seconds=12.0)
    original.clock_offset_us[:] = 2_500  # the edge measured its clock 2.5 ms behind the hub's
    out = tmp_path / "xdf"
    sensors = pd.DataFrame(
        {"time_us": original.device_times_us[::250] + 2_500, "temperature_c": 21.0, "humidity_pct": 40.0}
    )
    predictions = pd.DataFrame({"window_end_us": original.device_times_us[500::100] + 2_500, "label": "flicker_12hz"})
    [path] = export(original, "xdf", out, sensors=sensors, predictions=predictions)
    streams, header = pyxdf.load_xdf(str(path))
    by_name = {s["info"]["name"][0].split(" ", 1)[1]: s for s in streams}
    assert set(by_name) == {"EEG", "markers", "room sensors", "predictions"}
    eeg = by_name["EEG"]
    assert eeg["time_series"].shape == original.samples.shape
    np.testing.assert_array_equal(eeg["time_series"], original.samples)
    labels = [c["label"][0] for c in eeg["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == original.channel_names
    # The reader's clock synchronisation applied the offsets: EEG lands on the lab clock.
    lab_s = (original.device_times_us + 2_500) / 1e6
    assert np.max(np.abs(eeg["time_stamps"] - lab_s)) < 0.002
    assert len(by_name["markers"]["time_series"]) == len(original.markers)
    assert len(by_name["room sensors"]["time_series"]) == len(sensors)
    assert [row[0] for row in by_name["predictions"]["time_series"]] == ["flicker_12hz"] * len(predictions)
    # Through the CLI, from the lake (no sensors or predictions there for this session).
    code, stdout, err = run(capsys, "export", original.session_id, "--format", "xdf", "--out", str(tmp_path / "cli"))
    assert code == 0, err
    streams, _ = pyxdf.load_xdf(str(next((tmp_path / "cli").glob("*.xdf"))))
    assert sorted(s["info"]["type"][0] for s in streams) == ["EEG", "Markers"]
