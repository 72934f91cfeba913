"""XDF out: a session's streams (EEG, markers, room sensors, predictions) in one .xdf file, as
LabRecorder writes it, readable by pyxdf, MNE(-LSL) and EEGLAB.

Format: the XDF 1.0 specification (https://github.com/sccn/xdf/wiki/Specifications): the magic
``XDF:``, then chunks ``[length width][length][tag][content]``: a FileHeader, one StreamHeader per
stream, Samples, ClockOffsets, and a StreamFooter per stream.

Times, as XDF means them: the EEG stream keeps the device's own clock, and ClockOffset chunks carry
what the edge measured (lab clock minus device clock) at least every few seconds, so an XDF reader's
clock synchronisation puts it on the lab clock. Markers, sensor readings and predictions are
already in lab time (offset 0). Seconds since the epoch.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

FILE_HEADER, STREAM_HEADER, SAMPLES, CLOCK_OFFSET, BOUNDARY, STREAM_FOOTER = 1, 2, 3, 4, 5, 6
CHUNK_SAMPLES = 1000
CLOCK_OFFSET_EVERY_S = 5.0


@dataclass
class XdfStream:
    name: str
    kind: str  # the XDF stream type: EEG, Markers, ...
    labels: Sequence[str]
    timestamps_s: np.ndarray  # (n,) float64
    values: np.ndarray | list[list[str]]  # (n, channels) float32/float64, or strings
    nominal_srate: float = 0.0  # 0: irregular
    channel_types: Sequence[str] = ()
    unit: str = ""
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)  # (collection time s, offset s)
    source_id: str = ""

    @property
    def channel_format(self) -> str:
        if isinstance(self.values, list):
            return "string"
        return "float32" if self.values.dtype == np.float32 else "double64"


def _varlen(n: int) -> bytes:
    if n < 256:
        return struct.pack("<BB", 1, n)
    if n < 2**32:
        return struct.pack("<BI", 4, n)
    return struct.pack("<BQ", 8, n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _header_xml(stream: XdfStream) -> str:
    channels = "".join(
        f"<channel><label>{escape(label)}</label>"
        f"<type>{escape((stream.channel_types[i] if i < len(stream.channel_types) else '').upper())}</type>"
        f"<unit>{escape(stream.unit)}</unit></channel>"
        for i, label in enumerate(stream.labels)
    )
    return (
        '<?xml version="1.0"?><info>'
        f"<name>{escape(stream.name)}</name><type>{escape(stream.kind)}</type>"
        f"<channel_count>{len(stream.labels)}</channel_count><nominal_srate>{stream.nominal_srate:g}</nominal_srate>"
        f"<channel_format>{stream.channel_format}</channel_format><source_id>{escape(stream.source_id)}</source_id>"
        f"<created_at>0</created_at><desc><channels>{channels}</channels>"
        "<acquisition><manufacturer>neurolake</manufacturer></acquisition></desc></info>"
    )


def _samples(stream_id: int, stream: XdfStream, start: int, stop: int) -> bytes:
    parts = [struct.pack("<I", stream_id), _varlen(stop - start)]
    if isinstance(stream.values, list):
        for i in range(start, stop):
            parts.append(struct.pack("<Bd", 8, stream.timestamps_s[i]))
            for text in stream.values[i]:
                encoded = text.encode("utf-8")
                parts.append(_varlen(len(encoded)) + encoded)
        return b"".join(parts)
    values = np.ascontiguousarray(
        stream.values[start:stop], dtype="<f4" if stream.channel_format == "float32" else "<f8"
    )
    stamps = np.asarray(stream.timestamps_s[start:stop], dtype="<f8")
    # One record per sample: the timestamp marker byte 8, the timestamp, then the channel values.
    record = np.dtype([("flag", "u1"), ("time", "<f8"), ("values", values.dtype, (values.shape[1],))])
    packed = np.empty(stop - start, dtype=record)
    packed["flag"], packed["time"], packed["values"] = 8, stamps, values
    parts.append(packed.tobytes())
    return b"".join(parts)


def write_xdf(path: Path, streams: Sequence[XdfStream]) -> Path:
    """Write ``streams`` to ``path``; returns it."""
    with path.open("wb") as out:
        out.write(b"XDF:")
        out.write(_chunk(FILE_HEADER, b'<?xml version="1.0"?><info><version>1.0</version></info>'))
        for stream_id, stream in enumerate(streams, 1):
            out.write(_chunk(STREAM_HEADER, struct.pack("<I", stream_id) + _header_xml(stream).encode("utf-8")))
        for stream_id, stream in enumerate(streams, 1):
            n = len(stream.timestamps_s)
            for start in range(0, n, CHUNK_SAMPLES):
                out.write(_chunk(SAMPLES, _samples(stream_id, stream, start, min(n, start + CHUNK_SAMPLES))))
            for collected, offset in stream.clock_offsets:
                out.write(_chunk(CLOCK_OFFSET, struct.pack("<Idd", stream_id, collected, offset)))
        for stream_id, stream in enumerate(streams, 1):
            stamps = stream.timestamps_s
            first, last = (float(stamps[0]), float(stamps[-1])) if len(stamps) else (0.0, 0.0)
            footer = (
                '<?xml version="1.0"?><info>'
                f"<first_timestamp>{first!r}</first_timestamp><last_timestamp>{last!r}</last_timestamp>"
                f"<sample_count>{len(stamps)}</sample_count></info>"
            )
            out.write(_chunk(STREAM_FOOTER, struct.pack("<I", stream_id) + footer.encode("utf-8")))
    return path


def offsets_every(
    device_times_us: np.ndarray, offsets_us: np.ndarray, every_s: float = CLOCK_OFFSET_EVERY_S
) -> list[tuple[float, float]]:
    """Clock offsets (collection time, offset) in seconds, one per ``every_s`` of the device clock,
    plus the last: what a reader needs to map the device clock onto the lab clock."""
    if len(device_times_us) == 0:
        return []
    times_s = device_times_us / 1e6
    picks = np.unique(np.searchsorted(times_s, np.arange(times_s[0], times_s[-1], every_s)))
    picks = np.unique(np.append(picks, len(times_s) - 1))
    return [(float(times_s[i]), float(offsets_us[i]) / 1e6) for i in picks]
