"""Every DAG parses, with no import errors and no network connection at parse time."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"


def test_dags_parse_without_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    from airflow.dag_processing.dagbag import DagBag

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"a DAG file opened a connection to {address} at parse time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["data_quality", "lake_maintenance", "retrain"]
    retrain = bag.dags["retrain"]
    assert [t.task_id for t in retrain.topological_sort()] == [
        "build_training_set", "train", "evaluate", "promote"]
    outlets = bag.dags["data_quality"].get_task("new_labelled_windows").outlets
    assert [a.name for a in outlets] == ["gold.eeg_windows"]
