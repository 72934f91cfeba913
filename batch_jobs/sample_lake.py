"""A small lake of simulated SSVEP sessions, written without Kafka or Spark.

For tests, benchmarks, the Airflow DAG test and anyone who wants to try training without waiting
for headsets. Each session runs the simulated lab headset against the stimulus schedule, through the
same session processor the streaming job uses, into ``gold.eeg_windows`` and ``silver.markers``
(and ``silver.sensor_readings`` from the simulated room, for motion labels).

Bronze gets each session's record, blocks and markers as an import would (``kafka_topic``
``sample_lake:TOPIC``), so that ``neurolake sessions`` lists the sessions, ``export`` and ``replay``
read them and ``lake rebuild`` can derive them again. The processor's final state of each session is
left where a rebuild leaves its states: the silver/gold stream (running, or started later) adopts it
and counts the session's blocks as done instead of deriving its windows a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batch_jobs.recording import Recording, write_bronze
from core.settings import Settings, StimulusSettings
from dsp.session import Block, SessionState, info_from_session_record, process
from dsp.ssvep import layout_from_classes
from edge_producers.devices.sensors import SimulatedRoomSensors
from edge_producers.devices.simulated import SimulatedEeg
from edge_producers.stimulus import StimulusSchedule
from infra.delta import LakeTable, utc_date
from schemas.catalog import GOLD_EEG_WINDOWS, SILVER_MARKERS, SILVER_SENSOR_READINGS
from streaming_jobs.bronze import silver_projections
from streaming_jobs.checkpoints import checkpoint_dir
from streaming_jobs.lake_rows import WINDOWS_SCHEMA, windows_table
from streaming_jobs.silver_gold import QUERY_NAME, label_windows, processor_config, rebuilds_dir, save_rebuild_state

log = logging.getLogger(__name__)

APP_ID = "sample_lake"
BLOCK = 25
SESSION_START_US = 1_790_000_000_000_000  # 2026-09-21, a fixed lab time so reruns are identical


@dataclass
class SimulatedSession:
    """One simulated session: its ``sessions`` record, its EEG blocks and its stimulus schedule."""

    session_record: dict[str, Any]
    blocks: list[Block]
    schedule: StimulusSchedule
    stimulus: StimulusSettings
    start_us: int
    seconds: float

    @property
    def session_id(self) -> str:
        return str(self.session_record["session_id"])

    def marker_records(self) -> list[dict[str, Any]]:
        """The schedule's START/END events as ``marker`` records (lab time)."""
        end_us = self.start_us + int(self.seconds * 1e6)
        return [
            {
                "device_id": self.session_record["device_id"],
                "session_id": self.session_id,
                "seq": seq,
                "timestamp_us": e.time_us,
                "event": e.event,
                "label": e.trial.label,
                "trial": e.trial.trial,
                "stimulus_hz": e.trial.hz,
                "duration_s": self.stimulus.stimulus_s if e.event == "START" else None,
            }
            for seq, e in enumerate(self.schedule.events_between(self.start_us - 1, end_us))
        ]

    def marker_rows(self) -> list[dict[str, Any]]:
        """``silver.markers`` rows of the schedule's START/END events."""
        return [
            {
                "session_id": m["session_id"],
                "device_id": m["device_id"],
                "seq": m["seq"],
                "time_us": m["timestamp_us"],
                "event": m["event"],
                "label": m["label"],
                "trial": m["trial"],
                "stimulus_hz": m["stimulus_hz"],
                "duration_s": m["duration_s"],
                "date": utc_date(m["timestamp_us"]),
            }
            for m in self.marker_records()
        ]

    def recording(self) -> Recording:
        return Recording(
            dict(self.session_record),
            np.concatenate([b.samples for b in self.blocks]),
            np.concatenate([b.device_times_us for b in self.blocks]),
            np.concatenate([np.full(len(b.device_times_us), b.clock_offset_us, np.int64) for b in self.blocks]),
            self.marker_records(),
        )

    def block_records(self) -> Iterator[dict[str, Any]]:
        """The blocks as ``eeg_block`` records, as a headset would publish them."""
        return self.recording().block_records(BLOCK)


