"""The promotion gate's rule as a pure decision (the MLflow side is in tests/integration/test_models.py)."""

from __future__ import annotations

import pytest

from ml.registry import decide_promotion

SESSIONS = ["s7", "s9"]


def _never() -> float:
    raise AssertionError("the champion was asked although the rule did not need it")


def test_the_first_version_becomes_champion_without_asking_anyone() -> None:
    decision = decide_promotion(
        "1", 0.4, None, SESSIONS, 0.01, force=False, champion_fits=_never, champion_score=_never
    )
    assert decision.promoted and decision.reason == "first champion"
    assert decision.held_out_sessions == SESSIONS


@pytest.mark.parametrize("candidate, promoted", [(0.81, True), (0.80, False), (0.70, False)])
def test_a_challenger_must_beat_the_champion_by_the_margin(candidate: float, promoted: bool) -> None:
    decision = decide_promotion(
        "3", candidate, "2", SESSIONS, 0.05, force=False, champion_fits=lambda: True, champion_score=lambda: 0.75
    )
    assert decision.promoted is promoted
    assert decision.champion_balanced_accuracy == 0.75 and decision.champion_version == "2"
    assert ("beats" if promoted else "does not beat") in decision.reason and "s7, s9" in decision.reason


def test_force_and_a_champion_that_no_longer_fits_skip_the_comparison() -> None:
    forced = decide_promotion("3", 0.1, "2", SESSIONS, 0.05, force=True, champion_fits=_never, champion_score=_never)
    assert forced.promoted and forced.reason == "forced over version 2"
    stale = decide_promotion(
        "3", 0.1, "2", SESSIONS, 0.05, force=False, champion_fits=lambda: False, champion_score=_never
    )
    assert stale.promoted and "no longer fits" in stale.reason and stale.champion_balanced_accuracy is None


def test_the_champion_again_is_no_change() -> None:
    decision = decide_promotion("2", 0.5, "2", SESSIONS, 0.05, force=False, champion_fits=_never, champion_score=_never)
    assert decision.promoted and decision.reason == "already the champion"
