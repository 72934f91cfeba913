"""infra.delta: appends with an app transaction (a replayed batch writes nothing), the log followed
commit by commit, and the errors a missing commit or a re-made table would cause."""

from __future__ import annotations

import json
import time
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


def _write_commit(table: Path, version: int, *actions: dict) -> None:
    log_dir = table / "_delta_log"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{version:020d}.json").write_text("".join(json.dumps(a) + "\n" for a in actions))


def _info(app_id: str, batch_id: int) -> dict:
    metadata = {"neurolake.app_id": app_id, "neurolake.batch_id": str(batch_id)}
    return {"commitInfo": {"operation": "WRITE", "userMetadata": json.dumps(metadata)}}


def test_the_last_appended_batch_is_read_from_the_newest_commits(tmp_path: Path) -> None:
    from infra.delta import last_appended_batch

    table = tmp_path / "t"
    assert last_appended_batch(table, "q:t") == -1  # no table: nothing committed
    _write_commit(table, 0, _info("q:t", 0))
    _write_commit(table, 1, _info("rebuild:t", 0))  # another writer's commit in between
    _write_commit(table, 2, _info("q:t", 1))
    _write_commit(table, 3, {"commitInfo": {"operation": "OPTIMIZE"}})
    assert last_appended_batch(table, "q:t") == 1
    assert last_appended_batch(table, "rebuild:t") == 0
    assert last_appended_batch(table, "never:t") == -1  # scanned back to version 0
    # Delta's own app transactions (as earlier versions of the lake wrote them) count the same.
    _write_commit(table, 4, {"txn": {"appId": "q:t", "version": 7}}, {"commitInfo": {"operation": "WRITE"}})
    assert last_appended_batch(table, "q:t") == 7


def test_a_log_that_cannot_tell_says_so(tmp_path: Path) -> None:
    from infra.delta import last_appended_batch

    table = tmp_path / "t"
    for version in range(5):
        _write_commit(table, version, _info("other:t", version))
    assert last_appended_batch(table, "q:t", scan_limit=3) is None  # too far back to know
    # A cleaned-up log: the oldest commits gone, a checkpoint in their place.
    for version in (0, 1):
        (table / "_delta_log" / f"{version:020d}.json").unlink()
    (table / "_delta_log" / "_last_checkpoint").write_text(json.dumps({"version": 2, "size": 1}))
    assert last_appended_batch(table, "q:t") is None
    assert last_appended_batch(table, "other:t") == 4


@pytest.mark.slow
def test_a_spark_append_replayed_writes_nothing_twice(spark, tmp_path: Path) -> None:
    import infra.delta as delta

    table = tmp_path / "t"
    frame = spark.createDataFrame([("2026-12-05", 1, 1.0)], "date string, time_us long, value double")
    assert delta.spark_append(frame, table, "q:t", 0) > 0
    assert delta.spark_append(frame, table, "q:t", 1) > 0
    assert delta.spark_append(frame, table, "q:t", 1) == 0.0  # replayed in the same process
    delta._appended.clear()  # a new process knows only the log
    assert delta.spark_append(frame, table, "q:t", 1) == 0.0
    assert latest_version(table) == 1
    assert delta.spark_append(frame, table, "q:t", 2) > 0
    assert latest_version(table) == 2
    assert delta.last_appended_batch(table, "q:t") == 2
    assert spark.read.format("delta").load(str(table)).count() == 3


KEYED = TableSpec("silver", "keyed", stats_columns=("time_us",))


def _stats_of_newest_commit(table: Path) -> dict[str, object]:
    adds = [a["add"] for a in commit_actions(table, latest_version(table)) if "add" in a]
    return json.loads(adds[0]["stats"])


def test_a_table_made_by_an_append_keeps_statistics_on_its_stats_columns_only(tmp_path: Path) -> None:
    assert LakeTable(tmp_path, KEYED).append(rows([1, 2, 3]), "test:app", 0)
    stats = _stats_of_newest_commit(KEYED.path(tmp_path))
    assert stats["maxValues"] == {"time_us": 3} and stats["numRecords"] == 3


@pytest.mark.slow
def test_a_table_made_by_spark_keeps_statistics_on_its_stats_columns_only(spark, tmp_path: Path) -> None:
    import infra.delta as delta

    table = tmp_path / "t"
    frame = spark.createDataFrame([("2026-12-05", 7, 1.0)], "date string, time_us long, value double")
    delta.spark_append(frame, table, "q:t", 0, properties=KEYED.table_properties)
    delta.spark_append(frame, table, "q:t", 1, properties={"delta.dataSkippingStatsColumns": "value"})
    # The properties are the new table's: a later append's are not applied to it.
    assert _stats_of_newest_commit(table)["maxValues"] == {"time_us": 7}
    assert LakeTable(tmp_path, TableSpec("", "t")).read_columns(["time_us"]).num_rows == 2


