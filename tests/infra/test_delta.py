"""infra.delta: appends with an app transaction (a replayed batch writes nothing), the log followed
commit by commit, and the errors a missing commit or a re-made table would cause."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from infra.delta import LakeTable, commit_actions, committed_version, latest_version
from schemas.catalog import TableSpec

SCHEMA = pa.schema([("date", pa.string()), ("time_us", pa.int64()), ("value", pa.float64())])
SPEC = TableSpec("bronze", "t")


def rows(times: list[int], date: str = "2026-11-23") -> pa.Table:
    return pa.table({"date": [date] * len(times), "time_us": times, "value": [float(t) for t in times]}, schema=SCHEMA)


def commit(root: Path, times: list[int], batch_id: int, date: str = "2026-11-23") -> bool:
    return LakeTable(root, SPEC).append(rows(times, date), "test:app", batch_id)


def test_a_table_is_followed_commit_by_commit(tmp_path: Path) -> None:
    table = SPEC.path(tmp_path)
    assert latest_version(table) == -1
    assert commit(tmp_path, [1, 2, 3], 0)
    assert commit(tmp_path, [4, 5], 1, date="2026-11-24")
    assert latest_version(table) == 1
    assert latest_version(table, known=0) == 1
    assert committed_version(table, "test:app") == 1
    adds = [a["add"] for a in commit_actions(table, 1) if "add" in a]
    assert [a["partitionValues"] for a in adds] == [{"date": "2026-11-24"}]
    assert json.loads(adds[0]["stats"])["maxValues"]["time_us"] == 5
    assert any(a.get("txn", {}).get("appId") == "test:app" for a in commit_actions(table, 1))


def test_a_replayed_batch_commits_nothing(tmp_path: Path) -> None:
    assert commit(tmp_path, [1], 0)
    assert not commit(tmp_path, [1], 0)
    assert latest_version(SPEC.path(tmp_path)) == 0


def test_a_missing_commit_names_the_fix(tmp_path: Path) -> None:
    table = SPEC.path(tmp_path)
    commit(tmp_path, [1], 0)
    commit(tmp_path, [2], 1)
    (table / "_delta_log" / f"{1:020d}.json").unlink()
    with pytest.raises(RuntimeError, match="neurolake lake rebuild"):
        commit_actions(table, 1)


def test_a_table_deleted_and_made_again_is_not_mistaken_for_the_old_one(tmp_path: Path) -> None:
    import shutil

    table = SPEC.path(tmp_path)
    commit(tmp_path, [1], 0)
    commit(tmp_path, [2], 1)
    assert committed_version(table, "test:app") == 1  # this thread now keeps the table loaded
    shutil.rmtree(table)
    assert committed_version(table, "test:app") is None
    assert commit(tmp_path, [3], 0)  # a new table: batch 0 is not "already committed"
    assert latest_version(table) == 0
    assert committed_version(table, "test:app") == 0
