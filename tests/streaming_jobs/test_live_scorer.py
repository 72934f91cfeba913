"""The live scorer's core (no Kafka, no MLflow): same windows and features as the lake, hot swap."""

from __future__ import annotations

import numpy as np
import pytest

from batch_jobs.sample_lake import SESSION_START_US, session_tables, simulate_session
from core.settings import Settings, load_settings
from ml.features import windows_feature_frame
from ml.pipelines import make_pipeline
from streaming_jobs.live_scorer import LiveScorer, LoadedModel, live_config


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("scorer")
    return load_settings(environ={"NEUROLAKE_PATHS__LAKE_ROOT": str(root / "lake")}, cwd=root)


@pytest.fixture(scope="module")
def session_and_model(settings: Settings):  # type: ignore[no-untyped-def]
    session = simulate_session(settings, 0, 40.0, SESSION_START_US)
    windows, _ = session_tables(settings, session)
    frame = windows.to_pandas()
    labelled = frame["label"].notna() & (frame["label"] != "rest")
    features = windows_feature_frame(frame)
    model = make_pipeline("ssvep_lda", settings.ml).fit(features[labelled], frame["label"][labelled])
    return session, frame, features, model


def _feed(scorer: LiveScorer, session, chunk: int) -> list[dict]:  # type: ignore[no-untyped-def]
    scorer.on_session(session.session_record)
    predictions = []
    for i in range(0, len(session.blocks), chunk):
        predictions += scorer.on_blocks(session.session_id, session.blocks[i : i + chunk], 0)
    return predictions


@pytest.mark.parametrize("chunk", [1, 7])
def test_live_predictions_match_the_model_on_gold_windows(settings: Settings, session_and_model, chunk: int) -> None:  # type: ignore[no-untyped-def]
    session, gold, features, model = session_and_model
    loaded = LoadedModel("m", "1", model)
    predictions = _feed(LiveScorer(live_config(settings), lambda: loaded), session, chunk)
    assert [p["window_start_index"] for p in predictions] == gold["window_start_index"].tolist()
    assert [p["label"] for p in predictions] == list(model.predict(features))
    first = predictions[0]["probabilities"]
    assert set(first) == set(settings.edge.stimulus.classes) and abs(sum(first.values()) - 1) < 1e-9


def test_model_swap_mid_session_skips_no_window(settings: Settings, session_and_model) -> None:  # type: ignore[no-untyped-def]
    session, gold, _, model = session_and_model
    current = {"model": None}
    scorer = LiveScorer(live_config(settings), lambda: current["model"])
    scorer.on_session(session.session_record)
    predictions = []
    third = len(session.blocks) // 3
    for i, block in enumerate(session.blocks):
        if i == third:
            current["model"] = LoadedModel("m", "1", model)
        if i == 2 * third:
            current["model"] = LoadedModel("m", "2", model)
        predictions += scorer.on_blocks(session.session_id, [block], 0)
    versions = [p["model_version"] for p in predictions]
    assert versions[0] == "1" and versions[-1] == "2" and versions == sorted(versions)
    starts = [p["window_start_index"] for p in predictions]
    hop = gold["window_start_index"].diff().dropna().iloc[0]
    assert np.all(np.diff(starts) == hop)  # contiguous across the swap
    assert scorer.counters.unscored_no_model == len(gold) - len(predictions) > 0


def test_a_session_joined_midway_starts_at_its_first_block(settings: Settings, session_and_model) -> None:  # type: ignore[no-untyped-def]
    session, gold, _, model = session_and_model
    scorer = LiveScorer(live_config(settings), lambda: LoadedModel("m", "1", model))
    scorer.on_session(session.session_record)
    predictions = []
    for block in session.blocks[100:]:
        predictions += scorer.on_blocks(session.session_id, [block], 0)
    first_index = session.blocks[100].first_sample_index
    assert predictions and predictions[0]["window_start_index"] >= first_index
    assert set(p["window_start_index"] for p in predictions) <= set(gold["window_start_index"])


def test_a_model_for_another_layout_is_not_used(settings: Settings, session_and_model, caplog) -> None:  # type: ignore[no-untyped-def]
    session, _, features, _ = session_and_model
    other = features.rename(columns=lambda c: c.replace("ch16", "ch99"))
    model = make_pipeline("bandpower_lr", settings.ml).fit(
        other, ["a", "b"] * (len(other) // 2) + ["a"] * (len(other) % 2)
    )
    scorer = LiveScorer(live_config(settings), lambda: LoadedModel("m", "9", model))
    assert _feed(scorer, session, 10) == []
    assert scorer.counters.unscored_layout > 0
    assert "cannot be scored by m version 9" in caplog.text
