"""The CLI as a person runs it: one clear line and exit code 2 for each kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import child_environ
from tests.conftest import isolated_environ

NEUROLAKE = [sys.executable, "-m", "neurolake.cli"]


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NEUROLAKE, *args], env=child_environ(env), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("neurolake: error:")]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["up", "down", "status", "topics", "demo"])
def test_every_subcommand_has_help(command: str, tmp_path: Path) -> None:
    result = run_cli([command, "--help"], {}, tmp_path)
    assert result.returncode == 0
    assert "usage: neurolake" in result.stdout


def test_unknown_setting(tmp_path: Path) -> None:
    env = isolated_environ(tmp_path, NEUROLAKE_KAFKA__BOOTSTRAPSERVERS="x:1")
    line = _one_error_line(run_cli(["status"], env, tmp_path))
    assert "unknown setting kafka.bootstrapservers" in line
    assert "did you mean kafka.bootstrap_servers" in line


def test_malformed_toml(tmp_path: Path) -> None:
    (tmp_path / "neurolake.toml").write_text("[broker]\nport = = 3\n")
    line = _one_error_line(run_cli(["up"], isolated_environ(tmp_path), tmp_path))
    assert "not valid TOML" in line
    assert not (tmp_path / "state" / "run").exists()


def test_missing_broker_jars_start_nothing(tmp_path: Path) -> None:
    env = isolated_environ(tmp_path, NEUROLAKE_PATHS__JARS=str(tmp_path / "no-jars"))
    line = _one_error_line(run_cli(["up"], env, tmp_path))
    assert "Kafka broker's jars are missing" in line and "make setup" in line
    assert not list((tmp_path / "state").glob("run/*.pid"))


def test_missing_java_starts_nothing(tmp_path: Path) -> None:
    env = isolated_environ(tmp_path, NEUROLAKE_SPARK__JAVA_HOME=str(tmp_path / "no-java"))
    line = _one_error_line(run_cli(["up"], env, tmp_path))
    assert "Java not found" in line and "NEUROLAKE_SPARK__JAVA_HOME" in line
    assert not list((tmp_path / "state").glob("run/*.pid"))


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = run_cli(["frobnicate"], {}, tmp_path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_status_of_a_stopped_stack(tmp_path: Path) -> None:
    result = run_cli(["status", "--json"], isolated_environ(tmp_path), tmp_path)
    assert result.returncode == 1, result.stderr
    assert '"running": false' in result.stdout


def test_stimulus_serve_on_a_port_in_use_starts_nothing(tmp_path: Path) -> None:
    import socket

    from core.settings import load_settings
    from schemas.signing import Keyring, ensure_key

    env = isolated_environ(tmp_path)
    ensure_key(Keyring(load_settings(environ=env, cwd=tmp_path).security.keyring), "pi-1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_error_line(run_cli(["stimulus", "serve", "--port", str(port), "--duration", "5"], env, tmp_path))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "edge.stimulus.presenter_port" in line
    from edge_producers.spool import Spool

    for path in (tmp_path / "state").glob("spool/*.sqlite"):
        assert Spool(path, 10**8).stats().records == 0  # no session was started
    assert run_cli(["stimulus", "serve", "--help"], env, tmp_path).returncode == 0
