"""Lake freshness: how old the newest sample in silver.eeg_samples is, while headsets stream.

Starts a private broker and N simulated headsets, then, once they send (with the light load), the
streaming process (`neurolake stream start all`), as a lab starts its hub while its Pis record.
After a warm-up, every 0.5 s reads the newest sample time in silver from the Delta log's file
statistics and prints the age distribution (now - newest sample time, lab clock). This bounds the
sample -> silver row latency from above (it includes up to one polling interval). Also prints rows/s
per layer over the measured period, the start-up time to the first committed batch (cold, and after
a SIGKILL of the streaming process while the headsets go on), and whether the lake kept up: silver
rows at the end vs samples produced.

The simulated headsets stand for Pis but run on the same 2 cores as the lake. By default they are
set up as a throughput-first lab would set a Pi (spool synchronous=NORMAL, 20 ms producer linger, a 50 ms
acquisition tick),
so that the figure is the lake's and not the simulator's; --edge-defaults runs them with the edge's
own latency-first defaults (FULL, 1 ms, a wake per block) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import cli_environment, machine_speed_s, private_broker
from schemas.catalog import BRONZE_EEG_BLOCKS, GOLD_EEG_WINDOWS, SILVER_EEG_SAMPLES
from schemas.timebase import now_us
from streaming_jobs.runner import status_path


class ProcessCpu:
    """CPU time of the lake's processes over the measured period, by kind (cores): where the 2 cores
    go. A process that starts inside the period counts from its start; one that ends, not at all."""

    KINDS = (
        ("Spark JVMs", ("org.apache.spark",)),
        # A daemon started ahead of its session (infra.python_daemon.warm_daemon) has no worker module
        # in its command line.
        ("their Python workers", ("pyspark.daemon", "pyspark.worker", "python_daemon --warm")),
        ("stream driver", ("neurolake.cli stream",)),
        ("Kafka", ("kafka.Kafka",)),
        ("load", ("_load.py", "edge simulate")),
    )

    def __init__(self) -> None:
        self.start: dict[int, tuple[str, float]] = {}
        self.started_at = 0.0

    @classmethod
    def sample(cls) -> dict[int, tuple[str, float]]:
        import psutil

        found = {}
        for process in psutil.process_iter(["pid", "cmdline"]):
            command = " ".join(process.info["cmdline"] or [])
            kind = next((k for k, marks in cls.KINDS if any(m in command for m in marks)), None)
            if kind is None:
                continue
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            found[process.info["pid"]] = (kind, times.user + times.system)
        return found

    def begin(self) -> None:
        self.start, self.started_at = self.sample(), time.monotonic()

    def end(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started_at
        cores = {kind: 0.0 for kind, _ in self.KINDS}
        for pid, (kind, seconds) in self.sample().items():
            cores[kind] += (seconds - self.start.get(pid, (kind, 0.0))[1]) / elapsed
        return cores


class BatchPhases:
    """Each query's micro-batches as the streaming process reports them in its status file (Spark's
    ``durationMs`` of the last batch, polled): where a batch's time goes."""

    def __init__(self, status: Path) -> None:
        self.status = status
        self.seen: dict[str, int] = {}
        self.phases: dict[str, list[dict[str, float]]] = {}

    def poll(self) -> None:
        try:
            queries = json.loads(self.status.read_text()).get("queries", {})
        except (OSError, ValueError):
            return
        for name, query in queries.items():
            batch, phases = query.get("last_batch"), query.get("phases_ms") or {}
            if batch is None or not phases or self.seen.get(name) == batch:
                continue
            self.seen[name] = batch
            self.phases.setdefault(name, []).append(phases)

    def medians(self, name: str) -> dict[str, float]:
        batches = self.phases.get(name, [])
        names = sorted({phase for batch in batches for phase in batch})
        return {phase: float(np.median([batch.get(phase, 0) for batch in batches])) for phase in names}


