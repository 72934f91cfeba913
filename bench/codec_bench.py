"""Avro codec throughput for one EEG block (25 samples x 16 channels, float32).

Prints encode, decode and round-trip rates through ``schemas.codec`` and, as the baseline measured in
the same run, a raw ``numpy.tobytes`` / ``numpy.frombuffer`` round trip of the same array.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from schemas.codec import default_codec, eeg_block_samples, samples_to_bytes, times_to_bytes


def rate(operation: Callable[[], object], min_seconds: float) -> float:
    """Operations per second, best of three timed runs of at least ``min_seconds`` each."""
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds:
            for _ in range(200):
                operation()
            count += 200
        best = max(best, count / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0, help="per timed run")
    args = parser.parse_args()

    codec = default_codec()
    rng = np.random.default_rng(0)
    block = rng.standard_normal((args.samples, args.channels)).astype(np.float32)
    times = np.arange(args.samples, dtype=np.int64) * 4000
    record = {
        "device_id": "pi-bench",
        "session_id": "bench",
        "seq": 1,
        "first_sample_index": 0,
        "n_samples": args.samples,
        "n_channels": args.channels,
        "sample_rate_hz": 250.0,
        "data": b"",
        "device_times_us": times_to_bytes(times),
        "produced_us": 0,
        "clock_offset_us": 0,
        "clock_rtt_us": 0,
    }

    def encode() -> bytes:
        record["data"] = samples_to_bytes(block)
        return codec.encode("eeg_block", record)

    payload = encode()

    def decode() -> np.ndarray:
        return eeg_block_samples(codec.decode(payload)[1])

    def round_trip() -> np.ndarray:
        record["data"] = samples_to_bytes(block)
        return eeg_block_samples(codec.decode(codec.encode("eeg_block", record))[1])

    def raw_round_trip() -> np.ndarray:
        return np.frombuffer(block.tobytes(), dtype=np.float32).reshape(block.shape)

    assert np.array_equal(round_trip(), block)
    encode_rate = rate(encode, args.seconds)
    decode_rate = rate(decode, args.seconds)
    trip_rate = rate(round_trip, args.seconds)
    raw_rate = rate(raw_round_trip, args.seconds)
    samples_per_s = trip_rate * args.samples
    print(
        f"EEG block {args.samples} x {args.channels} float32, Avro payload {len(payload)} bytes "
        f"(raw array {block.nbytes} bytes)"
    )
    print(f"  codec encode      {encode_rate:>12,.0f} blocks/s")
    print(f"  codec decode      {decode_rate:>12,.0f} blocks/s")
    print(
        f"  codec round trip  {trip_rate:>12,.0f} blocks/s  = {samples_per_s:,.0f} samples/s "
        f"= {samples_per_s / 250:,.0f} headsets at 250 Hz on one core"
    )
    print(f"  numpy round trip  {raw_rate:>12,.0f} blocks/s  (baseline: tobytes + frombuffer)")
    print(f"  ratio codec/numpy round trip: {trip_rate / raw_rate:.3f}")


if __name__ == "__main__":
    main()
