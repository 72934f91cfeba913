"""Every DAG parses, with no import errors and no network connection at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"

# Run in a child process: importing Airflow configures process-wide logging (structlog handlers
# bound to the stream pytest captures for this test), which later tests would log into after
# pytest has closed it.
_PARSE = """
import json, socket, sys
from airflow.dag_processing.dagbag import DagBag

def refuse(self, address):
    raise AssertionError(f"a DAG file opened a connection to {address} at parse time")

socket.socket.connect = refuse
bag = DagBag(dag_folder=sys.argv[1])
json.dump({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "retrain_order": [t.task_id for t in bag.dags["retrain"].topological_sort()]
        if "retrain" in bag.dags else [],
    "quality_outlets": [a.name for a in bag.dags["data_quality"].get_task("new_labelled_windows").outlets]
        if "data_quality" in bag.dags else [],
    "retrain_timetable": type(bag.dags["retrain"].timetable).__name__ if "retrain" in bag.dags else None,
}, sys.stdout)
"""


def _parse(dags: Path, home: Path, retrain_cron: str | None = None) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    }
    if retrain_cron is not None:
        env["NEUROLAKE_AIRFLOW__RETRAIN_CRON"] = retrain_cron
    done = subprocess.run(
        [sys.executable, "-c", _PARSE, str(dags)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=DAGS.parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_dags_parse_without_connections(tmp_path: Path) -> None:
    bag = _parse(DAGS, tmp_path)
    assert bag["import_errors"] == {}
    assert bag["dag_ids"] == ["data_quality", "lake_maintenance", "retrain"]
    assert bag["retrain_order"] == ["build_training_set", "train", "evaluate", "promote"]
    assert bag["quality_outlets"] == ["gold.eeg_windows"]
    assert bag["retrain_timetable"] == "AssetOrTimeSchedule"  # daily, and on new labelled windows


def test_retrain_without_a_daily_run_waits_for_windows_or_a_trigger(tmp_path: Path) -> None:
    """The demo's stack (airflow.retrain_cron ""): only new labelled windows or a trigger run it."""
    bag = _parse(DAGS / "retrain.py", tmp_path, retrain_cron="")
    assert bag["import_errors"] == {}
    assert bag["retrain_timetable"] == "AssetTriggeredTimetable"
