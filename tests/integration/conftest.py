from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings, child_environ, load_settings
from infra.ports import local_cluster_ports
from infra.stack import BrokerAndClock, LocalCluster
from schemas.catalog import CONTROL
from schemas.signing import HUB, Keyring, ensure_key, sign
from tests.conftest import isolated_environ

pytestmark = pytest.mark.integration


class Cli:
    """Runs ``neurolake`` in a private home with free ports; `down` on teardown, whatever happened."""

    def __init__(self, home: Path, **extra: str) -> None:
        self.home = home
        self.env = child_environ(isolated_environ(home, **extra))

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "neurolake.cli", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner("down")


class CliHome:
    """The env to run the CLI against a private stack under ``home``."""

    env: dict[str, str]
    home: Path
    cli_argv = (sys.executable, "-m", "neurolake.cli")

    def _settings_for(self, home: Path, neurolake_environ: dict[str, str]) -> Settings:
        """Take ``home`` and the CLI's env; the settings the CLI will load there."""
        self.home = home
        self.env = child_environ(neurolake_environ)
        return load_settings(environ=self.env, cwd=home)

    def neurolake(self, *args: str, **popen) -> subprocess.Popen:
        return subprocess.Popen([*self.cli_argv, *args], env=self.env, cwd=self.home, **popen)

    def simulate(
        self, headsets: int, duration_s: float, *flags: str, stderr: Any = subprocess.DEVNULL
    ) -> subprocess.Popen:
        """``neurolake edge simulate``: ``headsets`` simulated Pis for ``duration_s`` (``flags`` such as
        ``--stimulus``); its summary JSON comes on stdout at the end."""
        return self.neurolake(
            "edge",
            "simulate",
            "--headsets",
            str(headsets),
            "--duration",
            str(duration_s),
            *flags,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    def streams(self, target: str, log_name: str, *extra: str) -> subprocess.Popen:
        """``neurolake stream start TARGET`` in its own process group, so that SIGKILL to the group
        takes the driver and its JVM down together, as a crash would."""
        log_file = open(self.home / f"{log_name}.log", "w")
        return subprocess.Popen(
            [*self.cli_argv, "stream", "start", target, "--trigger", "0.5", *extra],
            env=self.env,
            cwd=self.home,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )


class BrokerStack(CliHome, BrokerAndClock):
    """A private broker and clock service for one test, with the env to run the CLI against them."""

    def __init__(self, home: Path, **extra: str) -> None:
        BrokerAndClock.__init__(self, self._settings_for(home, isolated_environ(home, **extra)))


class ClusterStack(CliHome, LocalCluster):
    """A private local cluster (three broker nodes, a Spark master and two workers) and the clock."""

    def __init__(self, home: Path, **extra: str) -> None:
        LocalCluster.__init__(self, self._settings_for(home, cluster_environ(home, **extra)))


def cluster_environ(home: Path, **extra: str) -> dict[str, str]:
    """NEUROLAKE_* variables for a private local cluster: three broker nodes (each on the base
    ports + 10 k) and a Spark master with two workers (on the master's port + 1, + 2), all free."""
    env = isolated_environ(home, **extra)
    del env["NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS"]  # every node's address, from the settings
    taken = {int(value) for name, value in env.items() if name.endswith("_PORT")}
    broker, controller, master, master_ui = local_cluster_ports(taken=taken)
    env.update(
        NEUROLAKE_BROKER__NODES="3",
        NEUROLAKE_BROKER__NODE_PORT_STEP="10",
        NEUROLAKE_BROKER__PORT=str(broker),
        NEUROLAKE_BROKER__CONTROLLER_PORT=str(controller),
        NEUROLAKE_SPARK__WORKERS="2",
        NEUROLAKE_SPARK__MASTER_PORT=str(master),
        NEUROLAKE_SPARK__MASTER_UI_PORT=str(master_ui),
    )
    env.update(extra)
    return env


def signed(settings, topic: str, value: bytes, device_id: str) -> bytes:  # type: ignore[no-untyped-def]
    """``value`` signed as ``device_id`` would sign it, with that device's key in the hub's keyring
    (made on first use): for tests that produce records themselves, as a registered Pi would."""
    return sign(value, topic, ensure_key(Keyring(settings.security.keyring), device_id))


def hub_signed(settings, value: bytes, device_id: str) -> bytes:  # type: ignore[no-untyped-def]
    """A control record signed as the hub signs what it sends ``device_id``."""
    return sign(value, CONTROL, ensure_key(Keyring(settings.security.keyring), device_id), HUB)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started in its own group, and everything in the group."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerStack]:
    stack = BrokerStack(tmp_path)
    stack.start()
    yield stack
    stack.stop()


def read_topic(settings, topic: str, idle_s: float = 3.0, max_s: float = 60.0) -> list:
    """Every message on every partition of ``topic``, read until nothing new arrives for
    ``idle_s`` (never trusting the broker's high watermark, which hides the last batch)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.client_config(), "group.id": "test-reader", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, last, start = [], time.monotonic(), time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - start < max_s:
            for message in consumer.consume(1000, timeout=0.2):
                if message.error() is None:
                    messages.append(message)
                    last = time.monotonic()
        return messages
    finally:
        consumer.close()


class ModelStack(BrokerStack):
    """Broker, clock and a private MLflow tracking server (the project's own service spec)."""

    def __init__(self, home: Path, **extra: str) -> None:
        super().__init__(home)
        self.env.update(extra)
        self.settings = load_settings(environ=self.env, cwd=home)
        from infra.stack import mlflow_spec

        self.mlflow = mlflow_spec(self.settings)

    def start(self) -> None:
        super().start()
        try:
            self.supervisor.start(self.mlflow)
        except BaseException:
            self.stop()  # a fixture's teardown never comes for a stack that did not come up
            raise

    def stop(self) -> None:
        self.supervisor.stop(self.mlflow)
        super().stop()

    def run(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.cli_argv, *args],
            env={**self.env, **env},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
