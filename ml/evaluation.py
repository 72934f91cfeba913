"""Session-grouped evaluation: no window of a test session is ever seen in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import confusion_matrix, recall_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline


@dataclass(frozen=True)
class Scores:
    balanced_accuracy: float
    recall: dict[str, float]
    confusion: pd.DataFrame  # rows: true class, columns: predicted
    n_windows: int

    def as_metrics(self, prefix: str) -> dict[str, float]:
        metrics = {f"{prefix}_balanced_accuracy": self.balanced_accuracy, f"{prefix}_windows": float(self.n_windows)}
        metrics.update({f"{prefix}_recall_{label}": value for label, value in self.recall.items()})
        return metrics


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> Scores:
    recall = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0.0)
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    present = [c for c in classes if c in set(y_true)]
    balanced = float(np.mean([r for c, r in zip(classes, recall) if c in present])) if present else 0.0
    return Scores(
        balanced,
        {c: float(r) for c, r in zip(classes, recall)},
        pd.DataFrame(matrix, index=classes, columns=classes),
        len(y_true),
    )


def cross_validate(
    pipeline: Pipeline, features: pd.DataFrame, labels: np.ndarray, sessions: np.ndarray, folds: int, classes: list[str]
) -> Scores | None:
    """Out-of-fold predictions with sessions as groups; None with fewer than 2 sessions."""
    n_sessions = len(set(sessions))
    if n_sessions < 2:
        return None
    predicted = np.empty(len(labels), dtype=object)
    for train, test in GroupKFold(n_splits=min(folds, n_sessions)).split(features, labels, sessions):
        fitted = clone(pipeline).fit(features.iloc[train], labels[train])
        predicted[test] = fitted.predict(features.iloc[test])
    return score(labels, predicted.astype(str), classes)
