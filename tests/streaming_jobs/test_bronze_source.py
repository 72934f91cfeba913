"""The bronze source's task split: each session in exactly one task, with all its rows."""

from __future__ import annotations

import pyarrow as pa

from streaming_jobs.bronze_source import ROWS_ARROW, BronzeFiles, BronzeStreamReader, session_bucket


def test_every_session_lands_whole_in_exactly_one_bucket(tmp_path, monkeypatch) -> None:
    sessions = [f"pi-{n}-20261123T000000-{n:06x}" for n in range(40)]
    rows = [
        {**dict.fromkeys(ROWS_ARROW.names), "kind": "block", "session_id": s, "seq": k}
        for s in sessions
        for k in range(3)
    ]
    batch = pa.RecordBatch.from_pylist(rows, schema=ROWS_ARROW)
    monkeypatch.setattr("streaming_jobs.bronze_source.read_bronze_file", lambda table, path: iter([batch]))
    reader = BronzeStreamReader({"root": str(tmp_path), "maxTasks": "3"})
    seen: dict[str, list[int]] = {}
    for bucket in range(3):
        partition = BronzeFiles((("eeg_blocks", "part-0.parquet"),), bucket, 3)
        for part in reader.read(partition):
            for row in part.to_pylist():
                seen.setdefault(row["session_id"], []).append(bucket)
    assert sorted(seen) == sorted(sessions)
    assert all(len(buckets) == 3 and len(set(buckets)) == 1 for buckets in seen.values())
    assert len({buckets[0] for buckets in seen.values()}) == 3  # the split uses every task
    # Fixed values, not hash(): Python salts that per process, and a replay must split alike.
    assert (session_bucket("pi-1-20261123T000000-000001", 3), session_bucket("abc", 7)) == (0, 5)
