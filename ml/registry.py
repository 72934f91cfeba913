"""MLflow adapter: training runs, the model registry, and the champion/challenger promotion gate.

Every training run logs its parameters, session-grouped CV and held-out metrics, the confusion
matrix, the dataset version (``gold.eeg_windows`` Delta version) and the model with its signature.
The best pipeline of a training call is registered under its training set's (task, montage, rate)
(ml/montage.py: ``<settings.mlflow.model_name>.<task>.<montage>.<rate>``, one champion per key; a
lake without session records trains under the plain name) and goes through :func:`gate`: it becomes
``@champion`` only if it beats the current champion on the same held-out sessions; otherwise it is
``@challenger`` with the reason on the version's tags.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.errors import NeurolakeError, ServiceError
from core.settings import Settings
from ml.dataset import TrainingSet
from ml.evaluation import DecodingScore, Scores, cross_validate, decoding_metrics, score
from ml.montage import ModelKey
from ml.pipelines import make_pipeline, pipeline_params
from ml.trust import SHA256_TAG, artifact_sha256, load_trusted

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
EXPERIMENT = "neurolake"


class PromotionRefused(NeurolakeError):
    """A model version cannot serve: wrong inputs, no probabilities, or unknown version."""


class NoChampion(NeurolakeError):
    pass


@dataclass
class CandidateRun:
    pipeline: str
    run_id: str
    cv: dict[str, float] | None
    held_out: dict[str, float]


@dataclass
class Decision:
    version: str
    promoted: bool
    reason: str
    candidate_balanced_accuracy: float
    champion_version: str | None = None
    champion_balanced_accuracy: float | None = None
    held_out_sessions: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    runs: list[CandidateRun] = field(default_factory=list)
    registered_version: str | None = None
    decision: Decision | None = None
    # The registered model (its training set's key's).
    model_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_name_for(settings: Settings, key: ModelKey | None) -> str:
    """The registered model that serves ``key`` (None: the plain ``mlflow.model_name``)."""
    base = settings.mlflow.model_name
    if key is None or base.endswith(f".{key.slug}"):
        return base
    return key.registered_name(base)


def keyed_settings(settings: Settings, key: ModelKey | None) -> Settings:
    """``settings`` with ``mlflow.model_name`` naming ``key``'s registered model: what the
    functions below then train, gate, load and list."""
    name = model_name_for(settings, key)
    if name == settings.mlflow.model_name:
        return settings
    return settings.model_copy(update={"mlflow": settings.mlflow.model_copy(update={"model_name": name})})


def connect(settings: Settings) -> MlflowClient:
    """An MlflowClient for the configured server, after a quick reachability check."""
    import mlflow
    from mlflow import MlflowClient

    # MLflow's default HTTP retries take minutes against a server that is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = settings.mlflow.effective_tracking_uri
    if uri.startswith("http"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                pass
        except OSError as exc:
            raise ServiceError(
                f"MLflow tracking server at {uri} is not reachable ({exc}); start it with "
                "`neurolake up` or set mlflow.tracking_uri"
            ) from None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _log_scores(prefix: str, scores: Scores) -> None:
    import mlflow

    mlflow.log_metrics(scores.as_metrics(prefix))
    mlflow.log_text(scores.confusion.to_csv(), f"{prefix}_confusion_matrix.csv")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
        from sklearn.metrics import ConfusionMatrixDisplay

        display = ConfusionMatrixDisplay(scores.confusion.to_numpy(), display_labels=list(scores.confusion.index))
        display.plot(colorbar=False, xticks_rotation=45)
        display.ax_.set_title(f"{prefix}: balanced accuracy {scores.balanced_accuracy:.3f}")
        mlflow.log_figure(display.figure_, f"{prefix}_confusion_matrix.png")
        pyplot.close(display.figure_)
    except ImportError:  # the CSV carries the same numbers
        pass


def log_decoding_scores(scores: Sequence[DecodingScore], prefix: str = "decoding") -> dict[str, float]:
    """Log SSVEP decoding accuracy and ITR per method and window length (ml.evaluation) to the active
    MLflow run, as ``<prefix>_<method>_acc_<window>s`` and ``..._itr_<window>s``; returns them."""
    import mlflow

    metrics = decoding_metrics(scores, prefix)
    mlflow.log_metrics(metrics)
    return metrics


def _requirements() -> list[str]:
    """Pinned from this venv: MLflow's own inference imports the model in a subprocess (slow)."""
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]


