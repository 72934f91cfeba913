"""The lake scorer: ``gold.eeg_windows`` -> each montage's @champion -> ``gold.predictions`` (Spark).

A model per montage (ml/montage.py): a session's windows are scored by the champion of its own
(task, montage, rate), read from its record in bronze.sessions; sessions without one there by the
plain ``mlflow.model_name``'s champion.

Each pass scores the windows of one Delta version of ``gold.eeg_windows`` that this model version
has not scored yet, and commits with an app transaction ``(lake_scorer:NAME:vN, source version)``:
a pass that crashes after its commit is not written twice, and a rerun adds only new windows.
Windows are read as the Parquet files delta-rs lists (partitions = files), not through Delta's source.
The model is loaded once per partition from artifacts downloaded by the driver: fine for local
mode; on a cluster, swap in ``mlflow.pyfunc.spark_udf``, which ships the model itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from core.errors import NeurolakeError
from core.settings import Settings
from infra.delta import LakeTable, utc_date
from ml.features import windows_feature_frame
from schemas.catalog import GOLD_EEG_WINDOWS, GOLD_PREDICTIONS
from schemas.timebase import now_us

log = logging.getLogger(__name__)

PREDICTION_SCHEMA = (
    "session_id STRING, device_id STRING, window_start_index BIGINT, window_end_index BIGINT, "
    "window_end_us BIGINT, label STRING, probabilities MAP<STRING, DOUBLE>, model_name STRING, "
    "model_version STRING, scored_us BIGINT"
)
INPUT_COLUMNS = [
    "session_id",
    "device_id",
    "window_start_index",
    "window_end_index",
    "window_end_us",
    "band_power",
    "ssvep_hz",
    "ssvep_score",
]
KEYS = ["session_id", "window_start_index"]


@dataclass
class LakeScoreResult:
    model_version: str
    source_version: int
    scored: int
    model_name: str = ""

    def __str__(self) -> str:
        return (
            f"scored {self.scored} windows of gold.eeg_windows v{self.source_version} with "
            f"{self.model_name + ' ' if self.model_name else ''}version {self.model_version}"
        )


def score_partition(
    frames: Iterator[pd.DataFrame], model_dir: str, model_name: str, model_version: str, model_sha256: str | None
) -> Iterator[pd.DataFrame]:
    from ml.trust import load_trusted

    model = load_trusted(Path(model_dir), model_sha256)
    columns = list(model.feature_names_in_)
    classes = [str(c) for c in model.classes_]
    for frame in frames:
        if frame.empty:
            continue
        probabilities = model.predict_proba(windows_feature_frame(frame)[columns])
        yield pd.DataFrame(
            {
                **{c: frame[c] for c in INPUT_COLUMNS[:5]},
                "label": [classes[i] for i in probabilities.argmax(axis=1)],
                "probabilities": [dict(zip(classes, map(float, row))) for row in probabilities],
                "model_name": model_name,
                "model_version": model_version,
                "scored_us": now_us(),
            }
        )


def score_lake(spark: Any, settings: Settings, version: str | None = None) -> list[LakeScoreResult] | None:
    """One pass over every montage in gold; None when none has a champion yet (and no version was
    given). ``version`` needs a lake of one montage (it names a version of that montage's model)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from ml.dataset import session_keys
    from ml.registry import champion_version, connect, model_name_for

    client = connect(settings)
    try:
        source = DeltaTable(str(GOLD_EEG_WINDOWS.path(settings.paths.lake_root)))
    except TableNotFoundError:
        log.warning("gold.eeg_windows does not exist yet; nothing to score")
        return [LakeScoreResult(version or "-", -1, 0)]
    keys = session_keys(settings.paths.lake_root)
    groups: dict[str, list[str]] = {}
    for session_id, key in keys.items():
        groups.setdefault(model_name_for(settings, key), []).append(session_id)
    # Sessions without a record in bronze.sessions: the plain name, if it has versions.
    names = sorted(groups) + [settings.mlflow.model_name]
    if version is not None and len(groups) > 1:
        raise NeurolakeError(
            f"--version names one model's version, but gold holds {len(groups)} montages ({', '.join(sorted(groups))})"
        )
    results = []
    for name in names:
        chosen = version or champion_version(client, name)
        if chosen is None:
            if name in groups:
                log.warning("no %s@champion yet; its sessions are not scored (train one with `neurolake train`)", name)
            continue
        if version is not None and name not in groups and groups:
            continue
        sessions = groups.get(name)
        results.append(_score_model(spark, settings, client, source, name, chosen, sessions, list(keys)))
    return results or None


def _score_model(
    spark: Any,
    settings: Settings,
    client: Any,
    source: Any,
    name: str,
    version: str,
    sessions: list[str] | None,
    keyed: list[str],
) -> LakeScoreResult:
    """Windows of ``sessions`` (None: of every session not in ``keyed``) by ``name`` ``version``."""
    import mlflow
    from pyspark.sql import functions as F

    from ml.trust import SHA256_TAG, load_trusted

    predictions = LakeTable(settings.paths.lake_root, GOLD_PREDICTIONS)
    source_version = source.version()
    app_id = f"lake_scorer:{name}:v{version}"
    done_version = predictions.committed_version(app_id)
    if done_version is not None and done_version >= source_version:
        return LakeScoreResult(version, source_version, 0, name)
    files = source.file_uris()
    if not files:
        return LakeScoreResult(version, source_version, 0, name)
    windows = spark.read.parquet(*files).select(*INPUT_COLUMNS).dropDuplicates(KEYS)
    if sessions is not None:
        windows = windows.where(F.col("session_id").isin(sessions))
    elif keyed:
        windows = windows.where(~F.col("session_id").isin(keyed))
    done, _ = predictions.read_pandas(KEYS + ["model_name", "model_version"])
    if len(done):
        done = done[(done["model_version"] == version) & (done["model_name"] == name)][KEYS]
    if len(done):
        windows = windows.join(spark.createDataFrame(done.drop_duplicates()), on=KEYS, how="left_anti")
    model_dir = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}")
    sha256 = client.get_model_version(name, version).tags.get(SHA256_TAG)
    load_trusted(Path(model_dir), sha256)  # refuse here, with the reason, before Spark tasks try
    scored = windows.mapInPandas(
        partial(score_partition, model_dir=model_dir, model_name=name, model_version=version, model_sha256=sha256),
        PREDICTION_SCHEMA,
    ).toArrow()
    if scored.num_rows:
        dates = [utc_date(t) for t in scored.column("window_end_us").to_pylist()]
        scored = scored.append_column("date", pa.array(dates, pa.string()))
        predictions.append(scored, app_id, source_version)
    result = LakeScoreResult(version, source_version, scored.num_rows, name)
    log.info("lake scorer: %s", result)
    return result


def run_lake_scorer(settings: Settings, every_s: float | None = None, version: int | None = None) -> int:
    from infra.spark import build_spark_session

    spark = build_spark_session(settings, app_name="neurolake-lake-scorer")
    try:
        while True:
            results = score_lake(spark, settings, str(version) if version is not None else None)
            if every_s is None:
                if results is None:
                    print(
                        f"no {settings.mlflow.model_name}.<montage>@champion yet: nothing scored "
                        "(train one with `neurolake train`)"
                    )
                    return 1
                for result in results:
                    print(result)
                return 0
            time.sleep(every_s)
    except KeyboardInterrupt:
        return 0
    finally:
        spark.stop()
