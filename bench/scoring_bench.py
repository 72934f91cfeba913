"""Live scoring latency (window end -> prediction on eeg.predictions) and the lake scorer's freshness.

Private broker and MLflow server; a champion trained on a small simulated lake. For each headset
count: the live scorer (`neurolake score live`, reading from the latest offsets) and N simulated
headsets run for --seconds. This process reads eeg.raw and eeg.predictions: the latency of a
prediction is the time it was received here minus the lab time of the window's last sample (the
last sample of the eeg.raw block that completes the window; same machine, same clock). The scorer's
own figure (block arrival -> prediction produced) is printed too.

With --lake: the streaming lake and `neurolake score lake --every 5` run alongside the headsets,
and gold.predictions freshness is scored_us - window_end_us (window's last sample -> its row).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import cli_environment, latency_summary, private_broker
from infra.delta import LakeTable
from schemas.catalog import GOLD_PREDICTIONS

# Where a prediction's time goes (every figure per prediction, on this machine's one clock).
STAGES = {
    "edge": "window's last sample -> edge producer",
    "to scorer": "edge producer -> scorer has the block",
    "to bench": "(edge producer -> this reader has it)",
    "scorer": "scorer has the block -> prediction produced",
    "out": "prediction produced -> received here",
}


def _simulate(cli: list[str], headsets: int, seconds: float, prefix: str) -> list[str]:
    """`neurolake edge simulate` for ``headsets`` headsets running the stimulus task."""
    return [*cli, "edge", "simulate", "--headsets", str(headsets), "--stimulus", "--duration", str(seconds),
            "--prefix", prefix]  # fmt: skip


def _wait_for_text(path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text() if path.exists() else ""):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {text!r} in {path}")
        time.sleep(0.2)


def measure_live(settings, env: dict[str, str], headsets: int, seconds: float, logs: Path) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    from schemas.codec import default_codec, eeg_block_device_times

    cli = [sys.executable, "-m", "neurolake.cli"]
    scorer_log = logs / f"scorer-{headsets}.log"
    scorer = subprocess.Popen(
        [*cli, "score", "live", "--start", "latest"], env=env, stdout=subprocess.DEVNULL, stderr=scorer_log.open("w")
    )
    codec = default_codec()
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": "scoring-bench",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 1,
        }
    )
    try:
        _wait_for_text(scorer_log, "live scorer reading", 120)
        metadata = consumer.list_topics(timeout=10).topics
        consumer.assign(
            [TopicPartition(t, p, OFFSET_END) for t in ("eeg.raw", "eeg.predictions") for p in metadata[t].partitions]
        )
        edge = subprocess.Popen(
            _simulate(cli, headsets, seconds + 10, f"bench{headsets}"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"edge-{headsets}.log").open("w"),
        )
        # Per block: lab time of its last sample, when the edge's producer took it (the record's
        # CreateTime), when this process received it.
        block_ms: dict[tuple[str, int], tuple[float, float, float]] = {}
        latencies, scorer_ms = [], []
        stages: dict[str, list[float]] = {name: [] for name in STAGES}
        models: dict[str, int] = {}
        warmup_until = time.monotonic() + 8
        end = time.monotonic() + seconds + 8
        while time.monotonic() < end:
            first = consumer.poll(0.05)  # consume() alone would wait out its whole timeout
            for message in [first, *consumer.consume(1000, timeout=0)] if first is not None else []:
                received_ms = time.time_ns() / 1e6
                if message.error():
                    continue
                _, record = codec.decode(message.value())
                if message.topic() == "eeg.raw":
                    key = (record["session_id"], record["first_sample_index"] + record["n_samples"])
                    sampled = (int(eeg_block_device_times(record)[-1]) + int(record["clock_offset_us"])) / 1000
                    block_ms[key] = (sampled, float(message.timestamp()[1]), received_ms)
                elif time.monotonic() > warmup_until:
                    models[record["model_name"]] = models.get(record["model_name"], 0) + 1
                    block = block_ms.get((record["session_id"], record["window_end_index"]))
                    if block is not None:
                        sampled, handed, seen = block
                        latencies.append(received_ms - sampled)
                        scorer_ms.append(record["latency_us"] / 1000)
                        scorer_in = (record["scored_us"] - record["latency_us"]) / 1000
                        stages["edge"].append(handed - sampled)
                        stages["to scorer"].append(scorer_in - handed)
                        stages["to bench"].append(seen - handed)
                        stages["scorer"].append(record["latency_us"] / 1000)
                        stages["out"].append(received_ms - record["scored_us"] / 1000)
        edge.wait(timeout=60)
    finally:
        consumer.close()
        scorer.send_signal(signal.SIGTERM)
        scorer.wait(timeout=30)
    print(f"  live scorer, {headsets:>3} headset(s): window end -> prediction received  {latency_summary(latencies)}")
    print(f"  {'':>28} scorer only (block arrival -> produced)   {latency_summary(scorer_ms)}")
    for name, values in stages.items():
        print(f"  {'':>28} {STAGES[name]:<40} {latency_summary(values)}")
    print(f"  {'':>28} predictions by model: {', '.join(f'{m} {n}' for m, n in sorted(models.items())) or 'none'}")


def measure_lake(settings, env: dict[str, str], headsets: int, seconds: float, logs: Path) -> None:  # type: ignore[no-untyped-def]

    cli = [sys.executable, "-m", "neurolake.cli"]
    streams = subprocess.Popen(
        [*cli, "stream", "start", "all"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(logs / "streams.log").open("w"),
        start_new_session=True,
    )
    scorer = subprocess.Popen(
        [*cli, "score", "lake", "--every", "5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(logs / "lake-scorer.log").open("w"),
        start_new_session=True,
    )
    edge = subprocess.Popen(
        _simulate(cli, headsets, seconds, "lake"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(logs / "edge-lake.log").open("w"),
    )
    try:
        edge.wait(timeout=seconds + 120)
        time.sleep(20)
    finally:
        for process in (scorer, streams):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    rows, _ = LakeTable(settings.paths.lake_root, GOLD_PREDICTIONS).read_pandas(
        ["session_id", "window_end_us", "scored_us"]
    )
    rows = rows[rows["session_id"].str.startswith("lake")] if not rows.empty else rows
    ages = ((rows["scored_us"] - rows["window_end_us"]) / 1e6).tolist() if not rows.empty else []
    if ages:
        a = np.asarray(ages)
        print(
            f"  lake scorer (every 5 s), {headsets} headsets: window end -> row in gold.predictions  "
            f"p50 {np.percentile(a, 50):.1f} s  p95 {np.percentile(a, 95):.1f} s  (n={len(a)})"
        )
    else:
        print("  lake scorer: no predictions for the lake run (see the logs in the bench home)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", default="1,8", help="comma-separated headset counts")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--lake", action="store_true", help="also measure the lake scorer's freshness")
    parser.add_argument("--lake-headsets", type=int, default=2)
    parser.add_argument(
        "--no-champion",
        action="store_true",
        help="register no model: every session is scored by the training-free FBCCA fallback (ml.live_fallback)",
    )
    args = parser.parse_args()
    from batch_jobs.sample_lake import write_sample_lake
    from ml.dataset import build_training_set
    from ml.registry import train

    with private_broker(with_mlflow=True) as settings:
        env = cli_environment(settings)
        logs = settings.paths.home / "bench-logs"
        logs.mkdir(parents=True, exist_ok=True)
        if args.no_champion:
            if settings.ml.live_fallback != "fbcca":
                parser.error("--no-champion needs ml.live_fallback = fbcca (nothing would be scored)")
            scored_by = "no champion: FBCCA (training-free fallback) for every session"
        else:
            write_sample_lake(settings, sessions=4, seconds=60)
            result = train(settings, build_training_set(settings.paths.lake_root, settings.ml))
            scored_by = f"champion {result.model_name} v{result.registered_version}"
        print(
            f"scoring bench: {scored_by}, "
            f"{args.seconds:.0f} s per run after 8 s warm-up, 16 EEG ch + pulse at 250 Hz, "
            f"2 s windows every 0.4 s (target: window end -> prediction p95 <= 50 ms)"
        )
        for headsets in (int(n) for n in args.headsets.split(",")):
            measure_live(settings, env, headsets, args.seconds, logs)
        if args.lake:
            measure_lake(settings, env, args.lake_headsets, max(60.0, args.seconds), logs)


if __name__ == "__main__":
    main()
