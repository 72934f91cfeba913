"""A private embedded broker (and clock service) for benchmarks, stopped when the block exits."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.settings import Settings, child_environ, load_settings
from infra.ports import free_ports, local_cluster_ports


def _exit_on_sigterm() -> None:
    """A bench stopped with SIGTERM still stops the stack it started (SystemExit runs the finally
    blocks; Python's default SIGTERM action would leave brokers and streams behind)."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@contextlib.contextmanager
def private_broker(extra_env: dict[str, str] | None = None, with_mlflow: bool = False) -> Iterator[Settings]:
    from infra.stack import BrokerAndClock, mlflow_spec

    _exit_on_sigterm()

    with tempfile.TemporaryDirectory(prefix="neurolake-bench-") as home:
        port, controller, clock, mlflow_port, dashboard = free_ports(5)
        env = {
            "NEUROLAKE_PATHS__HOME": str(Path(home) / "state"),
            "NEUROLAKE_BROKER__PORT": str(port),
            # The KRaft controller listens too: a dev stack on the machine holds the default port.
            "NEUROLAKE_BROKER__CONTROLLER_PORT": str(controller),
            "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "NEUROLAKE_CLOCK__PORT": str(clock),
            "NEUROLAKE_MLFLOW__PORT": str(mlflow_port),
            "NEUROLAKE_DASHBOARD__PORT": str(dashboard),
            "NEUROLAKE_PATHS__LAKE_ROOT": str(Path(home) / "lake"),
            **(extra_env or {}),
        }
        settings = load_settings(environ=env, cwd=Path(home))
        services = BrokerAndClock(settings)
        mlflow = mlflow_spec(settings)
        try:
            services.start()
            if with_mlflow:
                services.supervisor.start(mlflow)
            yield settings
        finally:
            services.supervisor.stop(mlflow)
            services.stop()


@contextlib.contextmanager
def private_cluster(extra_env: dict[str, str] | None = None) -> Iterator[tuple[Settings, dict[str, str], object]]:
    """A private local cluster: three broker nodes (KRaft quorum of three, RF 3, min ISR 2), a Spark
    standalone master with two workers, and the clock. Yields the settings, the environment for
    `neurolake` subprocesses, and the :class:`infra.stack.LocalCluster` (to take nodes away)."""

    from infra.stack import LocalCluster

    _exit_on_sigterm()

    with tempfile.TemporaryDirectory(prefix="neurolake-bench-cluster-") as home:
        broker, controller, master, master_ui, clock, mlflow_port, dashboard, ui = local_cluster_ports(extra=4)
        env = {
            "NEUROLAKE_PATHS__HOME": str(Path(home) / "state"),
            "NEUROLAKE_PATHS__LAKE_ROOT": str(Path(home) / "lake"),
            "NEUROLAKE_BROKER__NODES": "3",
            "NEUROLAKE_BROKER__NODE_PORT_STEP": "10",
            "NEUROLAKE_BROKER__PORT": str(broker),
            "NEUROLAKE_BROKER__CONTROLLER_PORT": str(controller),
            "NEUROLAKE_SPARK__WORKERS": "2",
            "NEUROLAKE_SPARK__MASTER_PORT": str(master),
            "NEUROLAKE_SPARK__MASTER_UI_PORT": str(master_ui),
            "NEUROLAKE_SPARK__UI_PORT": str(ui),
            "NEUROLAKE_CLOCK__PORT": str(clock),
            "NEUROLAKE_MLFLOW__PORT": str(mlflow_port),
            "NEUROLAKE_DASHBOARD__PORT": str(dashboard),
            **(extra_env or {}),
        }
        settings = load_settings(environ=env, cwd=Path(home))
        cluster = LocalCluster(settings)
        try:
            cluster.start()
            yield settings, child_environ(env), cluster
        finally:
            cluster.stop()


def cli_environment(settings: Settings) -> dict[str, str]:
    """This process's environment pointed at the private stack, for `neurolake` subprocesses."""
    import os

    return {
        **os.environ,
        "NEUROLAKE_PATHS__HOME": str(settings.paths.home),
        "NEUROLAKE_PATHS__LAKE_ROOT": str(settings.paths.lake_root),
        "NEUROLAKE_BROKER__PORT": str(settings.broker.port),
        "NEUROLAKE_BROKER__CONTROLLER_PORT": str(settings.broker.controller_port),
        "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "NEUROLAKE_CLOCK__PORT": str(settings.clock.port),
        "NEUROLAKE_MLFLOW__PORT": str(settings.mlflow.port),
        "NEUROLAKE_DASHBOARD__PORT": str(settings.dashboard.port),
    }


def machine_speed_s() -> float:
    """Seconds a fixed pure-Python loop takes here, idle: this machine's speed moved by about 2x
    within a session (1.3 s at its usual speed, 1.9 s in a slow hour), and every figure with it."""
    import time

    started = time.perf_counter()
    sum(range(10**8))
    return time.perf_counter() - started


def latency_summary(values_ms: list[float]) -> str:
    """p50/p95/p99/max of latencies in milliseconds, and how many, as the benchmarks print them."""
    import numpy as np

    if not values_ms:
        return "no samples"
    a = np.asarray(values_ms)
    return (
        f"p50 {np.percentile(a, 50):6.2f} ms  p95 {np.percentile(a, 95):6.2f} ms  "
        f"p99 {np.percentile(a, 99):6.2f} ms  max {a.max():6.2f} ms  (n={len(a):,})"
    )
