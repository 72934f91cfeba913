"""The registry's thin MLflow adapter for SSVEP decoding metrics, against a local tracking store."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.evaluation import DecodingScore
from ml.registry import log_decoding_scores


def test_decoding_scores_land_on_the_active_run(tmp_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # Its own experiment in this store, named without making it the active one: another test may
        # have left an experiment id of another store active.
        experiment_id = mlflow.MlflowClient().create_experiment("decoding-scores")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            logged = log_decoding_scores(
                [DecodingScore.of("etrca", 1.0, 40, [0.9, 1.0]), DecodingScore.of("fbcca", 0.5, 40, [0.2])]
            )
        metrics = mlflow.get_run(run.info.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(None)
    assert metrics == pytest.approx(logged)
    assert metrics["decoding_etrca_acc_1s"] == pytest.approx(0.95)
    assert metrics["decoding_fbcca_itr_0.5s"] == pytest.approx(22.30, abs=0.01)  # 0.37 bits per 1 s selection
