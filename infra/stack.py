"""The embedded stack: Apache Kafka (one KRaft node), the clock service, the MLflow tracking server
and (on request) Airflow standalone.

``up`` is idempotent and all-or-nothing: prerequisites and ports are checked before anything starts,
and if one service fails to come up, the ones this call started are stopped again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from core.settings import Settings
from infra.clock_server import udp_clock_alive
from infra.kafka import broker_reachable, ensure_topics, sync_device_acls
from infra.kafka_broker import broker_command, check_jars, node_name, prepare
from infra.preflight import check_java
from infra.processes import ProcessSupervisor, ServiceSpec, ServiceState, http_ok, tcp_open
from infra.spark_daemons import spark_daemon_command, spark_daemon_environment

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "airflow" / "dags"
BROKER, CLOCK, MLFLOW, AIRFLOW = "broker", "clock", "mlflow", "airflow"


@dataclass(frozen=True)
class StackStatus:
    services: list[ServiceState]
    external: dict[str, str]

    @property
    def healthy(self) -> bool:
        """Broker nodes, Spark nodes and MLflow (when managed here) healthy; Airflow healthy if it
        runs at all."""
        required = (CLOCK, MLFLOW)
        return all(
            state.healthy
            for state in self.services
            if state.running or state.name in required or state.name.startswith((BROKER, "spark-"))
        ) and all("UNREACHABLE" not in detail for detail in self.external.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            "services": {
                state.name: {
                    "running": state.running,
                    "healthy": state.healthy,
                    "pid": state.pid,
                    "log": str(state.log_file),
                    "detail": state.detail,
                }
                for state in self.services
            },
            "external": self.external,
        }


def supervisor(settings: Settings) -> ProcessSupervisor:
    return ProcessSupervisor(settings.paths.run_dir, settings.paths.log_dir)


def broker_spec(settings: Settings, node: int = 0) -> ServiceSpec:
    client, controller, tls = settings.broker.node_ports(node)
    ports = {"broker.port": client, "broker.controller_port": controller}
    if tls:
        ports["broker.tls_port"] = tls
    return ServiceSpec(
        name=node_name(settings, node),
        argv=broker_command(settings, node),
        ports=ports,
        # A node is healthy when it answers on its own listener (a cluster's quorum may still form).
        health=lambda: tcp_open(settings.broker.host, client) and broker_reachable(settings, node=node),
        startup_timeout_s=settings.broker.startup_timeout_s,
        prepare=lambda: prepare(settings, node),
    )


def broker_specs(settings: Settings) -> list[ServiceSpec]:
    return [broker_spec(settings, node) for node in range(settings.broker.nodes)]


def spark_master_spec(settings: Settings) -> ServiceSpec:
    """A standalone Spark master (a local cluster), from the pyspark package's own launcher."""
    spark = settings.spark
    return ServiceSpec(
        name="spark-master",
        argv=spark_daemon_command(
            settings,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(spark.master_port),
            "--webui-port",
            str(spark.master_ui_port),
        ),
        ports={"spark.master_port": spark.master_port, "spark.master_ui_port": spark.master_ui_port},
        health=lambda: tcp_open("127.0.0.1", spark.master_port),
        env=spark_daemon_environment(settings, "master"),
        startup_timeout_s=60,
    )


def spark_worker_spec(settings: Settings, number: int) -> ServiceSpec:
    """Worker ``number`` (1-based) of the local Spark cluster: its executors are JVMs of their own."""
    spark = settings.spark
    name = f"spark-worker-{number}"
    port = spark.worker_port(number)
    return ServiceSpec(
        name=name,
        argv=spark_daemon_command(
            settings,
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cores",
            str(spark.worker_cores),
            "--memory",
            spark.worker_memory,
            "--work-dir",
            str(settings.paths.home / "spark" / name),
            "--webui-port",
            "0",
            f"spark://127.0.0.1:{spark.master_port}",
        ),
        ports={"spark.worker_port": port},
        health=lambda: name in alive_spark_workers(settings),
        env=spark_daemon_environment(settings, name),
        startup_timeout_s=60,
    )


def alive_spark_workers(settings: Settings) -> dict[str, str]:
    """The master's view: worker service name -> worker id, for the workers it has ALIVE (each of
    ours listens on its own port, which names it)."""
    url = f"http://127.0.0.1:{settings.spark.master_ui_port}/json/"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            state = json.load(response)
    except OSError:
        return {}
    names = {settings.spark.worker_port(n + 1): f"spark-worker-{n + 1}" for n in range(settings.spark.workers)}
    return {
        names[worker["port"]]: worker["id"]
        for worker in state.get("workers", [])
        if worker.get("state") == "ALIVE" and worker.get("port") in names
    }


def spark_specs(settings: Settings) -> list[ServiceSpec]:
    if not settings.spark.workers:
        return []
    return [spark_master_spec(settings)] + [spark_worker_spec(settings, n + 1) for n in range(settings.spark.workers)]


