"""Airflow's own REST API (``/api/v2``), for what the demo asks of the retrain DAG: trigger it, unpause
it, follow its run and read where the run's time went. An HTTP call costs milliseconds where the
``airflow`` CLI costs ~10 s of CPU per call (it imports Airflow), time the DAG's own tasks need on 2 cores.

The token comes from the simple auth manager (``/auth/token``, no credentials: the local stack runs
with ``simple_auth_manager_all_admins``, :func:`infra.stack.airflow_environment`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import NeurolakeError
from core.settings import Settings

FINISHED = frozenset({"success", "failed"})


@dataclass(frozen=True)
class TaskTime:
    """One task instance of a run: what it did and when (None while it has not started or ended)."""

    task_id: str
    map_index: int
    state: str | None
    start: datetime | None
    end: datetime | None

    @property
    def seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


@dataclass(frozen=True)
class DagRun:
    run_id: str
    state: str
    queued: datetime | None
    start: datetime | None
    end: datetime | None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class AirflowApi:
    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.base = f"http://{settings.airflow.host}:{settings.airflow.port}"
        self.timeout_s = timeout_s
        self._token: str | None = None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._token is None:
            self._token = str(self._send("GET", "/auth/token", None, token=None)["access_token"])
        return self._send(method, path, body, token=self._token)

    def _send(self, method: str, path: str, body: dict[str, Any] | None, token: str | None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise NeurolakeError(f"Airflow API {method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise NeurolakeError(
                f"Airflow API at {self.base} did not answer {method} {path} ({exc}); is it up? (`neurolake up --with-airflow`)"
            ) from exc

    def trigger(self, dag_id: str) -> str:
        """A manual run of ``dag_id`` now; its run id."""
        created = self._call("POST", f"/api/v2/dags/{_quote(dag_id)}/dagRuns", {"logical_date": None})
        return str(created["dag_run_id"])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/api/v2/dags/{_quote(dag_id)}", {"is_paused": paused})

    def run(self, dag_id: str, run_id: str) -> DagRun:
        found = self._call("GET", f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}")
        return DagRun(
            run_id,
            str(found["state"]),
            _time(found.get("queued_at")),
            _time(found.get("start_date")),
            _time(found.get("end_date")),
        )

    def task_times(self, dag_id: str, run_id: str) -> list[TaskTime]:
        found = self._call("GET", f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances?limit=1000")
        return [
            TaskTime(
                t["task_id"],
                int(t.get("map_index", -1)),
                t.get("state"),
                _time(t.get("start_date")),
                _time(t.get("end_date")),
            )
            for t in found["task_instances"]
        ]


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
