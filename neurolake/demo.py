"""``neurolake demo``: start the lab, keep it running for a while, then stop all it started.

Each issue extends the list of stages; whatever happens, the stack is taken down on the way out
(duration elapsed, Ctrl-C, SIGTERM or an error).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING

from core.settings import Settings
from core.stopping import stop_on_signals
from infra.processes import ServiceSpec

if TYPE_CHECKING:
    from infra.airflow_api import AirflowApi, DagRun

log = logging.getLogger(__name__)


def _lab_processes(settings: Settings, headsets: int) -> dict[str, ServiceSpec]:
    """The lab's own processes, started and stopped like the stack's services (PID file, log file,
    own session), in the order they stop: producers first, the streams last, so that the queries
    take in the headsets' last records."""
    cli = [sys.executable, "-m", "neurolake.cli"]

    def alive() -> bool:  # these serve no port: running is healthy
        return True

    def spec(name: str, *args: str) -> ServiceSpec:
        return ServiceSpec(f"demo-{name}", [*cli, *args], {}, alive, startup_timeout_s=5, stop_timeout_s=30)

    return {
        "headsets": spec(
            "headsets",
            "edge",
            "simulate",
            "--headsets",
            str(headsets),
            "--stimulus",
            "--sensors",
            "--camera",
            "--summary",
            str(settings.paths.log_dir / "demo-headsets.json"),
        ),
        "live scorer": spec("live-scorer", "score", "live"),
        "dashboard": spec("dashboard", "dashboard"),
        "streams": spec("streams", "stream", "start", "all"),
    }


def _champions(settings: Settings) -> dict[str, str | None]:
    """Each registered model's @champion version (None: none yet); empty when MLflow cannot say."""
    from ml.registry import champion_version, connect, registered_names

    try:
        client = connect(settings)
        return {name: champion_version(client, name) for name in registered_names(client, settings.mlflow.model_name)}
    except Exception as exc:  # a report must not stop the demo
        log.warning("could not read the champions from MLflow: %s", exc)
        return {}


def _retrain_with_airflow(settings: Settings, stop: threading.Event, timeout_s: float = 600) -> str:
    """Trigger the retrain DAG through Airflow's REST API, follow the run to its end, then log where
    its time went and which champions it swapped; the run's state."""
    from core.errors import NeurolakeError
    from infra.airflow_api import FINISHED, AirflowApi

    api = AirflowApi(settings)
    before = _champions(settings)
    try:
        run_id = api.trigger("retrain")
        # Unpaused so the run is scheduled; the demo's stack has no daily slot that unpausing would
        # also run (run_demo).
        api.set_paused("retrain", False)
    except NeurolakeError as exc:
        log.error("could not trigger the retrain DAG: %s", exc)
        return "not triggered"
    log.info(
        "retrain DAG run %s triggered; watch it at http://%s:%d/dags/retrain",
        run_id,
        settings.airflow.host,
        settings.airflow.port,
    )
    deadline = time.monotonic() + timeout_s
    run = None
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            run = api.run("retrain", run_id)
        except NeurolakeError as exc:
            log.warning("retrain DAG run %s: %s", run_id, exc)
        if run is not None and run.state in FINISHED:
            break
        stop.wait(2)
    state = run.state if run is not None else "unknown"
    if run is None or run.state not in FINISHED:
        log.warning("retrain DAG run %s still %s when the demo ended", run_id, state)
        return state
    log.info("retrain DAG run: %s", state)
    try:
        _log_run_time(api, run)
    except NeurolakeError as exc:
        log.warning("could not read the run's task times: %s", exc)
    _log_champion_changes(before, _champions(settings))
    return state


def _log_run_time(api: AirflowApi, run: DagRun) -> None:
    """Where a finished run's time went: waiting to start, each task (mapped instances summed), and the
    rest (the scheduler's turns and each task process's start-up between tasks)."""
    tasks = api.task_times("retrain", run.run_id)
    per_task: dict[str, list[float]] = {}
    for task in sorted(tasks, key=lambda t: t.start.timestamp() if t.start else float("inf")):
        per_task.setdefault(task.task_id, []).append(task.seconds or 0.0)
    began = run.queued or run.start
    total = (run.end - began).total_seconds() if run.end and began else None
    queued = (run.start - run.queued).total_seconds() if run.start and run.queued else 0.0
    in_tasks = sum(sum(s) for s in per_task.values())
    parts = [f"queued {queued:.0f} s"] + [
        f"{task_id} {sum(seconds):.0f} s" + (f" ({len(seconds)} montages)" if len(seconds) > 1 else "")
        for task_id, seconds in per_task.items()
    ]
    if total is None:
        log.info("retrain DAG run: %s", ", ".join(parts))
        return
    parts.append(f"between tasks {max(0.0, total - queued - in_tasks):.0f} s (scheduler turns, task start-up)")
    log.info("retrain DAG run took %.0f s: %s", total, ", ".join(parts))