def train(settings: Settings, training_set: TrainingSet, shuffle_labels: bool = False, seed: int = 0) -> TrainResult:
    """Fit every configured pipeline, log each as a run, register the best and gate it (under the
    training set's key)."""
    settings = keyed_settings(settings, training_set.key)
    result = train_candidates(settings, training_set, shuffle_labels, seed)
    assert result.registered_version is not None
    result.decision = gate(settings, result.registered_version, training_set)
    return result


def train_candidates(
    settings: Settings, training_set: TrainingSet, shuffle_labels: bool = False, seed: int = 0
) -> TrainResult:
    """Fit every configured pipeline, log each as a run and register the best (by session CV).

    ``shuffle_labels`` trains on permuted labels: a control whose model the gate must refuse.
    """
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    settings = keyed_settings(settings, training_set.key)
    client = connect(settings)
    mlflow.set_experiment(EXPERIMENT)
    ml = settings.ml
    train_x, train_y, train_s = training_set.part(held_out=False)
    test_x, test_y, _ = training_set.part(held_out=True)
    if shuffle_labels:
        train_y = np.random.default_rng(seed).permutation(train_y)
    classes = training_set.classes
    result = TrainResult()
    for name in ml.pipelines:
        pipeline = make_pipeline(name, ml)
        with mlflow.start_run(run_name=f"{name}{' (shuffled labels)' if shuffle_labels else ''}") as run:
            mlflow.set_tags(
                {
                    "pipeline": name,
                    "label_source": training_set.label_source,
                    "shuffled_labels": str(shuffle_labels).lower(),
                    **(training_set.key.tags(ml_base(settings, training_set.key)) if training_set.key else {}),
                }
            )
            mlflow.log_params(
                {
                    "pipeline": name,
                    **pipeline_params(name, ml),
                    "label_source": training_set.label_source,
                    "dataset_table": "gold.eeg_windows",
                    "dataset_version": training_set.table_version,
                    "train_sessions": ",".join(sorted(set(map(str, train_s)))),
                    "held_out_sessions": ",".join(training_set.held_out_sessions),
                    "max_railed_pct": ml.max_railed_pct,
                    "max_line_noise_ratio": ml.max_line_noise_ratio,
                    "max_flat_channels": ml.max_flat_channels,
                    "classes": ",".join(classes),
                }
            )
            mlflow.log_input(
                from_pandas(
                    training_set.features.assign(label=training_set.labels, session_id=training_set.sessions),
                    source=f"{settings.paths.lake_root / 'gold' / 'eeg_windows'}@v{training_set.table_version}",
                    name=f"gold.eeg_windows@v{training_set.table_version}",
                    targets="label",
                ),
                context="training",
            )
            cv = cross_validate(pipeline, train_x, train_y, train_s, ml.cv_folds, classes)
            if cv is not None:
                _log_scores("cv", cv)
            fitted = pipeline.fit(train_x, train_y)
            held_out = score(test_y, fitted.predict(test_x), classes)
            _log_scores("held_out", held_out)
            mlflow.log_dict(training_set.summary(), "training_set.json")
            mlflow.sklearn.log_model(
                fitted,
                name="model",
                signature=infer_signature(train_x, fitted.predict(train_x.head(5))),
                input_example=train_x.head(3),
                pip_requirements=_requirements(),
                # skops (MLflow's safe default format) must be told the column selector is safe.
                skops_trusted_types=["sklearn.compose._column_transformer.make_column_selector"],
            )
            result.runs.append(
                CandidateRun(
                    name, run.info.run_id, cv.as_metrics("cv") if cv else None, held_out.as_metrics("held_out")
                )
            )
            log.info(
                "%s: CV balanced accuracy %s, held-out %.3f (run %s)",
                name,
                f"{cv.balanced_accuracy:.3f}" if cv else "n/a (one training session)",
                held_out.balanced_accuracy,
                run.info.run_id,
            )
    # Choose by CV (held out only when CV is impossible): the held-out sessions are the gate's.
    best = max(
        result.runs, key=lambda r: r.cv["cv_balanced_accuracy"] if r.cv else r.held_out["held_out_balanced_accuracy"]
    )
    version = mlflow.register_model(f"runs:/{best.run_id}/model", settings.mlflow.model_name)
    result.registered_version = str(version.version)
    result.model_name = settings.mlflow.model_name
    if training_set.key is not None:
        # Which sessions this registered model serves, in full (its name carries hashes).
        for tag, value in training_set.key.tags(ml_base(settings, training_set.key)).items():
            client.set_registered_model_tag(settings.mlflow.model_name, tag, value)
    # The bytes that loaders will accept for this version (ml/trust.py).
    digest = artifact_sha256(Path(mlflow.artifacts.download_artifacts(f"runs:/{best.run_id}/model")))
    client.set_model_version_tag(settings.mlflow.model_name, version.version, SHA256_TAG, digest)
    client.set_model_version_tag(settings.mlflow.model_name, version.version, "pipeline", best.pipeline)
    client.set_model_version_tag(
        settings.mlflow.model_name, version.version, "dataset_version", str(training_set.table_version)
    )
    log.info("registered %s version %s (%s)", settings.mlflow.model_name, version.version, best.pipeline)
    return result


