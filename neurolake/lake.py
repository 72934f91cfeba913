"""The lake from Python: tables (with time travel), Spark DataFrames and sessions as MNE Raw.

    from neurolake import lake

    windows = lake.table("gold.eeg_windows", format="polars")            # latest version
    before = lake.table("gold.eeg_windows", version=3)                  # Arrow, as of version 3
    samples = lake.table("silver.eeg_samples", as_of="2026-11-21T10:00", columns=["raw"],
                         where=("session_id", "=", "sim-1-1790000000000"), format="pandas")
    raw = lake.session("sim-1-1790000000000")                           # mne.io.Raw
    lake.sessions()                                                     # what there is

Tables are read through delta-rs' file list and Arrow (never delta-rs' own reader, which can abort
the process at exit: delta-rs issue 2184). Settings come from the usual place (env, neurolake.toml)
unless a ``Settings`` or a ``lake_root`` is given.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from core.errors import NeurolakeError
from core.settings import Settings, load_settings

Format = Literal["arrow", "pandas", "polars"]
Where = tuple[str, str, Any] | list[tuple[str, str, Any]]
_OPERATORS = ("=", "==", "!=", "<", "<=", ">", ">=", "in")


def _root(lake_root: str | Path | None, settings: Settings | None) -> Path:
    if lake_root is not None:
        return Path(lake_root)
    return (settings or load_settings()).paths.lake_root


def _filter(where: Where | None, columns: set[str]):  # type: ignore[no-untyped-def]
    import pyarrow.compute as pc

    if where is None:
        return None
    conditions = [where] if isinstance(where, tuple) else list(where)
    expression = None
    for condition in conditions:
        if len(condition) != 3 or condition[1] not in _OPERATORS:
            raise NeurolakeError(
                f"where: {condition!r} is not (column, operator, value) with an operator in {', '.join(_OPERATORS)}"
            )
        column, op, value = condition
        if column not in columns:
            raise NeurolakeError(f"where: no column {column!r}; the table has {', '.join(sorted(columns))}")
        field = pc.field(column)
        if op == "in":
            term = field.isin(list(value))
        else:
            term = {
                "=": field.__eq__,
                "==": field.__eq__,
                "!=": field.__ne__,
                "<": field.__lt__,
                "<=": field.__le__,
                ">": field.__gt__,
                ">=": field.__ge__,
            }[op](value)
        expression = term if expression is None else expression & term
    return expression


def table(
    name: str,
    version: int | None = None,
    as_of: str | dt.datetime | None = None,
    columns: list[str] | None = None,
    where: Where | None = None,
    format: Format = "arrow",
    lake_root: str | Path | None = None,
    settings: Settings | None = None,
) -> Any:
    """A table (``silver.eeg_samples``) at a version, or as it was at ``as_of``, as Arrow, pandas
    or Polars. ``where`` filters are pushed down to the Parquet files: ``("session_id", "=", X)``."""
    from batch_jobs.lake_tables import arrow_schema, open_table

    if format not in ("arrow", "pandas", "polars"):
        raise NeurolakeError(f"format {format!r}: choose arrow, pandas or polars")
    dataset, read, path = open_table(_root(lake_root, settings), name, version, as_of)
    schema = dataset.schema if dataset is not None else arrow_schema(path, read)
    unknown = sorted(set(columns or []) - set(schema.names))
    if unknown:
        raise NeurolakeError(f"{name} has no column {', '.join(unknown)}; it has {', '.join(schema.names)}")
    if dataset is None:
        import pyarrow as pa

        result = pa.table({f.name: pa.array([], f.type) for f in schema if not columns or f.name in columns})
    else:
        result = dataset.to_table(columns=columns, filter=_filter(where, set(schema.names)))
    result = result.replace_schema_metadata({**(result.schema.metadata or {}), b"delta_version": str(read).encode()})
    if format == "pandas":
        return result.to_pandas()
    if format == "polars":
        import polars as pl

        return pl.from_arrow(result)
    return result


def version(
    name: str,
    as_of: str | dt.datetime | None = None,
    lake_root: str | Path | None = None,
    settings: Settings | None = None,
) -> int:
    """The table's current version (or the one current at ``as_of``): pin it to reproduce a read."""
    from batch_jobs.lake_tables import resolve_version, table_path

    return resolve_version(table_path(_root(lake_root, settings), name), name, None, as_of)


def history(name: str, lake_root: str | Path | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The table's commits, newest first: version, UTC time, operation, rows added, app batch."""
    from deltalake import DeltaTable

    from batch_jobs.lake_tables import table_path

    commits = DeltaTable(str(table_path(_root(lake_root, settings), name))).history()
    return [
        {
            "version": c["version"],
            "time": dt.datetime.fromtimestamp(c["timestamp"] / 1000, dt.UTC).isoformat(timespec="milliseconds"),
            "operation": c.get("operation"),
            "rows_added": (c.get("operationMetrics") or {}).get("num_added_rows"),
            "batch_id": c.get("neurolake.batch_id"),
        }
        for c in commits
    ]


def spark_table(
    name: str,
    version: int | None = None,
    as_of: str | dt.datetime | None = None,
    spark: Any = None,
    lake_root: str | Path | None = None,
    settings: Settings | None = None,
) -> Any:
    """The table as a Spark DataFrame, read from the Parquet files delta-rs lists for the version
    (one split per file, so it spreads over a cluster), with the Delta schema and partition columns.
    Without ``spark``, a local session is built from the settings."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from batch_jobs.lake_tables import arrow_schema, open_table

    dataset, read, path = open_table(_root(lake_root, settings), name, version, as_of)
    if spark is None:
        from infra.spark import build_spark_session

        spark = build_spark_session(settings or load_settings(), f"neurolake-{name}")
    schema = from_arrow_schema(arrow_schema(path, read))
    if dataset is None:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).option("basePath", str(path)).parquet(*dataset.files)


def sessions(lake_root: str | Path | None = None, settings: Settings | None = None) -> Any:
    """Every session in the lake (id, device, subject, task, start, rate, channels, samples,
    duration, markers) as a pandas DataFrame."""
    import pandas as pd

    from batch_jobs.recording import list_sessions

    return pd.DataFrame(list_sessions(_root(lake_root, settings)))


def session(session_id: str, lake_root: str | Path | None = None, settings: Settings | None = None) -> Any:
    """A session as an ``mne.io.Raw``: channel types, positions from the session's montage, volts
    for EEG, the stimulus markers as annotations, lost samples as ``BAD_ACQ_SKIP``."""
    from batch_jobs.exporters import to_mne
    from batch_jobs.recording import read_session

    return to_mne(read_session(_root(lake_root, settings), session_id))
