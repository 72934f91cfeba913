"""SQL over the lake's Delta tables with DuckDB (`neurolake sql`).

Tables are exposed as ``bronze.eeg_blocks``, ``silver.eeg_samples``, ``gold.eeg_windows``... Each is
read as an Arrow dataset of the Delta table's current files (DuckDB's own delta extension would have
to be downloaded; delta-rs' to_pandas may abort at exit, delta-rs issue 2184).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

LAYERS = ("bronze", "silver", "gold")


def discover_tables(lake_root: Path) -> dict[str, Path]:
    tables = {}
    for layer in LAYERS:
        for log_dir in sorted((lake_root / layer).glob("*/_delta_log")):
            tables[f"{layer}.{log_dir.parent.name}"] = log_dir.parent
    return tables


def connect(lake_root: Path):  # type: ignore[no-untyped-def]
    import duckdb

    from streaming_jobs.bronze import delta_dataset

    con = duckdb.connect()
    for layer in LAYERS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
    for name, path in discover_tables(lake_root).items():
        dataset, _ = delta_dataset(path)
        if dataset is None:
            continue
        alias = name.replace(".", "__")
        con.register(alias, dataset)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {alias}")
    return con


def run_query(lake_root: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = connect(lake_root)
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description] if cursor.description else []
        return columns, cursor.fetchall()
    finally:
        con.close()


def render(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    def cell(value: Any) -> Any:
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        return value

    if fmt == "json":
        return json.dumps([{c: cell(v) for c, v in zip(columns, row)} for row in rows],
                          default=str, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[cell(v) for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    text_rows = [[str(cell(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text_rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in text_rows]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
