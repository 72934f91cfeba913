"""Device adapters: BrainFlow's synthetic and playback boards for real, and clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from core.settings import CameraSettings
from edge_producers.devices.camera import PiCamera2Camera, TestPatternCamera
from edge_producers.devices.eeg import BrainFlowSource, DeviceError
from edge_producers.devices.sensors import SenseHatSensors, SimulatedRoomSensors


def test_synthetic_board_description_comes_from_brainflow() -> None:
    source = BrainFlowSource("synthetic")
    assert source.info.sample_rate_hz == 250
    assert source.info.n_channels == 16
    assert source.info.channel_names[0] == "Fz"
    with source:
        time.sleep(0.5)
        chunk = source.read()
    assert chunk.samples.shape[1] == 16 and chunk.n_samples > 50
    assert chunk.samples.dtype == np.float32
    assert abs(chunk.device_times_us[-1] / 1e6 - time.time()) < 5


def test_cyton_daisy_description_without_hardware() -> None:
    source = BrainFlowSource("cyton_daisy", serial_port="/dev/null-not-a-port", analog_mode=True)
    assert source.info.sample_rate_hz == 125
    assert source.info.channel_names[:2] == ("Fp1", "Fp2")
    assert source.info.channel_types[16:] == ("pulse", "aux", "aux")


def test_playback_of_a_brainflow_recording(tmp_path: Path) -> None:
    from brainflow.board_shim import BoardIds, BoardShim
    from brainflow.data_filter import DataFilter

    rows = BoardShim.get_num_rows(BoardIds.SYNTHETIC_BOARD.value)
    data = np.random.default_rng(0).standard_normal((rows, 500))
    data[BoardShim.get_timestamp_channel(BoardIds.SYNTHETIC_BOARD.value)] = time.time() + np.arange(500) / 250
    recording = tmp_path / "rec.csv"
    DataFilter.write_file(data, str(recording), "w")
    source = BrainFlowSource("playback", playback_file=recording)
    with source:
        time.sleep(1.0)
        chunk = source.read()
    assert chunk.n_samples > 0
    eeg_rows = BoardShim.get_eeg_channels(BoardIds.SYNTHETIC_BOARD.value)
    # The recording is text with 6 decimals: compare to that precision.
    np.testing.assert_allclose(chunk.samples[0], data[eeg_rows, 0], atol=1e-5)


def test_missing_serial_port_is_a_clear_device_error() -> None:
    with pytest.raises(DeviceError, match="needs edge.serial_port"):
        BrainFlowSource("cyton")
    source = BrainFlowSource("cyton", serial_port="/dev/ttyNOPE0")
    with pytest.raises(DeviceError, match="cannot start cyton on /dev/ttyNOPE0"):
        source.start()


def test_unknown_board_and_missing_recording() -> None:
    with pytest.raises(DeviceError, match="unknown board 'muse'"):
        BrainFlowSource("muse")
    with pytest.raises(DeviceError, match="does not exist"):
        BrainFlowSource("playback", playback_file=Path("/nope.csv"))


def test_camera_absent_and_test_pattern() -> None:
    with pytest.raises(DeviceError, match="picamera2 is not installed"):
        PiCamera2Camera(CameraSettings()).start()
    camera = TestPatternCamera(CameraSettings(width=64, height=48))
    camera.start()
    frame = camera.capture()
    assert frame.jpeg[:2] == b"\xff\xd8" and (frame.width, frame.height) == (64, 48)


def test_sense_hat_absent_and_simulated_sensors() -> None:
    with pytest.raises(DeviceError, match="sense_hat is not installed"):
        SenseHatSensors().start()
    clock = iter(np.arange(0, 200, 0.5))
    sensors = SimulatedRoomSensors(seed=1, clock_s=lambda: float(next(clock)))
    sensors.start()
    readings = [sensors.read() for _ in range(300)]
    shakes = np.array([abs(r["accel_x_g"]) for r in readings])
    assert shakes.max() > 0.1 and np.median(shakes) < 0.3  # still and moving periods
