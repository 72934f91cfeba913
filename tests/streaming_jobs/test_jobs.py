"""Checkpoint hygiene: what a killed process left half-written is removed, real entries stay."""

from __future__ import annotations

from pathlib import Path

from streaming_jobs.jobs import clear_unfinished_writes


def test_only_unfinished_temp_files_are_removed(tmp_path: Path) -> None:
    offsets, commits = tmp_path / "offsets", tmp_path / "commits"
    offsets.mkdir()
    commits.mkdir()
    (offsets / "0").write_text("v1\n{}\n{}")
    (offsets / ".0.crc").write_text("x")
    (commits / "0").write_text("v1\n{}")
    leftover = offsets / ".1.07fd0544-5ee7-4981-9c32-dc008852e1d0.tmp"
    leftover.write_text("v1\n")
    crc = offsets / "..1.07fd0544-5ee7-4981-9c32-dc008852e1d0.tmp.crc"
    crc.write_text("x")
    assert sorted(clear_unfinished_writes(tmp_path)) == sorted([leftover, crc])
    assert sorted(p.name for p in offsets.iterdir()) == [".0.crc", "0"]
    assert (commits / "0").exists()
    assert clear_unfinished_writes(tmp_path / "missing") == []


def test_only_the_eeg_query_sends_arrow_batches_by_row_count(make_settings) -> None:
    from streaming_jobs.jobs import bronze_writer

    settings = make_settings(NEUROLAKE_LAKE__ARROW_RECORDS_PER_BATCH="250")
    assert bronze_writer(settings, "bronze", publish_acks=False).arrow_records_per_batch == 250
    # Camera frames may be most of a megabyte each: that query keeps Spark's byte limit.
    assert bronze_writer(settings, "bronze_devices", publish_acks=False).arrow_records_per_batch is None
