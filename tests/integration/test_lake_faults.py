"""The lake's fault runs.

1. Headsets stream while the streaming process is SIGKILLed and the broker is restarted while
   silver lags bronze (only bronze running, so bronze holds what silver has not read), with one
   poison record of each kind on the topics. Bronze, silver and gold end with exact counts and no
   duplicate; every poison record is in quarantine with its reason; no query stops for good. The
   seed picks the fault moments.
2. The broker is killed and restarted with the Pis' spools not resending anything: what Kafka
   acknowledged it keeps (its log is on disk), so the lake still gets every record exactly once.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time

import pytest

from batch_jobs.lake_sql import run_query
from batch_jobs.lake_tables import discover_tables
from schemas.codec import default_codec
from tests.integration.conftest import BrokerStack, kill_group, signed
from tests.schemas.samples import sample_records

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("LAKE_FAULT_SEED", "7"))


def _poison(broker: BrokerStack) -> None:
    """One record of each kind that used to stop the lake (see ``_poison_fields``)."""
    from confluent_kafka import Producer

    codec = default_codec()
    base = sample_records()
    session = {
        **base["session"],
        "device_id": "poison-0",
        "session_id": "poison-s0",
        "seq": 0,
        "started_us": time.time_ns() // 1000,
    }
    block = {
        **base["eeg_block"],
        "device_id": "poison-0",
        "session_id": "poison-s0",
        "seq": 0,
        "first_sample_index": 0,
        "produced_us": time.time_ns() // 1000,
    }
    n_channels = len(session["channel_names"])
    wrong_channels = {
        **block,
        "seq": 1,
        "n_channels": n_channels + 1,
        "data": b"\0" * (block["n_samples"] * (n_channels + 1) * 4),
    }
    far_index = {**block, "seq": 2, "first_sample_index": 10**12}
    zero_rate = {**session, "device_id": "poison-1", "session_id": "poison-s1", "sample_rate_hz": 0.0}
    nan_rate = {**session, "device_id": "poison-2", "session_id": "poison-s2", "sample_rate_hz": float("nan")}
    bad_stimulus = {
        **session,
        "device_id": "poison-3",
        "session_id": "poison-s3",
        "metadata": {"stimulus.flicker_x": "fast"},
    }
    producer = Producer(broker.settings.kafka.producer_config())
    for topic, kind, record in [
        ("sessions", "session", session),
        ("eeg.raw", "eeg_block", block),
        ("eeg.raw", "eeg_block", wrong_channels),
        ("eeg.raw", "eeg_block", far_index),
        ("sessions", "session", zero_rate),
        ("sessions", "session", nan_rate),
        ("sessions", "session", bad_stimulus),
    ]:
        producer.produce(
            topic,
            key=record["device_id"].encode(),
            value=signed(broker.settings, topic, codec.encode(kind, record), record["device_id"]),
        )
    producer.flush(10)


@pytest.mark.slow
def test_broker_restarts_and_kills_while_silver_lags_give_exact_counts(broker: BrokerStack) -> None:
    rng = random.Random(SEED)
    headsets = broker.simulate(2, 75, "--stimulus", stderr=open(broker.home / "headsets.log", "w"))
    root = broker.settings.paths.lake_root
    streams = broker.streams("all", "streams-0")
    try:
        time.sleep(rng.uniform(12, 16))
        for round_ in range(2):
            # Silver falls behind: only bronze runs, then the broker restarts.
            kill_group(streams)
            streams = broker.streams("bronze", f"bronze-{round_}")
            time.sleep(rng.uniform(8, 12))
            broker.stop_broker()
            time.sleep(rng.uniform(2, 4))
            broker.start_broker()
            kill_group(streams)
            streams = broker.streams("all", f"streams-{round_ + 1}")
            time.sleep(rng.uniform(10, 14))
        # After the last broker restart: nothing resends these, so a restart would simply lose them.
        _poison(broker)
        summary = json.loads(headsets.communicate(timeout=180)[0])
        expected_samples = sum(d["samples"] for d in summary["devices"])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if "silver.eeg_samples" in discover_tables(root):
                done = run_query(
                    root, "SELECT count(*) FROM silver.eeg_samples WHERE session_id NOT LIKE 'poison%'"
                ).rows[0][0]
                quarantined = "bronze.quarantine" in discover_tables(root) and run_query(
                    root, "SELECT count(*) FROM bronze.quarantine"
                ).rows[0][0] >= len(_poison_fields())
                if done >= expected_samples and quarantined:
                    break
            time.sleep(3)
        time.sleep(4)  # anything more would be a duplicate: give it the chance to show up
        status = broker.neurolake("stream", "status", "--json", stdout=subprocess.PIPE, text=True)
        said = status.communicate(timeout=60)[0]
        try:
            state = json.loads(said)
        except json.JSONDecodeError:
            log_tail = (broker.home / f"streams-{round_ + 1}.log").read_text().splitlines()[-40:]
            pytest.fail(f"`stream status` said {said!r}; the streams log ends:\n" + "\n".join(log_tail))
    finally:
        kill_group(streams)
        if headsets.poll() is None:
            headsets.kill()
    assert all(q["active"] for q in state["queries"].values()), state
    real = "device_id NOT LIKE 'poison%'"
    blocks = run_query(root, f"SELECT device_id, seq FROM bronze.eeg_blocks WHERE {real}").rows
    assert len(blocks) == len(set(blocks)) == sum(d["blocks"] for d in summary["devices"])
    for device in summary["devices"]:
        seqs = sorted(s for d, s in blocks if d == device["device_id"])
        assert seqs == list(range(device["next_seq"]["eeg.raw"]))
    samples = run_query(root, f"SELECT session_id, sample_index FROM silver.eeg_samples WHERE {real}").rows
    assert len(samples) == len(set(samples)) == expected_samples
    windows = run_query(root, f"SELECT session_id, window_start_index FROM gold.eeg_windows WHERE {real}").rows
    assert len(windows) == len(set(windows))
    per_session: dict[str, int] = {}
    for session, _ in samples:
        per_session[session] = per_session.get(session, 0) + 1
    for session, count in per_session.items():
        starts = sorted(s for w, s in windows if w == session)
        assert starts == list(range(0, count - 500 + 1, 100)), session
    reasons = [r[0] for r in run_query(root, "SELECT reason FROM bronze.quarantine").rows]
    for kind, field in _poison_fields().items():
        assert any(field in reason for reason in reasons), (kind, reasons)
    assert (
        "silver.session_errors" not in discover_tables(root)
        or run_query(root, "SELECT count(*) FROM silver.session_errors").rows[0][0] == 0
    )


def _poison_fields() -> dict[str, str]:
    return {
        "wrong_channels": "n_channels",
        "far_index": "first_sample_index",
        "zero_rate": "sample_rate_hz=0.0",
        "nan_rate": "sample_rate_hz=nan",
        "bad_stimulus": "stimulus frequency",
    }


def _exact(root, summary: dict) -> None:  # type: ignore[no-untyped-def]
    """Every block each device sent, once, in bronze; every sample once in silver; every window once."""
    blocks = run_query(root, "SELECT device_id, seq FROM bronze.eeg_blocks").rows
    assert len(blocks) == len(set(blocks)) == sum(d["blocks"] for d in summary["devices"])
    for device in summary["devices"]:
        assert sorted(s for d, s in blocks if d == device["device_id"]) == list(range(device["next_seq"]["eeg.raw"]))
    samples = run_query(root, "SELECT session_id, sample_index FROM silver.eeg_samples").rows
    assert len(samples) == len(set(samples)) == sum(d["samples"] for d in summary["devices"])
    windows = run_query(root, "SELECT session_id, window_start_index FROM gold.eeg_windows").rows
    assert len(windows) == len(set(windows))


@pytest.mark.slow
def test_a_broker_killed_and_restarted_loses_nothing_with_the_spools_not_resending(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The Pis send each record once: nothing acknowledged by the broker is sent again after an outage.
    broker = BrokerStack(tmp_path, NEUROLAKE_EDGE__RESEND_UNACKED_AFTER_OUTAGE="false")
    broker.start()
    rng = random.Random(SEED)
    headsets = broker.simulate(2, 45, stderr=open(broker.home / "headsets.log", "w"))
    root = broker.settings.paths.lake_root
    streams = broker.streams("all", "streams")
    try:
        time.sleep(rng.uniform(8, 12))
        broker.kill_broker()  # SIGKILL: no clean shutdown, no final flush
        time.sleep(rng.uniform(2, 4))
        broker.start_broker()
        time.sleep(rng.uniform(8, 12))
        broker.stop_broker()  # and a clean restart
        time.sleep(rng.uniform(2, 4))
        broker.start_broker()
        summary = json.loads(headsets.communicate(timeout=180)[0])
        expected = sum(d["samples"] for d in summary["devices"])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if "silver.eeg_samples" in discover_tables(root):
                if run_query(root, "SELECT count(*) FROM silver.eeg_samples").rows[0][0] >= expected:
                    break
            time.sleep(3)
        time.sleep(4)  # anything more would be a duplicate: give it the chance to show up
    finally:
        kill_group(streams)
        if headsets.poll() is None:
            headsets.kill()
        broker.stop()
    assert all(d["samples_lost"] == 0 for d in summary["devices"])
    _exact(root, summary)