def test_only_a_young_append_only_table_is_read_from_its_first_commit(tmp_path: Path) -> None:
    from infra.delta import only_appended

    table = tmp_path / "t"
    assert not only_appended(table)  # no table
    for version in range(3):
        _write_commit(table, version, {"add": {"path": f"{version}.parquet", "dataChange": True}})
    assert only_appended(table)
    assert not only_appended(table, max_commits=2)  # too long a log to read at every start
    _write_commit(table, 3, {"remove": {"path": "0.parquet", "dataChange": False}})  # an OPTIMIZE
    assert not only_appended(table)


def _write_and_commit(table: Path, batch: pa.Table, batch_id: int, schema: pa.Schema = SCHEMA) -> float:
    import infra.delta as delta

    files = delta.write_data_files(table, batch, ("date",), KEYED.stats_columns).to_pylist()
    return delta.commit_data_files(
        table, files, "q:t", batch_id, schema, {"neurolake.settings": "{}"}, properties=KEYED.table_properties
    )


def test_files_written_on_an_executor_are_committed_once_per_batch(tmp_path: Path) -> None:
    import polars as pl

    import infra.delta as delta

    table = tmp_path / "t"
    two_days = pa.concat_tables([rows([1, 2]), rows([3], date="2026-11-24")])
    assert _write_and_commit(table, two_days, 0) > 0
    adds = [a["add"] for a in commit_actions(table, 0) if "add" in a]
    assert sorted(a["partitionValues"]["date"] for a in adds) == ["2026-11-23", "2026-11-24"]  # a file per day
    assert {a["path"].split("/")[0] for a in adds} == {"date=2026-11-23", "date=2026-11-24"}
    assert sorted(json.loads(a["stats"])["maxValues"]["time_us"] for a in adds) == [2, 3]
    assert all(set(json.loads(a["stats"])["minValues"]) == {"time_us"} for a in adds)  # the stats columns only
    # The commit names its app and batch as delta-spark's do: a replay, in this process or a new one, commits nothing.
    assert latest_version(table) == 0 and delta.last_appended_batch(table, "q:t") == 0
    assert delta.read_commit_metadata(table)["neurolake.batch_id"] == "0"
    assert _write_and_commit(table, rows([1, 2]), 0) == 0.0
    delta._appended.clear()
    assert not delta.batch_committed(table, "q:t", 1) and delta.batch_committed(table, "q:t", 0)
    assert _write_and_commit(table, rows([4]), 1) > 0
    assert latest_version(table) == 1
    # delta-rs (through Arrow) and Polars read what was committed, and nothing that was not.
    assert sorted(LakeTable(tmp_path, TableSpec("", "t")).read_columns(["time_us"]).column(0).to_pylist()) == [
        1,
        2,
        3,
        4,
    ]
    assert pl.read_delta(str(table)).height == 4


def test_a_commit_adds_the_columns_a_schema_gained(tmp_path: Path) -> None:
    table = tmp_path / "t"
    _write_and_commit(table, rows([1]), 0)
    wider = SCHEMA.append(pa.field("quality", pa.float64()))
    batch = rows([2]).append_column("quality", pa.array([0.5]))
    _write_and_commit(table, batch, 1, wider)
    read = LakeTable(tmp_path, TableSpec("", "t")).read_columns(["time_us", "quality"])
    assert sorted(read.to_pylist(), key=lambda r: r["time_us"]) == [
        {"time_us": 1, "quality": None},
        {"time_us": 2, "quality": 0.5},
    ]


