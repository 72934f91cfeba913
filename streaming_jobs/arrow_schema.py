"""Arrow schemas derived from the .avsc files, so Delta tables follow the record contracts."""

from __future__ import annotations

from functools import cache
from typing import Any

import pyarrow as pa

from schemas.codec import default_codec

_PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "bytes": pa.binary(),
}


def _arrow_type(avro_type: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for an Avro field type."""
    if isinstance(avro_type, list):
        branches = [branch for branch in avro_type if branch != "null"]
        if len(branches) != 1:
            raise ValueError(f"only [null, X] unions map to Arrow, got {avro_type}")
        arrow, _ = _arrow_type(branches[0])
        return arrow, True
    if isinstance(avro_type, str):
        if avro_type not in _PRIMITIVES:
            raise ValueError(f"no Arrow mapping for Avro type {avro_type!r}")
        return _PRIMITIVES[avro_type], False
    kind = avro_type["type"]
    if kind == "enum":
        return pa.string(), False
    if kind == "array":
        item, _ = _arrow_type(avro_type["items"])
        return pa.list_(item), False
    if kind == "map":
        value, _ = _arrow_type(avro_type["values"])
        return pa.map_(pa.string(), value), False
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind], False
    raise ValueError(f"no Arrow mapping for Avro type {avro_type}")


@cache
def record_schema(record_type: str) -> pa.Schema:
    raw = default_codec().schema(record_type).raw
    fields = []
    for field in raw["fields"]:
        arrow, nullable = _arrow_type(field["type"])
        fields.append(pa.field(field["name"], arrow, nullable=nullable))
    return pa.schema(fields)
