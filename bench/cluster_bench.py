"""The lake on a local cluster, side by side with local[2], and losing nodes.

For each headset count (default 20 and 100): the lake bench (bench/lake_bench.py: freshness of
silver, rows/s, start-up to first commit, what reached the lake) once on the default single-node stack
(one Kafka broker, Spark local[2] in the driver's JVM) and once on a local cluster (three Kafka nodes in
one KRaft quorum with RF 3 and min ISR 2; a Spark standalone master and two workers with one core
each, executors off the driver), in the same run. On this 2-core machine every node of the cluster
shares the same cores: the point is that it works and what it costs, not that it is faster.

Then a node-loss run on the cluster: while the headsets stream, the KRaft quorum's leader (a broker
and the active controller) is SIGKILLed and restarted 15 s later, and a Spark worker is SIGKILLed with
its executors. Bronze and silver are counted against what the headsets sent (their producers count
anything Kafka did not acknowledge apart). Last line:

    cluster: brokers 3 workers 2 broker_kills K worker_kills W lost_blocks L dup_blocks D lost_samples S dup_samples T
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import cli_environment, private_broker, private_cluster
from bench.lake_bench import report, run


def faults(cluster: Any, settings: Any, kills: dict[str, int], log: list[str]) -> threading.Thread:
    """The node losses, in a thread beside the measurement."""
    from infra.kafka_broker import quorum_leader

    def lose_nodes() -> None:
        started = time.monotonic()
        leader = quorum_leader(settings)
        cluster.kill_broker(leader - 1)
        kills["broker"] += 1
        log.append(f"{time.monotonic() - started:5.1f} s  SIGKILL broker node {leader} (the quorum's leader)")
        time.sleep(5)
        log.append(f"{time.monotonic() - started:5.1f} s  quorum leader now node {quorum_leader(settings)}")
        time.sleep(10)
        cluster.start_broker(leader - 1)
        log.append(f"{time.monotonic() - started:5.1f} s  broker node {leader} restarted")
        time.sleep(5)
        cluster.kill_spark_worker(1)
        kills["worker"] += 1
        log.append(f"{time.monotonic() - started:5.1f} s  SIGKILL spark-worker-1 and its executors")

    thread = threading.Thread(target=lose_nodes, daemon=True)
    thread.start()
    return thread


def p95(figures: dict[str, Any]) -> str:
    return f"{np.percentile(figures['ages'], 95):.2f} s" if figures["ages"] else "no rows"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--seconds", type=float, default=40.0, help="measured, after warm-up")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--loss-headsets", type=int, default=20, help="headsets in the node-loss run")
    parser.add_argument("--loss-seconds", type=float, default=60.0)
    parser.add_argument("--skip-compare", action="store_true", help="only the node-loss run")
    parser.add_argument(
        "--catch-up",
        type=float,
        default=240.0,
        help="side-by-side runs: how long to wait for the lake to land everything after the headsets stop "
        "(what has not landed by then is reported as missing; the node-loss run waits up to 600 s)",
    )
    args = parser.parse_args()

    def side_run(settings: Any, env: dict[str, str], headsets: int) -> dict[str, Any]:
        logs = settings.paths.home / "bench-logs"
        return run(
            settings, env, headsets, args.seconds, args.warmup, logs, restart=False, catch_up_limit_s=args.catch_up
        )

    side_by_side: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    if not args.skip_compare:
        for headsets in args.headsets:
            with private_broker() as settings:
                local = side_run(settings, cli_environment(settings), headsets)
            report(local, "one local[2] Spark, one Kafka broker")
            with private_cluster() as (settings, env, _cluster):
                clustered = side_run(settings, env, headsets)
            report(clustered, "a Spark standalone cluster (master + 2 workers), three Kafka nodes")
            side_by_side.append((headsets, local, clustered))

    kills = {"broker": 0, "worker": 0}
    events: list[str] = []
    with private_cluster() as (settings, env, cluster):
        thread: list[threading.Thread] = []
        lost = run(
            settings,
            env,
            args.loss_headsets,
            args.loss_seconds,
            args.warmup,
            settings.paths.home / "bench-logs",
            restart=False,
            during=lambda: thread.append(faults(cluster, settings, kills, events)),
        )
        for t in thread:
            t.join(120)
    print(f"node-loss run: {args.loss_headsets} headsets on the local cluster")
    for event in events:
        print(f"  {event}")
    report(lost, "the local cluster, losing a broker node and a Spark worker")
    if side_by_side:
        print("side by side (silver age p95; silver rows/s; cold start bronze/silver):")
        for headsets, local, clustered in side_by_side:
            for name, figures in (("local[2]", local), ("cluster", clustered)):
                cold = figures["cold"]
                print(
                    f"  {headsets:>4} headsets  {name:<9} p95 {p95(figures):>9}  silver "
                    f"{figures['rates'].get('silver.eeg_samples', 0):>9,.0f} rows/s  cold "
                    f"{cold.get('eeg_blocks', float('nan')):.1f}/{cold.get('eeg_samples', float('nan')):.1f} s  "
                    f"samples missing {figures['lost_samples']} dup {figures['dup_samples']} after {figures['catch_up_s']:.0f} s"
                )
    print(
        f"cluster: brokers 3 workers 2 broker_kills {kills['broker']} worker_kills {kills['worker']} "
        f"lost_blocks {lost['lost_blocks']} dup_blocks {lost['dup_blocks']} "
        f"lost_samples {lost['lost_samples']} dup_samples {lost['dup_samples']}"
    )


if __name__ == "__main__":
    main()
