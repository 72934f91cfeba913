"""A light lab load for the lake benchmark: many headsets' records, at their real rate, from one process.

The lake bench measures the hub. In a lab each headset has its own Pi; on this 2-core machine the
full edge simulator (`neurolake edge simulate`: signal synthesis, SQLite spool, sender thread and
clock probe per headset) costs about 0.8 of a core for 100 headsets, taken from the lake it is meant
to measure. This generator sends what those Pis send to the lake, and nothing cheaper: per headset a
`session` record, then every block period a signed `eeg_block` of the simulated headset's layout
(real codec, real HMAC with the device's key in the hub's keyring, the same topics and keys), stamped
with the wall clock. Block contents are the simulated headset's signal, made once per headset and
cycled. It ignores the lake's acks (it has no spool to free).

Run as ``python -m bench._load --headsets N --duration S`` with the bench's NEUROLAKE_* environment;
prints a JSON line when its headsets start sending (``ready``), and at the end a JSON summary like
`edge simulate` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import __version__
from core.settings import load_settings
from dsp.simulation import headset_for
from edge_producers.devices.simulated import SimulatedEeg
from schemas.catalog import EEG_RAW, SESSIONS
from schemas.codec import default_codec
from schemas.records import eeg_block_record, session_record
from schemas.signing import DeviceKey, Keyring, ensure_key, sign
from schemas.timebase import now_us

log = logging.getLogger("bench.load")

CYCLE_BLOCKS = 50  # distinct blocks of signal per headset, cycled


@dataclass
class Headset:
    device_id: str
    session_id: str
    key: DeviceKey
    signal_blocks: np.ndarray  # (CYCLE_BLOCKS, block, channels)
    first_us: int
    sent: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    settings = load_settings()
    from confluent_kafka import Producer

    codec = default_codec()
    keyring = Keyring(settings.security.keyring)
    simulation = settings.edge.simulation
    rate, block = headset_for(simulation).sample_rate_hz, settings.edge.block_size
    period_us = block * 1e6 / rate
    producer = Producer({**settings.kafka.producer_config(), "linger.ms": 20})
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    # Each headset's signal and key first: a lab's Pis are recording before the hub starts, and
    # this set-up (~3 s of CPU for 100 headsets) is theirs, not the hub's, so the bench starts the
    # lake only once it is done (the "ready" line).
    prepared = []
    for number in range(args.headsets):
        device_id = f"load-{number:03d}"
        generator = SimulatedEeg(simulation.model_copy(update={"seed": simulation.seed + number}))
        signal_blocks = generator.generate(CYCLE_BLOCKS * block).reshape(CYCLE_BLOCKS, block, -1)
        prepared.append((device_id, ensure_key(keyring, device_id), generator.layout, signal_blocks))
    started = now_us()
    devices: list[Headset] = []
    for number, (device_id, key, layout, signal_blocks) in enumerate(prepared):
        session_id = f"{device_id}-{started}"
        session = session_record(
            device_id=device_id, session_id=session_id, started_us=started, board="simulated",
            sample_rate_hz=rate, channel_names=list(layout.channel_names),
            channel_types=list(layout.channel_types), block_size=block, seq=0, software_version=__version__,
        )  # fmt: skip
        session["spool_epoch"] = started
        value = sign(codec.encode("session", session), SESSIONS, key)
        producer.produce(SESSIONS, key=device_id.encode(), value=value)
        # Headsets start spread over one block period, as a lab's do.
        offset_us = int(number * period_us / max(args.headsets, 1))
        devices.append(Headset(device_id, session_id, key, signal_blocks, started + offset_us))
    print(json.dumps({"ready": True, "started_us": started}), flush=True)
    producer.flush(10)

    failed: dict[str, int] = {}

    def delivered(error: object, message: object) -> None:
        # What Kafka never acknowledged counts as the producer's loss, not the lake's.
        if error is not None:
            device = message.key().decode()  # type: ignore[attr-defined]
            failed[device] = failed.get(device, 0) + 1

    deadline = started + int(args.duration * 1e6)
    while not stop and now_us() < deadline:
        now = now_us()
        next_due = deadline
        for headset in devices:
            # Block k holds samples k*block .. (k+1)*block-1, sent once its last sample is taken.
            while headset.first_us + (headset.sent + 1) * period_us <= now:
                index = headset.sent * block
                times = headset.first_us + ((index + np.arange(block)) * (1e6 / rate)).astype(np.int64)
                record = eeg_block_record(
                    device_id=headset.device_id, session_id=headset.session_id, seq=headset.sent,
                    first_sample_index=index, samples=headset.signal_blocks[headset.sent % CYCLE_BLOCKS],
                    device_times_us=times, sample_rate_hz=rate, produced_us=now_us(), clock_offset_us=0,
                    clock_rtt_us=0, spool_epoch=started,
                )  # fmt: skip
                value = sign(codec.encode("eeg_block", record), EEG_RAW, headset.key)
                while True:
                    try:
                        producer.produce(EEG_RAW, key=headset.device_id.encode(), value=value, on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.05)
                headset.sent += 1
            next_due = min(next_due, int(headset.first_us + (headset.sent + 1) * period_us))
        producer.poll(0)
        time.sleep(max(0.0, (next_due - now_us()) / 1e6))
    producer.flush(30)
    summary = {
        "devices": [
            {
                "device_id": h.device_id,
                "samples": h.sent * block,
                "blocks": h.sent,
                "failed": failed.get(h.device_id, 0),
            }
            for h in devices
        ],
        "blocks": sum(h.sent for h in devices),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
