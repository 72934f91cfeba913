"""The one Avro codec: loads ``schemas/avro/*.avsc`` once and encodes/decodes records.

Wire format is Avro single-object encoding: ``C3 01``, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's canonical form, then the Avro binary body. A consumer therefore
knows which schema wrote each record and resolves it to the current (reader) schema, which is how
records written by an older schema version stay readable after a BACKWARD-compatible change.

Only fastavro and numpy are imported here: the edge Pi uses this module too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from schemas.signing import TRAILER_MAGIC, SignatureError, split_signed

SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
HISTORY_DIR = SCHEMA_DIR / "history"
MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
EEG_DTYPE = np.dtype("<f4")
TIME_DTYPE = np.dtype("<i8")


class CodecError(ValueError):
    """A record could not be encoded or decoded; the message names the field or byte problem."""


@dataclass(frozen=True)
class SchemaVersion:
    record_type: str
    source: Path
    raw: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def load_schema_file(path: Path) -> SchemaVersion:
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise CodecError(f"{path}: a record schema must be a JSON object, not {type(raw).__name__}")
    # Each file is parsed on its own (no shared named-type registry) so that an old version of a
    # schema and the current one can both define org.neurolake.EegBlock.
    parsed = parse_schema(raw, named_schemas={})
    assert isinstance(parsed, dict)  # a record schema parses to a dict
    digest = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    record_type = path.name.split(".")[0]
    return SchemaVersion(record_type, path, raw, parsed, bytes.fromhex(digest))


class AvroCodec:
    """Encode and decode neurolake records by record type name (``eeg_block``, ``marker``...)."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path | None = HISTORY_DIR) -> None:
        self._current: dict[str, SchemaVersion] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            version = load_schema_file(path)
            self._current[version.record_type] = version
            self._by_fingerprint[version.fingerprint] = version
        if not self._current:
            raise CodecError(f"no .avsc files in {schema_dir}")
        if history_dir is not None and history_dir.is_dir():
            for path in sorted(history_dir.glob("*.avsc")):
                version = load_schema_file(path)
                if version.record_type not in self._current:
                    raise CodecError(f"{path} has no current schema {version.record_type}.avsc")
                self._by_fingerprint.setdefault(version.fingerprint, version)

    @property
    def record_types(self) -> tuple[str, ...]:
        return tuple(self._current)

    def schema(self, record_type: str) -> SchemaVersion:
        try:
            return self._current[record_type]
        except KeyError:
            raise CodecError(
                f"unknown record type {record_type!r}; known: {', '.join(sorted(self._current))}"
            ) from None

    def encode(self, record_type: str, record: Mapping[str, Any]) -> bytes:
        version = self.schema(record_type)
        buffer = io.BytesIO()
        buffer.write(version.header)
        try:
            schemaless_writer(buffer, version.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise CodecError(self._explain_invalid(version, record, exc)) from None
        return buffer.getvalue()

    def decode(self, payload: bytes, expected_type: str | None = None) -> tuple[str, dict[str, Any]]:
        """Return ``(record_type, record)`` resolved to the current schema of that type.

        A signed value (schemas/signing.py) decodes to its record; this does not check the signature:
        readers that act on a record's claims (bronze, the edge's control listener) verify first."""
        if payload.endswith(TRAILER_MAGIC):
            try:
                payload = split_signed(payload)[0]
            except SignatureError as exc:
                raise CodecError(str(exc)) from None
        if len(payload) < HEADER_SIZE:
            raise CodecError(f"payload of {len(payload)} bytes is shorter than the 10-byte header")
        if payload[:2] != MAGIC:
            raise CodecError(f"payload starts with {payload[:2].hex()}, not the Avro single-object marker c301")
        writer = self._by_fingerprint.get(payload[2:HEADER_SIZE])
        if writer is None:
            raise CodecError(
                f"unknown writer schema fingerprint {payload[2:HEADER_SIZE].hex()}; the producer "
                "uses a schema this consumer does not have (update schemas/avro)"
            )
        if expected_type is not None and writer.record_type != expected_type:
            raise CodecError(f"expected a {expected_type} record, got {writer.record_type}")
        reader = self._current[writer.record_type]
        body = io.BytesIO(payload)
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer.parsed, reader.parsed if reader is not writer else None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on bad bytes
            raise CodecError(f"corrupt {writer.record_type} body: {type(exc).__name__}: {exc}") from None
        if body.tell() != len(payload):
            raise CodecError(f"{len(payload) - body.tell()} trailing bytes after the {writer.record_type} record")
        if not isinstance(record, dict):  # every .avsc here is a record; fastavro types it loosely
            raise CodecError(f"{writer.record_type} body decoded to a {type(record).__name__}, not a record")
        return writer.record_type, record

    @staticmethod
    def _explain_invalid(version: SchemaVersion, record: Mapping[str, Any], exc: Exception) -> str:
        if not isinstance(record, Mapping):
            return f"{version.record_type} must be a mapping, got {type(record).__name__}"
        missing = [f["name"] for f in version.raw["fields"] if f["name"] not in record and "default" not in f]
        if missing:
            return f"{version.record_type} is missing field(s) {', '.join(missing)}"
        try:
            validate(record, version.parsed, raise_errors=True)
        except ValidationError as invalid:
            problems = "; ".join(str(error) for error in getattr(invalid, "errors", [invalid]))
            return f"{version.record_type} field error: {problems}"
        return f"{version.record_type} could not be encoded: {exc}"


@lru_cache(maxsize=1)
def default_codec() -> AvroCodec:
    """The process-wide codec; schemas are parsed once."""
    return AvroCodec()


def eeg_block_samples(record: Mapping[str, Any]) -> np.ndarray:
    """The block's samples as an ``(n_samples, n_channels)`` float32 array, without copying."""
    n_samples, n_channels = record["n_samples"], record["n_channels"]
    data = record["data"]
    if len(data) != n_samples * n_channels * EEG_DTYPE.itemsize:
        raise CodecError(
            f"eeg_block data holds {len(data)} bytes, expected n_samples*n_channels*4 = "
            f"{n_samples}*{n_channels}*4 = {n_samples * n_channels * 4}"
        )
    return np.frombuffer(data, dtype=EEG_DTYPE).reshape(n_samples, n_channels)


def eeg_block_device_times(record: Mapping[str, Any]) -> np.ndarray:
    times = record["device_times_us"]
    if len(times) != record["n_samples"] * TIME_DTYPE.itemsize:
        raise CodecError(
            f"eeg_block device_times_us holds {len(times)} bytes, expected n_samples*8 = {record['n_samples'] * 8}"
        )
    return np.frombuffer(times, dtype=TIME_DTYPE)


def samples_to_bytes(samples: np.ndarray) -> bytes:
    """Sample-major little-endian float32 bytes for ``EegBlock.data``."""
    if samples.ndim != 2:
        raise CodecError(f"samples must be 2-D (n_samples, n_channels), got shape {samples.shape}")
    return np.ascontiguousarray(samples, dtype=EEG_DTYPE).tobytes()


def times_to_bytes(times_us: np.ndarray) -> bytes:
    return np.ascontiguousarray(times_us, dtype=TIME_DTYPE).tobytes()
