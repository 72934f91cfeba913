"""Models end to end on real services: MLflow server, broker, Spark (lake scorer) and Airflow (dags test).

One private stack per module, with a small simulated lake (6 sessions of 60 s): train, gate, refuse,
score live and in the lake, and run the retrain DAG.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_jobs.recording import bronze_table
from batch_jobs.replay import publish
from batch_jobs.sample_lake import SESSION_START_US, session_tables, simulate_session, write_sample_lake
from infra.delta import LakeTable
from schemas.catalog import BRONZE_SESSIONS, GOLD_EEG_WINDOWS, GOLD_PREDICTIONS, SILVER_MARKERS
from schemas.codec import default_codec
from tests.integration.conftest import ModelStack, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStack]:
    models = ModelStack(tmp_path_factory.mktemp("models"))
    models.start()
    write_sample_lake(models.settings, sessions=6, seconds=60)
    yield models
    models.stop()


def _models(stack: ModelStack, **env: str) -> list[dict]:
    result = stack.run("models", "--json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_train_gates_and_refuses_a_worse_model(stack: ModelStack) -> None:
    first = stack.run("train")
    assert first.returncode == 0, first.stderr
    assert "version 1 -> @champion: first champion" in first.stdout
    (champion,) = _models(stack)
    # A model per montage (ml/montage.py): the sample lake's sessions are one (task, montage, rate).
    assert champion["model"].startswith(f"{stack.settings.mlflow.model_name}.ssvep4-")
    assert champion["model"].endswith(".250hz") and f"registered {champion['model']} version 1" in first.stdout
    # Each sample-lake session is another simulated subject (dsp/simulation.py, issue 25): ~0.92 held out.
    assert champion["aliases"] == ["champion"] and champion["held_out_balanced_accuracy"] >= 0.85
    assert champion["dataset_version"] == "5" and champion["pipeline"] == "ssvep_lda"

    shuffled = stack.run("train", "--shuffle-labels")
    assert shuffled.returncode == 0, shuffled.stderr
    assert "version 2 -> @challenger: does not beat champion 1" in shuffled.stdout
    newest = _models(stack)[0]
    assert newest["aliases"] == ["challenger"] and newest["promotion"] == "challenger"
    assert newest["gate_balanced_accuracy"] < 0.6
    listing = stack.run("models")
    assert "@champion" in listing.stdout and f"{champion['held_out_balanced_accuracy']:.3f}" in listing.stdout


def test_a_model_with_the_wrong_signature_is_refused(stack: ModelStack) -> None:
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    # MLflow keeps the tracking and registry URIs and the active experiment per process: an earlier
    # test in this process may have pointed them at its own (now stopped) server.
    mlflow.set_tracking_uri(stack.settings.mlflow.effective_tracking_uri)
    mlflow.set_registry_uri(stack.settings.mlflow.effective_tracking_uri)
    mlflow.set_experiment("signature-test")
    frame = pd.DataFrame({"alpha": [0.0, 1.0, 0.2, 0.9], "beta": [1.0, 0.0, 0.8, 0.1]})
    model = LogisticRegression().fit(frame, ["a", "b", "a", "b"])
    # The sample lake's one montage: `promote` gates on its sessions by default.
    montage_model = _models(stack)[-1]["model"]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(frame, ["a"]),
            registered_model_name=montage_model,
        )
    version = info.registered_model_version
    refused = stack.run("promote", str(version), "--force")
    assert refused.returncode == 2
    assert f"version {version} refused" in refused.stderr and "signature expects 2 columns" in refused.stderr
    row = next(r for r in _models(stack) if r["version"] == str(version))
    assert row["promotion"] == "refused" and "champion" not in row["aliases"]


def test_empty_lake_gives_a_clear_error(stack: ModelStack, tmp_path: Path) -> None:
    result = stack.run("train", NEUROLAKE_PATHS__LAKE_ROOT=str(tmp_path / "empty"))
    assert result.returncode == 2
    assert "gold.eeg_windows" in result.stderr and "no windows yet" in result.stderr


def _wait_for(condition, timeout_s: float, log_path: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)


def test_live_scorer_waits_for_a_champion_swaps_without_a_gap_and_agrees_with_the_lake(
    stack: ModelStack, tmp_path: Path
) -> None:
    name = "live-test-model"
    env = {"NEUROLAKE_MLFLOW__MODEL_NAME": name, "NEUROLAKE_ML__RELOAD_INTERVAL_S": "0.5"}
    # Long enough that two trainings and a promotion happen while it streams, even on a busy machine
    # (150 s at x2); the stream is stopped once version 2 has scored for a while.
    session = simulate_session(stack.settings, 20, 300.0, SESSION_START_US + 10**12)
    windows, markers = session_tables(stack.settings, session)
    log_path = tmp_path / "scorer.log"
    with log_path.open("w") as log_file:
        scorer = subprocess.Popen(
            [*stack.cli_argv, "score", "live", "--start", "earliest"],
            env={**stack.env, **env},
            cwd=stack.home,
            stdout=log_file,
            stderr=log_file,
        )
    stop = threading.Event()
    producer = threading.Thread(target=publish, args=(stack.settings, session.recording(), 2.0, stop), daemon=True)
    try:
        _wait_for(lambda: "live scorer reading" in log_path.read_text(), 60, log_path)
        producer.start()
        # Its montage has no champion yet: FBCCA (training-free) scores it meanwhile.
        _wait_for(lambda: f"no {name}.ssvep4-" in log_path.read_text(), 60, log_path)
        assert stack.run("train", **env).returncode == 0  # v1: champion
        assert stack.run("train", **env).returncode == 0  # v2: challenger (a tie does not promote)
        time.sleep(3)
        forced = stack.run("promote", "2", "--force", **env)
        assert forced.returncode == 0, forced.stderr
        _wait_for(lambda: "version 2 (was 1)" in log_path.read_text(), 120, log_path)
        time.sleep(10)  # about 50 windows by version 2
        stop.set()
        producer.join(timeout=60)
        time.sleep(3)
    finally:
        stop.set()
        scorer.terminate()
        scorer.wait(timeout=30)
    assert scorer.returncode == 0, log_path.read_text()[-3000:]
    codec = default_codec()
    predictions = [codec.decode(m.value())[1] for m in read_topic(stack.settings, "eeg.predictions")]
    every = sorted(
        (p for p in predictions if p["session_id"] == session.session_id), key=lambda p: p["window_start_index"]
    )
    # FBCCA until the montage's first champion, then v1, then v2; no window skipped at either swap.
    fallback = [p for p in every if p["model_name"] == "fbcca"]
    mine = [p for p in every if p["model_name"] != "fbcca"]
    assert fallback and every[: len(fallback)] == fallback, "FBCCA scored after the champion came"
    assert {p["model_name"] for p in mine} == {f"{name}.{mine[0]['model_name'].split('.', 1)[1]}"}
    versions = [p["model_version"] for p in mine]
    assert versions[0] == "1" and versions[-1] == "2" and versions == sorted(versions), versions
    hop = windows.column("window_start_index").to_pylist()[1] - windows.column("window_start_index").to_pylist()[0]
    starts = [p["window_start_index"] for p in every]
    assert all(b - a == hop for a, b in zip(starts, starts[1:])), "a window was skipped at a swap"
    assert all(p["latency_us"] >= 0 for p in every)

    # The lake scorer (Spark) scores the same session's gold windows with version 2: same labels.
    sessions = bronze_table("session", [session.session_record], "sessions")
    LakeTable(stack.settings.paths.lake_root, BRONZE_SESSIONS).append(sessions, "live-test:sessions", 0)
    LakeTable(stack.settings.paths.lake_root, SILVER_MARKERS).append(markers, "live-test:markers", 0)
    LakeTable(stack.settings.paths.lake_root, GOLD_EEG_WINDOWS).append(windows, "live-test:eeg_windows", 0)
    lake = stack.run("score", "lake", "--version", "2", **env)
    assert lake.returncode == 0, lake.stderr[-3000:]
    assert "scored" in lake.stdout
    scored = LakeTable(stack.settings.paths.lake_root, GOLD_PREDICTIONS).read_columns(
        ["session_id", "window_start_index", "label", "model_version"]
    )
    lake_labels = {
        (r["window_start_index"]): r["label"]
        for r in scored.to_pylist()
        if r["session_id"] == session.session_id and r["model_version"] == "2"
    }
    live_labels = {p["window_start_index"]: p["label"] for p in mine if p["model_version"] == "2"}
    assert len(live_labels) > 20 and set(live_labels) <= set(lake_labels)
    assert all(lake_labels[k] == v for k, v in live_labels.items())
    again = stack.run("score", "lake", "--version", "2", **env)
    assert "scored 0 windows" in again.stdout  # idempotent


def _airflow(stack: ModelStack, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    from core.settings import load_settings
    from infra.stack import airflow_environment

    settings = load_settings(environ={**stack.env, **extra}, cwd=stack.home)
    env = {**stack.env, **extra, **airflow_environment(settings)}
    return subprocess.run(["airflow", *args], env=env, cwd=stack.home, capture_output=True, text=True, timeout=600)


def test_airflow_retrain_dag_runs_against_the_lake(stack: ModelStack, tmp_path: Path) -> None:
    migrated = _airflow(stack, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    run = _airflow(stack, "dags", "test", "retrain", NEUROLAKE_MLFLOW__MODEL_NAME="dag-test-model")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "DagRun Finished: dag_id=retrain" in output and "state=success" in output
    assert re.search(r"gate: dag-test-model\.ssvep4-\S+\.250hz version 1 -> champion: first champion", output)

    empty = _airflow(
        stack,
        "dags",
        "test",
        "retrain",
        NEUROLAKE_PATHS__LAKE_ROOT=str(tmp_path / "empty"),
        NEUROLAKE_MLFLOW__MODEL_NAME="dag-test-model",
    )
    output = empty.stdout + empty.stderr
    assert "state=failed" in output and "no windows yet" in output


def test_the_live_scorer_refuses_a_pickled_or_altered_champion_and_keeps_scoring(stack: ModelStack) -> None:
    """Anyone who reaches the registry can register a version and move @champion; the live scorer,
    which loads every new champion by itself, must not run its code or swap to it."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    from ml.trust import SHA256_TAG, artifact_sha256
    from streaming_jobs.live_scorer import ChampionWatcher

    name = "trust-test-model"
    settings = stack.settings.model_copy(
        update={"mlflow": stack.settings.mlflow.model_copy(update={"model_name": name})}
    )
    mlflow.set_tracking_uri(stack.settings.mlflow.effective_tracking_uri)
    mlflow.set_registry_uri(stack.settings.mlflow.effective_tracking_uri)
    mlflow.set_experiment("trust-test")
    client = MlflowClient()
    frame = pd.DataFrame({"ssvep_a": [0.0, 1.0, 0.2, 0.9], "ssvep_b": [1.0, 0.0, 0.8, 0.1]})
    model = LogisticRegression().fit(frame, ["a", "b", "a", "b"])

    def register(fmt: str, fitted: object = model) -> str:
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                fitted,
                name="model",
                serialization_format=fmt,
                registered_model_name=name,
                pip_requirements=["scikit-learn"],
            )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(name, "champion", version)
        return version

    trusted = register("skops")
    digest = artifact_sha256(Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{trusted}")))
    client.set_model_version_tag(name, trusted, SHA256_TAG, digest)
    watcher = ChampionWatcher(settings)
    watcher.check()
    assert watcher() is not None and watcher().version == trusted

    pickled = register("cloudpickle")
    client.set_model_version_tag(name, pickled, SHA256_TAG, "0" * 64)
    watcher.check()
    untagged = register("skops")  # registered behind neurolake's back: no recorded hash
    watcher.check()
    other = LogisticRegression(C=0.1).fit(frame, ["b", "a", "b", "a"])
    forged_hash = register("skops", other)
    client.set_model_version_tag(name, forged_hash, SHA256_TAG, digest)  # another version's hash
    watcher.check()
    assert watcher().version == trusted
    assert watcher.refused_versions == {pickled, untagged, forged_hash}