def clock_spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name=CLOCK,
        argv=[sys.executable, "-m", "neurolake.cli", "clock-server"],
        ports={},
        udp_ports={"clock.port": settings.clock.port},
        health=lambda: udp_clock_alive(settings.clock.host, settings.clock.port),
        env={
            **{
                f"NEUROLAKE_CLOCK__{k.upper()}": str(v)
                for k, v in (("host", settings.clock.host), ("port", settings.clock.port))
            },
            # Its home names whose it is: the test session's sweep finds a leaked one by it.
            "NEUROLAKE_PATHS__HOME": str(settings.paths.home),
        },
        startup_timeout_s=15,
    )


def mlflow_spec(settings: Settings) -> ServiceSpec:
    store = settings.paths.home / "mlflow"
    return ServiceSpec(
        name=MLFLOW,
        argv=[
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            settings.mlflow.host,
            "--port",
            str(settings.mlflow.port),
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--workers",
            "1",
        ],
        ports={"mlflow.port": settings.mlflow.port},
        health=lambda: http_ok(f"http://{settings.mlflow.host}:{settings.mlflow.port}/health"),
        # Default server settings take ~2.4 GiB; without the job runner ~0.44 GiB.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        startup_timeout_s=settings.mlflow.startup_timeout_s,
    )


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Environment for every Airflow process neurolake starts (standalone, `dags test`)."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        # Airflow re-executes `airflow ...` by name; without the venv on PATH every component dies.
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(settings.paths.home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow.parallelism),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": settings.airflow.host,
        "AIRFLOW__API__PORT": str(settings.airflow.port),
        "AIRFLOW__API__WORKERS": "1",
        # Task processes report to the API server; the default URL is port 8080.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
            f"http://{settings.airflow.host}:{settings.airflow.port}/execution/"
        ),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow.log_server_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.airflow.log_server_port + 1),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (f"sqlite:///{settings.paths.home / 'airflow' / 'airflow.db'}"),
        # Task processes load their own settings: give them this stack's, resolved.
        "NEUROLAKE_PATHS__HOME": str(settings.paths.home),
        "NEUROLAKE_PATHS__LAKE_ROOT": str(settings.paths.lake_root),
        "NEUROLAKE_MLFLOW__TRACKING_URI": settings.mlflow.effective_tracking_uri,
        "NEUROLAKE_MLFLOW__MODEL_NAME": settings.mlflow.model_name,
        "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        # The DAG processor reads it when it parses the retrain DAG.
        "NEUROLAKE_AIRFLOW__RETRAIN_CRON": settings.airflow.retrain_cron,
    }


def _airflow_healthy(settings: Settings) -> bool:
    url = f"http://{settings.airflow.host}:{settings.airflow.port}/api/v2/monitor/health"
    with urllib.request.urlopen(url, timeout=2) as response:
        body = json.load(response)
    return all(body.get(component, {}).get("status") == "healthy" for component in ("metadatabase", "scheduler"))


def airflow_spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name=AIRFLOW,
        argv=[str(Path(sys.executable).parent / "airflow"), "standalone"],
        ports={
            "airflow.port": settings.airflow.port,
            "airflow.log_server_port": settings.airflow.log_server_port,
        },
        health=lambda: _airflow_healthy(settings),
        env=airflow_environment(settings),
        startup_timeout_s=settings.airflow.startup_timeout_s,
        # SIGTERM orphans the scheduler's workers; SIGINT shuts standalone down in order.
        stop_signal=signal.SIGINT,
        stop_timeout_s=30.0,
    )


def managed_specs(settings: Settings, with_airflow: bool) -> list[ServiceSpec]:
    specs = []
    if settings.broker.embedded:
        specs += broker_specs(settings)
    specs += spark_specs(settings)
    specs.append(clock_spec(settings))
    if settings.mlflow.tracking_uri is None:
        specs.append(mlflow_spec(settings))
    if with_airflow:
        specs.append(airflow_spec(settings))
    return specs


def up(settings: Settings, with_airflow: bool = False) -> StackStatus:
    sup = supervisor(settings)
    if settings.broker.embedded:
        check_jars(settings)
    check_java(settings)
    specs = managed_specs(settings, with_airflow)
    # Every port is checked before the first start: a conflict must not leave half a stack.
    for spec in specs:
        if sup.running_process(spec.name) is None:
            sup.check_ports_free(spec)
    started: list[ServiceSpec] = []
    try:
        # A cluster's broker nodes wait for one another's quorum: they start side by side.
        brokers = [spec for spec in specs if spec.name.startswith(BROKER)]
        started += _start_together(sup, brokers)
        for spec in specs:
            if spec in brokers:
                continue
            was_running = sup.running_process(spec.name) is not None
            sup.start(spec)
            if not was_running:
                started.append(spec)
        ensure_topics(settings)
        sync_device_acls(settings)
    except BaseException:
        for spec in reversed(started):
            sup.stop(spec)
        raise
    return status(settings)


