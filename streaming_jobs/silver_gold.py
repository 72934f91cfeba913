"""Silver and gold from one stateful query: eeg.raw (+ sessions) -> per-session processor -> Delta.

Spark's part: decode records on the executors (``mapInArrow``), group by session, run
:func:`streaming_jobs.session_processor.process` inside ``transformWithStateInPandas`` with its
state in the state store (so a session is filtered continuously across micro-batches and
restarts), then write sample rows to ``silver.eeg_samples`` and window rows to
``gold.eeg_windows`` with idempotent delta-rs commits.

``silver.eeg_samples``: one row per sample; ``raw`` and ``filtered`` are float arrays in the
session's channel order (names in ``bronze.sessions``); ``time_us`` is lab time (dejittered device
time plus the clock offset); ``gap_before`` > 0 marks the first sample after lost samples.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codec import CodecError, default_codec
from streaming_jobs.bronze import DeltaAppender, utc_date, validate
from streaming_jobs.session_processor import (
    ProcessorConfig, SessionState, block_from_record, info_from_session_record, process,
)

log = logging.getLogger(__name__)

SILVER_TOPICS = ("eeg.raw", "sessions")
DECODED_SCHEMA = (
    "kind STRING, session_id STRING, device_id STRING, seq BIGINT, first_sample_index BIGINT, "
    "n_samples INT, n_channels INT, sample_rate_hz DOUBLE, data BINARY, device_times_us BINARY, "
    "clock_offset_us BIGINT, session_json STRING"
)
OUTPUT_SCHEMA = (
    "kind STRING, session_id STRING, device_id STRING, sample_index BIGINT, seq BIGINT, "
    "time_us BIGINT, device_time_us BIGINT, raw ARRAY<FLOAT>, filtered ARRAY<FLOAT>, "
    "gap_before BIGINT, window_start_index BIGINT, window_end_index BIGINT, window_start_us BIGINT, "
    "window_end_us BIGINT, band_power ARRAY<ARRAY<FLOAT>>, ssvep_hz ARRAY<DOUBLE>, "
    "ssvep_score ARRAY<DOUBLE>, railed_pct DOUBLE, line_noise_ratio DOUBLE, flat_channels INT, "
    "samples_lost BIGINT, bpm DOUBLE"
)
SAMPLE_COLUMNS = ["session_id", "device_id", "sample_index", "seq", "time_us", "device_time_us",
                  "raw", "filtered", "gap_before"]
BEAT_COLUMNS = ["session_id", "device_id", "sample_index", "time_us", "bpm"]
WINDOW_COLUMNS = ["session_id", "device_id", "window_start_index", "window_end_index",
                  "window_start_us", "window_end_us", "band_power", "ssvep_hz", "ssvep_score",
                  "railed_pct", "line_noise_ratio", "flat_channels", "samples_lost"]


def _arrow_type(ddl: str) -> pa.DataType:
    if ddl.startswith("ARRAY<"):
        return pa.list_(_arrow_type(ddl[len("ARRAY<"):-1]))
    return {"STRING": pa.string(), "BIGINT": pa.int64(), "INT": pa.int32(), "DOUBLE": pa.float64(),
            "FLOAT": pa.float32()}[ddl]


# The processor's output rows as Arrow (what ``toArrow()`` of a micro-batch gives the writer).
OUTPUT_ARROW = pa.schema([(part.split()[0], _arrow_type(part.split()[1])) for part in OUTPUT_SCHEMA.split(", ")])

DECODED_ARROW = pa.schema([
    ("kind", pa.string()), ("session_id", pa.string()), ("device_id", pa.string()),
    ("seq", pa.int64()), ("first_sample_index", pa.int64()), ("n_samples", pa.int32()),
    ("n_channels", pa.int32()), ("sample_rate_hz", pa.float64()), ("data", pa.binary()),
    ("device_times_us", pa.binary()), ("clock_offset_us", pa.int64()), ("session_json", pa.string()),
])


def decode_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Kafka rows -> decoded EEG blocks and session records; others are bronze's business."""
    codec = default_codec()
    names = DECODED_ARROW.names
    for batch in batches:
        rows: dict[str, list[Any]] = {name: [] for name in names}
        for value in batch.column("value").to_pylist():
            try:
                record_type, record = codec.decode(value) if value else (None, None)
            except CodecError:
                continue  # quarantined by bronze
            if record_type == "eeg_block" and validate(record_type, record) is None:
                rows["kind"].append("block")
                for name in names[1:11]:
                    rows[name].append(record[name])
                rows["session_json"].append(None)
            elif record_type == "session":
                rows["kind"].append("session")
                rows["session_id"].append(record["session_id"])
                rows["device_id"].append(record["device_id"])
                for name in names[3:11]:
                    rows[name].append(None)
                rows["session_json"].append(json.dumps(record))
        yield pa.RecordBatch.from_pydict(rows, schema=DECODED_ARROW)


