from __future__ import annotations

from collections.abc import Callable

from core.settings import Settings
from infra.stack import airflow_environment


def test_airflow_tasks_reach_this_api_server_and_this_lake(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    env = airflow_environment(settings)
    # Without it, task processes call localhost:8080 and every task fails before it starts.
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (f"http://127.0.0.1:{settings.airflow.port}/execution/")
    assert env["NEUROLAKE_PATHS__LAKE_ROOT"] == str(settings.paths.lake_root)
    assert env["NEUROLAKE_MLFLOW__TRACKING_URI"] == settings.mlflow.effective_tracking_uri
