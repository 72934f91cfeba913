"""Edge producer cost: records/s and CPU per simulated headset, and headsets one core can feed.

Two runs against a private embedded broker, each with N headsets (16 EEG channels at 250 Hz, blocks
of 25) in one process for D seconds:
  1. transport only: a replay source hands out pre-generated EEG, so the CPU measured is what the
     edge pays per headset on a Pi (read, encode, spool to SQLite, send, heartbeat);
  2. full simulation: the simulated lab headset synthesises its signal too (a cost a real board
     does not have).
CPU is this process's user+system time (all threads) over the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import private_broker
from core.settings import EdgeSettings, Settings
from edge_producers.cli import simulated_devices
from edge_producers.devices.eeg import BoardInfo, EegChunk, make_eeg_source
from edge_producers.devices.simulated import SimulatedEeg
from edge_producers.runtime import EdgeRuntime
from edge_producers.spool import Spool
from schemas.codec import default_codec
from schemas.records import eeg_block_record
from schemas.signing import Keyring, ensure_key, new_key, sign


class ReplaySource:
    """Pre-generated EEG handed out at the board's pace: costs what a BrainFlow read costs."""

    def __init__(self, edge: EdgeSettings, **_: object) -> None:
        sim = edge.simulation.model_copy(update={"with_pulse": False})
        generator = SimulatedEeg(sim)
        self._rate = generator.fs
        self._data = generator.generate(int(self._rate * 10))
        channels = generator.n_channels
        self.info = BoardInfo("replay", self._rate, tuple(f"ch{i}" for i in range(channels)), ("eeg",) * channels)
        self._start = 0.0
        self._index = 0

    def start(self) -> None:
        self._start = time.time()

    def read(self) -> EegChunk:
        due = int((time.time() - self._start) * self._rate) + 1  # readable from its own timestamp
        n = due - self._index
        rows = (self._index + np.arange(max(n, 0))) % len(self._data)
        self._index = max(due, self._index)
        times = (self._start * 1e6 + (self._index - n + np.arange(max(n, 0))) * 4000).astype(np.int64)
        return EegChunk(self._data[rows], times)

    def stop(self) -> None:
        pass


def run(settings: Settings, headsets: int, seconds: float, replay: bool) -> dict[str, float]:
    # A prefix per run: each run starts with empty spools and seq counters.
    prefix = "replay" if replay else "sim"
    devices = simulated_devices(settings, headsets, 0, prefix, False, False, False)
    devices = [
        d.model_copy(update={"simulation": d.simulation.model_copy(update={"with_pulse": False})}) for d in devices
    ]
    keyring = Keyring(settings.security.keyring)
    for device in devices:
        ensure_key(keyring, device.device_id)
    runtime = EdgeRuntime(
        settings, devices, source_factory=ReplaySource if replay else make_eeg_source, ship_logs=False
    )
    cpu0, wall0 = os.times(), time.monotonic()
    with runtime:
        runtime.run(duration_s=seconds)
        cpu1, wall1 = os.times(), time.monotonic()
    summary = runtime.summary()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    wall = wall1 - wall0
    spooled = sum(d["blocks"] for d in summary["devices"])
    samples = sum(d["samples"] for d in summary["devices"])
    undelivered = sum(d["spool"]["undelivered"] for d in summary["devices"])
    return {"cpu_s": cpu, "wall_s": wall, "records": spooled, "samples": samples, "undelivered": undelivered}


def security_costs(directory: Path, blocks_per_s: float = 10.0) -> dict[str, float]:
    """What signing and a power-cut-safe spool cost per headset (10 blocks of 25 x 16 per second)."""
    codec = default_codec()
    samples = np.random.default_rng(0).normal(size=(25, 16)).astype(np.float32)
    record = eeg_block_record(
        device_id="pi-1",
        session_id="s",
        seq=0,
        first_sample_index=0,
        samples=samples,
        device_times_us=np.arange(25, dtype=np.int64),
        sample_rate_hz=250.0,
        produced_us=0,
        clock_offset_us=0,
        clock_rtt_us=0,
    )
    encoded = codec.encode("eeg_block", record)
    key = new_key("pi-1")
    n = 20_000
    cpu0 = time.process_time()
    for _ in range(n):
        sign(encoded, "eeg.raw", key)
    sign_s = (time.process_time() - cpu0) / n
    result = {"sign_us": sign_s * 1e6, "sign_pct": sign_s * blocks_per_s * 100}
    for mode in ("NORMAL", "FULL"):
        with Spool(directory / f"{mode}.sqlite", 10**9, synchronous=mode) as spool:  # type: ignore[arg-type]
            appends = 300
            cpu0, wall0 = time.process_time(), time.monotonic()
            for _ in range(appends):
                spool.append("eeg.raw", b"k", lambda seq: encoded)
            result[f"{mode}_cpu_ms"] = (time.process_time() - cpu0) / appends * 1e3
            result[f"{mode}_wall_ms"] = (time.monotonic() - wall0) / appends * 1e3
    for mode in ("NORMAL", "FULL"):
        result[f"{mode}_pct"] = result[f"{mode}_cpu_ms"] / 1e3 * blocks_per_s * 100
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with private_broker({"NEUROLAKE_EDGE__SPOOL__MAX_BYTES": str(2 * 1024**3)}) as settings:
        print(
            f"edge bench: {args.headsets} headsets x 16 ch x 250 Hz, blocks of 25, "
            f"{args.seconds:.0f} s each run, embedded broker"
        )
        for label, replay in (("transport only (encode+spool+send)", True), ("full simulation (synthesis too)", False)):
            r = run(settings, args.headsets, args.seconds, replay)
            per_headset_core = r["cpu_s"] / r["wall_s"] / args.headsets
            print(f"  {label}")
            print(
                f"    EEG blocks/s         {r['records'] / r['wall_s']:>10,.0f}  "
                f"({r['samples'] / r['wall_s']:,.0f} samples/s, {r['undelivered']} undelivered at exit)"
            )
            print(
                f"    CPU per headset      {per_headset_core * 100:>10.2f} % of one core "
                f"= {per_headset_core * 60:.2f} CPU-s per headset-minute"
            )
            print(f"    headsets per core    {1 / per_headset_core:>10,.0f}")
        costs = security_costs(settings.paths.home)
        print("  security costs per headset (10 blocks/s, one spool transaction per block at worst)")
        print(
            f"    HMAC-SHA256 signing  {costs['sign_us']:>10.1f} us per block = {costs['sign_pct']:.3f} % of one core"
        )
        for mode in ("NORMAL", "FULL"):
            print(
                f"    spool sync={mode:<7}  {costs[f'{mode}_cpu_ms']:>10.3f} ms CPU, {costs[f'{mode}_wall_ms']:.3f} ms wall "
                f"per append = {costs[f'{mode}_pct']:.2f} % of one core"
            )
        print(
            f"    FULL / NORMAL CPU    {costs['FULL_cpu_ms'] / costs['NORMAL_cpu_ms']:>10.2f}x "
            "(the runs above use FULL, signing included)"
        )


if __name__ == "__main__":
    main()