def ml_base(settings: Settings, key: ModelKey) -> str:
    """The plain model name a keyed name was made from."""
    name = settings.mlflow.model_name
    suffix = f".{key.slug}"
    return name[: -len(suffix)] if name.endswith(suffix) else name


def expected_columns_problem(info: Any, columns: list[str]) -> str | None:
    """Why a model's signature does not fit the lake's feature columns, or None."""
    if "sklearn" not in info.flavors:
        return "it has no scikit-learn flavour (the scorers need predict_proba and classes_)"
    if info.signature is None or info.signature.inputs is None:
        return "it has no input signature; log it with signature=infer_signature(features, labels)"
    names = info.signature.inputs.input_names()
    missing = [c for c in columns if c not in names]
    extra = [c for c in names if c not in columns]
    if missing or extra:
        return (
            f"its signature expects {len(names)} columns, the lake's windows give {len(columns)}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unknown {extra[:5]}"
            f"{'...' if len(extra) > 5 else ''}; retrain it on this lake (`neurolake train`)"
        )
    return None


def load_model(settings: Settings, version: str) -> Any:
    """A registered version's estimator, through :func:`ml.trust.load_trusted` (skops only, the hash
    recorded at registration); UntrustedModelError otherwise."""
    import mlflow

    name = settings.mlflow.model_name
    tags = connect(settings).get_model_version(name, version).tags
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    return load_trusted(model_dir, tags.get(SHA256_TAG))


def _held_out_score(model: Any, training_set: TrainingSet) -> float:
    test_x, test_y, _ = training_set.part(held_out=True)
    return score(test_y, np.asarray(model.predict(test_x)).astype(str), training_set.classes).balanced_accuracy


