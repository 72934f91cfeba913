"""Shared fixtures: isolated settings (own home dir and free ports) so tests never touch a dev stack."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from neurolake.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolated_environ(home: Path, **extra: str) -> dict[str, str]:
    """NEUROLAKE_* variables for a private stack under ``home`` on free ports."""
    broker_port = free_port()
    env = {
        "NEUROLAKE_PATHS__HOME": str(home / "state"),
        "NEUROLAKE_PATHS__LAKE_ROOT": str(home / "lake"),
        "NEUROLAKE_BROKER__PORT": str(broker_port),
        "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "NEUROLAKE_MLFLOW__PORT": str(free_port()),
        "NEUROLAKE_AIRFLOW__PORT": str(free_port()),
        "NEUROLAKE_AIRFLOW__LOG_SERVER_PORT": str(free_port()),
        "NEUROLAKE_SPARK__UI_PORT": str(free_port()),
    }
    env.update(extra)
    return env


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**extra: str) -> Settings:
        return load_settings(environ=isolated_environ(tmp_path, **extra), cwd=tmp_path)

    return build
