"""``neurolake demo``: start the lab, keep it running for a while, then stop all it started.

Each issue extends the list of stages; whatever happens, the stack is taken down on the way out
(duration elapsed, Ctrl-C, SIGTERM or an error).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

from core.settings import Settings
from core.stopping import stop_on_signals
from infra.processes import ServiceSpec

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


def _airflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    from infra.stack import airflow_environment

    return subprocess.run(
        ["airflow", *args],
        env={**os.environ, **airflow_environment(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _json_rows(output: str) -> list[dict]:
    """The JSON list an `airflow ... -o json` command printed (log lines may surround it)."""
    import json

    for line in reversed(output.splitlines()):
        if line.startswith("[{") or line.strip() == "[]":
            try:
                return json.loads(line)
            except ValueError:
                return []
    return []


def _retrain_with_airflow(settings: Settings, stop: threading.Event, timeout_s: float = 600) -> str:
    """Trigger and unpause the retrain DAG, wait for the triggered run to finish; its state."""
    triggered = _airflow(settings, "dags", "trigger", "retrain", "-o", "json")
    if triggered.returncode != 0:
        log.error("could not trigger the retrain DAG: %s", triggered.stderr.strip()[-500:])
        return "not triggered"
    created = _json_rows(triggered.stdout)
    run_id = (created[0].get("dag_run_id") or created[0].get("run_id")) if created else None
    # Unpaused after the trigger: the schedule's own (daily) run must not run first.
    _airflow(settings, "dags", "unpause", "retrain")
    log.info(
        "retrain DAG run %s triggered; watch it at http://%s:%d/dags/retrain",
        run_id or "",
        settings.airflow.host,
        settings.airflow.port,
    )
    deadline = time.monotonic() + timeout_s
    state = "queued"
    while not stop.is_set() and time.monotonic() < deadline:
        listed = _airflow(settings, "dags", "list-runs", "retrain", "-o", "json")
        mine = [r for r in _json_rows(listed.stdout) if run_id is None or r.get("run_id") == run_id]
        if mine:
            state = mine[0].get("state", state)
            if state in ("success", "failed"):
                break
        stop.wait(5)
    log.info("retrain DAG run: %s", state)
    return state


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


def run_demo(
    settings: Settings, duration_s: float, with_airflow: bool, headsets: int = 2, retrain_after_s: float = 90.0
) -> int:
    with stop_on_signals("the demo") as stop:
        return _run_demo(settings, stop, duration_s, with_airflow, headsets, retrain_after_s)


def _run_demo(
    settings: Settings,
    stop: threading.Event,
    duration_s: float,
    with_airflow: bool,
    headsets: int,
    retrain_after_s: float,
) -> int:
    from infra import stack

    supervisor = stack.supervisor(settings)
    children = _lab_processes(settings, headsets) if headsets > 0 else {}
    try:
        status = stack.up(settings, with_airflow=with_airflow)
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
        last_report = started = time.monotonic()
        retrained = not (with_airflow and headsets > 0)
        if not retrained:
            log.info("the retrain DAG will be triggered after %.0f s of data", retrain_after_s)
        while not stop.is_set():
            if not retrained and time.monotonic() - started >= retrain_after_s:
                retrained = True
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
        _report_lake(settings)
        _report_models(settings)
        stopped = stack.down(settings)
        log.info("demo stopped: %s", ", ".join(stopped) or "nothing was running")
