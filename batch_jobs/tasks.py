"""Airflow task bodies: each takes settings, does one step with project functions, returns a small dict.

The DAGs in ``airflow/dags`` only wire these together, so every step can also be run and tested
without Airflow. Return values are JSON-able (they travel as XComs).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from batch_jobs.lake_tables import discover_tables
from core.errors import NeurolakeError
from core.files import replace_file
from core.settings import LakeSettings, Settings, load_settings
from schemas.catalog import BRONZE_DEVICE_STATUS, GOLD_EEG_WINDOWS, SILVER_EEG_SAMPLES, TABLES, TableSpec

log = logging.getLogger(__name__)


class DataQualityError(NeurolakeError):
    """One or more data-quality bounds were crossed; the message lists each."""


def settings() -> Settings:
    """Settings for a task process: Airflow passes NEUROLAKE_* through its environment."""
    return load_settings()


def _state_file(settings: Settings, name: str) -> Path:
    return settings.paths.run_dir / f"{name}.json"


def _read_state(settings: Settings, name: str) -> dict[str, Any]:
    path = _state_file(settings, name)
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(settings: Settings, name: str, state: dict[str, Any]) -> None:
    replace_file(_state_file(settings, name), json.dumps(state))


# --- retrain -------------------------------------------------------------------------------------


def build_training_sets(settings: Settings) -> list[dict[str, Any]]:
    """One saved training set per (task, montage, rate) in gold (ml/montage.py): each montage's
    model is trained and gated on its own."""
    from ml.dataset import build_training_sets as build

    stamp = time.strftime("%Y%m%dT%H%M%S")
    built = []
    for training_set in build(settings.paths.lake_root, settings.ml):
        suffix = f"_{training_set.key.slug}" if training_set.key else ""
        path = (
            settings.paths.home / "ml" / "training_sets" / f"gold_v{training_set.table_version}{suffix}_{stamp}.parquet"
        )
        training_set.save(path)
        built.append({"path": str(path), **training_set.summary()})
    return built


def _keyed(settings: Settings, training_set_path: str) -> tuple[Settings, Any]:
    from ml.dataset import TrainingSet
    from ml.registry import keyed_settings

    training_set = TrainingSet.load(Path(training_set_path))
    return keyed_settings(settings, training_set.key), training_set


def train(settings: Settings, training_set_path: str) -> dict[str, Any]:
    from ml.registry import train_candidates

    settings, training_set = _keyed(settings, training_set_path)
    result = train_candidates(settings, training_set)
    return {"path": training_set_path, **result.as_dict()}


def evaluate(settings: Settings, training_set_path: str, version: str) -> dict[str, Any]:
    from ml.registry import evaluate as compare

    settings, training_set = _keyed(settings, training_set_path)
    return {"path": training_set_path, "decision": asdict(compare(settings, version, training_set))}


def promote(settings: Settings, evaluated: dict[str, Any]) -> dict[str, Any]:
    from ml.registry import Decision, apply_decision

    settings, _ = _keyed(settings, evaluated["path"])
    return asdict(apply_decision(settings, Decision(**evaluated["decision"])))


# --- lake maintenance ----------------------------------------------------------------------------


def optimize(settings: Settings) -> dict[str, Any]:
    """Compact each table's small micro-batch files into larger ones, clustered by what readers
    filter on (``OPTIMIZE ... ZORDER BY``, Delta's own SQL through Spark). A new version that
    changes no data: streams reading the table skip it, time travel still sees the old files."""
    from infra.spark import build_spark_session, register_lake_tables
    from schemas.catalog import TABLES

    spark = build_spark_session(settings, "neurolake-optimize")
    report: dict[str, Any] = {}
    try:
        for name in register_lake_tables(spark, settings.paths.lake_root):
            zorder = TABLES[name].zorder
            sql = f"OPTIMIZE {name}" + (f" ZORDER BY ({', '.join(zorder)})" if zorder else "")
            metrics = spark.sql(sql).collect()[0]["metrics"]
            report[name] = {"files_removed": metrics["numFilesRemoved"], "files_added": metrics["numFilesAdded"]}
    finally:
        spark.stop()
    log.info("optimize: %s", report)
    return report


def vacuum(settings: Settings) -> dict[str, Any]:
    """Delete files no version younger than ``lake.vacuum_retention_hours`` refers to (``VACUUM``
    through Spark; time travel stays possible within the retention)."""
    from infra.spark import build_spark_session, register_lake_tables

    hours = settings.lake.vacuum_retention_hours
    spark = build_spark_session(settings, "neurolake-vacuum")
    report: dict[str, Any] = {}
    try:
        for name in register_lake_tables(spark, settings.paths.lake_root):
            report[name] = len(spark.sql(f"VACUUM {name} RETAIN {hours} HOURS").collect())
    finally:
        spark.stop()
    log.info("vacuum (retention %d h): %s", hours, report)
    return report


# --- data quality --------------------------------------------------------------------------------


def _dataset(settings: Settings, spec: TableSpec) -> ds.Dataset | None:
    from infra.delta import LakeTable

    return LakeTable(settings.paths.lake_root, spec).dataset()[0]


def quality_problems(
    lake: LakeSettings,
    lost: int,
    lost_fraction: float,
    quarantine_growth: int,
    clocks: Mapping[str, Mapping[str, float]],
) -> list[str]:
    """The data-quality bounds (``lake.max_*``), each broken one as a sentence saying where to look."""
    problems = []
    if lost_fraction > lake.max_lost_fraction:
        problems.append(
            f"{lost} samples lost in gaps ({lost_fraction:.2%} > lake.max_lost_fraction "
            f"{lake.max_lost_fraction:.2%}): look at the edge's spool and the broker"
        )
    if quarantine_growth > lake.max_quarantine_growth:
        problems.append(
            f"bronze.quarantine grew by {quarantine_growth} records since the last check (bound "
            f"lake.max_quarantine_growth={lake.max_quarantine_growth}): see its reason column"
        )
    for device_id, clock in clocks.items():
        if clock["offset_ms"] > lake.max_clock_offset_ms:
            problems.append(
                f"{device_id}: clock offset {clock['offset_ms']:.0f} ms > lake.max_clock_offset_ms "
                f"{lake.max_clock_offset_ms:.0f} (is NTP running on the Pi?)"
            )
        if clock["rtt_ms"] > lake.max_clock_rtt_ms:
            problems.append(
                f"{device_id}: clock probe round trip {clock['rtt_ms']:.0f} ms > "
                f"lake.max_clock_rtt_ms {lake.max_clock_rtt_ms:.0f} (network congested)"
            )
    return problems


def data_quality(settings: Settings) -> dict[str, Any]:
    """Counts, gaps, quarantine growth and clock offsets; raises DataQualityError past a bound."""
    lake = settings.lake
    counts = {}
    for name in discover_tables(settings.paths.lake_root):
        dataset = _dataset(settings, TABLES[name])
        counts[name] = dataset.count_rows() if dataset else 0
    samples = counts.get("silver.eeg_samples", 0)
    lost = 0
    gaps = _dataset(settings, SILVER_EEG_SAMPLES)
    if gaps is not None:
        lost = int(
            pc.sum(
                gaps.to_table(columns=["gap_before"], filter=pc.field("gap_before") > 0).column("gap_before")
            ).as_py()
            or 0
        )
    previous = _read_state(settings, "data_quality")
    quarantine = counts.get("bronze.quarantine", 0)
    growth = quarantine - int(previous.get("quarantine", 0))
    clocks: dict[str, dict[str, float]] = {}
    status = _dataset(settings, BRONZE_DEVICE_STATUS)
    if status is not None:
        frame = status.to_table(columns=["device_id", "timestamp_us", "clock_offset_us", "clock_rtt_us"]).to_pandas()
        if not frame.empty:
            latest = frame.sort_values("timestamp_us").groupby("device_id").tail(1)
            clocks = {
                row.device_id: {"offset_ms": abs(row.clock_offset_us) / 1000, "rtt_ms": row.clock_rtt_us / 1000}
                for row in latest.itertuples()
            }
    lost_fraction = lost / max(1, samples + lost)
    problems = quality_problems(lake, lost, lost_fraction, growth, clocks)
    report = {
        "counts": counts,
        "samples_lost": lost,
        "lost_fraction": lost_fraction,
        "quarantine_growth": growth,
        "clocks": clocks,
        "problems": problems,
    }
    _write_state(settings, "data_quality", {"quarantine": quarantine, "checked_at": time.time()})
    log.info("data quality: %s", report)
    if problems:
        raise DataQualityError("data quality checks failed:\n- " + "\n- ".join(problems))
    return report


def new_labelled_windows(settings: Settings) -> dict[str, Any]:
    """How many labelled windows reached gold since the last retrain trigger; ``trigger`` says
    whether that is enough for a retrain (the caller then emits the gold Asset event)."""
    dataset = _dataset(settings, GOLD_EEG_WINDOWS)
    labelled = 0
    if dataset is not None:
        labelled = dataset.count_rows(filter=pc.field("label").is_valid() & (pc.field("label") != "rest"))
    previous = int(_read_state(settings, "retrain_watch").get("labelled", 0))
    trigger = labelled - previous >= settings.ml.retrain_min_new_windows
    if trigger:
        _write_state(settings, "retrain_watch", {"labelled": labelled, "at": time.time()})
    return {"labelled": labelled, "since_last": labelled - previous, "trigger": trigger}
