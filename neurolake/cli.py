"""The ``neurolake`` command. Subcommands import their modules lazily: an edge Pi has no Spark."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core import __version__
from core.errors import NeurolakeError
from core.logs import setup_logging
from core.settings import Settings, load_settings

log = logging.getLogger("neurolake")

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    result = stack.up(settings, with_airflow=args.with_airflow)
    _print_status(result.as_dict(), as_json=False)
    return 0 if result.healthy else 1


def _cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    stopped = stack.down(settings)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    result = stack.status(settings)
    _print_status(result.as_dict(), as_json=args.json)
    return 0 if result.healthy else 1


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, indent=2))
        return
    width = max([10, *(len(name) for name in (*status["services"], *status["external"]))])
    print(f"{'service':<{width}} {'state':<10} {'pid':>8}  log / detail")
    for name, info in status["services"].items():
        state = "healthy" if info["healthy"] else ("UNHEALTHY" if info["running"] else "stopped")
        pid = str(info["pid"] or "-")
        print(f"{name:<{width}} {state:<10} {pid:>8}  {info['detail'] or info['log']}")
    for name, detail in status["external"].items():
        print(f"{name:<{width}} {'external':<10} {'-':>8}  {detail}")


def _cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from infra.kafka import describe_topics

    infos = describe_topics(settings)
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0
    print(f"{'topic':<17} {'partitions':>10}  {'policy':<8} {'record type':<15} description")
    for info in infos:
        parts = str(info.partitions) if info.exists else "MISSING"
        print(f"{info.name:<17} {parts:>10}  {info.cleanup_policy:<8} {info.record_type:<15} {info.description}")
    return 0 if all(info.exists for info in infos) else 1


def _cmd_clock_server(args: argparse.Namespace, settings: Settings) -> int:
    from infra.clock_server import serve_clock

    serve_clock(settings.clock.host, settings.clock.port)
    return 0


def _cmd_stream_start(args: argparse.Namespace, settings: Settings) -> int:
    from streaming_jobs.runner import run_streams

    return run_streams(settings, args.target, duration_s=args.duration, trigger_s=args.trigger)


def _cmd_stream_status(args: argparse.Namespace, settings: Settings) -> int:
    from streaming_jobs.runner import read_status

    state = read_status(settings)
    if state is None:
        print("no streaming queries running (start them with `neurolake stream start all`)")
        return 1
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(f"{'query':<12} {'state':<8} {'batch':>6} {'in rows/s':>10} {'done rows/s':>12} {'batch ms':>9}  lag")
    for name, q in state["queries"].items():
        lag = ", ".join(f"{k}={v}" for k, v in q["lag"].items() if v) or "0"
        condition = "active" if q["active"] else ("FAILED" if q["error"] else "stopped")
        if q["active"] and q.get("failures"):
            condition = f"active ({q['failures']} restarts)"
        print(
            f"{name:<12} {condition:<8} {q['last_batch'] if q['last_batch'] is not None else '-':>6} "
            f"{q['input_rows_per_s']:>10} {q['processed_rows_per_s']:>12} {q['batch_ms'] or '-':>9}  {lag}"
        )
    executors = (state.get("work") or {}).get("executors") or {}
    if executors:
        print(
            "last stages' tasks per executor: "
            + ", ".join(
                f"{name} {w['tasks']} tasks {w['run_ms']} ms {w['rows']} rows" for name, w in sorted(executors.items())
            )
        )
    return 0 if all(q["active"] for q in state["queries"].values()) else 1


def _cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.lake_sql import render, run_query, run_spark_query

    if args.engine == "spark":
        if args.version is not None or args.as_of is not None:
            raise NeurolakeError("--version and --as-of go with the DuckDB engine; in Spark write `VERSION AS OF N`")
        from pyspark.errors import PySparkException

        from infra.spark import build_spark_session

        spark = build_spark_session(settings, "neurolake-sql")
        try:
            result = run_spark_query(spark, settings.paths.lake_root, args.query)
        except PySparkException as exc:
            raise NeurolakeError(f"query failed: {str(exc).splitlines()[0]}") from None
        finally:
            spark.stop()
    else:
        import duckdb

        try:
            result = run_query(settings.paths.lake_root, args.query, version=args.version, as_of=args.as_of)
        except duckdb.Error as exc:
            raise NeurolakeError(f"query failed: {str(exc).splitlines()[0]}") from None
    log.info("read %s", ", ".join(f"{name}@v{v}" for name, v in result.versions) or "no table")
    print(render(result.columns, result.rows, args.format))
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from neurolake.demo import run_demo

    return run_demo(
        settings,
        duration_s=args.duration,
        with_airflow=args.with_airflow,
        headsets=args.headsets,
        retrain_after_s=args.retrain_after,
        retrain_windows=args.retrain_windows,
    )


def _cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from dashboard.app import serve

    if args.port is not None:
        settings = settings.model_copy(update={"dashboard": settings.dashboard.model_copy(update={"port": args.port})})
    return serve(settings, duration_s=args.duration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurolake",
        description="neurolake: EEG lab data platform (edge -> Kafka -> Spark -> Delta -> MLflow).",
    )
    parser.add_argument("--version", action="version", version=f"neurolake {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default: $NEUROLAKE_CONFIG, else ./neurolake.toml if present)",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=None,
        help="overrides the log_level setting",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser("up", help="start the embedded stack (broker, MLflow[, Airflow])")
    up.add_argument("--with-airflow", action="store_true", help="also start Airflow standalone")
    up.set_defaults(handler=_cmd_up)

    down = commands.add_parser("down", help="stop every service neurolake started")
    down.set_defaults(handler=_cmd_down)

    status = commands.add_parser("status", help="health of each service; exit 1 if one is unhealthy")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_cmd_status)

    topics = commands.add_parser("topics", help="list the Kafka topics and their partitions")
    topics.add_argument("--json", action="store_true", help="machine-readable output")
    topics.set_defaults(handler=_cmd_topics)

    demo = commands.add_parser("demo", help="run the lab end to end, then stop what it started")
    demo.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="seconds to run before stopping cleanly (0: until Ctrl-C)",
    )
    demo.add_argument("--with-airflow", action="store_true", help="also start Airflow")
    demo.add_argument("--headsets", type=int, default=2, help="simulated headsets (0: none)")
    demo.add_argument(
        "--retrain-windows",
        type=int,
        default=100,
        help="with Airflow: trigger the retrain DAG once gold holds this many labelled windows of the demo's own sessions",
    )
    demo.add_argument(
        "--retrain-after",
        type=float,
        default=None,
        help="with Airflow: trigger the retrain DAG by this many seconds whatever gold holds "
        "(default: 120 s before the end, so the run finishes within the demo; 600 s without --duration)",
    )
    demo.set_defaults(handler=_cmd_demo)

    stream = commands.add_parser("stream", help="the Spark streaming queries (Kafka -> Delta)")
    stream_commands = stream.add_subparsers(dest="stream_command", metavar="STREAM_COMMAND", required=True)
    start = stream_commands.add_parser("start", help="run bronze, silver/gold or all until stopped")
    start.add_argument("target", nargs="?", default="all", choices=["bronze", "silver", "gold", "all"])
    start.add_argument("--duration", type=float, default=None, help="seconds (default: until stopped)")
    start.add_argument(
        "--trigger", type=float, default=None, help="micro-batch interval, seconds (default: lake.trigger_s)"
    )
    start.set_defaults(handler=_cmd_stream_start)
    stream_status = stream_commands.add_parser("status", help="per query: last batch, rows/s, lag")
    stream_status.add_argument("--json", action="store_true")
    stream_status.set_defaults(handler=_cmd_stream_status)

    sql = commands.add_parser("sql", help="SQL over the Delta tables (bronze.*, silver.*, gold.*)")
    sql.add_argument("query", help='e.g. "SELECT count(*) FROM silver.eeg_samples"')
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.add_argument(
        "--engine",
        choices=["duckdb", "spark"],
        default="duckdb",
        help="duckdb (default: instant, in this process) or spark (Delta's own SQL: DESCRIBE HISTORY, "
        "OPTIMIZE, VACUUM, MERGE; a JVM start first)",
    )
    travel = sql.add_mutually_exclusive_group()
    travel.add_argument(
        "--version",
        type=int,
        default=None,
        help="read every table the query names at this Delta version "
        "(or write `FROM gold.eeg_windows VERSION AS OF 3` in the query)",
    )
    travel.add_argument(
        "--as-of",
        default=None,
        metavar="TIME",
        help="read every table as it was at this ISO time (UTC unless it says), "
        "or write `TIMESTAMP AS OF '2026-11-21T10:00'` in the query",
    )
    sql.set_defaults(handler=_cmd_sql)

    dashboard = commands.add_parser("dashboard", help="live EEG, spectra, head map, predictions, health")
    dashboard.add_argument("--port", type=int, default=None, help="default: dashboard.port (15006)")
    dashboard.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    dashboard.set_defaults(handler=_cmd_dashboard)

    clock = commands.add_parser("clock-server", help="the hub's UDP time service (started by `up`)")
    clock.set_defaults(handler=_cmd_clock_server)

    from edge_producers.cli import add_edge_commands, add_stimulus_commands
    from neurolake.access_commands import add_access_commands
    from neurolake.device_commands import add_device_commands
    from neurolake.key_commands import add_key_commands
    from neurolake.lsl_commands import add_lsl_commands
    from neurolake.ml_commands import add_ml_commands
    from neurolake.tls_commands import add_tls_commands

    add_edge_commands(commands)
    add_stimulus_commands(commands)
    add_ml_commands(commands)
    add_access_commands(commands)
    add_key_commands(commands)
    add_device_commands(commands)
    add_tls_commands(commands)
    add_lsl_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        setup_logging(args.log_level or settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except NeurolakeError as exc:
        print(f"neurolake: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("neurolake: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