def champion_version(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def evaluate(
    settings: Settings, version: str, training_set: TrainingSet, client: Any = None, force: bool = False
) -> Decision:
    """Compare ``version`` with the champion on the same held-out sessions; changes nothing.

    Raises :class:`PromotionRefused` (and tags the version) if its signature does not fit the
    lake's features. ``force`` skips the comparison: a person's deliberate choice.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = client or connect(settings)
    name = settings.mlflow.model_name
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise PromotionRefused(f"{name} has no version {version}; see `neurolake models`") from None
    columns = list(training_set.features.columns)
    problem = expected_columns_problem(mlflow.models.get_model_info(f"models:/{name}/{version}"), columns)
    if problem:
        _record(client, name, version, "refused", f"wrong signature: {problem}")
        raise PromotionRefused(f"{name} version {version} refused: {problem}")
    candidate = _held_out_score(load_model(settings, version), training_set)
    current = champion_version(client, name)
    return decide_promotion(
        version,
        candidate,
        current,
        list(training_set.held_out_sessions),
        settings.ml.promotion_margin,
        force=force,
        champion_fits=lambda: (
            not expected_columns_problem(mlflow.models.get_model_info(f"models:/{name}/{current}"), columns)
        ),
        champion_score=lambda: _held_out_score(load_model(settings, str(current)), training_set),
    )


def decide_promotion(
    version: str,
    candidate: float,
    current: str | None,
    held_out_sessions: list[str],
    margin: float,
    force: bool,
    champion_fits: Callable[[], bool],
    champion_score: Callable[[], float],
) -> Decision:
    """The gate's rule, without MLflow: the first version, a forced one, or one replacing a champion
    that no longer fits the lake's features becomes champion; otherwise it must beat the champion's
    held-out balanced accuracy by ``margin``. The champion is asked only what the rule needs."""
    decision = Decision(version, True, "", candidate, current, held_out_sessions=list(held_out_sessions))
    if current == version:
        decision.reason = "already the champion"
    elif current is None:
        decision.reason = "first champion"
    elif force:
        decision.reason = f"forced over version {current}"
    elif not champion_fits():
        decision.reason = f"champion {current} no longer fits the lake's feature layout"
    else:
        champion = champion_score()
        decision.champion_balanced_accuracy = champion
        sessions = ", ".join(held_out_sessions)
        if candidate > champion + margin:
            decision.reason = (
                f"beats champion {current} on the held-out sessions ({sessions}): "
                f"{candidate:.3f} > {champion:.3f} + margin {margin}"
            )
        else:
            decision.promoted = False
            decision.reason = (
                f"does not beat champion {current} on the held-out sessions ({sessions}): "
                f"{candidate:.3f} <= {champion:.3f} + margin {margin}"
            )
    return decision


def apply_decision(settings: Settings, decision: Decision, client: Any = None) -> Decision:
    """Move the aliases as ``decision`` says and record why on the version and its run."""
    client = client or connect(settings)
    name, version = settings.mlflow.model_name, decision.version
    client.set_model_version_tag(name, version, "gate_held_out_sessions", ",".join(decision.held_out_sessions))
    client.set_model_version_tag(
        name, version, "held_out_balanced_accuracy", f"{decision.candidate_balanced_accuracy:.4f}"
    )
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        challenger = client.get_registered_model(name).aliases.get(CHALLENGER)
        if challenger is not None and str(challenger) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        _record(client, name, version, CHAMPION, decision.reason)
    else:
        client.set_registered_model_alias(name, CHALLENGER, version)
        _record(client, name, version, CHALLENGER, decision.reason)
    run_id = client.get_model_version(name, version).run_id
    if run_id:
        client.set_tag(run_id, "promotion", CHAMPION if decision.promoted else CHALLENGER)
        client.set_tag(run_id, "promotion_reason", decision.reason)
        client.log_metric(run_id, "gate_candidate_balanced_accuracy", decision.candidate_balanced_accuracy)
        if decision.champion_balanced_accuracy is not None:
            client.log_metric(run_id, "gate_champion_balanced_accuracy", decision.champion_balanced_accuracy)
    log.info(
        "gate: %s version %s -> %s: %s", name, version, CHAMPION if decision.promoted else CHALLENGER, decision.reason
    )
    return decision


def gate(
    settings: Settings, version: str, training_set: TrainingSet, client: Any = None, force: bool = False
) -> Decision:
    """Champion if it beats the current champion on the held-out sessions, else challenger."""
    client = client or connect(settings)
    return apply_decision(settings, evaluate(settings, version, training_set, client, force), client)


def _record(client: Any, name: str, version: str, outcome: str, reason: str) -> None:
    client.set_model_version_tag(name, version, "promotion", outcome)
    client.set_model_version_tag(name, version, "promotion_reason", reason[:4000])


def registered_names(client: Any, base: str) -> list[str]:
    """``base`` itself (if registered) and every per-montage model made from it, by name."""
    from mlflow.exceptions import MlflowException

    names = [m.name for m in client.search_registered_models(filter_string=f"name LIKE '{base}.%'")]
    try:
        client.get_registered_model(base)
        names.append(base)
    except MlflowException:
        pass
    return sorted(n for n in set(names) if n == base or n.startswith(f"{base}."))


def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every registered version of every montage's model, newest first, with aliases and the
    metrics of its run."""
    client = connect(settings)
    rows: list[dict[str, Any]] = []
    for name in registered_names(client, settings.mlflow.model_name):
        aliases = client.get_registered_model(name).aliases
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name='{name}'"):
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            rows.append(
                {
                    "model": name,
                    "version": str(mv.version),
                    "aliases": sorted(by_version.get(str(mv.version), [])),
                    "pipeline": mv.tags.get("pipeline"),
                    "dataset_version": mv.tags.get("dataset_version"),
                    "cv_balanced_accuracy": metrics.get("cv_balanced_accuracy"),
                    "held_out_balanced_accuracy": metrics.get("held_out_balanced_accuracy"),
                    "gate_balanced_accuracy": _float(mv.tags.get("held_out_balanced_accuracy")),
                    "promotion": mv.tags.get("promotion"),
                    "reason": mv.tags.get("promotion_reason"),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mv.creation_timestamp / 1000)),
                    "created_ms": int(mv.creation_timestamp),
                    "run_id": mv.run_id,
                }
            )
    rows.sort(key=lambda r: (-r["created_ms"], r["model"], -int(r["version"])))
    for row in rows:
        del row["created_ms"]
    return rows


def _float(text: str | None) -> float | None:
    return float(text) if text else None
