"""The live scorer's core (no Kafka, no MLflow): same windows and features as the lake, hot swap,
a model per montage and the training-free fallback."""

from __future__ import annotations

import numpy as np
import pytest

from batch_jobs.sample_lake import SESSION_START_US, session_tables, simulate_session
from core.settings import Settings, load_settings
from dsp.session import info_from_session_record
from ml.features import windows_feature_frame
from ml.montage import key_for_session
from ml.pipelines import make_pipeline
from streaming_jobs.live_scorer import (
    FALLBACK_NAME,
    FALLBACK_VERSION,
    LiveScorer,
    LoadedModel,
    fallback_model,
    live_config,
)


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
    predictions = _feed(LiveScorer(live_config(settings), lambda key: loaded), session, chunk)
    assert [p["window_start_index"] for p in predictions] == gold["window_start_index"].tolist()
    assert [p["label"] for p in predictions] == list(model.predict(features))
    first = predictions[0]["probabilities"]
    assert set(first) == set(settings.edge.stimulus.classes) and abs(sum(first.values()) - 1) < 1e-9


def test_model_swap_mid_session_skips_no_window(settings: Settings, session_and_model) -> None:  # type: ignore[no-untyped-def]
    session, gold, _, model = session_and_model
    current = {"model": None}
    scorer = LiveScorer(live_config(settings), lambda key: current["model"], fallback=False)
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
    scorer = LiveScorer(live_config(settings), lambda key: LoadedModel("m", "1", model))
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
    scorer = LiveScorer(live_config(settings), lambda key: LoadedModel("m", "9", model))
    assert _feed(scorer, session, 10) == []
    assert scorer.counters.unscored_layout > 0
    assert "cannot be scored by m version 9" in caplog.text


# --- a model per montage: routing and the training-free fallback -------------------------------------


def _board_settings(tmp_path_factory: pytest.TempPathFactory, board: str) -> Settings:
    root = tmp_path_factory.mktemp(board)
    return load_settings(
        environ={"NEUROLAKE_PATHS__LAKE_ROOT": str(root / "lake"), "NEUROLAKE_EDGE__SIMULATION__BOARD": board},
        cwd=root,
    )


