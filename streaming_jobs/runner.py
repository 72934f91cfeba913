"""`neurolake stream start|status`: run the streaming queries in one process, report their health."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from neurolake.errors import NeurolakeError
from neurolake.settings import Settings

log = logging.getLogger(__name__)

QUERIES = ("bronze", "silver_gold")
# silver and gold come from one stateful query: they share the per-session filter state.
TARGETS = {"bronze": ("bronze",), "silver": ("silver_gold",), "gold": ("silver_gold",),
           "all": QUERIES}


def status_path(settings: Settings) -> Path:
    return settings.paths.run_dir / "stream-status.json"


def _lag(progress: dict[str, Any]) -> dict[str, int]:
    lag: dict[str, int] = {}
    for source in progress.get("sources", []):
        try:
            end = json.loads(source.get("endOffset") or "{}") or {}
            latest = json.loads(source.get("latestOffset") or "{}") or {}
        except (TypeError, json.JSONDecodeError):
            continue
        if not isinstance(end, dict) or not isinstance(latest, dict):
            continue
        for topic, spec in latest.items():
            done = end.get(topic, {})
            same = done.get("id") == spec.get("id")
            for partition, offset in spec.get("p", {}).items():
                behind = offset - (done.get("p", {}).get(partition, 0) if same else 0)
                lag[f"{topic}[{partition}]"] = max(0, int(behind))
    return lag


def snapshot(queries: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"pid": os.getpid(), "updated_us": time.time_ns() // 1000, "queries": {}}
    for name, query in queries.items():
        progress = query.lastProgress or {}
        error = query.exception()
        result["queries"][name] = {
            "active": query.isActive,
            "error": str(error) if error else None,
            "last_batch": progress.get("batchId"),
            "input_rows_per_s": round(progress.get("inputRowsPerSecond") or 0.0, 1),
            "processed_rows_per_s": round(progress.get("processedRowsPerSecond") or 0.0, 1),
            "batch_ms": (progress.get("durationMs") or {}).get("triggerExecution"),
            "lag": _lag(progress),
        }
    return result


def run_streams(settings: Settings, target: str, duration_s: float | None = None,
                trigger_s: float | None = None) -> int:
    from infra.spark import build_spark_session
    from streaming_jobs.jobs import start_bronze
    from streaming_jobs.silver_gold import start_silver_gold

    if target not in TARGETS:
        raise NeurolakeError(f"unknown stream {target!r}; choose one of {', '.join(TARGETS)}")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    spark = build_spark_session(settings, f"neurolake-stream-{target}")
    starters = {"bronze": start_bronze, "silver_gold": start_silver_gold}
    queries: dict[str, Any] = {}
    path = status_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        for name in TARGETS[target]:
            queries[name] = starters[name](spark, settings, trigger_s=trigger_s)
            log.info("started query %s", name)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        failed = None
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                state = snapshot(queries)
                path.write_text(json.dumps(state, indent=2))
            except Exception:  # reporting must never take the queries down
                log.exception("could not write the stream status")
                stop.wait(2.0)
                continue
            failed = next((n for n, q in state["queries"].items() if q["error"]), None)
            if failed:
                log.error("query %s failed: %s", failed, state["queries"][failed]["error"])
                break
            stop.wait(2.0)
        return 1 if failed else 0
    finally:
        for name, query in queries.items():
            try:
                query.stop()
            except Exception as exc:  # stopping must reach every query
                log.warning("stopping %s: %s", name, exc)
        spark.stop()
        path.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def read_status(settings: Settings) -> dict[str, Any] | None:
    import psutil

    path = status_path(settings)
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not psutil.pid_exists(state.get("pid", -1)):
        return None
    return state
