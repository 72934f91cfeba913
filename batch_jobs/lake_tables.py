"""The lake's tables by name (``silver.eeg_samples``), at a version or a point in time.

Every reader of a table by name (the Python API, ``neurolake sql``, ``neurolake tables``) resolves it
here, so an unknown table, a version that does not exist or a time before the table was created give
the same clear error everywhere.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import NeurolakeError
from infra.delta import latest_version
from schemas.catalog import LAYERS


class TableError(NeurolakeError):
    """A table name, version or time that the lake cannot serve."""


def discover_tables(lake_root: Path) -> dict[str, Path]:
    """The lake's tables that have a first commit (a writer makes ``_delta_log`` a moment before)."""
    tables = {}
    for layer in LAYERS:
        for log_dir in sorted((lake_root / layer).glob("*/_delta_log")):
            if latest_version(log_dir.parent) >= 0:
                tables[f"{layer}.{log_dir.parent.name}"] = log_dir.parent
    return tables


def table_path(lake_root: Path, name: str) -> Path:
    tables = discover_tables(lake_root)
    if name in tables:
        return tables[name]
    if not tables:
        raise TableError(
            f"no Delta tables under {lake_root} (paths.lake_root); run the streams "
            "(`neurolake stream start all`) or import a recording (`neurolake import`)"
        )
    layer = name.split(".")[0]
    hint = "" if "." in name and layer in LAYERS else " (names are layer.table, e.g. silver.eeg_samples)"
    raise TableError(f"unknown table {name!r}{hint}; the lake has: {', '.join(tables)}")


def parse_time(value: str | dt.datetime) -> dt.datetime:
    """An ISO time (``2026-11-21T10:00``, ``2026-11-21 10:00:00+01:00``); naive means UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise TableError(f"as_of {value!r} is not an ISO time; write e.g. 2026-11-21T10:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def resolve_version(path: Path, name: str, version: int | None = None, as_of: str | dt.datetime | None = None) -> int:
    """The table version to read: ``version`` itself (checked), the last commit at or before
    ``as_of``, or the latest."""
    from deltalake import DeltaTable

    if version is not None and as_of is not None:
        raise TableError(f"{name}: give a version or a time (as_of), not both")
    latest = DeltaTable(str(path)).version()
    if version is not None:
        if not 0 <= version <= latest:
            raise TableError(f"{name} has versions 0..{latest}; version {version} does not exist")
        return version
    if as_of is None:
        return latest
    moment = parse_time(as_of)
    cutoff_ms = moment.timestamp() * 1000
    history = DeltaTable(str(path)).history()
    older = [c["version"] for c in history if c["timestamp"] <= cutoff_ms]
    if not older:
        first = min(history, key=lambda c: c["version"])
        created = dt.datetime.fromtimestamp(first["timestamp"] / 1000, dt.UTC)
        raise TableError(
            f"{name} did not exist at {moment.isoformat()}; its first version was written at {created.isoformat()}"
        )
    return max(older)


def open_table(
    lake_root: Path, name: str, version: int | None = None, as_of: str | dt.datetime | None = None
) -> tuple[Any, int, Path]:
    """(Arrow dataset or None when the version has no files, version read, table path)."""
    from infra.delta import delta_dataset

    path = table_path(lake_root, name)
    resolved = resolve_version(path, name, version, as_of)
    try:
        dataset, _ = delta_dataset(path, resolved)
    except FileNotFoundError as exc:
        raise TableError(
            f"{name} version {resolved}: its files are gone (vacuumed after lake.vacuum_retention_hours): {exc}"
        ) from None
    return dataset, resolved, path


def arrow_schema(path: Path, version: int | None = None):  # type: ignore[no-untyped-def]
    """The table's schema as pyarrow (also for a version with no files)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    return pa.schema(DeltaTable(str(path), version=version).schema())


@dataclass
class TableSummary:
    name: str
    path: Path
    version: int
    rows: int
    files: int
    bytes: int
    partition_columns: list[str]
    last_commit: str
    last_operation: str
    columns: list[tuple[str, str, str]]  # name, type, description


def summarize(lake_root: Path, name: str) -> TableSummary:
    from deltalake import DeltaTable

    from batch_jobs.dictionary import column_docs

    path = table_path(lake_root, name)
    table = DeltaTable(str(path))
    actions = table.get_add_actions(flatten=True)
    rows = sum(v for v in actions.column("num_records").to_pylist() if v is not None) if actions.num_rows else 0
    size = sum(actions.column("size_bytes").to_pylist()) if actions.num_rows else 0
    last = table.history(1)[0]
    schema = arrow_schema(path)
    docs = column_docs(name)
    return TableSummary(
        name=name,
        path=path,
        version=table.version(),
        rows=int(rows),
        files=actions.num_rows,
        bytes=int(size),
        partition_columns=list(table.metadata().partition_columns),
        last_commit=dt.datetime.fromtimestamp(last["timestamp"] / 1000, dt.UTC).isoformat(timespec="seconds"),
        last_operation=str(last.get("operation", "")),
        columns=[(f.name, str(f.type), docs.get(f.name, "")) for f in schema],
    )
