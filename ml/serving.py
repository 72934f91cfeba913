"""Scoring a feature pipeline on numpy rows, for the live scorer's per-window budget.

A fitted pipeline of ``ml/pipelines.py`` starts with a ColumnTransformer that passes some lake
feature columns through, by name, from a pandas frame; on one window at a time, building that frame
and selecting from it cost several times the model itself. :class:`FeatureScorer` resolves the
selection once per column layout into indices and runs the rest of the pipeline on the selected
numpy columns: the same numbers (the passthrough changes nothing), without pandas. A model of any
other shape is scored through a frame, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ml.features import FeatureLayoutError


def _passthrough_columns(model: Any) -> tuple[list[str], Any] | None:
    """(columns the first step passes through, in its output order; the rest of the pipeline), or
    None when the first step does anything but pass named columns through."""
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return None
    first = model.steps[0][1]
    if not isinstance(first, ColumnTransformer) or getattr(first, "sparse_output_", False):
        return None
    selected: list[str] = []
    for name, transformer, columns in first.transformers_:
        if name == "remainder":
            if transformer != "drop":
                return None
            continue
        identity = transformer == "passthrough" or (
            isinstance(transformer, FunctionTransformer) and transformer.func is None
        )
        if not identity or not all(isinstance(c, str) for c in columns):
            return None
        selected += list(columns)
    return selected, model[1:]


class FeatureScorer:
    """``predict_proba`` of a fitted feature model on a (windows x columns) matrix named by ``columns``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.columns = [str(c) for c in getattr(model, "feature_names_in_", [])]
        self._fast = _passthrough_columns(model)
        self._plans: dict[tuple[str, ...], np.ndarray] = {}

    def check(self, columns: Sequence[str]) -> None:
        """FeatureLayoutError unless ``columns`` hold every column the model was trained on."""
        self._plan(columns)

    def _plan(self, columns: Sequence[str]) -> np.ndarray:
        key = tuple(columns)
        plan = self._plans.get(key)
        if plan is None:
            where = {c: i for i, c in enumerate(columns)}
            missing = [c for c in self.columns if c not in where]
            if missing or not self.columns:
                raise FeatureLayoutError(f"the model needs columns the session lacks, e.g. {missing[:3]}")
            wanted = self._fast[0] if self._fast is not None else self.columns
            plan = self._plans[key] = np.asarray([where[c] for c in wanted], dtype=np.intp)
        return plan

    def predict_proba(self, matrix: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        picked = matrix[:, self._plan(columns)]
        if self._fast is not None:
            return np.asarray(self._fast[1].predict_proba(picked))
        return np.asarray(self.model.predict_proba(pd.DataFrame(picked, columns=self.columns)))