def _start_together(sup: ProcessSupervisor, specs: list[ServiceSpec]) -> list[ServiceSpec]:
    """Start ``specs`` side by side; the ones this call started (all stopped again if one fails)."""
    from concurrent.futures import ThreadPoolExecutor

    fresh = [spec for spec in specs if sup.running_process(spec.name) is None]
    if not specs:
        return []
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = [pool.submit(sup.start, spec) for spec in specs]
        errors = [future.exception() for future in futures]
    failed = [error for error in errors if error is not None]
    if failed:
        for spec in fresh:
            sup.stop(spec)
        raise failed[0]
    return fresh


def down(settings: Settings) -> list[str]:
    """Stop every service this project may have started, whatever flags `up` had."""
    sup = supervisor(settings)
    stopped = []
    for spec in reversed(managed_specs(settings, with_airflow=True)):
        if sup.stop(spec):
            stopped.append(spec.name)
    # Services `up` started under other settings (a local cluster's nodes, say) have PID files too.
    for name in sup.recorded_names():
        if sup.stop_recorded(name):
            stopped.append(name)
    return stopped


def status(settings: Settings) -> StackStatus:
    sup = supervisor(settings)
    states = [sup.state(spec) for spec in managed_specs(settings, with_airflow=True)]
    external: dict[str, str] = {}
    if not settings.broker.embedded:
        external["kafka"] = (
            f"{settings.kafka.bootstrap_servers} {'reachable' if broker_reachable(settings) else 'UNREACHABLE'}"
        )
    if settings.mlflow.tracking_uri is not None:
        ok = http_ok(settings.mlflow.tracking_uri.rstrip("/") + "/health")
        external["mlflow"] = f"{settings.mlflow.tracking_uri} {'reachable' if ok else 'UNREACHABLE'}"
    return StackStatus(states, external)


class BrokerAndClock:
    """Just the broker (every node of it) and the clock service, for tests and benchmarks that need
    a private pair. A node can be stopped, killed and started on its own; its log stays."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.supervisor = supervisor(settings)
        self.brokers = broker_specs(settings)
        self.broker = self.brokers[0]
        self.clock = clock_spec(settings)

    def start(self) -> None:
        """Every node and the clock, or (raising) none of them: a failed start stops what it had
        started, since the caller's teardown never comes for a stack that did not come up."""
        try:
            self._start_brokers()
            self.supervisor.start(self.clock)
            ensure_topics(self.settings)
            sync_device_acls(self.settings)
        except BaseException:
            self.stop()
            raise

    def _start_brokers(self) -> None:
        _start_together(self.supervisor, self.brokers)

    def start_broker(self, node: int | None = None) -> None:
        if node is None:
            self._start_brokers()
        else:
            self.supervisor.start(self.brokers[node])
        ensure_topics(self.settings)
        sync_device_acls(self.settings)

    def stop_broker(self, node: int | None = None) -> None:
        for spec in self.brokers if node is None else [self.brokers[node]]:
            self.supervisor.stop(spec)

    def kill_broker(self, node: int | None = None) -> None:
        """SIGKILL, as a power cut would: no clean shutdown, no final flush."""
        for spec in self.brokers if node is None else [self.brokers[node]]:
            process = self.supervisor.running_process(spec.name)
            if process is not None:
                process.kill()
                process.wait(30)
                self.supervisor.pid_file(spec.name).unlink(missing_ok=True)

    def stop(self) -> None:
        self.supervisor.stop(self.clock)
        for spec in reversed(self.brokers):
            self.supervisor.stop(spec)


class LocalCluster(BrokerAndClock):
    """The broker's nodes, the clock and the local Spark cluster (master and workers), for the
    tests and benches that take nodes away: a broker node or a worker can be SIGKILLed on its own."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.spark = spark_specs(settings)

    def start(self) -> None:
        super().start()
        try:
            for spec in self.spark:
                self.supervisor.start(spec)
        except BaseException:
            self.stop()
            raise

    def start_spark_worker(self, number: int) -> None:
        self.supervisor.start(self.spark[number])

    def kill_spark_worker(self, number: int) -> None:
        """SIGKILL worker ``number`` (1-based) and the executors it started, together: a machine
        lost, not a daemon restarted (an orphaned executor would keep its tasks)."""
        process = self.supervisor.running_process(f"spark-worker-{number}")
        if process is None:
            return
        members = [process, *process.children(recursive=True)]
        for member in members:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(members, timeout=30)
        self.supervisor.pid_file(f"spark-worker-{number}").unlink(missing_ok=True)

    def stop(self) -> None:
        for spec in reversed(self.spark):
            self.supervisor.stop(spec)
        super().stop()
