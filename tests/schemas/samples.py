"""One valid record per record type, shared by the contract tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.codec import samples_to_bytes, times_to_bytes

T0 = 1_790_000_000_000_000


def sample_records() -> dict[str, dict[str, Any]]:
    block = np.arange(25 * 16, dtype=np.float32).reshape(25, 16) / 7
    return {
        "session": {
            "device_id": "pi-1", "session_id": "s1", "seq": 0, "spool_epoch": 1_790_000_000_000_000, "started_us": T0,
            "board": "SYNTHETIC_BOARD", "sample_rate_hz": 250.0,
            "channel_names": [f"ch{i}" for i in range(16)], "channel_types": ["eeg"] * 16,
            "units": "uV", "gain": 24.0, "montage": "standard_1020", "block_size": 25,
            "subject_id": "sub-01", "task": "ssvep", "software_version": "0.1.0",
            "metadata": {"room": "A"},
        },
        "eeg_block": {
            "device_id": "pi-1", "session_id": "s1", "seq": 7, "spool_epoch": 1_790_000_000_000_000, "first_sample_index": 175,
            "n_samples": 25, "n_channels": 16, "sample_rate_hz": 250.0,
            "data": samples_to_bytes(block),
            "device_times_us": times_to_bytes(T0 + np.arange(25) * 4000),
            "produced_us": T0 + 100_000, "clock_offset_us": -1234, "clock_rtt_us": 800,
        },
        "camera_frame": {
            "device_id": "pi-1", "session_id": "s1", "seq": 3, "spool_epoch": 1_790_000_000_000_000, "frame_index": 3,
            "captured_us": T0, "clock_offset_us": 0, "width": 320, "height": 240,
            "encoding": "JPEG", "data": b"\xff\xd8\xff\xd9",
        },
        "sensor_reading": {
            "device_id": "pi-1", "session_id": "s1", "seq": 1, "spool_epoch": 1_790_000_000_000_000, "measured_us": T0,
            "clock_offset_us": 5, "sensor": "sense_hat", "temperature_c": 21.5,
            "humidity_pct": 40.0, "pressure_hpa": 1013.2, "accel_x_g": 0.0, "accel_y_g": 0.0,
            "accel_z_g": 1.0, "gyro_x_rad_s": None, "gyro_y_rad_s": None, "gyro_z_rad_s": None,
        },
        "marker": {
            "device_id": "stim-1", "session_id": "s1", "seq": 2, "spool_epoch": 1_790_000_000_000_000, "timestamp_us": T0,
            "event": "START", "label": "flicker_12hz", "trial": 4, "stimulus_hz": 12.0,
            "duration_s": 4.0,
        },
        "device_status": {
            "device_id": "pi-1", "session_id": "s1", "seq": 9, "spool_epoch": 1_790_000_000_000_000, "timestamp_us": T0,
            "state": "STREAMING", "spool_depth": 12, "spool_bytes": 4096, "records_sent": 1000,
            "losses": 0, "clock_offset_us": -1234, "clock_rtt_us": 800,
            "sample_rate_hz": 249.9, "message": None,
        },
        "device_log": {
            "device_id": "pi-1", "session_id": None, "seq": 1, "spool_epoch": 1_790_000_000_000_000, "timestamp_us": T0,
            "level": "WARNING", "logger": "edge", "message": "broker unreachable",
        },
        "control": {
            "device_id": "pi-1", "session_id": "s1", "seq": 1, "issued_us": T0,
            "kind": "SPOOL_ACK", "command_id": "c-1", "sender": "bronze", "config": {},
            "acked_topic": "eeg.raw", "acked_seq": 41, "acked_epoch": None, "in_reply_to": None, "ok": None, "message": None,
        },
        "prediction": {
            "device_id": "pi-1", "session_id": "s1", "seq": 5, "window_start_index": 0,
            "window_end_index": 500, "window_end_us": T0, "label": "flicker_12hz",
            "probabilities": {"flicker_12hz": 0.9, "flicker_15hz": 0.1},
            "model_name": "neurolake-ssvep", "model_version": "3", "scored_us": T0 + 50_000,
            "latency_us": 50_000,
        },
        "dead_letter": {
            "source_topic": "eeg.raw", "source_partition": 0, "source_offset": 12,
            "key": b"pi-1", "value": b"\x00garbage", "reason": "bad magic", "failed_us": T0,
            "component": "bronze",
        },
    }
