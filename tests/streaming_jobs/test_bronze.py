"""Bronze's decision per record, without Spark or Kafka: stored, duplicate or quarantined (and why)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.catalog import TABLES
from schemas.codec import default_codec
from schemas.signing import HUB, Keyring, ensure_key, new_key, sign
from streaming_jobs.bronze import SeqIndex, decode_batch
from tests.schemas.samples import sample_records


def _rows(values: list[tuple[str, bytes]]) -> pa.Table:
    return pa.table(
        {
            "topic": [t for t, _ in values],
            "partition": [0] * len(values),
            "offset": list(range(len(values))),
            "key": [b"k"] * len(values),
            "value": [v for _, v in values],
        }
    )


def test_only_records_signed_by_their_own_devices_key_are_stored(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    real, other = ensure_key(keyring, "pi-1"), ensure_key(keyring, "pi-2")
    codec = default_codec()
    session = codec.encode("session", sample_records()["session"])
    block = sample_records()["eeg_block"]

    def encoded(seq: int) -> bytes:
        return codec.encode("eeg_block", {**block, "seq": seq})

    rows = _rows(
        [
            ("sessions", sign(session, "sessions", real)),
            ("eeg.raw", sign(encoded(0), "eeg.raw", real)),
            ("eeg.raw", encoded(1)),  # unsigned
            ("eeg.raw", sign(encoded(2), "eeg.raw", new_key("pi-1"))),  # a key the hub never registered
            ("eeg.raw", sign(encoded(3), "eeg.raw", other)),  # pi-2's key speaking for pi-1
            ("eeg.raw", sign(encoded(4), "markers", real)),  # signed for another topic
            ("eeg.raw", sign(encoded(5), "eeg.raw", real, HUB)),  # a hub signature
            ("eeg.raw", sign(encoded(2**62), "eeg.raw", real)),  # a leaked key and a huge seq
            ("eeg.raw", sign(encoded(1), "eeg.raw", real)),
        ]
    )
    decoded = decode_batch(rows, SeqIndex(), codec, keyring=keyring)
    assert decoded.tables["eeg_blocks"].column("seq").to_pylist() == [0, 1]
    reasons = decoded.quarantine.column("reason").to_pylist()
    assert len(reasons) == 6
    assert "unsigned record" in reasons[0]
    assert "unknown key" in reasons[1]
    assert "of device 'pi-2'" in reasons[2]
    assert "bad signature" in reasons[3] and "bad signature" in reasons[4]
    assert "jumps" in reasons[5] and "not indexed" in reasons[5]
    assert all(r.startswith("not authenticated") for r in reasons[:5])


def test_a_revoked_key_is_refused_from_the_next_batch_on(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    key = ensure_key(keyring, "pi-1")
    codec = default_codec()
    session = sign(codec.encode("session", sample_records()["session"]), "sessions", key)
    assert decode_batch(_rows([("sessions", session)]), SeqIndex(), codec, keyring=keyring).quarantine.num_rows == 0
    keyring.revoke(key.key_id)
    decoded = decode_batch(_rows([("sessions", session)]), SeqIndex(), codec, keyring=keyring)
    assert "revoked key" in decoded.quarantine.column("reason").to_pylist()[0]


def test_a_reset_spools_restarted_seqs_are_new_records_not_duplicates(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    key = ensure_key(keyring, "pi-1")
    codec = default_codec()
    block = sample_records()["eeg_block"]

    def signed(seq: int, epoch: int) -> tuple[str, bytes]:
        return "eeg.raw", sign(codec.encode("eeg_block", {**block, "seq": seq, "spool_epoch": epoch}), "eeg.raw", key)

    index = SeqIndex()
    first = decode_batch(_rows([signed(s, 111) for s in range(3)]), index, codec, keyring=keyring)
    again = decode_batch(
        _rows([signed(s, 111) for s in range(3)] + [signed(s, 222) for s in range(3)]), index, codec, keyring=keyring
    )
    assert first.tables["eeg_blocks"].num_rows == 3
    assert again.duplicates == 3 and again.tables["eeg_blocks"].column("spool_epoch").to_pylist() == [222] * 3
    assert index.contiguous() == {("eeg.raw", "pi-1", 111): 2, ("eeg.raw", "pi-1", 222): 2}


def _prediction(seq: int, start: int, version: str = "3", **changes: object) -> dict:
    return {
        **sample_records()["prediction"],
        "seq": seq,
        "window_start_index": start,
        "window_end_index": start + 500,
        "model_version": version,
        **changes,
    }


def test_live_predictions_land_once_per_window_and_model_version_whatever_their_seq(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    key = ensure_key(keyring, "pi-1")
    codec = default_codec()

    def hub_signed(prediction: dict) -> tuple[str, bytes]:
        return "eeg.predictions", sign(codec.encode("prediction", prediction), "eeg.predictions", key, HUB)

    index = SeqIndex()
    first = decode_batch(_rows([hub_signed(_prediction(s, s * 100)) for s in range(3)]), index, codec, keyring=keyring)
    table = first.tables["live_predictions"]
    assert table.column("window_start_index").to_pylist() == [0, 100, 200]
    assert "arrival_us" in table.schema.names and "ingest_us" not in table.schema.names
    assert table.column("probabilities").to_pylist()[0] == [("flicker_12hz", 0.9), ("flicker_15hz", 0.1)]
    # A restarted scorer numbers from 0 again: its windows are new unless already scored by that version.
    again = decode_batch(
        _rows(
            [
                hub_signed(_prediction(0, 100)),  # the same window and version: a duplicate
                hub_signed(_prediction(1, 300)),  # a new window
                hub_signed(_prediction(2, 100, version="4")),  # the same window by a new version
            ]
        ),
        index,
        codec,
        keyring=keyring,
    )
    assert again.duplicates == 1
    assert again.tables["live_predictions"].column("window_start_index").to_pylist() == [300, 100]
    assert index.contiguous() == {}  # predictions are never acknowledged to a device


def test_a_live_prediction_must_be_signed_by_the_hub_for_its_device(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    key, other = ensure_key(keyring, "pi-1"), ensure_key(keyring, "pi-2")
    codec = default_codec()
    encoded = codec.encode("prediction", _prediction(0, 0))
    rows = _rows(
        [
            ("eeg.predictions", encoded),  # unsigned
            ("eeg.predictions", sign(encoded, "eeg.predictions", key)),  # as the device, not the hub
            ("eeg.predictions", sign(encoded, "eeg.predictions", other, HUB)),  # for another device
            (
                "eeg.predictions",
                sign(codec.encode("prediction", _prediction(1, 0, label="nope")), "eeg.predictions", key, HUB),
            ),
            ("eeg.predictions", sign(encoded, "eeg.predictions", key, HUB)),
        ]
    )
    decoded = decode_batch(rows, SeqIndex(), codec, keyring=keyring)
    assert decoded.tables["live_predictions"].num_rows == 1
    reasons = decoded.quarantine.column("reason").to_pylist()
    assert "unsigned" in reasons[0] and "bad signature" in reasons[1] and "of device 'pi-2'" in reasons[2]
    assert "not among its probabilities" in reasons[3]


def test_the_prediction_index_is_seeded_from_gold_live_predictions(tmp_path: Path) -> None:
    from infra.delta import LakeTable
    from schemas.catalog import GOLD_LIVE_PREDICTIONS
    from streaming_jobs.bronze import seed_index

    codec = default_codec()
    rows = _rows([("eeg.predictions", codec.encode("prediction", _prediction(s, s * 100))) for s in range(2)])
    landed = decode_batch(rows, SeqIndex(), codec).tables["live_predictions"]
    LakeTable(tmp_path, GOLD_LIVE_PREDICTIONS).append(landed, "test", 0)
    index = seed_index(tmp_path, ("eeg.predictions", "eeg.raw"))
    assert decode_batch(rows, index, codec).duplicates == 2


def test_the_executors_tables_are_the_one_process_decode_and_commit_once(tmp_path: Path) -> None:
    """What the stream's tasks write (decoded_task_rows, then sink_tables with the driver's verdicts)
    is what decode_batch stores in one process; committed per table, a replayed batch adds nothing."""
    from infra.delta import LakeTable, commit_written_files, write_table_files
    from schemas.catalog import BRONZE_EEG_BLOCKS, BRONZE_QUARANTINE, LAKE_TABLE_OF_TOPIC, SILVER_MARKERS
    from schemas.timebase import now_us
    from streaming_jobs.bronze import (
        QUARANTINE_SCHEMA,
        DecodeContext,
        decoded_task_rows,
        landed_schema,
        projection_schema,
        sink_tables,
    )

    keyring = Keyring(tmp_path / "keyring.json")
    key = ensure_key(keyring, "pi-1")
    stimulus_key = ensure_key(keyring, sample_records()["marker"]["device_id"])
    codec = default_codec()
    records = sample_records()
    rows = _rows(
        [
            ("sessions", sign(codec.encode("session", records["session"]), "sessions", key)),
            *(
                ("eeg.raw", sign(codec.encode("eeg_block", {**records["eeg_block"], "seq": seq}), "eeg.raw", key))
                for seq in (0, 1, 1)  # the second 1 is a resend
            ),
            ("eeg.raw", codec.encode("eeg_block", {**records["eeg_block"], "seq": 2})),  # unsigned
            ("markers", sign(codec.encode("marker", records["marker"]), "markers", stimulus_key)),
        ]
    )
    ingest = now_us()
    one_process = decode_batch(rows, SeqIndex(), codec, now_us=ingest, keyring=keyring)
    assert one_process.duplicates == 1
    # The tasks: one per topic here; the driver dropped the resend at offset 3.
    context = DecodeContext(keyring, {}, ingest)
    tables: dict[str, pa.Table] = {}
    for topic in ("sessions", "eeg.raw", "markers"):
        part = rows.filter(pa.compute.equal(rows.column("topic"), topic))
        decoded = decoded_task_rows(context, part)
        for name, table in sink_tables({"eeg.raw": {(0, 3)}}, decoded).items():
            tables[name] = pa.concat_tables([tables[name], table]) if name in tables else table
    for name, stored in one_process.tables.items():
        assert tables[f"bronze.{name}"].to_pylist() == stored.to_pylist(), name
    assert tables[BRONZE_QUARANTINE.qualified].to_pylist() == one_process.quarantine.to_pylist()
    assert tables[SILVER_MARKERS.qualified].num_rows == 1

    schemas = {
        SILVER_MARKERS.qualified: projection_schema("markers"),
        **{LAKE_TABLE_OF_TOPIC[topic].qualified: landed_schema(topic) for topic in ("sessions", "eeg.raw", "markers")},
        BRONZE_QUARANTINE.qualified: QUARANTINE_SCHEMA,
    }
    for attempt in range(2):  # the second is the batch replayed after a crash
        written = [row for batch in write_table_files(tmp_path, tables) for row in batch.to_pylist()]
        seconds, counts = commit_written_files(tmp_path, written, schemas, lambda t: f"bronze-test:{t}", 0)
        if attempt == 0:
            assert counts[BRONZE_EEG_BLOCKS.qualified] == 2 and counts[BRONZE_QUARANTINE.qualified] == 1
        else:
            assert set(seconds.values()) == {0.0}
    blocks = LakeTable(tmp_path, BRONZE_EEG_BLOCKS).read_columns(["seq", "kafka_offset"])
    assert blocks is not None and sorted(blocks.column("seq").to_pylist()) == [0, 1]
    reasons = LakeTable(tmp_path, BRONZE_QUARANTINE).read_columns(["reason"])
    assert reasons is not None and "unsigned record" in reasons.column("reason").to_pylist()[0]


def test_a_task_writes_every_valid_record_before_the_verdicts_and_only_the_kept_ones_after(tmp_path: Path) -> None:
    """A bronze task decodes and writes in one pass: without verdicts it writes every valid record
    and returns each record's facts beside its files; with them (the rare batch holding a duplicate
    or a record the driver refused) it writes only what they keep, the refused in quarantine."""
    from infra.delta import WRITTEN_FILES
    from streaming_jobs.bronze import FACT_COLUMNS, DecodeContext, Verdicts, bronze_task

    keyring = Keyring(tmp_path / "keyring.json")
    key = ensure_key(keyring, "pi-1")
    codec, records = default_codec(), sample_records()
    block = records["eeg_block"]
    rows = _rows(
        [
            ("sessions", sign(codec.encode("session", records["session"]), "sessions", key)),
            *(("eeg.raw", sign(codec.encode("eeg_block", {**block, "seq": s}), "eeg.raw", key)) for s in (0, 1, 1)),
            ("eeg.raw", codec.encode("eeg_block", {**block, "seq": 2})),  # unsigned
        ]
    )
    context = DecodeContext(keyring, {}, 1_800_000_000_000_000)
    lake = tmp_path / "lake"

    def run(verdicts: Verdicts | None) -> tuple[pa.Table, dict[str, int]]:
        returned = pa.Table.from_batches(list(bronze_task(str(lake), context, verdicts, iter(rows.to_batches()))))
        files = returned.filter(pa.compute.is_valid(returned.column("path")))
        facts = returned.filter(pa.compute.is_null(returned.column("path"))).select(list(FACT_COLUMNS))
        written = {
            row["table"]: pq.read_table(TABLES[row["table"]].path(lake) / row["path"]).num_rows
            for row in files.select(WRITTEN_FILES.names).to_pylist()
        }
        return facts, written

    facts, written = run(None)
    assert facts.column("kafka_offset").to_pylist() == [0, 1, 2, 3, 4]
    assert facts.column("valid").to_pylist() == [True, True, True, True, False]
    assert facts.column("session_channels").to_pylist()[0] == len(records["session"]["channel_names"])
    assert written == {"bronze.sessions": 1, "bronze.eeg_blocks": 3, "bronze.quarantine": 1}

    facts, written = run(Verdicts({"eeg.raw": frozenset({(0, 2), (0, 3)})}, {("eeg.raw", 0, 2): "a test's verdict"}))
    assert facts.num_rows == 0
    assert written == {"bronze.sessions": 1, "bronze.eeg_blocks": 1, "bronze.quarantine": 2}
