"""Model trust: only skops artifacts with the recorded hash and project-trusted types load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline as sk_pipeline
from sklearn.preprocessing import FunctionTransformer

from core.settings import MlSettings
from ml.pipelines import make_pipeline
from ml.trust import UntrustedModelError, artifact_sha256, load_trusted


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 4)), columns=["ssvep_a", "ssvep_b", "band_a", "band_b"])
    return frame, np.array(["x", "y"] * 20)


def _saved(model: object, path: Path, fmt: str = "skops") -> Path:
    import mlflow

    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format=fmt,
        pip_requirements=["scikit-learn"],
        skops_trusted_types=["sklearn.compose._column_transformer.make_column_selector", "tests.ml.test_trust._double"]
        if fmt == "skops"
        else None,
    )
    return path


def _double(x: np.ndarray) -> np.ndarray:
    return 2 * x


def test_our_pipelines_load_with_the_recorded_hash_only(tmp_path: Path) -> None:
    frame, labels = _frame()
    model_dir = _saved(make_pipeline("ssvep_lda", MlSettings()).fit(frame, labels), tmp_path / "m")
    digest = artifact_sha256(model_dir)
    loaded = load_trusted(model_dir, digest)
    assert list(loaded.predict(frame)) == list(labels) or loaded.score(frame, labels) > 0.3
    with pytest.raises(UntrustedModelError, match="no artifact_sha256 tag"):
        load_trusted(model_dir, None)
    with pytest.raises(UntrustedModelError, match="differs"):
        load_trusted(model_dir, "0" * 64)


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_pickle_flavours_are_refused_before_anything_is_read(tmp_path: Path, fmt: str) -> None:
    frame, labels = _frame()
    model_dir = _saved(LogisticRegression().fit(frame, labels), tmp_path / fmt, fmt)
    with pytest.raises(UntrustedModelError, match="only skops is loaded"):
        load_trusted(model_dir, "anything")


def test_a_type_the_model_itself_declares_trusted_is_still_refused(tmp_path: Path) -> None:
    frame, labels = _frame()
    model = sk_pipeline(FunctionTransformer(_double), LogisticRegression()).fit(frame, labels)
    model_dir = _saved(model, tmp_path / "custom")
    with pytest.raises(UntrustedModelError, match="types neurolake does not trust: .*_double"):
        load_trusted(model_dir, artifact_sha256(model_dir))
