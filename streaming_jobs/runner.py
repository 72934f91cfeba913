"""`neurolake stream start|status`: run the streaming queries in one process, report their health."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import NeurolakeError
from core.files import replace_file
from core.settings import Settings
from core.stopping import stop_on_signals
from schemas.timebase import now_us

log = logging.getLogger(__name__)

QUERIES = ("bronze", "bronze_devices", "silver_gold")
# silver and gold come from one stateful query: they share the per-session filter state.
TARGETS = {
    "bronze": ("bronze", "bronze_devices"),
    "silver": ("silver_gold",),
    "gold": ("silver_gold",),
    "all": QUERIES,
}


def status_path(settings: Settings) -> Path:
    return settings.paths.run_dir / "stream-status.json"


def source_lag(progress: dict[str, Any]) -> dict[str, int]:
    """How far each source of a query is behind what is available: Kafka records per topic
    partition (Spark's Kafka source), table versions per Delta table (Delta's streaming source)."""
    lag: dict[str, int] = {}
    for source in progress.get("sources", []):
        try:
            end = json.loads(source.get("endOffset") or "{}") or {}
            latest = json.loads(source.get("latestOffset") or "{}") or {}
        except (TypeError, json.JSONDecodeError):
            continue
        if not isinstance(end, dict) or not isinstance(latest, dict):
            continue
        if "reservoirVersion" in latest:
            table = str(source.get("description", "delta")).rstrip("]").rsplit("/", 2)
            name = ".".join(table[-2:]) if len(table) >= 2 else "delta"
            lag[name] = max(0, int(latest["reservoirVersion"]) - int(end.get("reservoirVersion", 0)))
            continue
        for topic, partitions in latest.items():
            if not isinstance(partitions, dict):
                continue
            done = end.get(topic, {}) if isinstance(end.get(topic), dict) else {}
            for partition, offset in partitions.items():
                lag[f"{topic}[{partition}]"] = max(0, int(offset) - int(done.get(partition, 0)))
    return lag


def snapshot(supervised: dict[str, Supervised], work: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"pid": os.getpid(), "updated_us": now_us(), "queries": {}}
    if work is not None:
        result["work"] = work
    for name, item in supervised.items():
        query = item.query
        progress = (query.lastProgress if query is not None else None) or {}
        error = query.exception() if query is not None else None
        result["queries"][name] = {
            "active": bool(query is not None and query.isActive),
            "error": str(error) if error else item.last_error,
            "failures": item.failures,
            "last_batch": progress.get("batchId"),
            "input_rows_per_s": round(progress.get("inputRowsPerSecond") or 0.0, 1),
            "processed_rows_per_s": round(progress.get("processedRowsPerSecond") or 0.0, 1),
            "batch_ms": (progress.get("durationMs") or {}).get("triggerExecution"),
            # Where the last batch's time went: finding the new input (latestOffset), planning, the
            # sink's job (addBatch), the offset and commit logs.
            "phases_ms": dict(progress.get("durationMs") or {}),
            "lag": source_lag(progress),
        }
    return result


@dataclass
class Supervised:
    """One query and its restart schedule: a failed query comes back after a growing pause, and
    never takes the other queries down with it."""

    name: str
    query: Any = None
    failures: int = 0
    restart_at: float | None = None
    last_error: str | None = None
    prepared: bool = False
    first_batch_reported: bool = False

    def backoff_s(self) -> float:
        return min(MAX_BACKOFF_S, 2.0 ** min(self.failures, 10))


MAX_BACKOFF_S = 60.0
# How often the status reads the driver's completed stages (executor task metrics) from its UI.
STAGES_EVERY_S = 10.0
# silver/gold starts once bronze has committed its first batch, or after this long at most: on 2
# cores its start-up slowed bronze's first commit, which is what frees the Pis' spools after a restart.
SILVER_WAITS_FOR_BRONZE_S = 20.0
# Spark's Python workers fork from a daemon that imported the queries' task modules once
# (streaming_jobs/python_daemon.py): each worker imported them itself before, ~1 s for silver's.
STREAM_SPARK_CONF = {"spark.python.daemon.module": "streaming_jobs.python_daemon"}


def run_streams(
    settings: Settings, target: str, duration_s: float | None = None, trigger_s: float | None = None
) -> int:
    if target not in TARGETS:
        raise NeurolakeError(f"unknown stream {target!r}; choose one of {', '.join(TARGETS)}")
    with stop_on_signals("the streams") as stop:
        return _supervise(settings, target, stop, duration_s, trigger_s)


def _supervise(
    settings: Settings, target: str, stop: threading.Event, duration_s: float | None, trigger_s: float | None
) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from infra.python_daemon import warm_daemon
    from infra.spark import build_spark_session, start_python_workers

    started = time.monotonic()
    # The JVM starts in its own process, and so does the Python daemon, which imports the task
    # modules meanwhile; here bronze's writer seeds itself (Delta reads, a producer).
    # On a cluster the executors' workers launch their daemons: only a local session's is this process's.
    local = settings.spark.master.startswith("local")
    with warm_daemon(STREAM_SPARK_CONF["spark.python.daemon.module"]) if local else contextlib.nullcontext():
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(build_spark_session, settings, f"neurolake-stream-{target}", STREAM_SPARK_CONF)
            from streaming_jobs.jobs import start_bronze

            prepared = {
                query: _prepared_bronze_writer(settings, query) for query in TARGETS[target] if query != "silver_gold"
            }
            spark = starting.result()
        log.info("Spark session ready %.1f s after start", time.monotonic() - started)
        start_python_workers(spark).add_done_callback(
            lambda ready: _log_python_workers(ready, time.monotonic() - started)
        )
        return _run_queries(
            settings,
            target,
            stop,
            duration_s,
            trigger_s,
            spark,
            started,
            {
                **{query: _first_with(writer, start_bronze, query) for query, writer in prepared.items()},
                "silver_gold": SilverGoldStarter(),
            },
        )


def _log_python_workers(ready: Future[set[int]], elapsed_s: float) -> None:
    if ready.exception() is None:
        log.info("Python workers ready %.1f s after start", elapsed_s)
    else:
        log.warning("could not start the Python workers ahead (%s); the first tasks start them", ready.exception())


def _prepared_bronze_writer(settings: Settings, query: str) -> Any:
    """Bronze's writer seeds itself from bronze's Delta tables and opens a producer (~0.5 s): done
    while the JVM starts. If that fails, the supervised start builds it again and reports why."""
    from streaming_jobs.jobs import bronze_writer

    try:
        return bronze_writer(settings, query)
    except Exception as exc:
        log.warning("could not prepare %s's writer ahead of the query (%s); its start will retry", query, exc)
        return None


def _first_with(writer: Any, start: Callable[..., Any], query: str) -> Callable[..., Any]:
    """``start`` that uses ``writer`` the first time only: after a failure, a restarted query
    seeds a new writer from what bronze then holds."""
    unused = [writer] if writer is not None else []

    def starter(spark: Any, settings: Settings, trigger_s: float | None = None) -> Any:
        return start(spark, settings, query, trigger_s=trigger_s, writer=unused.pop() if unused else None)

    return starter


class SilverGoldStarter:
    """Starts the silver/gold query. :meth:`prepare` plans it ahead, while bronze makes its first
    commit: the session processor's imports (scipy) and Delta's first view of bronze's tables took
    3-4 s of silver's cold start after that commit (bench/lake_bench.py). The first start uses that
    plan; a restart after a failure plans again."""

    def __init__(self) -> None:
        self._planned: Any = None

    def prepare(self, spark: Any, settings: Settings, trigger_s: float | None = None) -> None:
        # Imported here, once bronze runs: scipy and the session processor (~2 s) would otherwise
        # compete with the JVM's start for the 2 cores.
        from streaming_jobs.silver_gold import silver_gold_writer

        self._planned = silver_gold_writer(spark, settings, trigger_s=trigger_s)

    def __call__(self, spark: Any, settings: Settings, trigger_s: float | None = None) -> Any:
        from streaming_jobs.silver_gold import silver_gold_writer

        planned, self._planned = self._planned, None
        return (planned or silver_gold_writer(spark, settings, trigger_s=trigger_s)).start()


def waiting_for_bronze(supervised: dict[str, Supervised], elapsed_s: float) -> bool:
    """Whether silver/gold should wait: bronze runs here and has not finished its own first batch
    (bronze_devices' batch does not count: it often comes first, and empty), for at most
    SILVER_WAITS_FOR_BRONZE_S after the start."""
    bronze = supervised.get("bronze")
    return (
        bronze is not None
        and elapsed_s < SILVER_WAITS_FOR_BRONZE_S
        and not (bronze.query is not None and bronze.query.lastProgress)
    )


def _run_queries(
    settings: Settings,
    target: str,
    stop: threading.Event,
    duration_s: float | None,
    trigger_s: float | None,
    spark: Any,
    started: float,
    starters: dict[str, Any],
) -> int:
    supervised = {name: Supervised(name) for name in TARGETS[target]}
    path = status_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    first_batch_logged = False
    from streaming_jobs.stage_metrics import stage_metrics_for

    stages = stage_metrics_for(spark)
    stages_read_at = 0.0
    try:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            now = time.monotonic()
            if not first_batch_logged and any(
                i.query is not None and i.query.lastProgress for i in supervised.values()
            ):
                first_batch_logged = True
                log.info("first batch committed %.1f s after start", now - started)
            for item in supervised.values():
                progress = item.query.lastProgress if item.query is not None else None
                if progress and not item.first_batch_reported:
                    # Where a cold start goes: Spark's own phases of the query's first batch.
                    item.first_batch_reported = True
                    log.info(
                        "query %s: first batch done %.1f s after start; its phases (ms): %s",
                        item.name,
                        now - started,
                        progress.get("durationMs"),
                    )
            bronze_pending = waiting_for_bronze(supervised, now - started)
            for item in supervised.values():
                if item.name == "silver_gold" and bronze_pending:
                    _prepare_ahead(item, supervised, starters[item.name], spark, settings, trigger_s)
                    continue
                if item.query is None and (item.restart_at is None or now >= item.restart_at):
                    try:
                        item.query = starters[item.name](spark, settings, trigger_s=trigger_s)
                        log.info("started query %s (%.1f s after start)", item.name, time.monotonic() - started)
                    except Exception as exc:  # a query that cannot start waits its turn again
                        item.failures += 1
                        item.last_error = f"{type(exc).__name__}: {exc}"
                        item.restart_at = now + item.backoff_s()
                        log.error(
                            "query %s could not start (%s); retry in %.0f s",
                            item.name,
                            item.last_error,
                            item.backoff_s(),
                        )
                elif item.query is not None and item.query.exception() is not None:
                    item.failures += 1
                    item.last_error = str(item.query.exception())
                    item.restart_at = now + item.backoff_s()
                    log.error(
                        "query %s failed (%d so far): %s; restarting it in %.0f s",
                        item.name,
                        item.failures,
                        item.last_error.splitlines()[0] if item.last_error else "",
                        item.backoff_s(),
                    )
                    _stop_query(item)
                elif (
                    item.query is not None
                    and item.query.lastProgress
                    and item.failures
                    and item.restart_at is not None
                    and now - item.restart_at > 120
                ):
                    item.failures = 0  # healthy for two minutes: the next failure starts over
                    item.restart_at = None
            if stages is not None and now - stages_read_at >= STAGES_EVERY_S:
                stages_read_at = now
                try:
                    stages.refresh()
                except Exception as exc:  # the UI's figures are a report, never a reason to stop
                    log.debug("stage metrics: %s", exc)
            try:
                work = stages.report() if stages is not None else None
                replace_file(path, json.dumps(snapshot(supervised, work), indent=2))
            except Exception:  # reporting must never take the queries down
                log.exception("could not write the stream status")
            stop.wait(0.2 if bronze_pending else 1.0)
        return 0
    finally:
        for item in supervised.values():
            _stop_query(item)
        spark.stop()
        path.unlink(missing_ok=True)


def _prepare_ahead(
    item: Supervised,
    supervised: dict[str, Supervised],
    starter: Any,
    spark: Any,
    settings: Settings,
    trigger_s: float | None,
) -> None:
    """Plan a waiting query once bronze's own query has started (see :class:`SilverGoldStarter`)."""
    bronze = supervised.get("bronze")
    if item.prepared or bronze is None or bronze.query is None or not isinstance(starter, SilverGoldStarter):
        return
    item.prepared = True
    began = time.monotonic()
    try:
        starter.prepare(spark, settings, trigger_s=trigger_s)
        log.info("planned query %s ahead in %.1f s", item.name, time.monotonic() - began)
    except Exception as exc:  # its start plans again, and reports what fails then
        log.warning("could not plan %s ahead (%s: %s); its start will", item.name, type(exc).__name__, exc)


def _stop_query(item: Supervised) -> None:
    if item.query is None:
        return
    try:
        item.query.stop()
    except Exception as exc:  # stopping must reach every query
        log.warning("stopping %s: %s", item.name, exc)
    item.query = None


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
