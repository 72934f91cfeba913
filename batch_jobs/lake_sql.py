"""SQL over the lake's Delta tables with DuckDB (`neurolake sql`).

Tables are exposed as ``bronze.eeg_blocks``, ``silver.eeg_samples``, ``gold.eeg_windows``... Each
table the query names is read as an Arrow dataset of the Delta table's files at the version asked
(DuckDB's own delta extension would have to be downloaded; delta-rs' to_pandas may abort at exit,
delta-rs issue 2184).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_jobs.lake_tables import LAYERS, arrow_schema, open_table

# `FROM gold.eeg_windows VERSION AS OF 3` / `TIMESTAMP AS OF '2026-11-21T10:00'` (Delta's syntax).
TIME_TRAVEL = re.compile(
    r"\b(bronze|silver|gold)\.(\w+)\s+(?:VERSION\s+AS\s+OF\s+(\d+)|TIMESTAMP\s+AS\s+OF\s+'([^']*)')", re.IGNORECASE
)
TABLE_REFERENCE = re.compile(r"\b(bronze|silver|gold)\.(\w+)\b", re.IGNORECASE)


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    versions: list[tuple[str, int]]  # (table, Delta version read), in the order registered


def _register(
    con: Any, lake_root: Path, name: str, version: int | None, as_of: str | None, pinned: bool
) -> tuple[str, int]:
    """Expose ``name`` at a version as a view: ``name`` itself, or ``name__vN`` when the query
    pinned it (so one query can read a table at two versions). Returns (view, version read)."""
    import pyarrow as pa

    dataset, read, path = open_table(lake_root, name, version, as_of)
    source = (
        dataset if dataset is not None else pa.table({f.name: pa.array([], f.type) for f in arrow_schema(path, read)})
    )
    view = f"{name}__v{read}" if pinned else name
    alias = view.replace(".", "__")
    con.register(alias, source)
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {alias}")
    return view, read


def run_query(lake_root: Path, sql: str, version: int | None = None, as_of: str | None = None) -> QueryResult:
    """Run ``sql``; every table it names is read at ``version``/``as_of`` (default: latest) unless
    the query says ``VERSION AS OF`` / ``TIMESTAMP AS OF`` after it."""
    import duckdb

    con = duckdb.connect()
    try:
        for layer in LAYERS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        versions: list[tuple[str, int]] = []

        def pinned(match: re.Match[str]) -> str:
            layer, table, at_version, at_time = match.groups()
            name = f"{layer.lower()}.{table}"
            view, read = _register(
                con, lake_root, name, int(at_version) if at_version is not None else None, at_time, pinned=True
            )
            versions.append((name, read))
            return view

        sql = TIME_TRAVEL.sub(pinned, sql)
        for layer, table in {(m[0].lower(), m[1]) for m in TABLE_REFERENCE.findall(sql)}:
            name = f"{layer}.{table}"
            if re.fullmatch(r".+__v\d+", table):
                continue
            versions.append((name, _register(con, lake_root, name, version, as_of, pinned=False)[1]))
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description] if cursor.description else []
        return QueryResult(columns, cursor.fetchall(), versions)
    finally:
        con.close()


def render(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    def cell(value: Any) -> Any:
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        return value

    if fmt == "json":
        return json.dumps([{c: cell(v) for c, v in zip(columns, row)} for row in rows], default=str, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[cell(v) for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    text_rows = [[str(cell(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text_rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in text_rows]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
