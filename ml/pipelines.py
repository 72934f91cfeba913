"""The scikit-learn pipelines a training run can fit, named and parameterised from settings."""

from __future__ import annotations

from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from core.settings import MlSettings
from ml.features import BAND_PREFIX, SSVEP_PREFIX

PIPELINES = ("bandpower_lr", "ssvep_lda")


def _select(prefix: str) -> ColumnTransformer:
    return ColumnTransformer([("picked", "passthrough", make_column_selector(pattern=f"^{prefix}"))])


def make_pipeline(name: str, settings: MlSettings) -> Pipeline:
    """``bandpower_lr``: log band powers of every channel, standardised, logistic regression.
    ``ssvep_lda``: CCA correlations with each stimulus frequency's reference sinusoids, LDA."""
    if name == "bandpower_lr":
        return Pipeline(
            [
                ("features", _select(BAND_PREFIX)),
                ("scale", StandardScaler()),
                ("classify", LogisticRegression(C=settings.lr_c, max_iter=settings.lr_max_iter)),
            ]
        )
    if name == "ssvep_lda":
        return Pipeline(
            [
                ("features", _select(SSVEP_PREFIX)),
                ("classify", LinearDiscriminantAnalysis(solver="lsqr", shrinkage=settings.lda_shrinkage)),
            ]
        )
    raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")


def pipeline_params(name: str, settings: MlSettings) -> dict[str, object]:
    if name == "bandpower_lr":
        return {"lr_c": settings.lr_c, "lr_max_iter": settings.lr_max_iter}
    return {"lda_shrinkage": settings.lda_shrinkage}
