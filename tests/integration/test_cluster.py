"""The lake on a local cluster (three Kafka nodes in one KRaft quorum, a Spark standalone master with
two workers) losing nodes while headsets stream: the quorum's leader is SIGKILLed (the active
controller moves, its partitions' leadership too) and later restarted, then a Spark worker is
SIGKILLed with its executors (their tasks run again on the other). Bronze, silver and gold end with
exact counts; the longest pause between commits is printed."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from deltalake import DeltaTable

from batch_jobs.lake_sql import run_query
from batch_jobs.lake_tables import discover_tables
from infra.kafka_broker import quorum_leader
from tests.integration.conftest import ClusterStack, kill_group

pytestmark = pytest.mark.integration


class CommitWatch(threading.Thread):
    """Polls tables' latest versions; the longest wall-clock gap between two new versions."""

    def __init__(self, paths: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.last: dict[str, tuple[int, float]] = {}
        self.longest: dict[str, float] = dict.fromkeys(paths, 0.0)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            for name, path in self.paths.items():
                try:
                    version = DeltaTable(path).version()
                except Exception:  # not made yet
                    continue
                now = time.monotonic()
                seen = self.last.get(name)
                if seen is None or version != seen[0]:
                    if seen is not None:
                        self.longest[name] = max(self.longest[name], now - seen[1])
                    self.last[name] = (version, now)

    def restart_count(self) -> None:
        """Only gaps that end from now on count (not the cold start's)."""
        self.longest = dict.fromkeys(self.paths, 0.0)

    def pauses(self) -> dict[str, float]:
        self.stopping.set()
        self.join(5)
        return {name: round(seconds, 1) for name, seconds in self.longest.items()}


@pytest.mark.slow
def test_a_broker_node_and_a_spark_worker_lost_while_streaming_lose_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cluster = ClusterStack(tmp_path)
    cluster.start()
    root = cluster.settings.paths.lake_root
    headsets = cluster.simulate(2, 70, "--stimulus", stderr=open(cluster.home / "headsets.log", "w"))
    streams = cluster.streams("all", "streams")
    watch = CommitWatch(
        {name: str(root / name.replace(".", "/")) for name in ("bronze.eeg_blocks", "silver.eeg_samples")}
    )
    watch.start()
    try:
        _wait_for_rows(root, "silver.eeg_samples", 1, timeout_s=240)
        leader = quorum_leader(cluster.settings)
        watch.restart_count()
        cluster.kill_broker(leader - 1)  # node ids are 1-based, our nodes 0-based
        time.sleep(5)
        new_leader = quorum_leader(cluster.settings)
        assert new_leader != leader
        time.sleep(10)
        cluster.start_broker(leader - 1)
        time.sleep(5)
        cluster.kill_spark_worker(1)
        summary = json.loads(headsets.communicate(timeout=240)[0])
        expected = sum(d["samples"] for d in summary["devices"])
        _wait_for_rows(root, "silver.eeg_samples", expected, timeout_s=420)
        time.sleep(6)  # anything more would be a duplicate: give it the chance to show up
        status = cluster.neurolake("stream", "status", "--json", stdout=subprocess.PIPE, text=True)
        state = json.loads(status.communicate(timeout=60)[0])
    finally:
        pauses = watch.pauses()
        kill_group(streams)
        if headsets.poll() is None:
            headsets.kill()
        cluster.stop()
    print(f"longest pause between commits during the node losses: {pauses} s")
    # Executors did the work: the stages' tasks ran on numbered executors, none on the driver.
    executors = state["work"]["executors"]
    assert executors and "driver" not in executors, executors
    blocks = run_query(root, "SELECT device_id, seq FROM bronze.eeg_blocks").rows
    assert len(blocks) == len(set(blocks)) == sum(d["blocks"] for d in summary["devices"])
    for device in summary["devices"]:
        assert sorted(s for d, s in blocks if d == device["device_id"]) == list(range(device["next_seq"]["eeg.raw"]))
    samples = run_query(root, "SELECT session_id, sample_index FROM silver.eeg_samples").rows
    assert len(samples) == len(set(samples)) == expected
    windows = run_query(root, "SELECT session_id, window_start_index FROM gold.eeg_windows").rows
    assert len(windows) == len(set(windows))
    per_session: dict[str, int] = {}
    for session, _ in samples:
        per_session[session] = per_session.get(session, 0) + 1
    for session, count in per_session.items():
        assert sorted(s for w, s in windows if w == session) == list(range(0, count - 500 + 1, 100)), session


def _wait_for_rows(root, table: str, rows: int, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if table in discover_tables(root) and run_query(root, f"SELECT count(*) FROM {table}").rows[0][0] >= rows:
            return
        time.sleep(2)
    raise AssertionError(f"{table} did not reach {rows} rows within {timeout_s:.0f} s")