def _blocks_and_info(frames: Iterator[pd.DataFrame], config: ProcessorConfig):  # type: ignore[no-untyped-def]
    blocks, info = [], None
    for frame in frames:
        for row in frame.itertuples(index=False):
            if row.kind == "session":
                info = info_from_session_record(json.loads(row.session_json), config)
                continue
            record = row._asdict()
            # Session rows leave these columns null, so pandas holds the counts as floats.
            record["n_samples"], record["n_channels"] = int(row.n_samples), int(row.n_channels)
            blocks.append(block_from_record(record))
    return blocks, info


_ARRAY_COLUMNS = {"raw", "filtered", "band_power", "ssvep_hz", "ssvep_score"}
_OUTPUT_COLUMNS = [part.split()[0] for part in OUTPUT_SCHEMA.split(", ")]


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    """Every output column present; absent arrays are None (NaN is not an array to Spark)."""
    n = len(frame)
    for column in _OUTPUT_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series([None] * n, dtype=object) if column in _ARRAY_COLUMNS else 0
    return frame[_OUTPUT_COLUMNS]


def output_frames(session_id: str, samples: list[dict[str, Any]], windows: list[dict[str, Any]],
                  beats: list[dict[str, Any]] | None = None) -> Iterator[pd.DataFrame]:
    """Sample rows and window rows, as separate frames of the one output schema."""
    for run in samples:
        n = len(run["sample_index"])
        yield _complete(pd.DataFrame({
            "kind": "sample", "session_id": session_id, "device_id": run["device_id"],
            "sample_index": run["sample_index"], "seq": run["seq"], "time_us": run["time_us"],
            "device_time_us": run["device_time_us"], "raw": list(run["raw"]),
            "filtered": list(run["filtered"]), "gap_before": run["gap_before"],
        }, index=range(n)))
    if windows:
        yield _complete(pd.DataFrame([{
            "kind": "window", "session_id": session_id, **w,
            "band_power": [row for row in w["band_power"]],
        } for w in windows]))
    if beats:
        frame = pd.DataFrame([{"kind": "beat", "session_id": session_id, **b} for b in beats])
        frame["bpm"] = frame["bpm"].astype(float)  # None (first beat) -> NaN -> null
        yield _complete(frame)


def _processor_class():  # type: ignore[no-untyped-def]
    from pyspark.sql.streaming import StatefulProcessor

    class SessionStatefulProcessor(StatefulProcessor):
        """Thin adapter: pickled :class:`SessionState` in a value state, timers for gap waits."""

        config = ProcessorConfig()

        def init(self, handle) -> None:  # type: ignore[no-untyped-def]
            self.handle = handle
            self.state = handle.getValueState("session", "blob BINARY")

        def _load(self) -> SessionState:
            return pickle.loads(self.state.get()[0]) if self.state.exists() else SessionState()

        def _step(self, key, blocks, info, now_ms: int) -> Iterator[pd.DataFrame]:  # type: ignore[no-untyped-def]
            output, new_state = process(self._load(), blocks, now_ms, self.config, info)
            self.state.update((pickle.dumps(new_state, protocol=5),))
            for timer in self.handle.listTimers():
                self.handle.deleteTimer(timer)
            if new_state.pending and new_state.gap_since_ms is not None:
                self.handle.registerTimer(new_state.gap_since_ms + self.config.gap_wait_ms + 1)
            yield from output_frames(key[0], output.samples, output.windows, output.beats)

        def handleInputRows(self, key, rows, timerValues) -> Iterator[pd.DataFrame]:  # type: ignore[no-untyped-def]
            blocks, info = _blocks_and_info(rows, self.config)
            yield from self._step(key, blocks, info, timerValues.getCurrentProcessingTimeInMs())

        def handleExpiredTimer(self, key, timerValues, expiredTimerInfo) -> Iterator[pd.DataFrame]:  # type: ignore[no-untyped-def]
            yield from self._step(key, [], None, timerValues.getCurrentProcessingTimeInMs())

        def close(self) -> None:
            pass

    return SessionStatefulProcessor