@pytest.fixture(scope="module")
def two_montages(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A simulated Cyton (8 ch, 250 Hz) and Cyton+Daisy (16 ch, 125 Hz) session in one lab, each with
    a model trained on its own montage's gold windows."""
    out = {}
    for number, board in enumerate(("cyton", "cyton_daisy")):
        board_settings = _board_settings(tmp_path_factory, board)
        session = simulate_session(board_settings, number, 30.0, SESSION_START_US + number * 10**9)
        windows, _ = session_tables(board_settings, session)
        frame = windows.to_pandas()
        labelled = frame["label"].notna() & (frame["label"] != "rest")
        features = windows_feature_frame(frame)
        model = make_pipeline("ssvep_lda", board_settings.ml).fit(features[labelled], frame["label"][labelled])
        out[board] = (board_settings, session, frame, model)
    return out


def test_each_session_is_scored_by_its_own_montages_champion(two_montages) -> None:  # type: ignore[no-untyped-def]
    cyton_settings, cyton, _, cyton_model = two_montages["cyton"]
    _, daisy, _, daisy_model = two_montages["cyton_daisy"]
    cyton_key, daisy_key = key_for_session(cyton.session_record), key_for_session(daisy.session_record)
    assert cyton_key != daisy_key and cyton_key.task == daisy_key.task
    assert (cyton_key.sample_rate_hz, len(cyton_key.channels)) == (250.0, 8)
    assert (daisy_key.sample_rate_hz, len(daisy_key.channels)) == (125.0, 16)
    champions = {
        cyton_key: LoadedModel(cyton_key.registered_name("lab"), "3", cyton_model),
        daisy_key: LoadedModel(daisy_key.registered_name("lab"), "7", daisy_model),
    }
    asked: list[object] = []

    def models(key):  # type: ignore[no-untyped-def]
        asked.append(key)
        return champions.get(key)

    scorer = LiveScorer(live_config(cyton_settings), models)
    scorer.on_session(cyton.session_record)
    scorer.on_session(daisy.session_record)
    predictions = []
    # Interleaved, as one reader sees two headsets.
    for a, b in zip(cyton.blocks, daisy.blocks):
        predictions += scorer.on_blocks(cyton.session_id, [a], 0)
        predictions += scorer.on_blocks(daisy.session_id, [b], 0)
    by_session = {
        s: {(p["model_name"], p["model_version"]) for p in predictions if p["session_id"] == s}
        for s in (cyton.session_id, daisy.session_id)
    }
    assert by_session[cyton.session_id] == {(f"lab.{cyton_key.slug}", "3")}
    assert by_session[daisy.session_id] == {(f"lab.{daisy_key.slug}", "7")}
    assert set(asked) == {cyton_key, daisy_key} and scorer.counters.scored_fallback == 0


def test_a_montage_without_a_champion_is_scored_by_fbcca_until_one_comes(two_montages) -> None:  # type: ignore[no-untyped-def]
    board_settings, session, gold, model = two_montages["cyton_daisy"]
    key = key_for_session(session.session_record)
    champions: dict = {}
    scorer = LiveScorer(live_config(board_settings), champions.get)
    scorer.on_session(session.session_record)
    predictions = []
    half = len(session.blocks) // 2
    for i, block in enumerate(session.blocks):
        if i == half:
            champions[key] = LoadedModel(key.registered_name("lab"), "1", model)
        predictions += scorer.on_blocks(session.session_id, [block], 0)
    names = [p["model_name"] for p in predictions]
    assert names[0] == FALLBACK_NAME and names[-1] == key.registered_name("lab")
    assert names == sorted(names, key=lambda n: n != FALLBACK_NAME)  # fallback, then the champion, once
    # Every window scored, none skipped at the swap.
    assert [p["window_start_index"] for p in predictions] == gold["window_start_index"].tolist()
    assert scorer.counters.unscored_no_model == 0 and scorer.counters.scored_fallback == names.count(FALLBACK_NAME)
    fallback = [p for p in predictions if p["model_name"] == FALLBACK_NAME]
    assert {p["model_version"] for p in fallback} == {FALLBACK_VERSION}
    assert set(fallback[0]["probabilities"]) == set(board_settings.edge.stimulus.classes)
    # Training-free, and still right on the flicker windows (4 targets, 2 s, 125 Hz, 16 channels).
    truth = dict(zip(gold["window_start_index"], gold["label"]))
    judged = [
        (p["label"], truth[p["window_start_index"]])
        for p in fallback
        if truth[p["window_start_index"]] in board_settings.edge.stimulus.classes
    ]
    assert len(judged) >= 10
    assert np.mean([a == b for a, b in judged]) >= 0.7


def test_without_the_fallback_a_montage_without_a_champion_is_unscored(two_montages) -> None:  # type: ignore[no-untyped-def]
    board_settings, session, gold, _ = two_montages["cyton"]
    scorer = LiveScorer(live_config(board_settings), lambda key: None, fallback=False)
    assert _feed(scorer, session, 5) == []
    assert scorer.counters.unscored_no_model == len(gold)


def test_fbcca_fallback_labels_follow_the_session_record(two_montages) -> None:  # type: ignore[no-untyped-def]
    board_settings, session, _, _ = two_montages["cyton"]
    info = info_from_session_record(session.session_record, live_config(board_settings))
    loaded = fallback_model(info, key_for_session(session.session_record))
    hz = {label: float(v) for label, v in board_settings.edge.stimulus.classes.items()}
    assert loaded.takes_windows and list(loaded.model.classes_) == sorted(hz, key=hz.get)
    assert list(loaded.model.frequencies_hz) == sorted(hz.values())
    assert loaded.model.sample_rate_hz == 250.0
