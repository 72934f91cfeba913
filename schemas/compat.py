"""BACKWARD-compatibility check: can a reader on the new schema read every record the old one wrote?

Two checks together: a structural one (a field the new schema adds must have a default, or old
records cannot fill it), and an empirical one (random records written with the old schema are
decoded with the new one through Avro schema resolution).
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many


def backward_problems(old_raw: dict[str, Any], new_raw: dict[str, Any], samples: int = 50) -> list[str]:
    """Empty when ``new_raw`` can read data written with ``old_raw``; otherwise what breaks."""
    problems = []
    old_fields = {field["name"] for field in old_raw.get("fields", [])}
    for field in new_raw.get("fields", []):
        known = {field["name"], *field.get("aliases", [])}
        if not known & old_fields and "default" not in field:
            problems.append(f"field {field['name']!r} was added without a default")
    old_parsed = parse_schema(old_raw, named_schemas={})
    new_parsed = parse_schema(new_raw, named_schemas={})
    for record in generate_many(old_parsed, samples):
        buffer = io.BytesIO()
        schemaless_writer(buffer, old_parsed, record)
        buffer.seek(0)
        try:
            schemaless_reader(buffer, old_parsed, new_parsed)
        except Exception as exc:  # SchemaResolutionError and friends
            problems.append(f"old record not readable: {type(exc).__name__}: {exc}")
            break
    return problems