def label_windows(windows: pa.Table, markers: pa.Table | None) -> pa.Array:
    """The stimulus shown for the whole window, "rest" when none overlaps it, else null."""
    labels: list[str | None] = [None] * windows.num_rows
    if markers is None or markers.num_rows == 0 or windows.num_rows == 0:
        return pa.array(labels, pa.string())
    starts = markers.filter(pc.equal(markers.column("event"), "START")).to_pylist()
    by_session: dict[str, list[tuple[int, int, str]]] = {}
    for m in starts:
        end = m["timestamp_us"] + int((m["duration_s"] or 0) * 1e6)
        by_session.setdefault(m["session_id"], []).append((m["timestamp_us"], end, m["label"]))
    columns = windows.select(["session_id", "window_start_us", "window_end_us"]).to_pydict()
    for i, (session, w0, w1) in enumerate(zip(*columns.values())):
        trials = by_session.get(session)
        if not trials:
            continue
        inside = [label for start, end, label in trials if start <= w0 and w1 < end]
        overlapping = [1 for start, end, _ in trials if start < w1 and w0 < end]
        latest_start = max(start for start, _, _ in trials)
        if inside:
            labels[i] = inside[0]
        elif not overlapping and w1 < latest_start:
            # Only call it rest once a later trial proves the protocol went on past it.
            labels[i] = "rest"
    return pa.array(labels, pa.string())


class SilverGoldBatchWriter:
    def __init__(self, lake_root: Path, query_name: str = "silver_gold") -> None:
        self.silver = DeltaAppender(lake_root, "silver")
        self.gold = DeltaAppender(lake_root, "gold")
        self.bronze = DeltaAppender(lake_root, "bronze")
        self.query_name = query_name

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        self.write(batch_df.toArrow(), batch_id)

    def write(self, rows: pa.Table, batch_id: int) -> None:
        if rows.num_rows == 0:
            return
        kinds = rows.column("kind")
        samples = rows.filter(pc.equal(kinds, "sample")).select(SAMPLE_COLUMNS)
        windows = rows.filter(pc.equal(kinds, "window")).select(WINDOW_COLUMNS)
        beats = rows.filter(pc.equal(kinds, "beat")).select(BEAT_COLUMNS)
        if beats.num_rows:
            dates = [utc_date(t) for t in beats.column("time_us").to_pylist()]
            beats = beats.append_column("date", pa.array(dates, pa.string()))
            self.silver.append("heart_rate", beats, f"{self.query_name}:heart_rate", batch_id, ["date"])
        if samples.num_rows:
            dates = [utc_date(t) for t in samples.column("time_us").to_pylist()]
            samples = samples.append_column("date", pa.array(dates, pa.string()))
            self.silver.append("eeg_samples", samples, f"{self.query_name}:eeg_samples", batch_id,
                               ["date"])
        if windows.num_rows:
            # Only this batch's sessions: the markers table grows with the lab's whole history.
            sessions = pc.unique(windows.column("session_id"))
            markers = self.bronze.read_columns(
                "markers", ["session_id", "event", "timestamp_us", "duration_s", "label"],
                where=pc.field("session_id").isin(sessions),
            )
            windows = windows.append_column("label", label_windows(windows, markers))
            dates = [utc_date(t) for t in windows.column("window_end_us").to_pylist()]
            windows = windows.append_column("date", pa.array(dates, pa.string()))
            self.gold.append("eeg_windows", windows, f"{self.query_name}:eeg_windows", batch_id,
                             ["date"])


def processor_config(settings) -> ProcessorConfig:  # type: ignore[no-untyped-def]
    lake = settings.lake
    return ProcessorConfig(
        band_low_hz=lake.band_low_hz, band_high_hz=lake.band_high_hz, notch_hz=lake.notch_hz,
        window_s=lake.window_s, window_overlap=lake.window_overlap,
        gap_wait_ms=int(lake.gap_wait_s * 1000),
        default_ssvep_hz=tuple(sorted(settings.edge.stimulus.classes.values())),
    )


def start_silver_gold(spark, settings, trigger_s: float | None = None):  # type: ignore[no-untyped-def]
    from streaming_jobs.jobs import checkpoint_dir, kafka_stream

    processor = _processor_class()()
    processor.config = processor_config(settings)
    trigger_s = trigger_s or settings.lake.trigger_s
    spark.conf.set("spark.sql.streaming.stateStore.providerClass",
                   "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
    decoded = kafka_stream(spark, settings, SILVER_TOPICS,
                           max_records_per_trigger=settings.lake.max_records_per_trigger).mapInArrow(
        decode_partition, DECODED_SCHEMA
    )
    processed = decoded.groupBy("session_id").transformWithStateInPandas(
        statefulProcessor=processor,
        outputStructType=OUTPUT_SCHEMA,
        outputMode="Append",
        timeMode="ProcessingTime",
    )
    return (
        processed.writeStream.queryName("silver_gold")
        .foreachBatch(SilverGoldBatchWriter(settings.paths.lake_root))
        .option("checkpointLocation", str(checkpoint_dir(settings, "silver_gold")))
        .trigger(processingTime=f"{trigger_s} seconds")
        .start()
    )
