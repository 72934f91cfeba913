"""The typed record builders: what they build is what the codec accepts, and bad input is refused
naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.codec import default_codec, eeg_block_device_times, eeg_block_samples
from schemas.records import CONTROL_KINDS, control_record, eeg_block_record


def test_control_kinds_come_from_the_schema() -> None:
    assert {"SPOOL_ACK", "COMMAND_ACK", "STOP"} <= CONTROL_KINDS


def test_a_spool_ack_round_trips_through_the_codec() -> None:
    record = control_record(
        device_id="pi-1",
        kind="SPOOL_ACK",
        sender="bronze",
        issued_us=1_700_000_000_000_000,
        acked_topic="eeg.raw",
        acked_seq=41,
    )
    codec = default_codec()
    record_type, back = codec.decode(codec.encode("control", record))
    assert record_type == "control" and back == record
    assert back["seq"] == back["issued_us"] and len(back["command_id"]) == 32


def test_an_unknown_control_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="control kind 'REBOOT' is not one of"):
        control_record(device_id="pi-1", kind="REBOOT", sender="hub", issued_us=1)


def test_an_eeg_block_carries_counts_that_match_its_arrays() -> None:
    samples = np.arange(30, dtype=np.float64).reshape(10, 3)
    times = 1_000 + np.arange(10) * 4_000
    record = eeg_block_record(
        device_id="pi-1",
        session_id="s",
        seq=7,
        first_sample_index=100,
        samples=samples,
        device_times_us=times,
        sample_rate_hz=250.0,
        produced_us=5,
        clock_offset_us=-3,
        clock_rtt_us=2,
    )
    codec = default_codec()
    _, back = codec.decode(codec.encode("eeg_block", record))
    assert (back["n_samples"], back["n_channels"]) == (10, 3)
    np.testing.assert_array_equal(eeg_block_samples(back), samples.astype(np.float32))
    np.testing.assert_array_equal(eeg_block_device_times(back), times)
    with pytest.raises(ValueError, match="device_times_us has 9 entries for 10 samples"):
        eeg_block_record(
            device_id="pi-1",
            session_id="s",
            seq=0,
            first_sample_index=0,
            samples=samples,
            device_times_us=times[:9],
            sample_rate_hz=250.0,
            produced_us=0,
            clock_offset_us=0,
            clock_rtt_us=0,
        )


def test_marker_and_session_builders_refuse_what_the_contract_refuses() -> None:
    from schemas.records import marker_record, session_record

    codec = default_codec()
    marker = marker_record(device_id="pi-1", session_id="s1", timestamp_us=1, event="START", label="x", duration_s=4.0)
    assert codec.decode(codec.encode("marker", marker))[1]["duration_s"] == 4.0
    with pytest.raises(ValueError, match="marker event 'BEGIN' is not one of END, INSTANT, START"):
        marker_record(device_id="pi-1", session_id="s1", timestamp_us=1, event="BEGIN", label="x")
    with pytest.raises(ValueError, match="2 channel_names but 1 channel_types"):
        session_record(device_id="pi-1", session_id="s1", started_us=1, board="b", sample_rate_hz=250.0,
                       channel_names=["a", "b"], channel_types=["eeg"], block_size=25)  # fmt: skip


def test_edge_record_builders_encode_and_refuse_what_the_contract_refuses() -> None:
    from schemas.records import (
        camera_frame_record,
        device_log_record,
        device_status_record,
        sensor_reading_record,
    )

    codec = default_codec()
    frame = camera_frame_record(device_id="pi-1", session_id="s1", frame_index=3, captured_us=1,
                                clock_offset_us=0, width=4, height=2, data=b"\xff\xd8")  # fmt: skip
    reading = sensor_reading_record(device_id="pi-1", session_id="s1", measured_us=1, clock_offset_us=0,
                                    sensor="simulated", values={"temperature_c": 21, "gyro_x_rad_s": None})  # fmt: skip
    status = device_status_record(device_id="pi-1", session_id=None, timestamp_us=1, state="STREAMING",
                                  spool_depth=0, spool_bytes=0, records_sent=5, losses=0, clock_offset_us=0,
                                  clock_rtt_us=300, sample_rate_hz=250.0)  # fmt: skip
    line = device_log_record(device_id="pi-1", session_id=None, timestamp_us=1, level="INFO", logger="edge",
                             message="x" * 5000)  # fmt: skip
    for record_type, record in (("camera_frame", frame), ("sensor_reading", reading),
                                ("device_status", status), ("device_log", line)):  # fmt: skip
        assert codec.decode(codec.encode(record_type, record)) == (record_type, {**record, "spool_epoch": 0})
    assert reading["temperature_c"] == 21.0 and reading["humidity_pct"] is None
    assert len(line["message"]) == 4000
    with pytest.raises(ValueError, match="sensor_reading has no field temp_c"):
        sensor_reading_record(device_id="pi-1", session_id="s1", measured_us=1, clock_offset_us=0,
                              sensor="simulated", values={"temp_c": 21.0})  # fmt: skip
    with pytest.raises(ValueError, match="device_status state 'RUNNING' is not one of"):
        device_status_record(device_id="pi-1", session_id=None, timestamp_us=1, state="RUNNING", spool_depth=0,
                             spool_bytes=0, records_sent=0, losses=0, clock_offset_us=0, clock_rtt_us=0,
                             sample_rate_hz=250.0)  # fmt: skip
    with pytest.raises(ValueError, match="encoding 'GIF' is not one of JPEG, PNG"):
        camera_frame_record(device_id="pi-1", session_id="s1", frame_index=0, captured_us=1, clock_offset_us=0,
                            width=4, height=2, data=b"", encoding="GIF")  # fmt: skip
