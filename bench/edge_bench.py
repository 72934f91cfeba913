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
from edge_producers.cli import simulated_devices
from edge_producers.devices.eeg import BoardInfo, EegChunk, make_eeg_source
from edge_producers.devices.simulated import SimulatedEeg
from edge_producers.runtime import EdgeRuntime
from neurolake.settings import EdgeSettings, Settings


class ReplaySource:
    """Pre-generated EEG handed out at the board's pace: costs what a BrainFlow read costs."""

    def __init__(self, edge: EdgeSettings, **_: object) -> None:
        sim = edge.simulation.model_copy(update={"with_pulse": False})
        self._data = SimulatedEeg(sim).generate(int(sim.sample_rate_hz * 10))
        self._rate = sim.sample_rate_hz
        self.info = BoardInfo("replay", self._rate, tuple(f"ch{i}" for i in range(16)), ("eeg",) * 16)
        self._start = 0.0
        self._index = 0

    def start(self) -> None:
        self._start = time.time()

    def read(self) -> EegChunk:
        due = int((time.time() - self._start) * self._rate)
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
    devices = [d.model_copy(update={"simulation": d.simulation.model_copy(update={"with_pulse": False})})
               for d in devices]
    runtime = EdgeRuntime(settings, devices, source_factory=ReplaySource if replay else make_eeg_source,
                          ship_logs=False)
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
    return {"cpu_s": cpu, "wall_s": wall, "records": spooled, "samples": samples,
            "undelivered": undelivered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with private_broker({"NEUROLAKE_EDGE__SPOOL__MAX_BYTES": str(2 * 1024**3)}) as settings:
        print(f"edge bench: {args.headsets} headsets x 16 ch x 250 Hz, blocks of 25, "
              f"{args.seconds:.0f} s each run, embedded broker")
        for label, replay in (("transport only (encode+spool+send)", True),
                              ("full simulation (synthesis too)", False)):
            r = run(settings, args.headsets, args.seconds, replay)
            per_headset_core = r["cpu_s"] / r["wall_s"] / args.headsets
            print(f"  {label}")
            print(f"    EEG blocks/s         {r['records'] / r['wall_s']:>10,.0f}  "
                  f"({r['samples'] / r['wall_s']:,.0f} samples/s, {r['undelivered']} undelivered at exit)")
            print(f"    CPU per headset      {per_headset_core * 100:>10.2f} % of one core "
                  f"= {per_headset_core * 60:.2f} CPU-s per headset-minute")
            print(f"    headsets per core    {1 / per_headset_core:>10,.0f}")


if __name__ == "__main__":
    main()
