"""Contract tests: the .avsc files are the truth, and every change to them stays BACKWARD compatible."""

from __future__ import annotations

import io
import json
from pathlib import Path

import avro.io
import avro.schema
import numpy as np
import pytest
from fastavro.schema import to_parsing_canonical_form

from schemas.catalog import COMMAND_ACKS, CONTROL, RECORD_TYPES, TOPICS
from schemas.codec import (
    HEADER_SIZE,
    HISTORY_DIR,
    SCHEMA_DIR,
    AvroCodec,
    CodecError,
    default_codec,
    eeg_block_device_times,
    eeg_block_samples,
    load_schema_file,
)
from schemas.compat import backward_problems
from tests.schemas.samples import sample_records

SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.avsc"))
HISTORY_FILES = sorted(HISTORY_DIR.glob("*.avsc"))


def test_every_topic_has_a_schema_and_every_schema_a_topic() -> None:
    assert {path.stem for path in SCHEMA_FILES} == set(RECORD_TYPES)
    assert set(sample_records()) == set(RECORD_TYPES)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_schema_parses_with_fastavro_and_apache_avro(path: Path) -> None:
    load_schema_file(path)
    avro.schema.parse(path.read_text())


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_records_carry_identity_and_microsecond_times(path: Path) -> None:
    raw = json.loads(path.read_text())
    fields = {field["name"]: field for field in raw["fields"]}
    if path.stem != "dead_letter":
        assert {"device_id", "session_id", "seq"} <= set(fields)
        assert fields["seq"]["type"] == "long"
    for name, field in fields.items():
        if name.endswith("_us"):
            assert field["type"] in ("long", "bytes"), f"{name} must be long microseconds"


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_round_trip(record_type: str) -> None:
    codec = default_codec()
    record = sample_records()[record_type]
    payload = codec.encode(record_type, record)
    decoded_type, decoded = codec.decode(payload)
    assert decoded_type == record_type
    assert decoded == record


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_apache_avro_decodes_what_the_codec_writes(record_type: str) -> None:
    codec = default_codec()
    record = sample_records()[record_type]
    payload = codec.encode(record_type, record)
    schema = avro.schema.parse((SCHEMA_DIR / f"{record_type}.avsc").read_text())
    # The single-object header names the writer schema by Apache Avro's own fingerprint.
    assert payload[2:HEADER_SIZE] == schema.fingerprint("CRC-64-AVRO")
    reader = avro.io.DatumReader(schema)
    decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(payload[HEADER_SIZE:])))
    assert decoded == record


def test_eeg_block_is_one_frombuffer_away_from_numpy() -> None:
    codec = default_codec()
    record = sample_records()["eeg_block"]
    _, decoded = codec.decode(codec.encode("eeg_block", record))
    samples = eeg_block_samples(decoded)
    assert samples.shape == (25, 16) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, np.arange(400, dtype=np.float32).reshape(25, 16) / 7)
    assert eeg_block_device_times(decoded)[1] - eeg_block_device_times(decoded)[0] == 4000


def test_eeg_block_with_wrong_data_length_is_refused() -> None:
    record = {**sample_records()["eeg_block"], "n_channels": 15}
    with pytest.raises(CodecError, match="expected n_samples\\*n_channels\\*4"):
        eeg_block_samples(record)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "shorter than the 10-byte header"),
        (b"\x00" * 40, "not the Avro single-object marker"),
        (b"\xc3\x01" + b"\x00" * 8 + b"xx", "unknown writer schema fingerprint"),
    ],
)
def test_undecodable_payloads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        default_codec().decode(payload)


def test_truncated_and_padded_bodies_are_errors() -> None:
    codec = default_codec()
    payload = codec.encode("eeg_block", sample_records()["eeg_block"])
    with pytest.raises(CodecError, match="corrupt eeg_block body"):
        codec.decode(payload[:-100])
    with pytest.raises(CodecError, match="trailing bytes"):
        codec.decode(payload + b"\x00")