class NewestSample:
    """The newest sample time (``time_us``) a table holds, followed through its Delta log: a poll
    reads only the commits made since the last one. (Loading the whole table per poll cost more
    the longer the run, on the lake's own cores, and the load counted in the age it measured.)"""

    def __init__(self, table: Path) -> None:
        self.table = table
        self.version = -1
        self.newest_us: int | None = None

    def poll(self) -> int | None:
        from infra.delta import commit_actions, latest_version

        latest = latest_version(self.table, known=self.version)
        for version in range(self.version + 1, latest + 1):
            for action in commit_actions(self.table, version):
                add = action.get("add")
                if not add or not add.get("dataChange", True) or not add.get("stats"):
                    continue
                newest = json.loads(add["stats"]).get("maxValues", {}).get("time_us")
                if newest is not None and (self.newest_us is None or newest > self.newest_us):
                    self.newest_us = int(newest)
        self.version = latest
        return self.newest_us


def committed_rows(table_path: Path) -> int:
    """Rows in the table's current version, from the Delta log's file statistics."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        actions = DeltaTable(str(table_path)).get_add_actions(flatten=True)
    except TableNotFoundError:
        return 0
    return sum(v or 0 for v in actions.column("num_records").to_pylist()) if actions.num_rows else 0


def table_version(table_path: Path) -> int:
    from infra.delta import latest_version

    return latest_version(table_path)


def added_rows(table: Path, after: int) -> bool:
    """Whether a version of ``table`` newer than ``after`` added rows (an empty table made for a
    streaming source to start on is no commit of data)."""
    from infra.delta import commit_actions

    for version in range(after + 1, table_version(table) + 1):
        for action in commit_actions(table, version):
            add = action.get("add")
            if add and json.loads(add.get("stats") or "{}").get("numRecords", 1) > 0:
                return True
    return False


def wait_for_commit(tables: list[Path], after: dict[Path, int], since: float, limit_s: float = 180) -> dict[str, float]:
    """Seconds from ``since`` until each table has a version newer than ``after`` that added rows."""
    seconds: dict[str, float] = {}
    while len(seconds) < len(tables) and time.monotonic() - since < limit_s:
        for table in tables:
            if table.name not in seconds and added_rows(table, after.get(table, -1)):
                seconds[table.name] = time.monotonic() - since
        time.sleep(0.1)
    return seconds


def start_streams(cli: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*cli, "stream", "start", "all"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "a"),
        start_new_session=True,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured, after warm-up")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    parser.add_argument(
        "--load",
        choices=("light", "edge"),
        default="light",
        help="light: bench/_load.py sends the Pis' records from one cheap process (the lake's figure); "
        "edge: the full edge simulator per headset, on the lake's own cores",
    )
    parser.add_argument("--edge-defaults", action="store_true", help="with --load edge: the edge's own defaults")
    return parser.parse_args(argv)


def run(
    settings: Any,
    env: dict[str, str],
    headsets_n: int,
    seconds: float,
    warmup: float,
    logs: Path,
    load_kind: str = "light",
    edge_defaults: bool = False,
    restart: bool = True,
    during: Callable[[], None] | None = None,
    catch_up_limit_s: float = 600.0,
) -> dict[str, Any]:
    """One measured run against the stack ``settings`` names (started by the caller): freshness,
    rows/s, start-up to first commit (cold, and after a SIGKILL when ``restart``), and what reached
    the lake. ``during`` runs once, at the start of the measured period (faults, for the cluster)."""
    cli = [sys.executable, "-m", "neurolake.cli"]
    logs.mkdir(parents=True, exist_ok=True)
    lake = settings.paths.lake_root
    bronze, silver, gold = BRONZE_EEG_BLOCKS.path(lake), SILVER_EEG_SAMPLES.path(lake), GOLD_EEG_WINDOWS.path(lake)
    restart_window = 60.0 if restart else 0.0
    duration = warmup + seconds + restart_window
    edge_env = env if edge_defaults else {
        **env, "NEUROLAKE_EDGE__SPOOL__SYNCHRONOUS": "NORMAL", "NEUROLAKE_EDGE__LINGER_MS": "20",
        "NEUROLAKE_EDGE__TICK_MS": "50",
    }  # fmt: skip
    load = (
        [*cli, "edge", "simulate"]
        if load_kind == "edge"
        else [sys.executable, str(Path(__file__).with_name("_load.py"))]
    )
    headsets = subprocess.Popen(
        [*load, "--headsets", str(headsets_n), "--duration", str(duration)],
        env=edge_env,
        stdout=subprocess.PIPE,
        stderr=open(logs / "headsets.log", "w"),
        text=True,
    )
    if load_kind != "edge":
        # The lake starts once the headsets send: their set-up is the Pis' work, not the hub's
        # (until stop 49 it ran on these cores beside the lake's start, ~0.7-1.1 of a core for 3-4 s).
        assert headsets.stdout is not None
        if not json.loads(headsets.stdout.readline() or "{}").get("ready"):
            raise SystemExit(f"the load did not start; see {logs / 'headsets.log'}")
    spawned = time.monotonic()
    streams = start_streams(cli, env, logs / "streams.log")
    ages = []
    newest_silver = NewestSample(silver)
    phases = BatchPhases(status_path(settings))
    restart_figures: dict[str, float] = {}
    cpu = ProcessCpu()
    try:
        cold = wait_for_commit([bronze, silver], {}, spawned)
        # The warm-up counts from the start, when the headsets were already sending; a warm-up
        # shorter than the cold start ends with it.
        measured_from = max(spawned + warmup, time.monotonic())
        counted: dict[str, float] = {}
        while time.monotonic() < measured_from + seconds:
            newest = newest_silver.poll()
            if time.monotonic() >= measured_from:
                if not counted:
                    counted = {
                        "t": time.monotonic(),
                        **{p.parent.name + "." + p.name: committed_rows(p) for p in (bronze, silver, gold)},
                    }
                    cpu.begin()
                    if during is not None:
                        during()
                if newest is not None:
                    ages.append((now_us() - newest) / 1e6)
                phases.poll()
            time.sleep(0.5)
        cores = cpu.end()
        elapsed = time.monotonic() - counted["t"]
        rates = {
            name: (committed_rows(lake / name.replace(".", "/")) - rows) / elapsed
            for name, rows in counted.items()
            if name != "t"
        }
        if restart:
            # A crash while the lab records: how long until the restarted process commits again.
            os.killpg(streams.pid, signal.SIGKILL)
            streams.wait(30)
            before = {t: table_version(t) for t in (bronze, silver)}
            restarted_at = time.monotonic()
            streams = start_streams(cli, env, logs / "streams.log")
            restart_figures = wait_for_commit([bronze, silver], before, restarted_at)
        summary = json.loads(headsets.communicate(timeout=300)[0].strip().splitlines()[-1])
        produced = sum(d["samples"] for d in summary["devices"])
        # What the lake holds once it has caught up (or stopped moving for a minute).
        caught_up = time.monotonic()
        rows, last_change, previous = 0, time.monotonic(), -1
        while time.monotonic() - last_change < 60 and time.monotonic() - caught_up < catch_up_limit_s:
            rows = committed_rows(silver)
            if rows >= produced:
                break
            if rows != previous:
                previous, last_change = rows, time.monotonic()
            time.sleep(1)
        catch_up_s = time.monotonic() - caught_up
        time.sleep(5)  # anything more would be a duplicate: give it the chance to show up
        from batch_jobs.lake_sql import run_query

        blocks = run_query(lake, "SELECT device_id, seq FROM bronze.eeg_blocks").rows
        samples = run_query(lake, "SELECT session_id, sample_index FROM silver.eeg_samples").rows
    finally:
        os.killpg(streams.pid, signal.SIGTERM)
        try:
            streams.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(streams.pid, signal.SIGKILL)
        if headsets.poll() is None:
            headsets.kill()
    sent_blocks = sum(d["blocks"] for d in summary["devices"])
    return {
        "headsets": headsets_n,
        "seconds": seconds,
        "warmup": warmup,
        "load": load_kind,
        "edge_defaults": edge_defaults,
        "ages": ages,
        "rates": rates,
        "cold": cold,
        "restart": restart_figures,
        "produced_samples": produced,
        "sent_blocks": sent_blocks,
        "producer_failures": sum(d.get("failed", 0) for d in summary["devices"]),
        "lost_blocks": max(0, sent_blocks - len(set(blocks))),
        "dup_blocks": len(blocks) - len(set(blocks)),
        "lost_samples": max(0, produced - len(set(samples))),
        "dup_samples": len(samples) - len(set(samples)),
        "catch_up_s": catch_up_s,
        "cores": cores,
        "phases": {name: (len(phases.phases[name]), phases.medians(name)) for name in sorted(phases.phases)},
    }


def report(figures: dict[str, Any], engine: str = "one local[2] Spark") -> None:
    if figures["load"] == "light":
        load_note = "the Pis' records from bench/_load.py (one light process on the same cores)"
    else:
        settings_note = "the edge defaults" if figures["edge_defaults"] else "spool NORMAL, linger 20 ms, tick 50 ms"
        load_note = f"full edge simulators on the same cores with {settings_note}"
    print(
        f"lake bench: {figures['headsets']} headsets (16 EEG + pulse at 250 Hz), Apache Kafka -> Spark's Kafka "
        f"source -> bronze (executor-written files, delta-rs commits) -> Delta's streaming source -> silver/gold, in {engine}; "
        f"{figures['seconds']:.0f} s measured after {figures['warmup']:.0f} s; {load_note}"
    )
    if figures["ages"]:
        a = np.array(figures["ages"])
        print(
            f"  newest silver sample age  p50 {np.percentile(a, 50):.2f} s  p95 "
            f"{np.percentile(a, 95):.2f} s  max {a.max():.2f} s  ({len(a)} polls; target p95 <= 5 s)"
        )
    else:
        print("  silver had no rows during the measurement")
    print(
        "  rows/s while measured: "
        + ", ".join(f"{name} {rate:,.0f}" for name, rate in figures["rates"].items())
        + f"  (produced: {figures['headsets'] * 250:,} samples/s, {figures['headsets'] * 10:,} blocks/s)"
    )
    cold, restart = figures["cold"], figures["restart"]
    line = (
        f"  start-up to first commit: cold bronze {cold.get('eeg_blocks', float('nan')):.1f} s, "
        f"silver {cold.get('eeg_samples', float('nan')):.1f} s"
    )
    if restart:
        line += (
            f"; after SIGKILL bronze {restart.get('eeg_blocks', float('nan')):.1f} s, "
            f"silver {restart.get('eeg_samples', float('nan')):.1f} s"
        )
    print(line + "  (target <= 15 s)")
    cores = figures.get("cores", {})
    if cores:
        print(
            f"  CPU while measured (cores of {os.cpu_count()}): "
            + ", ".join(f"{kind} {used:.2f}" for kind, used in cores.items())
            + f"; sum {sum(cores.values()):.2f}"
        )
    for name, (batches, medians) in figures.get("phases", {}).items():
        if not batches:
            continue
        parts = ", ".join(f"{phase} {ms:.0f}" for phase, ms in medians.items() if phase != "triggerExecution")
        print(
            f"  {name} batches while measured: {batches} seen, median {medians.get('triggerExecution', 0):.0f} ms "
            f"({parts})"
        )
    print(
        f"  the lake after the headsets stopped ({figures['catch_up_s']:.0f} s to catch up): "
        f"blocks missing {figures['lost_blocks']}, duplicate blocks {figures['dup_blocks']}, samples missing "
        f"{figures['lost_samples']}, duplicate samples {figures['dup_samples']} (of {figures['produced_samples']:,}); "
        f"producer delivery failures {figures['producer_failures']}"
    )


def main() -> None:
    args = parse_args()
    speed_before = machine_speed_s()
    with private_broker() as settings:
        figures = run(
            settings,
            cli_environment(settings),
            args.headsets,
            args.seconds,
            args.warmup,
            args.logs or settings.paths.home / "bench-logs",
            args.load,
            args.edge_defaults,
        )
    report(figures)
    print(
        f"  machine: sum(range(10**8)) took {speed_before:.2f} s idle before the run, {machine_speed_s():.2f} s "
        "after (usual here: 1.2-1.45 s; every figure above scales with it)"
    )


if __name__ == "__main__":
    main()
