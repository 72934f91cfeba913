"""Shared fixtures: isolated settings (own home dir and free ports) so tests never touch a dev stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.settings import Settings, load_settings
from infra.ports import free_ports


def free_port() -> int:
    return free_ports(1)[0]


def isolated_environ(home: Path, **extra: str) -> dict[str, str]:
    """NEUROLAKE_* variables for a private stack under ``home`` on free ports."""
    broker, controller, mlflow, airflow, airflow_logs, spark_ui, clock, dashboard = free_ports(8)
    env = {
        "NEUROLAKE_PATHS__HOME": str(home / "state"),
        "NEUROLAKE_PATHS__LAKE_ROOT": str(home / "lake"),
        "NEUROLAKE_BROKER__PORT": str(broker),
        "NEUROLAKE_BROKER__CONTROLLER_PORT": str(controller),
        "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{broker}",
        "NEUROLAKE_MLFLOW__PORT": str(mlflow),
        "NEUROLAKE_AIRFLOW__PORT": str(airflow),
        "NEUROLAKE_AIRFLOW__LOG_SERVER_PORT": str(airflow_logs),
        "NEUROLAKE_SPARK__UI_PORT": str(spark_ui),
        "NEUROLAKE_CLOCK__PORT": str(clock),
        "NEUROLAKE_DASHBOARD__PORT": str(dashboard),
    }
    env.update(extra)
    return env


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**extra: str) -> Settings:
        return load_settings(environ=isolated_environ(tmp_path, **extra), cwd=tmp_path)

    return build


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The settings of the tests' one local Spark session; stops it at the end."""
    home = tmp_path_factory.mktemp("spark")
    yield load_settings(environ=isolated_environ(home), cwd=home)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@pytest.fixture
def spark(spark_settings: Settings):  # type: ignore[no-untyped-def]
    """One local Spark session (with Delta and Kafka jars) for every test that needs one: a JVM
    start costs seconds, and the tests pass their own lake paths. An integration test that stopped
    it (its own ``build_spark_session`` returns the same session) gets a new one here."""
    from infra.spark import build_spark_session

    return build_spark_session(spark_settings, "neurolake-tests")


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped by SIGTERM (``kill``, a CI time limit) tears its fixtures down as Ctrl-C does,
    so the brokers and servers its tests started stop with it instead of outliving it."""
    import signal

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Nothing a test started outlives the run: any process still running from the run's temporary
    folders (a broker, a clock server, a stream a test forgot) is named and killed here, and the
    run fails, so the test that leaked it gets fixed."""
    import os

    import psutil

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    base = str(factory.getbasetemp())
    mine = {psutil.Process().pid, *(p.pid for p in psutil.Process().parents())}
    leftovers = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid in mine:
            continue
        try:
            command = " ".join(process.info["cmdline"] or [])
            home = process.environ().get("NEUROLAKE_PATHS__HOME", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        own_spark = "SparkSubmit" in command and process.ppid() == os.getpid()  # py4j's JVM: exits with us
        if (base in command or home.startswith(base)) and not own_spark:
            leftovers.append((process, command))
    for process, _ in leftovers:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([p for p, _ in leftovers], timeout=10)
    if leftovers:
        report = "\n".join(f"  pid {p.pid}: {command[:200]}" for p, command in leftovers)
        session.config.get_terminal_writer().line(
            f"\n{len(leftovers)} process(es) outlived the tests that started them and were killed:\n{report}",
            red=True,
        )
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
