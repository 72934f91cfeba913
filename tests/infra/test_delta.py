"""infra.delta: files written apart and committed with an app transaction, and the log followed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from infra.delta import added_files, commit_actions, commit_files, committed_version, latest_version, write_files

SCHEMA = pa.schema([("date", pa.string()), ("time_us", pa.int64()), ("value", pa.float64())])


def rows(times: list[int], date: str = "2026-11-23") -> pa.Table:
    return pa.table({"date": [date] * len(times), "time_us": times, "value": [float(t) for t in times]}, schema=SCHEMA)


def commit(table: Path, times: list[int], batch_id: int, date: str = "2026-11-23") -> bool:
    files = write_files(table, rows(times, date))
    return commit_files(table, SCHEMA, files, "test:app", batch_id)


def test_a_table_is_followed_commit_by_commit(tmp_path: Path) -> None:
    table = tmp_path / "t"
    assert latest_version(table) == -1
    assert commit(table, [1, 2, 3], 0)
    assert commit(table, [4, 5], 1, date="2026-11-24")
    assert latest_version(table) == 1
    assert latest_version(table, known=0) == 1
    assert committed_version(table, "test:app") == 1

    second = added_files(table, 0, 1)
    assert [dict(f.partition_values) for f in second] == [{"date": "2026-11-24"}]
    assert all(Path(f.path).is_file() for f in added_files(table, -1, 1))
    assert len(added_files(table, -1, 1)) == 2

    adds = [a["add"] for a in commit_actions(table, 1) if "add" in a]
    assert json.loads(adds[0]["stats"])["maxValues"]["time_us"] == 5
    assert any(a.get("txn", {}).get("appId") == "test:app" for a in commit_actions(table, 1))


def test_a_replayed_batch_commits_nothing(tmp_path: Path) -> None:
    table = tmp_path / "t"
    assert commit(table, [1], 0)
    assert not commit(table, [1], 0)
    assert latest_version(table) == 0


def test_a_missing_commit_names_the_fix(tmp_path: Path) -> None:
    table = tmp_path / "t"
    commit(table, [1], 0)
    commit(table, [2], 1)
    (table / "_delta_log" / f"{1:020d}.json").unlink()
    with pytest.raises(RuntimeError, match="neurolake lake rebuild"):
        commit_actions(table, 1)


def test_only_text_columns_get_a_dictionary(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table = pa.table({"date": ["2026-11-23"] * 300, "id": ["a", "b", "c"] * 100, "value": [1.0, 2.0, 3.0] * 100})
    (written,) = write_files(tmp_path / "t", table)
    columns = pq.ParquetFile(tmp_path / "t" / written.relative_path).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings for i in range(columns.num_columns)}
    assert "RLE_DICTIONARY" in encodings["id"]
    assert "RLE_DICTIONARY" not in encodings["value"]


def test_a_table_deleted_and_made_again_is_not_mistaken_for_the_old_one(tmp_path: Path) -> None:
    import shutil

    table = tmp_path / "t"
    commit(table, [1], 0)
    commit(table, [2], 1)
    assert committed_version(table, "test:app") == 1  # this thread now keeps the table loaded
    shutil.rmtree(table)
    assert committed_version(table, "test:app") is None
    assert commit(table, [3], 0)  # a new table: batch 0 is not "already committed"
    assert latest_version(table) == 0
    assert committed_version(table, "test:app") == 0
