"""SQL over the lake's Delta tables with DuckDB (`neurolake sql`), through DuckDB's own Delta
extension (the ``duckdb-extension-delta`` wheel, loaded from site-packages: nothing is downloaded).

Tables are exposed as ``bronze.eeg_blocks``, ``silver.eeg_samples``, ``gold.eeg_windows``... Each
table the query names is attached at the version asked (``ATTACH ... (TYPE delta, VERSION n)``);
``TIMESTAMP AS OF`` resolves to the last version committed at or before that time. Spark SQL over
the same tables is :func:`run_spark_query`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_jobs.lake_tables import LAYERS, resolve_version, table_path

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


def delta_extension() -> Path:
    """DuckDB's Delta extension, from the wheel that pins it to this DuckDB's version."""
    import duckdb
    import duckdb_extension_delta

    path = (
        Path(duckdb_extension_delta.__file__).parent
        / "extensions"
        / f"v{duckdb.__version__}"
        / "delta.duckdb_extension"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"DuckDB's Delta extension for DuckDB {duckdb.__version__} is not at {path}; run `make setup` "
            f"(duckdb and duckdb-extension-delta are pinned together in requirements.lock)"
        )
    return path


def connect() -> Any:
    """A DuckDB connection with the Delta extension and the lake's three schemas."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"LOAD '{delta_extension()}'")
    for layer in LAYERS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
    return con


def _register(
    con: Any, lake_root: Path, name: str, version: int | None, as_of: str | None, pinned: bool
) -> tuple[str, int]:
    """Attach ``name`` at a version and expose it as a view: ``name`` itself, or ``name__vN`` when
    the query pinned it (so one query can read a table at two versions). Returns (view, version)."""
    path = table_path(lake_root, name)
    read = resolve_version(path, name, version, as_of)
    view = f"{name}__v{read}" if pinned else name
    alias = view.replace(".", "__")
    location = str(path).replace("'", "''")
    con.execute(f"ATTACH IF NOT EXISTS '{location}' AS {alias} (TYPE delta, VERSION {read})")
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {alias}")
    return view, read


def run_query(lake_root: Path, sql: str, version: int | None = None, as_of: str | None = None) -> QueryResult:
    """Run ``sql``; every table it names is read at ``version``/``as_of`` (default: latest) unless
    the query says ``VERSION AS OF`` / ``TIMESTAMP AS OF`` after it."""
    con = connect()
    try:
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


def run_spark_query(spark: Any, lake_root: Path, sql: str) -> QueryResult:
    """Run ``sql`` in Spark SQL with the tables it names registered (Delta's own SQL: ``DESCRIBE
    HISTORY``, ``VERSION AS OF``, ``OPTIMIZE``...). ``versions`` lists each table's latest version."""
    from infra.delta import latest_version
    from infra.spark import register_lake_tables

    names = {f"{layer.lower()}.{table}" for layer, table in TABLE_REFERENCE.findall(sql)}
    registered = register_lake_tables(spark, lake_root, names)
    result = spark.sql(sql).toArrow()
    from schemas.catalog import TABLES

    versions = [(name, latest_version(TABLES[name].path(lake_root))) for name in registered]
    return QueryResult(result.column_names, [tuple(row.values()) for row in result.to_pylist()], versions)


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
