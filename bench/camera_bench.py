"""Cameras through the lake: N simulated Pis (default 5), each streaming its test-pattern camera at
640x480 and 24 fps, through its edge spool, Kafka and bronze (`bronze.camera_frames`).

Starts a private broker, bronze's streaming queries (`neurolake stream start bronze`) and one `edge
simulate` process per Pi (a Pi's EEG headset streams beside its camera, as in the lab). Once bronze has
committed its first frames it measures for ``--seconds`` (30 by default) and prints:

- bytes/s of camera.frames on Kafka (read by a consumer of its own, which also gives the live lag:
  capture, in lab time, to the consumer) and of the Parquet files bronze added, frames/s per Pi;
- CPU per process over the measured period (percent of one core): each Pi's process, the broker,
  the streaming process with its JVM, and this bench's consumer;
- the lake's lag: age of the newest frame in bronze (now - its capture time, polled from the Delta
  log every 0.5 s), bronze's Kafka lag on camera.frames (records in the topic not yet in bronze)
  and the devices query's batch times;
- after the Pis stop, how long bronze takes to hold every frame they sent.

The Pis, the broker and the lake share this machine's cores, unlike a lab's: read the figures as
what the hub does with the Pis' load on top. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import cli_environment, latency_summary, private_broker
from core.settings import Settings
from schemas.catalog import BRONZE_CAMERA_FRAMES, CAMERA_FRAMES
from schemas.timebase import now_us


class BronzeFrames:
    """What bronze.camera_frames gained, followed through its Delta log: rows, Parquet bytes and
    the newest capture time (file statistics), without reading the table."""

    def __init__(self, table: Path) -> None:
        self.table = table
        self.version = -1
        self.commits = 0  # that added rows
        self.rows = 0
        self.bytes = 0
        self.newest_us: int | None = None

    def poll(self) -> None:
        from infra.delta import commit_actions, latest_version

        latest = latest_version(self.table, known=self.version)
        for version in range(self.version + 1, latest + 1):
            rows = self.rows
            for action in commit_actions(self.table, version):
                add = action.get("add")
                if not add or not add.get("dataChange", True):
                    continue
                self.bytes += int(add.get("size", 0))
                stats = json.loads(add.get("stats") or "{}")
                self.rows += int(stats.get("numRecords", 0))
                newest = stats.get("maxValues", {}).get("captured_us")
                if newest is not None and (self.newest_us is None or newest > self.newest_us):
                    self.newest_us = int(newest)
            self.commits += self.rows > rows
        self.version = latest


class FrameReader(threading.Thread):
    """Reads camera.frames from its end: bytes and frames per device, capture-to-consumer lag."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="frame-reader", daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.measuring = threading.Event()
        self.bytes = 0
        self.frames: dict[str, int] = defaultdict(int)
        self.lags_ms: list[float] = []
        self.sizes: list[int] = []

    def run(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from schemas.codec import default_codec

        codec = default_codec()
        consumer = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": "camera-bench",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        try:
            partitions = consumer.list_topics(CAMERA_FRAMES, timeout=10).topics[CAMERA_FRAMES].partitions
            consumer.assign([TopicPartition(CAMERA_FRAMES, p, OFFSET_END) for p in partitions])
            while not self.stop.is_set():
                for message in consumer.consume(200, timeout=0.1):
                    if message.error() is not None or message.value() is None:
                        continue
                    arrived = now_us()
                    if not self.measuring.is_set():
                        continue
                    _, record = codec.decode(message.value())
                    self.bytes += len(message.value())
                    self.sizes.append(len(record["data"]))
                    self.frames[record["device_id"]] += 1
                    self.lags_ms.append((arrived - record["captured_us"] - record["clock_offset_us"]) / 1000)
        finally:
            consumer.close()


def cpu_seconds(process: psutil.Process, children: bool = True) -> float:
    """User + system CPU seconds of a process and (with ``children``) everything it started that still runs."""
    total = 0.0
    for member in [process, *(process.children(recursive=True) if children else [])]:
        try:
            times = member.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def bronze_batch(settings: Settings) -> tuple[Any, Any]:
    """The devices query's last batch id and its duration in ms (from `stream status`'s file)."""
    from streaming_jobs.runner import read_status

    state = read_status(settings)
    query = (state or {}).get("queries", {}).get("bronze_devices") or {}
    return query.get("last_batch"), query.get("batch_ms")


class TopicEnd:
    """How many records camera.frames holds (the sum of its partitions' high watermarks): the topic
    starts empty and all of it lands in bronze, so this minus bronze's rows is bronze's Kafka lag."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({**settings.kafka.client_config(), "group.id": "camera-bench-end"})
        partitions = self.consumer.list_topics(CAMERA_FRAMES, timeout=10).topics[CAMERA_FRAMES].partitions
        self.partitions = [TopicPartition(CAMERA_FRAMES, p) for p in partitions]

    def records(self) -> int:
        return sum(self.consumer.get_watermark_offsets(p, timeout=5)[1] for p in self.partitions)

    def close(self) -> None:
        self.consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pis", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured period")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--start-timeout", type=float, default=240.0, help="for bronze's first frames")
    parser.add_argument(
        "--warmup", type=float, default=180.0, help="at most this long after the first frames for 2 more commits"
    )
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    args = parser.parse_args()

    with private_broker() as settings:
        from infra.stack import broker_specs, supervisor
        from schemas.signing import Keyring, ensure_key

        env = {
            **cli_environment(settings),
            "NEUROLAKE_EDGE__CAMERA__WIDTH": str(args.width),
            "NEUROLAKE_EDGE__CAMERA__HEIGHT": str(args.height),
            "NEUROLAKE_EDGE__CAMERA__FPS": str(args.fps),
        }
        logs = args.logs or settings.paths.home / "bench-logs"
        logs.mkdir(parents=True, exist_ok=True)
        cli = [sys.executable, "-m", "neurolake.cli"]
        keyring = Keyring(settings.security.keyring)
        devices = [f"pi-{index:03d}" for index in range(args.pis)]
        for device in devices:
            ensure_key(keyring, device)  # before the Pis start: one writer of the keyring at a time
        reader = FrameReader(settings)
        reader.start()
        streams = subprocess.Popen(
            [*cli, "stream", "start", "bronze"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(logs / "streams.log").open("w"),
            start_new_session=True,
        )
        pis = {
            device: subprocess.Popen(
                [
                    *cli,
                    "edge",
                    "simulate",
                    "--headsets",
                    "1",
                    "--prefix",
                    "pi",
                    "--first-index",
                    str(index),
                    "--camera",
                    "--duration",
                    str(args.start_timeout + args.warmup + args.seconds + 120),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=(logs / f"{device}.log").open("w"),
                text=True,
            )
            for index, device in enumerate(devices)
        }
        node = supervisor(settings)
        brokers = [p for p in (node.running_process(spec.name) for spec in broker_specs(settings)) if p]
        table = BronzeFrames(BRONZE_CAMERA_FRAMES.path(settings.paths.lake_root))
        end = TopicEnd(settings)
        summaries: dict[str, Any] = {}
        try:
            started = time.monotonic()
            while table.rows == 0:
                if time.monotonic() - started > args.start_timeout:
                    raise SystemExit(f"bronze held no camera frame {args.start_timeout:.0f} s after the start")
                if streams.poll() is not None:
                    tail = (logs / "streams.log").read_text()[-3000:]
                    raise SystemExit(f"the streaming process exited:\n{tail}")
                time.sleep(0.5)
                table.poll()
            print(f"bronze's first camera frames {time.monotonic() - started:.0f} s after the start")
            # Past the first batches (a JVM warming up, tables made, the backlog of the start-up).
            warm = time.monotonic()
            while table.commits < 3 and time.monotonic() - warm < args.warmup:
                time.sleep(0.5)
                table.poll()
            print(f"measuring from {time.monotonic() - started:.0f} s after the start ({table.commits} commits)")
            groups = {
                **{device: psutil.Process(p.pid) for device, p in pis.items()},
                **{f"broker[{i}]": p for i, p in enumerate(brokers)},
                "streams (driver + JVM)": psutil.Process(streams.pid),
            }
            me = psutil.Process()  # the bench's consumer (its children are the Pis and the streams)
            cpu_before = {name: cpu_seconds(p) for name, p in groups.items()}
            cpu_before["bench consumer"] = cpu_seconds(me, children=False)
            table.poll()
            rows0, bytes0 = table.rows, table.bytes
            ages_s: list[float] = []
            kafka_lags: list[int] = []
            batches: dict[int, int] = {}
            reader.measuring.set()
            began = time.monotonic()
            while time.monotonic() - began < args.seconds:
                time.sleep(0.5)
                table.poll()
                if table.newest_us is not None:
                    ages_s.append((now_us() - table.newest_us) / 1e6)
                kafka_lags.append(end.records() - table.rows)
                batch, batch_ms = bronze_batch(settings)
                if batch is not None and batch_ms is not None:
                    batches[int(batch)] = int(batch_ms)
            elapsed = time.monotonic() - began
            reader.measuring.clear()
            cpu = {name: (cpu_seconds(p) - cpu_before[name]) / elapsed * 100 for name, p in groups.items()}
            cpu["bench consumer"] = (cpu_seconds(me, children=False) - cpu_before["bench consumer"]) / elapsed * 100
            load = os.getloadavg()[0]
            table.poll()
            landed_rows, landed_bytes = table.rows - rows0, table.bytes - bytes0
            for process in pis.values():
                process.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            for device, process in pis.items():
                out, _ = process.communicate(timeout=120)
                summaries[device] = json.loads(out)["devices"][0] if out.strip() else {}
            sent = sum(int(s.get("frames", 0)) for s in summaries.values())
            while table.rows < sent and time.monotonic() - stopped < 120:
                time.sleep(0.5)
                table.poll()
            drained_s = time.monotonic() - stopped
        finally:
            end.close()
            reader.stop.set()
            for process in pis.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(30)
            if streams.poll() is None:
                streams.send_signal(signal.SIGTERM)
                try:
                    streams.wait(90)
                except subprocess.TimeoutExpired:
                    os.killpg(streams.pid, signal.SIGKILL)
                    streams.wait(30)
            reader.join(10)

    sizes = np.asarray(reader.sizes) if reader.sizes else np.zeros(1)
    print(
        f"camera bench: {args.pis} Pis x {args.width}x{args.height} at {args.fps:g} fps (+ each Pi's EEG), "
        f"measured {elapsed:.0f} s; JPEG frames {sizes.mean() / 1024:.1f} KiB mean"
    )
    kafka_rate = reader.bytes / elapsed
    print(f"  Kafka camera.frames: {kafka_rate / 1e6:6.2f} MB/s, {sum(reader.frames.values()) / elapsed:6.1f} frames/s")
    print(
        "  frames/s per Pi: "
        + ", ".join(f"{device} {reader.frames.get(device, 0) / elapsed:.1f}" for device in devices)
    )
    print(
        f"  bronze.camera_frames added: {landed_bytes / elapsed / 1e6:6.2f} MB/s, {landed_rows / elapsed:6.1f} rows/s"
    )
    print("  CPU (% of one core) over the measured period:")
    for name, share in cpu.items():
        print(f"    {name:24s} {share:6.1f}")
    print(f"    {'total':24s} {sum(cpu.values()):6.1f} (of {psutil.cpu_count() * 100}; load average {load:.1f})")
    print(f"  live lag, capture -> Kafka consumer: {latency_summary(reader.lags_ms)}")
    if ages_s:
        print(
            f"  lake lag, newest frame in bronze: p50 {np.percentile(ages_s, 50):.1f} s  "
            f"p95 {np.percentile(ages_s, 95):.1f} s  max {max(ages_s):.1f} s"
        )
    if batches:
        print(
            f"  bronze's devices query: {len(batches)} batches seen in the period, "
            f"{np.mean(list(batches.values())) / 1000:.1f} s mean, {max(batches.values()) / 1000:.1f} s max"
        )
    if kafka_lags:
        print(
            f"  bronze's Kafka lag on camera.frames: p50 {np.percentile(kafka_lags, 50):.0f}  "
            f"max {max(kafka_lags)} records (frames in the topic, not yet in bronze)"
        )
    refused = sum(int(s.get("frames_refused", 0)) for s in summaries.values())
    print(
        f"  after the Pis stopped: bronze held {table.rows:,} of the {sent:,} frames sent "
        f"({drained_s:.0f} s later); {refused} frames refused at the edge"
    )
    print(
        f"camera: kafka_mb_s {kafka_rate / 1e6:.2f} bronze_mb_s {landed_bytes / elapsed / 1e6:.2f} "
        f"lake_lag_p95_s {np.percentile(ages_s, 95) if ages_s else float('nan'):.1f} "
        f"cpu_pct {sum(cpu.values()):.0f}"
    )


if __name__ == "__main__":
    main()
