"""Gold labels windows from the stimulus presenter's markers: `neurolake stimulus serve` with its page
in headless Chromium, then bronze and silver/gold; every window wholly inside a trial the page drew
carries that trial's label, and no window carries a label the page did not show around it."""

from __future__ import annotations

import json
import math

import pytest

from infra.spark import build_spark_session
from neurolake import lake
from streaming_jobs.jobs import drain, start_bronze
from streaming_jobs.silver_gold import start_silver_gold
from tests.integration.browser import stimulus_page
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration

DURATION_S = 30  # about 6 trials; the browser is up before the session starts (tests/integration/browser.py)
STIMULUS_S = 3.0


def _serve_with_the_page_open(broker: BrokerStack) -> None:
    stimulus = {
        "NEUROLAKE_EDGE__STIMULUS__LEAD_IN_S": "1.5",
        "NEUROLAKE_EDGE__STIMULUS__CUE_S": "0.3",
        "NEUROLAKE_EDGE__STIMULUS__STIMULUS_S": str(STIMULUS_S),
        "NEUROLAKE_EDGE__STIMULUS__REST_S": "1.0",
    }
    with stimulus_page(broker, "stim-pi", stimulus, DURATION_S) as (_, serve):
        serve.wait(DURATION_S + 60)


def test_gold_labels_windows_from_the_presenters_markers(broker: BrokerStack) -> None:
    _serve_with_the_page_open(broker)
    spark = build_spark_session(broker.settings, "presenter-labels-test")
    try:
        bronze = start_bronze(spark, broker.settings, "bronze", trigger_s=0.5, publish_acks=False)
        drain(bronze)
        bronze.stop()
        query = start_silver_gold(spark, broker.settings, trigger_s=0.5)
        drain(query)
        query.stop()
    finally:
        spark.stop()

    root = broker.settings.paths.lake_root
    [session] = lake.table("bronze.sessions", lake_root=root).to_pylist()
    assert dict(session["metadata"])["stimulus_markers"] == "frames"  # stamped by the presenter's page
    markers = lake.table("bronze.markers", lake_root=root).to_pylist()
    assert {m["session_id"] for m in markers} == {session["session_id"]}
    trials = [
        (m["timestamp_us"], m["timestamp_us"] + round(m["duration_s"] * 1e6), m["label"])
        for m in markers
        if m["event"] == "START"
    ]
    assert len(trials) >= 3
    windows = lake.table("gold.eeg_windows", lake_root=root).to_pylist()
    assert windows and {w["session_id"] for w in windows} == {session["session_id"]}
    inside = 0
    for window in windows:
        holding = [
            label
            for start, end, label in trials
            if start <= window["window_start_us"] and window["window_end_us"] < end
        ]
        if holding:
            inside += 1
            assert window["label"] == holding[0], (window, trials)
        elif window["label"] is not None and window["label"] != "rest":
            raise AssertionError(f"window labelled {window['label']} lies in no trial the page drew: {window}")
    # A trial holds every window that starts in its first (trial - window) seconds: on a grid of one
    # step, at least that span over the step, rounded down (two or three 2 s windows 0.4 s apart in a
    # 3 s flicker, as the grid falls). The last trial may be cut by the session's end.
    lake_settings = broker.settings.lake
    step_s = lake_settings.window_s * (1 - lake_settings.window_overlap)
    per_trial = math.floor((STIMULUS_S - lake_settings.window_s) / step_s + 1e-9)
    assert per_trial >= 2 and inside >= per_trial * (len(trials) - 1), json.dumps(trials)
