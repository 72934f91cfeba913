"""Decoding evaluation as the field reports it: ITR, leave-one-block-out, held-out sessions, metrics."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from ml.evaluation import (
    DecodingScore,
    decoding_metrics,
    held_out_session,
    itr_bits_per_minute,
    leave_one_block_out,
)


def test_itr_matches_a_hand_computed_value() -> None:
    # N = 40, P = 0.9, T = 1 s + 0.5 s gaze shift:
    # B = log2 40 + 0.9 log2 0.9 + 0.1 log2(0.1 / 39) = 5.32193 - 0.13680 - 0.86073 = 4.32439 bits,
    # ITR = 4.32439 x 60 / 1.5 = 172.976 bits/min.
    assert itr_bits_per_minute(0.9, 40, 1.0) == pytest.approx(172.9757, abs=1e-3)
    # N = 4, P = 0.75, T = 2.5 s: B = 2 - 0.31128 - 0.89624 = 0.79248 bits -> 19.0196 bits/min.
    assert itr_bits_per_minute(0.75, 4, 2.0) == pytest.approx(19.0196, abs=1e-3)


def test_itr_edges() -> None:
    assert itr_bits_per_minute(1.0, 40, 1.0) == pytest.approx(np.log2(40) * 60 / 1.5)
    assert itr_bits_per_minute(1 / 40, 40, 1.0) == 0.0
    assert itr_bits_per_minute(0.0, 40, 1.0) == 0.0
    assert itr_bits_per_minute(0.9, 40, 1.0, gaze_shift_s=0.0) == pytest.approx(4.324392 * 60, abs=1e-3)
    with pytest.raises(ValueError, match="accuracy"):
        itr_bits_per_minute(1.2, 40, 1.0)
    with pytest.raises(ValueError, match="2 classes"):
        itr_bits_per_minute(0.9, 1, 1.0)


class _Remembers(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts the label of the training window nearest to each test window; records what it saw."""

    seen: list[set[int]] = []

    def fit(self, X: Any, y: Any) -> Self:
        self.x_, self.y_ = np.asarray(X), np.asarray(y)
        type(self).seen.append({int(v) for v in self.x_[:, 0, 0]})
        return self

    def predict(self, X: Any) -> np.ndarray:
        distances = np.abs(np.asarray(X)[:, None, 0, 1] - self.x_[None, :, 0, 1])
        return np.asarray(self.y_[np.argmin(distances, axis=1)])


def _blocks(n_blocks: int = 4, n_targets: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.tile(np.arange(n_targets), n_blocks)
    blocks = np.repeat(np.arange(n_blocks), n_targets)
    windows = np.zeros((len(labels), 5, 2))
    windows[:, 0, 0] = np.arange(len(labels))  # window id
    windows[:, 0, 1] = labels + 0.01 * blocks  # a feature that gives the label away
    return windows, labels, blocks


def test_leave_one_block_out_never_trains_on_the_test_block() -> None:
    windows, labels, blocks = _blocks()
    _Remembers.seen = []
    predictions = leave_one_block_out(_Remembers(), windows, labels, blocks)
    assert predictions.accuracy == 1.0
    assert len(_Remembers.seen) == 4
    for block, seen in zip(range(4), _Remembers.seen):
        assert not seen & set(np.flatnonzero(blocks == block).tolist())
    assert predictions.fit_seconds >= 0 and predictions.predict_seconds_per_window >= 0
    with pytest.raises(ValueError, match="at least 2 blocks"):
        leave_one_block_out(_Remembers(), windows, labels, np.zeros_like(blocks))


def test_held_out_session_trains_on_one_and_tests_on_the_other() -> None:
    windows, labels, _ = _blocks()
    predictions = held_out_session(_Remembers(), windows, labels, windows[::-1], labels[::-1])
    assert predictions.accuracy == 1.0
    assert list(predictions.y_true) == list(labels[::-1])


def test_scores_average_over_subjects_and_become_metrics() -> None:
    score = DecodingScore.of("etrca", 1.0, 40, [0.9, 1.0])
    assert score.accuracy == pytest.approx(0.95)
    assert score.itr_bits_per_min == pytest.approx((172.9757 + np.log2(40) * 40) / 2, abs=1e-3)
    metrics = decoding_metrics([score, DecodingScore.of("fbcca", 0.5, 40, [0.2])])
    assert metrics["decoding_etrca_acc_1s"] == pytest.approx(0.95)
    assert set(metrics) == {
        "decoding_etrca_acc_1s",
        "decoding_etrca_itr_1s",
        "decoding_fbcca_acc_0.5s",
        "decoding_fbcca_itr_0.5s",
    }