def test_the_first_commit_makes_the_table_with_its_files_and_properties(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    table = tmp_path / "t"
    _write_and_commit(table, rows([1, 2]), 0)
    assert latest_version(table) == 0  # version 0 holds the rows, as delta-spark's first append
    assert LakeTable(tmp_path, TableSpec("", "t")).read_columns(["time_us"], version=0).num_rows == 2
    made = DeltaTable(str(table))
    assert made.metadata().partition_columns == ["date"]
    assert made.metadata().configuration["delta.dataSkippingStatsColumns"] == "time_us"
    assert made.transaction_version("q:t") == 0


def test_file_statistics_leave_out_what_they_cannot_bound() -> None:
    from infra.delta import file_statistics

    table = pa.table(
        {
            "n": pa.array([3, None, 1], pa.int64()),
            "x": pa.array([1.0, float("nan"), 2.0]),
            "name": ["a", "c" * 40, "b"],  # its maximum too long to record uncut
            "short": ["b", "a", None],
            "values": pa.array([[1.0], [2.0], [3.0]], pa.list_(pa.float32())),
        }
    )
    stats = file_statistics(table)
    assert stats["numRecords"] == 3
    assert stats["minValues"] == {"n": 1, "short": "a"} and stats["maxValues"] == {"n": 3, "short": "b"}
    assert stats["nullCount"] == {"n": 1, "x": 0, "name": 0, "short": 1}
    assert set(file_statistics(table, ["n"])["minValues"]) == {"n"}


def test_a_table_another_writer_created_meanwhile_is_taken_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes' first records at once: the one whose create loses the commit race finds the
    winner's table instead of failing (1 round in 15 failed, with six creators, before)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    from infra.delta import ensure_table

    schema = pa.schema([("date", pa.string()), ("x", pa.int64())])
    create = DeltaTable.create

    def lose_the_race(*args, **kwargs):
        create(*args, **kwargs)  # the other writer's commit, between our check and ours
        raise CommitFailedError("Failed to commit transaction: Protocol changed since last commit")

    monkeypatch.setattr(DeltaTable, "create", lose_the_race)
    assert ensure_table(tmp_path / "t", schema) is False
    assert DeltaTable(str(tmp_path / "t")).version() == 0

    def fail(*args, **kwargs):
        raise CommitFailedError("a failure with no table behind it")

    monkeypatch.setattr(DeltaTable, "create", fail)
    with pytest.raises(CommitFailedError):
        ensure_table(tmp_path / "u", schema)


def test_a_first_commit_that_loses_the_race_appends_to_the_winners_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two queries' first rows of one table at once (bronze.quarantine): the loser's batch is appended
    to the table the winner made, not failed (which restarted the query to replay it)."""
    import deltalake.transaction
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    import infra.delta as delta

    table = tmp_path / "t"
    create = deltalake.transaction.create_table_with_add_actions

    def lose_the_race(*args, **kwargs):
        # The other query's first commit lands between our look for the table and our own commit.
        theirs = delta.write_data_files(table, rows([7]), ("date",), KEYED.stats_columns).to_pylist()
        monkeypatch.setattr(deltalake.transaction, "create_table_with_add_actions", create)
        delta.commit_data_files(table, theirs, "other:t", 0, SCHEMA, properties=KEYED.table_properties)
        raise CommitFailedError("Failed to commit transaction: version 0 already exists")

    monkeypatch.setattr(deltalake.transaction, "create_table_with_add_actions", lose_the_race)
    _write_and_commit(table, rows([1, 2]), 0)
    made = DeltaTable(str(table))
    assert made.version() == 1
    assert made.transaction_version("other:t") == 0 and made.transaction_version("q:t") == 0
    assert sorted(LakeTable(tmp_path, TableSpec("", "t")).read_columns(["time_us"]).column(0).to_pylist()) == [1, 2, 7]


def _checksum(table: Path, version: int) -> dict[str, object]:
    """A version's checksum, its metadata and protocol without null fields (delta-spark leaves them
    out where delta-rs writes them)."""
    checksum = json.loads((table / "_delta_log" / f"{version:020d}.crc").read_text())
    return {**checksum, **{k: _without_nulls(checksum[k]) for k in ("metadata", "protocol")}}


def _without_nulls(action: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in action.items() if value is not None}


def _state_of(table: Path, version: int) -> dict[str, object]:
    """What the version's checksum must say, from delta-rs's own view of the table."""
    from deltalake import DeltaTable

    files = DeltaTable(str(table), version=version).get_add_actions(flatten=True)
    actions = [a for v in range(version + 1) for a in commit_actions(table, v)]
    return {
        "numFiles": files.num_rows,
        "tableSizeBytes": sum(files.column("size_bytes").to_pylist()),
        "numMetadata": 1,
        "numProtocol": 1,
        "metadata": _without_nulls([a["metaData"] for a in actions if "metaData" in a][-1]),
        "protocol": _without_nulls([a["protocol"] for a in actions if "protocol" in a][-1]),
    }


def test_every_commit_of_the_lake_s_writers_gets_a_version_checksum(tmp_path: Path) -> None:
    from infra.delta import ensure_table

    made, appended = tmp_path / "made", SPEC.path(tmp_path)
    assert ensure_table(made, SCHEMA)
    _write_and_commit(made, rows([1, 2]), 0)
    _write_and_commit(made, pa.concat_tables([rows([3]), rows([4], date="2026-11-24")]), 1)
    wider = SCHEMA.append(pa.field("quality", pa.float64()))
    _write_and_commit(made, rows([5]).append_column("quality", pa.array([0.5])), 2, wider)  # a metaData commit too
    commit(tmp_path, [1], 0)
    commit(tmp_path, [2, 3], 1)
    for table in (made, appended):
        for version in range(latest_version(table) + 1):
            assert _checksum(table, version) == _state_of(table, version), (table.name, version)
    assert "quality" in str(_checksum(made, latest_version(made))["metadata"])


def test_a_broken_chain_of_checksums_is_replayed_and_a_commit_it_cannot_account_for_gets_none(
    tmp_path: Path,
) -> None:
    from infra.delta import write_version_checksums

    table = SPEC.path(tmp_path)
    for batch in range(4):
        commit(tmp_path, [batch], batch)
    for version in (1, 3):  # another writer's commits, or a lake older than the checksums
        (table / "_delta_log" / f"{version:020d}.crc").unlink()
    assert write_version_checksums(table, version=1) == 1
    assert write_version_checksums(table) == 1
    for version in range(4):
        assert _checksum(table, version) == _state_of(table, version)
    for version in range(4):
        (table / "_delta_log" / f"{version:020d}.crc").unlink()
    assert write_version_checksums(table) == 4  # no checksum at all: replayed from the first commit
    assert _checksum(table, 3) == _state_of(table, 3)
    assert write_version_checksums(table) == 0
    # A removed file without its size: nothing to subtract, so no checksum, here or after it.
    path = next(a["add"]["path"] for a in commit_actions(table, 0) if "add" in a)
    _write_commit(table, 4, {"remove": {"path": path, "dataChange": True}})
    _write_commit(table, 5, {"commitInfo": {}})
    assert write_version_checksums(table) == 0
    assert not (table / "_delta_log" / f"{4:020d}.crc").exists()


@pytest.mark.slow
def test_delta_spark_takes_the_checksums_for_its_snapshots_and_keeps_them_exact(spark, tmp_path: Path) -> None:
    import infra.delta as delta

    table = SPEC.path(tmp_path)
    for batch in range(3):
        commit(tmp_path, [batch, batch + 10], batch)
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{table}`").first()
    assert (detail.numFiles, detail.sizeInBytes) == (
        _checksum(table, 2)["numFiles"],
        _checksum(table, 2)["tableSizeBytes"],
    )
    # delta-spark's next commit builds its own checksum from ours, and its checkpoint checks every
    # checksum against the state it reconstructs from the log: a wrong one would fail here.
    frame = spark.createDataFrame([("2026-11-23", 99, 1.0)], "date string, time_us long, value double")
    assert delta.spark_append(frame, table, "q:t", 0) > 0
    jvm = spark._jvm
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, str(table))
    log.checkpoint()
    assert _checksum(table, 3)["numFiles"] == _state_of(table, 3)["numFiles"]
    assert spark.read.format("delta").load(str(table)).count() == 7
    # A new snapshot takes its protocol and metadata from the newest checksum: no Spark job over the
    # log, which Delta's streaming source would otherwise run at every micro-batch.
    commit(tmp_path, [100], 3)
    assert _jobs_to_load_a_snapshot(spark, table) == 0
    (table / "_delta_log" / f"{latest_version(table):020d}.crc").unlink()
    assert _jobs_to_load_a_snapshot(spark, table) > 0
    # Spark's OPTIMIZE (files removed with their sizes) after that gap, then our next commit: the
    # chain is replayed through both, exact, and delta-spark's checkpoint accepts it.
    spark.sql(f"OPTIMIZE delta.`{table}`").collect()
    commit(tmp_path, [101], 4)
    newest = latest_version(table)
    assert _checksum(table, newest) == _state_of(table, newest)
    jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, str(table)).checkpoint()
    assert spark.read.format("delta").load(str(table)).count() == 9


def _jobs_to_load_a_snapshot(spark, table: Path) -> int:  # type: ignore[no-untyped-def]
    delta_log = spark._jvm.org.apache.spark.sql.delta.DeltaLog
    delta_log.clearCache()
    group = f"snapshot-{time.monotonic_ns()}"
    spark.sparkContext.setJobGroup(group, "a snapshot's protocol and metadata")
    try:
        snapshot = delta_log.forTable(spark._jsparkSession, str(table)).unsafeVolatileSnapshot()
        snapshot.metadata(), snapshot.protocol()
    finally:
        spark.sparkContext.setJobGroup("", "")
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def test_a_checksum_that_cannot_be_written_leaves_the_commit_standing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = SPEC.path(tmp_path)
    commit(tmp_path, [1], 0)
    real_write = Path.write_bytes

    def disk_full(self: Path, data: bytes) -> int:
        if self.name.endswith(".partial"):
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    assert commit(tmp_path, [2], 1)
    assert latest_version(table) == 1 and committed_version(table, "test:app") == 1
    assert "no version checksum for commit 1" in caplog.text
    assert [p.name for p in (table / "_delta_log").iterdir() if p.name.endswith(".partial")] == []
