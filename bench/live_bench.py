"""The live path against Lab Streaming Layer, in one run on this machine.

neurolake: a simulated headset (16 ch at 250 Hz, blocks of 25) in its own process, `neurolake edge
simulate`: board read, sign, spool (SQLite, synchronous=FULL), producer, embedded broker, and a live
consumer here (the dashboard's and live scorer's reader, infra.kafka.LiveReader). Latency per block =
arrival at the consumer - lab time of the block's last sample.

LSL: a pylsl outlet in its own process pushes the same 25 x 16 float32 block every 100 ms, stamped
with the last sample's time; an inlet here polls with pull_chunk(timeout=0.0) and a 1 ms sleep, as
MNE-LSL does. Latency = local_clock() at arrival - that stamp.

Prints both distributions and the ratio (neurolake / LSL).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import cli_environment, latency_summary, private_broker
from infra.kafka import LiveReader
from schemas.catalog import EEG_RAW
from schemas.codec import eeg_block_device_times
from schemas.timebase import now_us


def neurolake_latencies(seconds: float, warmup_s: float) -> list[float]:
    latencies: list[float] = []
    with private_broker() as settings:
        edge = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "neurolake.cli",
                "edge",
                "simulate",
                "--headsets",
                "1",
                "--duration",
                str(seconds + warmup_s + 2),
            ],
            env=cli_environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with LiveReader(settings, "live-bench", (EEG_RAW,)) as reader:
                reader.assign()
                started = time.monotonic()
                while time.monotonic() - started < seconds + warmup_s:
                    for item in reader.read(100, timeout_s=0.05):
                        if item.topic != EEG_RAW:
                            continue
                        arrived_us = now_us()
                        last_us = int(eeg_block_device_times(item.record)[-1]) + int(item.record["clock_offset_us"])
                        if time.monotonic() - started >= warmup_s:
                            latencies.append((arrived_us - last_us) / 1000)
        finally:
            edge.terminate()
            edge.wait(30)
    return latencies


def _lsl_outlet(seconds: float, ready: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    import pylsl

    info = pylsl.StreamInfo("neurolake-bench", "EEG", 16, 250.0, pylsl.cf_float32, "live-bench-outlet")
    outlet = pylsl.StreamOutlet(info, chunk_size=25)
    ready.set()
    block = np.random.default_rng(0).normal(size=(25, 16)).astype(np.float32)
    deadline = time.monotonic() + seconds
    next_push = time.monotonic()
    while time.monotonic() < deadline:
        next_push += 0.1
        time.sleep(max(0.0, next_push - time.monotonic()))
        outlet.push_chunk(block, pylsl.local_clock())  # stamped with the last sample's time


def lsl_latencies(seconds: float, warmup_s: float) -> list[float]:
    import pylsl

    ready = multiprocessing.Event()
    outlet = multiprocessing.Process(target=_lsl_outlet, args=(seconds + warmup_s + 3, ready), daemon=True)
    outlet.start()
    ready.wait(10)
    streams = pylsl.resolve_byprop("source_id", "live-bench-outlet", timeout=10)
    if not streams:
        raise RuntimeError("the LSL outlet was not found on this machine")
    inlet = pylsl.StreamInlet(streams[0], max_chunklen=25)
    inlet.open_stream(timeout=10)
    latencies: list[float] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds + warmup_s:
            chunk, stamps = inlet.pull_chunk(timeout=0.0)
            if stamps:
                now = pylsl.local_clock()
                if time.monotonic() - started >= warmup_s:
                    # One push of 25 samples carries one stamp, given to its last sample.
                    latencies.append((now - stamps[-1]) * 1000)
            else:
                time.sleep(0.001)
    finally:
        inlet.close_stream()
        outlet.terminate()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"live bench: one 16 ch x 250 Hz headset, blocks of 25 (100 ms), {args.seconds:.0f} s measured "
        f"after {args.warmup:.0f} s warm-up, 2-core machine"
    )
    ours = neurolake_latencies(args.seconds, args.warmup)
    lsl = lsl_latencies(args.seconds, args.warmup)
    print(f"  neurolake  block's last sample -> live consumer   {latency_summary(ours)}")
    print(f"  LSL        push -> inlet (1 ms polling)           {latency_summary(lsl)}")
    if ours and lsl:
        print(
            f"  ratio neurolake / LSL   p50 {np.percentile(ours, 50) / np.percentile(lsl, 50):.1f}x   "
            f"p95 {np.percentile(ours, 95) / np.percentile(lsl, 95):.1f}x   (target: neurolake p95 <= 10 ms)"
        )


if __name__ == "__main__":
    main()
