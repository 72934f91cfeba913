"""The stimulus presenter in headless Chromium: `neurolake stimulus serve` publishes signed markers
whose lab times are the times of the frames the page drew the flicker on."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_producers.frames import fit_sinusoid
from edge_producers.stimulus import stimulus_targets
from schemas.catalog import MARKERS
from schemas.codec import default_codec
from schemas.signing import Keyring
from tests.integration.browser import stimulus_page
from tests.integration.conftest import BrokerStack, read_topic

pytestmark = pytest.mark.integration

# Two milliseconds: the page's clock estimate (lowest websocket round trip) and the lab offset of
# one clock probe on this machine are each well under it; one 60 Hz frame is 16.7 ms.
TOLERANCE_MS = 2.0


def busy_frame_times(period_ms: float) -> list[float]:
    """Two seconds of frame timestamps as a busy machine gives them: irregular frames after the page
    loaded, a frame late by 0.6 of a period with the next one on time, a dropped frame, and the
    page's 5 us timer resolution. Counting the frames in the span called the period 0.22 ms short."""
    times = [period_ms * k for k in range(120) if k != 70]
    times[40] += 0.6 * period_ms
    return [round(t / 0.005) * 0.005 for t in [-1.4 * period_ms, -0.9 * period_ms, *times]]


def test_markers_are_stamped_with_the_frames_the_browser_drew(broker: BrokerStack) -> None:
    stimulus = {
        "NEUROLAKE_EDGE__STIMULUS__LEAD_IN_S": "1.5",
        "NEUROLAKE_EDGE__STIMULUS__CUE_S": "0.3",
        "NEUROLAKE_EDGE__STIMULUS__STIMULUS_S": "1.5",
        "NEUROLAKE_EDGE__STIMULUS__REST_S": "0.4",
    }
    frames: list = []
    with stimulus_page(broker, "stim-pi", stimulus, 14, query="?record=1") as (driver, serve):
        origin_ms = float(driver.execute_script("return presenter.timeOrigin"))
        period = 1000 / 60.006
        estimate = driver.execute_script("return presenter.framePeriod(arguments[0])", busy_frame_times(period))
        assert abs(estimate - period) < 0.002, (estimate, period)
        while serve.poll() is None:
            frames += driver.execute_script("return presenter.takeLog()")
            time.sleep(0.5)
        frames += driver.execute_script("return presenter.takeLog()")

    keyring = Keyring(broker.settings.security.keyring)
    codec = default_codec()
    markers = []
    for message in read_topic(broker.settings, MARKERS):
        record, key = keyring.verify(message.value(), MARKERS)  # signed by the device's own key
        assert key.device_id == "stim-pi"
        markers.append(codec.decode(record)[1])
    starts = {m["trial"]: m for m in markers if m["event"] == "START"}
    ends = {m["trial"]: m for m in markers if m["event"] == "END"}
    assert len(starts) >= 3 and set(ends) == set(starts)

    times = np.array([f[0] for f in frames])
    trial_of = np.array([f[1] for f in frames])
    sync = np.array([f[3] for f in frames]) > 0.5
    # The clock service runs on this machine: lab time is this machine's wall time, like timeOrigin.
    targets = stimulus_targets(broker.settings.edge.stimulus)
    for trial, start in starts.items():
        shown = np.flatnonzero((trial_of == trial) & sync)
        assert shown.size, f"trial {trial} has a START marker but no frame showed it"
        first, after = int(shown[0]), int(shown[-1]) + 1
        onset_us = (origin_ms + times[first]) * 1000
        assert abs(start["timestamp_us"] - onset_us) < TOLERANCE_MS * 1000, (trial, start, onset_us)
        offset_us = (origin_ms + times[after]) * 1000
        assert abs(ends[trial]["timestamp_us"] - offset_us) < TOLERANCE_MS * 1000, (trial, ends[trial], offset_us)
        # The START's duration is the whole frames planned; the last one is cut short by the end of
        # the session, and a frame missed at the end keeps the last flicker frame on screen longer
        # (the END marker, stamped from the frame that followed, says so).
        period = np.median(np.diff(times))
        if trial != max(starts) and times[after] - times[after - 1] < 1.5 * period:
            assert abs(start["duration_s"] - (times[after] - times[first]) / 1000) < 0.002
        assert start["stimulus_hz"] == {t.label: t.hz for t in targets}[start["label"]]
        # What the page drew is the sinusoid of every target, at its frequency.
        seconds = (times[shown] - times[first]) / 1000
        for index, target in enumerate(targets):
            drawn = np.array([frames[i][4][index] for i in shown])
            assert abs(fit_sinusoid(seconds, drawn, target.hz).hz - target.hz) < 0.05
