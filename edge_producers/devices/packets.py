"""Radio losses from a board's packet counter: pure maths, state in and state out.

An OpenBCI Cyton numbers the packets it radios 0..255 and wraps; BrainFlow hands the number over
in each sample's ``package_num`` row (BrainFlow's synthetic board counts the same way). A sample
whose counter jumps by more than one step says how many samples the radio lost just before it;
the runner then moves the sample index on by that many, so silver marks ``gap_before`` and every
later sample keeps the index, and so the dejittered time, it would have had without the loss.

Limits, by construction of an 8-bit counter: a loss of a whole counter period (256 packets, about
1 s on a Cyton) or more is undercounted by whole periods; a silence that long is logged by the
adapter instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PacketCounter:
    modulus: int = 256
    # How far the counter moves per sample: a Cyton+Daisy sample is two radio packets.
    step: int = 1

    @property
    def period(self) -> int:
        """Samples per counter period."""
        return self.modulus // self.step


# Boards whose BrainFlow package_num row is a radio packet counter (BrainFlow's board names).
BOARD_COUNTERS = {
    "synthetic": PacketCounter(),
    "cyton": PacketCounter(),
    "cyton_daisy": PacketCounter(step=2),
}


@dataclass(frozen=True)
class CounterState:
    last: int | None = None  # the previous sample's counter, None before the first


def samples_missing(counter: np.ndarray, spec: PacketCounter, state: CounterState) -> tuple[np.ndarray, CounterState]:
    """Per sample, how many samples were lost just before it (int64), and the new state.

    Chunk boundaries do not matter: the state carries the last counter over, so reading a stream in
    pieces gives what reading it whole gives.
    """
    values = np.asarray(counter, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0, np.int64), state
    current = np.rint(values).astype(np.int64) % spec.modulus
    previous = np.concatenate([[current[0] if state.last is None else state.last], current[:-1]])
    moved = (current - previous) % spec.modulus
    # A counter that did not move went round a whole period (or more: see the module's limits).
    advance = np.where(moved == 0, spec.period, np.maximum(np.rint(moved / spec.step), 1)).astype(np.int64)
    missing = advance - 1
    if state.last is None:
        missing[0] = 0
    return missing, CounterState(int(current[-1]))


def drop_packets(n_samples: int, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Which of ``n_samples`` samples survive a link that loses each packet with ``probability``
    (fault injection for boards without a radio of their own)."""
    if probability <= 0:
        return np.ones(n_samples, bool)
    return rng.random(n_samples) >= probability