def _log_champion_changes(before: dict[str, str | None], after: dict[str, str | None]) -> None:
    for name, version in sorted(after.items()):
        previous = before.get(name)
        if version == previous:
            log.info("champion kept: %s v%s (no retrained model beat it on the held-out sessions)", name, version)
        elif previous is None:
            log.info("champion: %s v%s (the montage's first)", name, version)
        else:
            log.info("champion swapped: %s v%s -> v%s (the retrained model beat it)", name, previous, version)


def _first_champion(settings: Settings, stop: threading.Event) -> None:
    """A champion in the demo's first minute: trained on simulated sessions written straight into the
    lake (``neurolake sample-lake``), so the live scorer predicts while the lab's own data builds up;
    the retrain DAG then trains on everything the lake holds."""
    from batch_jobs.sample_lake import write_sample_lake
    from ml.dataset import build_training_sets
    from ml.registry import champion_version, connect, registered_names, train

    try:
        client = connect(settings)
        if any(champion_version(client, n) is not None for n in registered_names(client, settings.mlflow.model_name)):
            return
        started = time.monotonic()
        write_sample_lake(settings, sessions=4, seconds=40.0)
        if stop.is_set():
            return
        for training_set in build_training_sets(settings.paths.lake_root, settings.ml):
            result = train(settings, training_set)
            assert result.decision is not None
            log.info(
                "first model %s v%s in %.0f s (%s): the live scorer predicts with it from now on (FBCCA, "
                "training-free, until then); watch the Predictions panel at http://%s:%d/",
                result.model_name,
                result.registered_version,
                time.monotonic() - started,
                result.decision.reason,
                settings.dashboard.host,
                settings.dashboard.port,
            )
    except Exception as exc:  # the demo goes on without a first model; the retrain DAG may make one
        log.warning("could not train a first model: %s", exc)


def _report_models(settings: Settings) -> None:
    from ml.registry import list_models

    try:
        for row in list_models(settings)[:3]:
            log.info(
                "model %s v%s %s: held-out balanced accuracy %s (%s)",
                row["model"],
                row["version"],
                ",".join("@" + a for a in row["aliases"]) or "-",
                row["held_out_balanced_accuracy"],
                row["reason"],
            )
    except Exception as exc:  # a report must not stop the shutdown
        log.warning("could not list models: %s", exc)


def _report_lake(settings: Settings) -> None:
    from batch_jobs.lake_sql import run_query
    from batch_jobs.lake_tables import discover_tables

    tables = discover_tables(settings.paths.lake_root)
    if not tables:
        log.info("lake: no tables yet under %s", settings.paths.lake_root)
        return
    counts = []
    for name in tables:
        try:
            rows = run_query(settings.paths.lake_root, f"SELECT count(*) FROM {name}").rows
            counts.append(f"{name}={rows[0][0]}")
        except Exception as exc:  # a report must not stop the shutdown
            counts.append(f"{name}=? ({exc})")
    log.info("lake %s: %s", settings.paths.lake_root, ", ".join(counts))


# A retrain DAG run took 45 s in the demo on 2 cores (2026-12-06; 71-86 s while it waited behind a
# second run); what the trigger leaves it, with room for a slower machine.
RETRAIN_RUN_BUDGET_S = 120.0


def run_demo(
    settings: Settings,
    duration_s: float,
    with_airflow: bool,
    headsets: int = 2,
    retrain_after_s: float | None = None,
    retrain_windows: int = 100,
) -> int:
    if retrain_after_s is None:
        retrain_after_s = max(30.0, duration_s - RETRAIN_RUN_BUDGET_S) if duration_s > 0 else 600.0
    if with_airflow:
        # No daily retrain in a stack that lives minutes: unpausing the DAG would run its latest
        # daily slot at once, and the demo's triggered run would wait for it (AirflowSettings).
        settings = settings.model_copy(update={"airflow": settings.airflow.model_copy(update={"retrain_cron": ""})})
    with stop_on_signals("the demo") as stop:
        return _run_demo(settings, stop, duration_s, with_airflow, headsets, retrain_after_s, retrain_windows)


