"""A small GDF 1.25 writer for tests (no GDF file ships with the installed packages, and none may be
downloaded at test time): float32 samples in 1 s records, an event table of (sample, code)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np


def _text(value: str, size: int) -> bytes:
    return value.encode("latin-1")[:size].ljust(size, b" ")


def write_gdf(
    path: Path,
    data_uv: np.ndarray,  # (channels, samples), microvolts
    labels: list[str],
    rate: int,
    start: dt.datetime,
    events: list[tuple[int, int]] = (),  # (0-based sample, GDF event code)
    patient: str = "S01 X",
) -> None:
    channels, samples = data_uv.shape
    records = -(-samples // rate)
    padded = np.zeros((channels, records * rate), np.float32)
    padded[:, :samples] = data_uv
    header = b"GDF 1.25" + _text(patient, 80) + _text("neurolake test", 80)
    header += _text(start.strftime("%Y%m%d%H%M%S") + "00", 16)
    header += np.int64(256 * (channels + 1)).tobytes() + bytes(24) + bytes(20)
    header += np.int64(records).tobytes() + np.array([1, 1], "<u4").tobytes() + np.uint32(channels).tobytes()
    assert len(header) == 256
    limit = 1e6
    variable = b"".join(_text(label, 16) for label in labels)
    variable += b"".join(_text("", 80) for _ in labels)  # transducer
    variable += b"".join(_text("uV", 8) for _ in labels)
    variable += np.full(channels, -limit, "<f8").tobytes() + np.full(channels, limit, "<f8").tobytes()
    variable += np.full(channels, -limit, "<i8").tobytes() + np.full(channels, limit, "<i8").tobytes()
    variable += b"".join(_text("HP:0.5Hz LP:100Hz", 80) for _ in labels)
    variable += np.full(channels, rate, "<i4").tobytes() + np.full(channels, 16, "<i4").tobytes()  # float32
    variable += bytes(32 * channels)
    body = b"".join(padded[:, r * rate : (r + 1) * rate].astype("<f4").tobytes() for r in range(records))
    positions = np.array([p + 1 for p, _ in events], "<u4")  # 1-based
    codes = np.array([c for _, c in events], "<u2")
    table = bytes([1]) + int(rate).to_bytes(3, "little") + np.uint32(len(events)).tobytes()
    table += positions.tobytes() + codes.tobytes()
    path.write_bytes(header + variable + body + table)
