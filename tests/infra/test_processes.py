"""The supervisor with small real processes (no services needed)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from core.errors import ServiceError
from infra.ports import port_is_free
from infra.processes import ProcessSupervisor, ServiceSpec, tcp_open
from tests.conftest import free_port

# A tiny "service": listens on a port and spawns a grandchild, like a server with workers.
SERVER = """
import socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("child", child.pid, flush=True)
time.sleep(300)
"""


def _spec(port: int, **overrides) -> ServiceSpec:
    values = dict(
        name="toy",
        argv=[sys.executable, "-c", SERVER, str(port)],
        ports={"toy.port": port},
        health=lambda: tcp_open("127.0.0.1", port),
        startup_timeout_s=10,
        stop_timeout_s=5,
    )
    values.update(overrides)
    return ServiceSpec(**values)


@pytest.fixture
def supervisor(tmp_path: Path) -> ProcessSupervisor:
    return ProcessSupervisor(tmp_path / "run", tmp_path / "logs")


def test_start_is_idempotent_and_stop_leaves_no_process(supervisor: ProcessSupervisor) -> None:
    spec = _spec(free_port())
    first = supervisor.start(spec)
    assert first.healthy and first.pid
    tree = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
    assert len(tree) == 2
    second = supervisor.start(spec)
    assert second.pid == first.pid
    assert supervisor.stop(spec)
    time.sleep(0.2)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert not supervisor.pid_file("toy").exists()
    assert supervisor.stop(spec) is False


def test_port_in_use_names_port_and_setting(supervisor: ProcessSupervisor) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(ServiceError, match=f"port {port} \\(toy.port\\).*NEUROLAKE_TOY__PORT"):
            supervisor.start(_spec(port))
    assert not supervisor.pid_file("toy").exists()


def test_crash_during_start_reports_the_log(supervisor: ProcessSupervisor) -> None:
    spec = _spec(free_port(), argv=[sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    with pytest.raises(ServiceError, match="exited with code 3.*boom"):
        supervisor.start(spec)
    assert not supervisor.pid_file("toy").exists()


def test_unhealthy_start_is_stopped_again(supervisor: ProcessSupervisor) -> None:
    spec = _spec(free_port(), health=lambda: False, startup_timeout_s=1)
    with pytest.raises(ServiceError, match="not healthy within"):
        supervisor.start(spec)
    assert supervisor.running_process("toy") is None


def test_stale_or_recycled_pid_file_is_never_signalled(supervisor: ProcessSupervisor) -> None:
    supervisor.run_dir.mkdir(parents=True)
    # Our own (test) process with a wrong start time: a recycled PID, which must be left alone.
    supervisor.pid_file("toy").write_text(json.dumps({"pid": psutil.Process().pid, "create_time": 1.0}))
    assert supervisor.running_process("toy") is None
    assert not supervisor.pid_file("toy").exists()
    supervisor.pid_file("toy").write_text("not json")
    assert supervisor.state(_spec(free_port())).running is False


# A service whose worker outlives it briefly, as a PySpark driver's JVM outlives its Python parent.
WINDING_DOWN = """
import signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1)"])
time.sleep(300)
"""


def test_stop_waits_for_a_worker_winding_down_and_names_one_that_stays(
    supervisor: ProcessSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="infra.processes")
    spec = _spec(free_port(), argv=[sys.executable, "-c", WINDING_DOWN], health=lambda: True)
    supervisor.start(spec)
    time.sleep(0.3)  # the worker has started
    assert supervisor.stop(spec)
    assert "leftover" not in caplog.text  # it ended by itself, unsignalled

    caplog.clear()
    stays = _spec(free_port())
    supervisor.start(stays)
    assert supervisor.stop(stays)
    assert "terminating 1 leftover process(es): python" in caplog.text