def simulate_session(settings: Settings, number: int, seconds: float, start_us: int) -> SimulatedSession:
    device_id = f"sim-{number % 4 + 1}"
    session_id = f"{device_id}-{start_us // 1000}"
    simulation = settings.edge.simulation.model_copy(update={"seed": settings.edge.simulation.seed + number})
    stimulus = settings.edge.stimulus.model_copy(update={"enabled": True, "seed": settings.edge.stimulus.seed + number})
    schedule = StimulusSchedule(stimulus, start_us)
    eeg = SimulatedEeg(simulation, schedule.frequency_at, layout_from_classes(stimulus.classes))
    record = {
        "device_id": device_id,
        "session_id": session_id,
        "seq": 0,
        "started_us": start_us,
        "board": "simulated",
        "sample_rate_hz": eeg.fs,
        "channel_names": list(eeg.layout.channel_names),
        "channel_types": list(eeg.layout.channel_types),
        "units": "uV",
        "gain": 24.0,
        "montage": settings.edge.montage,
        "block_size": BLOCK,
        "subject_id": None,
        "task": "ssvep",
        "software_version": "sample-lake",
        "metadata": {f"stimulus.{label}": str(hz) for label, hz in stimulus.classes.items()},
    }
    blocks = []
    for seq, first in enumerate(range(0, int(seconds * eeg.fs) - BLOCK + 1, BLOCK)):
        times = start_us + (np.arange(first, first + BLOCK) * 1e6 / eeg.fs).astype(np.int64)
        blocks.append(Block(device_id, seq, first, eeg.generate(BLOCK, times), times, 0, eeg.fs))
    return SimulatedSession(record, blocks, schedule, stimulus, start_us, seconds)


def session_tables(settings: Settings, session: SimulatedSession) -> tuple[pa.Table, pa.Table]:
    """Gold windows (through the streaming job's session processor) and silver markers."""
    windows, markers, _ = processed_session(settings, session)
    return windows, markers


def processed_session(settings: Settings, session: SimulatedSession) -> tuple[pa.Table, pa.Table, SessionState]:
    """:func:`session_tables` and the processor's state after the session's last block."""
    config = processor_config(settings)
    info = info_from_session_record(session.session_record, config)
    state, windows = SessionState(), []
    for block in session.blocks:
        output, state = process(state, [block], 0, config, info)
        windows += output.windows
    window_table = windows_table(session.session_id, windows)
    markers = pa.Table.from_pylist(session.marker_rows())
    bronze_style = markers.rename_columns(["timestamp_us" if c == "time_us" else c for c in markers.column_names])
    window_table = window_table.set_column(
        WINDOWS_SCHEMA.get_field_index("label"), "label", label_windows(window_table, bronze_style)
    )
    return window_table, markers, state


def _room_readings(session_id: str, device_id: str, number: int, start_us: int, seconds: float) -> pa.Table:
    clock = {"now": start_us / 1e6}
    room = SimulatedRoomSensors(seed=number, clock_s=lambda: clock["now"])
    room.start()
    rows = []
    for seq, t in enumerate(np.arange(0.0, seconds, 0.5)):
        clock["now"] = start_us / 1e6 + t
        time_us = start_us + int(t * 1e6)
        rows.append(
            {
                "session_id": session_id,
                "device_id": device_id,
                "seq": seq,
                "sensor": "simulated",
                **room.read(),
                "date": utc_date(time_us),
                "time_us": time_us,
            }
        )
    return pa.Table.from_pylist(rows)


def write_sample_lake(
    settings: Settings, sessions: int = 6, seconds: float = 60.0, progress: Callable[[int, int], None] | None = None
) -> list[str]:
    """Append ``sessions`` simulated sessions to the lake; returns their ids. Idempotent per session
    number (a rerun with the same settings writes nothing new)."""
    root: Path = settings.paths.lake_root
    states = rebuilds_dir(checkpoint_dir(settings, QUERY_NAME))
    windows_table, markers_table = LakeTable(root, GOLD_EEG_WINDOWS), LakeTable(root, SILVER_MARKERS)
    readings_table = LakeTable(root, SILVER_SENSOR_READINGS)
    ids = []
    for number in range(sessions):
        start_us = SESSION_START_US + number * int((seconds + 60) * 1e6)
        session = simulate_session(settings, number, seconds, start_us)
        windows, markers, state = processed_session(settings, session)
        session_id, device_id = session.session_id, session.session_record["device_id"]
        readings = _room_readings(session_id, device_id, number, start_us, seconds)
        # The state before the blocks: a silver/gold stream that then reads them finds them done. The
        # session record lands in bronze.sessions first (training reads each session's montage from it).
        save_rebuild_state(states, session_id, f"{APP_ID}:{session_id}", state)
        _, bronze_markers = write_bronze(
            root, session.recording(), f"{APP_ID}:bronze", number, source=APP_ID, block_size=BLOCK
        )
        # silver.markers as bronze's projection makes it: the stream appends to the same table, and
        # a column typed otherwise (trial as int64 from Python ints) fails its every later commit.
        markers = silver_projections({"markers": bronze_markers})["markers"]
        # Silver first: a window must never be in gold before the markers that label it.
        markers_table.append(markers, f"{APP_ID}:markers", number)
        readings_table.append(readings, f"{APP_ID}:sensor_readings", number)
        windows_table.append(windows, f"{APP_ID}:eeg_windows", number)
        ids.append(session_id)
        if progress:
            progress(number + 1, sessions)
        log.info("sample lake: session %s, %d windows, %d markers", session_id, windows.num_rows, markers.num_rows)
    return ids
