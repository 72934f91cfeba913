"""The live scorer's numpy path gives a feature pipeline's own probabilities, for every pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from core.settings import MlSettings
from ml.features import FeatureLayoutError, feature_columns
from ml.pipelines import PIPELINES, make_pipeline
from ml.serving import FeatureScorer


def _frame(rng: np.random.Generator, columns: list[str], n: int = 60) -> pd.DataFrame:
    return pd.DataFrame(rng.normal(size=(n, len(columns))), columns=columns)


@pytest.mark.parametrize("name", PIPELINES)
def test_the_numpy_path_equals_the_pipeline_on_a_frame(name: str) -> None:
    rng = np.random.default_rng(0)
    columns = feature_columns(4, (8.0, 10.0, 12.0))
    train = _frame(rng, columns)
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, len(train))]
    model = make_pipeline(name, MlSettings()).fit(train, labels)
    scorer = FeatureScorer(model)
    assert scorer._fast is not None  # the pandas-free path, not the fallback
    test = _frame(rng, columns, 7)
    # Another column order (as a session might list them) is resolved by name.
    shuffled = list(rng.permutation(columns))
    got = scorer.predict_proba(test[shuffled].to_numpy(), shuffled)
    assert np.allclose(got, model.predict_proba(test), rtol=0, atol=1e-12)


def test_a_plain_estimator_goes_through_a_frame_and_a_wrong_layout_is_refused() -> None:
    rng = np.random.default_rng(1)
    train = _frame(rng, ["x", "y"])
    model = LogisticRegression().fit(train, ["a", "b"] * 30)
    scorer = FeatureScorer(model)
    assert scorer._fast is None
    test = _frame(rng, ["y", "x"], 3)
    assert np.allclose(scorer.predict_proba(test.to_numpy(), ["y", "x"]), model.predict_proba(test[["x", "y"]]))
    with pytest.raises(FeatureLayoutError):
        scorer.check(["x", "z"])
