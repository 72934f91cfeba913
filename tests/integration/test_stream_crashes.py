"""The lake's acceptance run: 60 s of two simulated headsets while the streaming process is
SIGKILLed at 3 random moments and restarted; every count is exact and nothing is duplicated."""

from __future__ import annotations

import json
import random
import time

import pytest

from batch_jobs.lake_sql import run_query
from batch_jobs.lake_tables import discover_tables
from tests.integration.conftest import BrokerStack, kill_group

pytestmark = pytest.mark.integration


def _count(root, sql: str) -> int:
    if "silver.eeg_samples" in sql and "silver.eeg_samples" not in discover_tables(root):
        return 0
    return int(run_query(root, sql).rows[0][0])


@pytest.mark.slow
def test_sigkill_at_three_moments_then_same_counts_no_duplicates(broker: BrokerStack) -> None:
    headsets = broker.simulate(2, 60, "--stimulus")
    rng = random.Random(11)
    streams = broker.streams("all", "streams-0")
    try:
        for crash in range(3):
            time.sleep(rng.uniform(10, 18))
            kill_group(streams)
            streams = broker.streams("all", f"streams-{crash + 1}")
        summary = json.loads(headsets.communicate(timeout=120)[0])
        expected_samples = sum(d["samples"] for d in summary["devices"])
        expected_blocks = sum(d["blocks"] for d in summary["devices"])
        root = broker.settings.paths.lake_root
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if _count(root, "SELECT count(*) FROM silver.eeg_samples") >= expected_samples:
                break
            time.sleep(3)
        time.sleep(4)  # anything more would be a duplicate: give it the chance to show up
    finally:
        kill_group(streams)
        if headsets.poll() is None:
            headsets.kill()
    blocks = run_query(root, "SELECT device_id, seq FROM bronze.eeg_blocks").rows
    assert len(blocks) == len(set(blocks)) == expected_blocks
    for device in summary["devices"]:
        seqs = sorted(s for d, s in blocks if d == device["device_id"])
        assert seqs == list(range(device["next_seq"]["eeg.raw"]))
    samples = run_query(root, "SELECT session_id, sample_index FROM silver.eeg_samples").rows
    assert len(samples) == len(set(samples)) == expected_samples
    windows = run_query(root, "SELECT session_id, window_start_index FROM gold.eeg_windows").rows
    assert len(windows) == len(set(windows))
    per_session: dict[str, list[int]] = {}
    for session, start in windows:
        per_session.setdefault(session, []).append(start)
    samples_per_session: dict[str, int] = {}
    for session, _ in samples:
        samples_per_session[session] = samples_per_session.get(session, 0) + 1
    assert set(per_session) == set(samples_per_session)
    for session, starts in per_session.items():
        # 2 s windows (500 samples) every 0.4 s (100 samples), none missing, none extra.
        assert sorted(starts) == list(range(0, samples_per_session[session] - 500 + 1, 100)), session
    assert "bronze.quarantine" not in discover_tables(root)
