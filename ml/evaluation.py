"""Evaluation: session-grouped scores of the lake's pipelines (no window of a test session is ever
seen in training), and SSVEP decoding as the field reports it (leave-one-block-out within a subject,
held-out sessions, accuracy and information transfer rate per window length)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


# --- SSVEP decoding as the field evaluates it --------------------------------------------------------

# Time to move the gaze to the next target, added to each selection in the field's ITR (the benchmark's
# cue is 0.5 s; Wang et al. 2017, Nakanishi et al. 2018).
GAZE_SHIFT_S = 0.5


def itr_bits_per_minute(accuracy: float, n_classes: int, window_s: float, gaze_shift_s: float = GAZE_SHIFT_S) -> float:
    """Wolpaw's information transfer rate: B x 60 / T bits/min, with
    B = log2 N + P log2 P + (1 - P) log2((1 - P) / (N - 1)) and T = window + gaze shift.
    Accuracy at or below chance carries no information (0)."""
    if n_classes < 2:
        raise ValueError(f"ITR needs at least 2 classes, got {n_classes}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    p, n = float(accuracy), float(n_classes)
    if p <= 1.0 / n:
        return 0.0
    bits = np.log2(n) + p * np.log2(p)
    if p < 1.0:
        bits += (1 - p) * np.log2((1 - p) / (n - 1))
    return float(bits * 60.0 / (window_s + gaze_shift_s))


@dataclass(frozen=True)
class Predictions:
    """Out-of-sample predictions of one decoder, with what fitting and predicting cost."""

    y_true: np.ndarray
    y_pred: np.ndarray
    fit_seconds: float  # per fit (per fold)
    predict_seconds_per_window: float

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.y_true == self.y_pred)) if len(self.y_true) else 0.0


def leave_one_block_out(estimator: Any, windows: np.ndarray, labels: np.ndarray, blocks: np.ndarray) -> Predictions:
    """Each block in turn is the test set and the others train a fresh clone: the field's protocol for
    within-subject accuracy (every block holds one trial of every target)."""
    predicted = np.empty(len(labels), dtype=np.asarray(labels).dtype)
    fit_time, predict_time = 0.0, 0.0
    unique = np.unique(blocks)
    if len(unique) < 2:
        raise ValueError("leave-one-block-out needs at least 2 blocks")
    for block in unique:
        test = blocks == block
        start = time.perf_counter()
        fitted = clone(estimator).fit(windows[~test], labels[~test])
        fit_time += time.perf_counter() - start
        start = time.perf_counter()
        predicted[test] = fitted.predict(windows[test])
        predict_time += time.perf_counter() - start
    return Predictions(np.asarray(labels), predicted, fit_time / len(unique), predict_time / len(labels))


def held_out_session(
    estimator: Any,
    train_windows: np.ndarray,
    train_labels: np.ndarray,
    test_windows: np.ndarray,
    test_labels: np.ndarray,
) -> Predictions:
    """Trained on one session, tested on another of the same subject (another day, another cap placement)."""
    start = time.perf_counter()
    fitted = clone(estimator).fit(train_windows, train_labels)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    predicted = fitted.predict(test_windows)
    predict_time = time.perf_counter() - start
    return Predictions(
        np.asarray(test_labels), np.asarray(predicted), fit_time, predict_time / max(1, len(test_labels))
    )


@dataclass(frozen=True)
class DecodingScore:
    """Accuracy and ITR of one decoder at one window length (mean over subjects)."""

    method: str
    window_s: float
    n_classes: int
    accuracy: float
    itr_bits_per_min: float

    @classmethod
    def of(cls, method: str, window_s: float, n_classes: int, accuracies: Sequence[float]) -> DecodingScore:
        """The field averages accuracy over subjects and takes the ITR of each subject's accuracy, then
        averages those."""
        accuracy = float(np.mean(accuracies))
        itr = float(np.mean([itr_bits_per_minute(a, n_classes, window_s) for a in accuracies]))
        return cls(method, window_s, n_classes, accuracy, itr)


def decoding_metrics(scores: Sequence[DecodingScore], prefix: str = "decoding") -> dict[str, float]:
    """MLflow-ready metrics: ``<prefix>_<method>_acc_<window>s`` and ``..._itr_<window>s``."""
    metrics = {}
    for s in scores:
        key = f"{prefix}_{s.method}_{{}}_{s.window_s:g}s"
        metrics[key.format("acc")] = s.accuracy
        metrics[key.format("itr")] = s.itr_bits_per_min
    return metrics
