"""Where the lake's work runs: per stage of the streaming queries, the tasks' rows and time on each
executor, from the driver's own monitoring REST API (Spark UI, ``/api/v1``). On a cluster the
executors are numbered; work on ``driver`` would mean it ran in the driver's JVM."""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

# Task metrics that count rows, whichever way the stage moved them.
ROW_METRICS = ("inputRecords", "outputRecords", "shuffleReadRecords", "shuffleWriteRecords")


def query_of(description: str | None) -> str | None:
    """The streaming query a stage belongs to: Spark describes a micro-batch's jobs as
    ``NAME\\nid = ...\\nrunId = ...\\nbatch = N``."""
    if not description or "\nrunId = " not in description:
        return None
    return description.split("\n", 1)[0].strip() or None


def summarise_stage(stage: dict[str, Any]) -> dict[str, Any]:
    """One stage (the REST API's StageData with ``details=true``) as the status reports it."""
    executors = {
        executor: {
            "tasks": int(summary.get("succeededTasks", 0)) + int(summary.get("failedTasks", 0)),
            "run_ms": int(summary.get("taskTime", 0)),
            "rows": max(int(summary.get(metric, 0)) for metric in ROW_METRICS),
        }
        for executor, summary in (stage.get("executorSummary") or {}).items()
    }
    return {
        "stage": stage["stageId"],
        "attempt": stage.get("attemptId", 0),
        "query": query_of(stage.get("description")),
        "name": (stage.get("name") or "").split(" at ", 1)[0],
        "tasks": stage.get("numTasks", 0),
        "run_ms": int(stage.get("executorRunTime", 0)),
        "rows": max(int(stage.get(metric, 0)) for metric in ROW_METRICS),
        "executors": executors,
    }


def executor_totals(stages: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Tasks, run time and rows per executor over ``stages`` (summarised)."""
    totals: dict[str, dict[str, int]] = {}
    for stage in stages:
        for executor, figures in stage["executors"].items():
            total = totals.setdefault(executor, {"tasks": 0, "run_ms": 0, "rows": 0})
            for key, value in figures.items():
                total[key] += value
    return totals


class StageMetrics:
    """Follows the driver's completed stages; keeps the last ``keep`` of the streaming queries'."""

    def __init__(self, ui_url: str, app_id: str, keep: int = 12) -> None:
        self.base = f"{ui_url.rstrip('/')}/api/v1/applications/{app_id}"
        self.keep = keep
        self.stages: list[dict[str, Any]] = []
        self.seen: set[tuple[int, int]] = set()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=2) as response:
            return json.load(response)

    def refresh(self) -> None:
        listed = self._get("/stages?status=complete")
        fresh = [s for s in listed if (s["stageId"], s.get("attemptId", 0)) not in self.seen]
        # Newest first in the API's list; only the last few are worth a detailed read.
        for stage in sorted(fresh, key=lambda s: s["stageId"])[-self.keep :]:
            key = (stage["stageId"], stage.get("attemptId", 0))
            detailed = self._get(f"/stages/{key[0]}/{key[1]}?details=true&taskStatus=SUCCESS")
            summary = summarise_stage({**detailed, "description": detailed.get("description")})
            if summary["query"] is not None:
                self.stages.append(summary)
        self.seen.update((s["stageId"], s.get("attemptId", 0)) for s in listed)
        self.stages = self.stages[-self.keep :]

    def report(self) -> dict[str, Any]:
        return {"stages": self.stages, "executors": executor_totals(self.stages)}


def stage_metrics_for(spark: Any) -> StageMetrics | None:
    """A follower of ``spark``'s stages, or None when its UI (and so the REST API) is off."""
    url = spark.sparkContext.uiWebUrl
    if not url:
        return None
    return StageMetrics(url, spark.sparkContext.applicationId)
