"""``neurolake lsl serve``: each live session's filtered EEG and its predictions as Lab Streaming Layer
outlets, so LSL tools (MNE-LSL, OpenViBE, BCI2000, LabRecorder) read them as they read any amplifier.

One reader of the live topics (infra.kafka.LiveReader: authenticated device records only), the
lake's own filter per session (dsp.filters), and per session two outlets:

- ``neurolake <session> EEG``: type EEG, float32, the session's channels and rate, its channel
  labels and types in the stream description; each block pushed with its last sample's time;
- ``neurolake <session> predictions``: type Markers, one string channel (the predicted label) at the
  window's end.

Times are lab time mapped onto this machine's LSL clock (``local_clock()``), so an LSL reader's
clock-offset machinery lines them up with every other stream.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.settings import Settings
from core.stopping import stop_on_signals
from dsp.filters import FilterSpec, design_sos, filter_block
from dsp.session import session_record_problem
from infra.kafka import LiveReader
from schemas.catalog import EEG_RAW, PREDICTIONS, SESSIONS
from schemas.codec import eeg_block_device_times, eeg_block_samples

log = logging.getLogger(__name__)


@dataclass
class SessionOutlets:
    eeg: Any
    predictions: Any
    sos: np.ndarray
    state: np.ndarray | None = None
    next_index: int | None = None


def lsl_time(lab_us: int) -> float:
    """A lab time (microseconds since the epoch) on this machine's LSL clock."""
    import pylsl

    return pylsl.local_clock() - (time.time() - lab_us / 1e6)


class LslBridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, dict[str, Any]] = {}
        self.outlets: dict[str, SessionOutlets] = {}
        self.blocks = 0
        self.predictions = 0
        self.refused = 0

    def _outlets_for(self, session_id: str) -> SessionOutlets | None:
        import pylsl

        outlets = self.outlets.get(session_id)
        if outlets is not None:
            return outlets
        session = self.sessions.get(session_id)
        if session is None:
            return None  # its session record comes first on a healthy edge
        names, types = list(session["channel_names"]), list(session["channel_types"])
        rate = float(session["sample_rate_hz"])
        info = pylsl.StreamInfo(
            f"neurolake {session_id} EEG", "EEG", len(names), rate, pylsl.cf_float32, f"neurolake-{session_id}-eeg"
        )
        channels = info.desc().append_child("channels")
        for name, kind in zip(names, types):
            channel = channels.append_child("channel")
            channel.append_child_value("label", name)
            channel.append_child_value("type", kind.upper())
            channel.append_child_value("unit", "microvolts")
        info.desc().append_child_value("device_id", session["device_id"])
        markers = pylsl.StreamInfo(
            f"neurolake {session_id} predictions",
            "Markers",
            1,
            pylsl.IRREGULAR_RATE,
            pylsl.cf_string,
            f"neurolake-{session_id}-predictions",
        )
        lake = self.settings.lake
        sos = design_sos(FilterSpec.of(lake, rate))
        outlets = SessionOutlets(pylsl.StreamOutlet(info, chunk_size=32), pylsl.StreamOutlet(markers), sos)
        self.outlets[session_id] = outlets
        log.info("LSL outlets for %s: %d channels at %g Hz, and its predictions", session_id, len(names), rate)
        return outlets

    def handle(self, topic: str, record: dict[str, Any]) -> None:
        if topic == SESSIONS:
            problem = session_record_problem(record)
            if problem is not None:
                raise ValueError(problem)
            self.sessions[record["session_id"]] = record
            return
        outlets = self._outlets_for(record["session_id"])
        if outlets is None:
            return
        if topic == EEG_RAW:
            samples = eeg_block_samples(record)
            first = int(record["first_sample_index"])
            if outlets.next_index is not None and first < outlets.next_index:
                return  # a resend of a block already pushed
            filtered, outlets.state = filter_block(
                outlets.sos, outlets.state, outlets.next_index, first, samples.astype(np.float64)
            )
            outlets.next_index = first + len(samples)
            last_us = int(eeg_block_device_times(record)[-1]) + int(record["clock_offset_us"])
            outlets.eeg.push_chunk(filtered.astype(np.float32), lsl_time(last_us))
            self.blocks += 1
        elif topic == PREDICTIONS:
            outlets.predictions.push_sample([str(record["label"])], lsl_time(int(record["window_end_us"])))
            self.predictions += 1


def serve_lsl(settings: Settings, duration_s: float | None = None, stop: threading.Event | None = None) -> int:
    """Publish until SIGTERM/SIGINT, ``stop`` or ``duration_s``; exit code 0."""
    bridge = LslBridge(settings)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    with (
        stop_on_signals("lsl serve") as stopped,
        LiveReader(
            settings, "neurolake-lsl", (EEG_RAW, PREDICTIONS), logger_name="streaming_jobs.rdkafka.lsl"
        ) as reader,
    ):
        missing = reader.assign()
        if EEG_RAW in missing:
            log.error("topic %s does not exist; start the stack with `neurolake up`", EEG_RAW)
            return 2
        log.info("publishing live sessions over LSL (filtered EEG and predictions)")
        next_report = time.monotonic() + 10
        while not stopped.is_set() and not (stop is not None and stop.is_set()):
            if deadline is not None and time.monotonic() >= deadline:
                break
            for item in reader.read(500, timeout_s=0.05):
                try:
                    bridge.handle(item.topic, item.record)
                except Exception as exc:  # one record that contradicts its session must not stop the outlets
                    bridge.refused += 1
                    log.warning("lsl: %s record refused: %s", item.topic, exc)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 10
                log.info(
                    "lsl: %d sessions, %d blocks, %d predictions pushed; %d refused, %d unauthenticated",
                    len(bridge.outlets),
                    bridge.blocks,
                    bridge.predictions,
                    bridge.refused,
                    reader.unauthenticated,
                )
    return 0
