"""Dashboard panels over a real lake on disk (no browser; the browser test is in tests/integration)."""

from __future__ import annotations

import numpy as np
import pytest

from batch_jobs.recording import write_session
from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from dashboard.app import HistoryPanel
from streaming_jobs.silver_gold import processor_config


def test_the_history_tab_places_samples_at_the_sessions_own_rate(make_settings, spark) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(NEUROLAKE_EDGE__SIMULATION__SAMPLE_RATE_HZ="200")
    session = simulate_session(settings, 0, 12.0, SESSION_START_US)
    recording = session.recording()
    write_session(settings.paths.lake_root, recording, processor_config(settings), lambda: spark)
    panel = HistoryPanel(settings)
    panel.load_sessions()
    assert panel.sessions.options == [recording.session_id]
    panel.sessions.value = recording.session_id
    panel.show()
    seconds = np.asarray(panel.source.data["t"])
    # The first 10 s at 200 Hz: 2,000 samples, the last at 9.995 s (250 Hz would put 2,400 at 9.596 s).
    assert len(seconds) == 2000
    assert seconds[-1] == pytest.approx(1999 / 200)