def test_expected_type_mismatch() -> None:
    codec = default_codec()
    payload = codec.encode("marker", sample_records()["marker"])
    with pytest.raises(CodecError, match="expected a eeg_block record, got marker"):
        codec.decode(payload, expected_type="eeg_block")


def test_encode_errors_name_the_field() -> None:
    codec = default_codec()
    with pytest.raises(CodecError, match="Marker.seq"):
        codec.encode("marker", {**sample_records()["marker"], "seq": "two"})
    with pytest.raises(CodecError, match="missing field\\(s\\) label"):
        record = dict(sample_records()["marker"])
        del record["label"]
        codec.encode("marker", record)
    with pytest.raises(CodecError, match="unknown record type 'eeg'"):
        codec.encode("eeg", {})


# --- BACKWARD compatibility -------------------------------------------------------------------


def test_every_current_schema_is_a_released_snapshot() -> None:
    """A schema edit must come with a new history snapshot, which the next test then checks."""
    snapshots = {to_parsing_canonical_form(load_schema_file(p).parsed) for p in HISTORY_FILES}
    for path in SCHEMA_FILES:
        canonical = to_parsing_canonical_form(load_schema_file(path).parsed)
        assert canonical in snapshots, f"{path.name} changed: copy it to history/ as a new version"


@pytest.mark.parametrize("old_path", HISTORY_FILES, ids=lambda p: p.name)
def test_current_schema_reads_every_released_version(old_path: Path) -> None:
    record_type = old_path.name.split(".")[0]
    old_raw = json.loads(old_path.read_text())
    new_raw = json.loads((SCHEMA_DIR / f"{record_type}.avsc").read_text())
    assert backward_problems(old_raw, new_raw) == []


def test_records_written_by_an_older_schema_are_decoded_by_the_codec(tmp_path: Path) -> None:
    """An older producer's record (older fingerprint) resolves to the current schema's shape."""
    current = json.loads((SCHEMA_DIR / "device_status.avsc").read_text())
    older = dict(current, fields=[f for f in current["fields"] if f["name"] != "spool_bytes"])
    (tmp_path / "schemas").mkdir()
    (tmp_path / "history").mkdir()
    (tmp_path / "schemas" / "device_status.avsc").write_text(json.dumps(current))
    (tmp_path / "history" / "device_status.v0.avsc").write_text(json.dumps(older))
    writer = AvroCodec(schema_dir=tmp_path / "history", history_dir=None)
    reader = AvroCodec(schema_dir=tmp_path / "schemas", history_dir=tmp_path / "history")
    record = {k: v for k, v in sample_records()["device_status"].items() if k != "spool_bytes"}
    payload = writer.encode("device_status", record)
    _, decoded = reader.decode(payload)
    assert decoded["spool_bytes"] == 0  # the new field's default
    assert decoded["records_sent"] == record["records_sent"]


def _with_field(raw: dict, field: dict) -> dict:
    return dict(raw, fields=[*raw["fields"], field])


def test_checker_refuses_incompatible_changes() -> None:
    base = json.loads((SCHEMA_DIR / "marker.avsc").read_text())
    added_without_default = _with_field(base, {"name": "intensity", "type": "double"})
    assert "added without a default" in backward_problems(base, added_without_default)[0]
    retyped = dict(
        base,
        fields=[{**f, "type": "int"} if f["name"] == "label" else f for f in base["fields"]],
    )
    assert backward_problems(base, retyped)
    with_default = _with_field(base, {"name": "intensity", "type": "double", "default": 1.0})
    assert backward_problems(base, with_default) == []


def test_catalog_topics_are_unique_per_record_type() -> None:
    # Control records alone travel on two topics: the hub's commands and acks on devices.control,
    # the devices' command acks on devices.acks, so that the broker's ACLs can tell them apart.
    by_type: dict[str, list[str]] = {}
    for spec in TOPICS.values():
        by_type.setdefault(spec.record_type, []).append(spec.name)
    assert {t: names for t, names in by_type.items() if len(names) > 1} == {"control": [CONTROL, COMMAND_ACKS]}