def _live_labelled_windows(settings: Settings, since_us: int) -> int:
    """Labelled (stimulus) windows in gold from sessions recorded since ``since_us``: the demo's own,
    not the sample lake's (whose sessions are dated in the past)."""
    import pyarrow.compute as pc

    from infra.delta import LakeTable
    from schemas.catalog import GOLD_EEG_WINDOWS

    try:
        dataset, _ = LakeTable(settings.paths.lake_root, GOLD_EEG_WINDOWS).dataset()
        if dataset is None:
            return 0
        labelled = pc.field("label").is_valid() & (pc.field("label") != "rest")
        return int(dataset.count_rows(filter=labelled & (pc.field("window_start_us") >= since_us)))
    except Exception as exc:  # counted again in 5 s; the retrain still comes by its latest time
        log.warning("could not count gold's labelled windows: %s", exc)
        return 0


def _run_demo(
    settings: Settings,
    stop: threading.Event,
    duration_s: float,
    with_airflow: bool,
    headsets: int,
    retrain_after_s: float,
    retrain_windows: int,
) -> int:
    from infra import stack
    from schemas.timebase import now_us

    supervisor = stack.supervisor(settings)
    children = _lab_processes(settings, headsets) if headsets > 0 else {}
    # Reports on the way out only from a stack this demo brought up: after a failed start, the
    # ports may belong to another lab's MLflow.
    came_up = False
    try:
        status = stack.up(settings, with_airflow=with_airflow)
        came_up = True
        for state in (s for s in status.services if s.running):
            log.info(
                "%-8s %s (pid %s, log %s)",
                state.name,
                "healthy" if state.healthy else "UNHEALTHY",
                state.pid,
                state.log_file,
            )
        if with_airflow:
            log.info("Airflow UI: http://%s:%d", settings.airflow.host, settings.airflow.port)
        log.info("MLflow UI: %s", settings.mlflow.effective_tracking_uri)
        for name, spec in children.items():
            state = supervisor.start(spec)
            log.info("%s started (pid %s, log %s)", name, state.pid, state.log_file)
        if children:
            log.info("dashboard: http://%s:%d/", settings.dashboard.host, settings.dashboard.port)
            threading.Thread(target=_first_champion, args=(settings, stop), name="first-champion", daemon=True).start()
        if duration_s > 0:
            log.info("demo running for %.0f s", duration_s)
        else:
            log.info("demo running until Ctrl-C")
        deadline = time.monotonic() + duration_s if duration_s > 0 else None
        last_report = last_count = started = time.monotonic()
        started_us = now_us()
        retrained = not (with_airflow and headsets > 0)
        if not retrained:
            log.info(
                "the retrain DAG will be triggered once gold holds %d labelled windows of these headsets' "
                "sessions, or after %.0f s",
                retrain_windows,
                retrain_after_s,
            )
        while not stop.is_set():
            if not retrained and time.monotonic() - last_count >= 5:
                last_count = time.monotonic()
                elapsed = last_count - started
                windows = _live_labelled_windows(settings, started_us)
                if windows >= retrain_windows or elapsed >= retrain_after_s:
                    retrained = True
                    log.info(
                        "%d labelled windows of the lab's own sessions in gold after %.0f s: triggering the retrain DAG",
                        windows,
                        elapsed,
                    )
                    remaining = deadline - time.monotonic() if deadline is not None else 900.0
                    _retrain_with_airflow(settings, stop, timeout_s=max(60.0, remaining))
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.5)
            if time.monotonic() - last_report >= 15:
                last_report = time.monotonic()
                current = stack.status(settings)
                unhealthy = [s.name for s in current.services if s.running and not s.healthy]
                states = ", ".join(
                    f"{name} {'running' if supervisor.running_process(spec.name) else 'EXITED'}"
                    for name, spec in children.items()
                )
                log.info(
                    "stack %s; %s", "healthy" if not unhealthy else f"UNHEALTHY: {unhealthy}", states or "no children"
                )
        exited = [name for name, spec in children.items() if supervisor.running_process(spec.name) is None]
        if exited:
            log.error(
                "exited before the end of the demo: %s (see their logs in %s)",
                ", ".join(exited),
                settings.paths.log_dir,
            )
        return 0 if stack.status(settings).healthy and not exited else 1
    finally:
        for name, spec in children.items():
            if name == "streams" and supervisor.running_process(spec.name) is not None:
                time.sleep(5)  # let the queries take in the headsets' last records
            supervisor.stop(spec)
        if came_up:
            _report_lake(settings)
            _report_models(settings)
        stopped = stack.down(settings)
        log.info("demo stopped: %s", ", ".join(stopped) or "nothing was running")
