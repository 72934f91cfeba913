"""``neurolake train | promote | models | sample-lake | score``: the model lifecycle from the shell."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.settings import Settings


def _settings_with(settings: Settings, **ml_updates: Any) -> Settings:
    updates = {k: v for k, v in ml_updates.items() if v is not None}
    if not updates:
        return settings
    return settings.model_copy(update={"ml": settings.ml.model_copy(update=updates)})


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """One model per (task, montage, rate) in the lake (ml/montage.py), each gated on its own."""
    from ml.dataset import build_training_sets
    from ml.registry import train

    settings = _settings_with(settings, label_source=args.label_source)
    training_sets = build_training_sets(settings.paths.lake_root, settings.ml, version=args.dataset_version)
    results = [
        (training_set, train(settings, training_set, shuffle_labels=args.shuffle_labels))
        for training_set in training_sets
    ]
    if args.json:
        print(json.dumps([{"training_set": t.summary(), **r.as_dict()} for t, r in results], indent=2, default=str))
        return 0
    for training_set, result in results:
        summary = training_set.summary()
        print(
            f"training set{f' of {training_set.key}' if training_set.key else ''}: gold.eeg_windows "
            f"v{summary['table_version']}, {summary['windows']} windows "
            f"({summary['train_windows']} train from {len(summary['train_sessions'])} sessions, "
            f"{summary['held_out_windows']} held out from {len(summary['held_out_sessions'])}), "
            f"labels from {summary['label_source']}"
        )
        print(f"{'pipeline':<14} {'CV bal.acc':>10} {'held-out':>9}  run")
        for run in result.runs:
            cv = f"{run.cv['cv_balanced_accuracy']:.3f}" if run.cv else "n/a"
            print(f"{run.pipeline:<14} {cv:>10} {run.held_out['held_out_balanced_accuracy']:>9.3f}  {run.run_id}")
        decision = result.decision
        assert decision is not None
        outcome = "@champion" if decision.promoted else "@challenger"
        print(f"registered {result.model_name} version {result.registered_version} -> {outcome}: {decision.reason}")
    return 0


def _cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from core.errors import NeurolakeError
    from ml.dataset import build_training_sets
    from ml.registry import gate, keyed_settings, model_name_for

    training_sets = build_training_sets(settings.paths.lake_root, settings.ml)
    names = {model_name_for(settings, t.key): t for t in training_sets}
    if args.model is None and len(names) > 1:
        raise NeurolakeError(f"the lake holds {len(names)} montages: name the model with --model ({', '.join(names)})")
    name = args.model or next(iter(names))
    if name not in names:
        raise NeurolakeError(f"no sessions of {name} in the lake to gate it on (it holds {', '.join(names)})")
    training_set = names[name]
    keyed = keyed_settings(settings, training_set.key)
    decision = gate(keyed, str(args.version), training_set, force=args.force)
    outcome = "@champion" if decision.promoted else "@challenger"
    print(f"{keyed.mlflow.model_name} version {decision.version} -> {outcome}: {decision.reason}")
    return 0 if decision.promoted else 1


def _cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from ml.registry import list_models

    rows = list_models(settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions of {settings.mlflow.model_name} yet; train one with `neurolake train`")
        return 0

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(
        f"{'model':<24} {'version':>7}  {'aliases':<20} {'pipeline':<13} {'data v':>6} {'CV bal.acc':>10} "
        f"{'held-out':>8} {'gate':>6}  promotion / reason"
    )
    base = settings.mlflow.model_name
    for row in rows:
        # The montage part of the name (the plain name for an unkeyed model).
        model = row["model"][len(base) + 1 :] if row["model"].startswith(f"{base}.") else row["model"]
        print(
            f"{model:<24} {row['version']:>7}  {','.join('@' + a for a in row['aliases']) or '-':<20} "
            f"{row['pipeline'] or '-':<13} {row['dataset_version'] or '-':>6} "
            f"{number(row['cv_balanced_accuracy']):>10} {number(row['held_out_balanced_accuracy']):>8} "
            f"{number(row['gate_balanced_accuracy']):>6}  {row['promotion'] or '-'}: {row['reason'] or ''}"
        )
    return 0


def _cmd_sample_lake(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.progress import progress_bar
    from batch_jobs.sample_lake import write_sample_lake

    with progress_bar(args.sessions, "simulated sessions", unit="session") as advance:
        ids = write_sample_lake(
            settings, sessions=args.sessions, seconds=args.seconds, progress=lambda done, total: advance(1)
        )
    print(f"wrote {len(ids)} sessions to {settings.paths.lake_root}")
    return 0


def _cmd_score_live(args: argparse.Namespace, settings: Settings) -> int:
    from streaming_jobs.live_scorer import run_live_scorer

    return run_live_scorer(settings, duration_s=args.duration, start=args.start)


def _cmd_score_lake(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.lake_scorer import run_lake_scorer

    return run_lake_scorer(settings, every_s=args.every, version=args.version)


def add_ml_commands(commands: Any) -> None:
    train = commands.add_parser("train", help="build a training set from gold, train, register, gate")
    train.add_argument(
        "--label-source",
        choices=["markers", "motion"],
        default=None,
        help="labels from stimulus markers or still/moving from the room sensors (default: ml.label_source)",
    )
    train.add_argument(
        "--dataset-version", type=int, default=None, help="gold.eeg_windows Delta version to train on (default: latest)"
    )
    train.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="a control: train on permuted labels (the gate must refuse the model)",
    )
    train.add_argument("--json", action="store_true")
    train.set_defaults(handler=_cmd_train)

    promote = commands.add_parser("promote", help="gate a registered version against @champion")
    promote.add_argument("version", type=int, help="the model version (see `neurolake models`)")
    promote.add_argument(
        "--force", action="store_true", help="make it champion without comparing (its signature is still checked)"
    )
    promote.add_argument(
        "--model",
        default=None,
        help="the registered model (a montage's; see `neurolake models`); default: the lake's only montage",
    )
    promote.set_defaults(handler=_cmd_promote)

    models = commands.add_parser("models", help="registered versions, aliases and their metrics")
    models.add_argument("--json", action="store_true")
    models.set_defaults(handler=_cmd_models)

    sample = commands.add_parser("sample-lake", help="write simulated SSVEP sessions straight into the lake")
    sample.add_argument("--sessions", type=int, default=6)
    sample.add_argument("--seconds", type=float, default=60.0)
    sample.set_defaults(handler=_cmd_sample_lake)

    score = commands.add_parser("score", help="score windows with the @champion model")
    targets = score.add_subparsers(dest="score_target", metavar="TARGET", required=True)
    live = targets.add_parser("live", help="eeg.raw -> eeg.predictions, Kafka-native, no Spark")
    live.add_argument("--duration", type=float, default=None, help="seconds (default: until stopped)")
    live.add_argument(
        "--start",
        choices=["latest", "earliest"],
        default=None,
        help="where to start reading eeg.raw (default: ml.live_start)",
    )
    live.set_defaults(handler=_cmd_score_live)
    lake = targets.add_parser("lake", help="gold.eeg_windows -> gold.predictions (Spark)")
    lake.add_argument("--every", type=float, default=None, help="repeat every N seconds (default: once)")
    lake.add_argument("--version", type=int, default=None, help="model version (default: @champion)")
    lake.set_defaults(handler=_cmd_score_lake)
