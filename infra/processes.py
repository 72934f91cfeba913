"""Start, check and stop the long-running processes of the embedded stack.

Each service gets a PID file (JSON: pid, start time, argv) and a log file. A PID file whose process is
gone, or whose PID now belongs to another program, counts as stale and is removed; we never signal
a process we did not start. Services run in their own session so that stopping one reaches every
child it spawned (gunicorn/uvicorn workers, Airflow's scheduler, triggerer and API server).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from core.errors import ServiceError
from infra.ports import port_is_free

log = logging.getLogger(__name__)

# How long a stopped service's remaining processes get to exit by themselves before they are signalled.
LEFTOVER_GRACE_S = 3.0

HealthCheck = Callable[[], bool]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: Sequence[str]
    ports: Mapping[str, int]  # setting name -> TCP port, for the "port in use" message
    health: HealthCheck
    udp_ports: Mapping[str, int] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    startup_timeout_s: float = 30.0
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout_s: float = 20.0
    # Run before each start (e.g. write a configuration, format storage); raises to refuse the start.
    prepare: Callable[[], None] | None = None


@dataclass(frozen=True)
class ServiceState:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    log_file: Path
    detail: str = ""


class ProcessSupervisor:
    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def running_process(self, name: str) -> psutil.Process | None:
        """The live process recorded in the PID file, or None (removing a stale file)."""
        path = self.pid_file(name)
        try:
            record = json.loads(path.read_text())
            process = psutil.Process(int(record["pid"]))
            if abs(process.create_time() - float(record["create_time"])) > 1.0:
                raise psutil.NoSuchProcess(int(record["pid"]))
            if process.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(int(record["pid"]))
            return process
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, json.JSONDecodeError, psutil.NoSuchProcess, psutil.AccessDenied):
            log.info("removing stale pid file %s", path)
            path.unlink(missing_ok=True)
            return None

    def check_ports_free(self, spec: ServiceSpec) -> None:
        checks = [(s, p, socket.SOCK_STREAM) for s, p in spec.ports.items()]
        checks += [(s, p, socket.SOCK_DGRAM) for s, p in spec.udp_ports.items()]
        for setting, port, kind in checks:
            if not port_is_free(port, kind=kind):
                raise ServiceError(
                    f"port {port} ({setting}) is already in use by another program; stop it or set "
                    f"NEUROLAKE_{setting.replace('.', '__').upper()} to a free port"
                )

    def start(self, spec: ServiceSpec) -> ServiceState:
        """Start ``spec`` unless it already runs; wait until healthy or raise (leaving nothing)."""
        existing = self.running_process(spec.name)
        if existing is not None:
            healthy = _safe_health(spec.health)
            log.info("%s already running (pid %d)", spec.name, existing.pid)
            return ServiceState(spec.name, True, healthy, existing.pid, self.log_file(spec.name))
        self.check_ports_free(spec)
        if spec.prepare is not None:
            spec.prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_file(spec.name)
        log.info("starting %s (log: %s)", spec.name, log_path)
        with log_path.open("ab") as log_handle:
            process = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **spec.env},
                cwd=spec.cwd,
                start_new_session=True,
            )
        record = {
            "pid": process.pid,
            "create_time": psutil.Process(process.pid).create_time(),
            "argv": list(spec.argv),
        }
        self.pid_file(spec.name).write_text(json.dumps(record))
        deadline = time.monotonic() + spec.startup_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file(spec.name).unlink(missing_ok=True)
                raise ServiceError(
                    f"{spec.name} exited with code {process.returncode} during start; last log lines: {tail(log_path)}"
                )
            if _safe_health(spec.health):
                log.info("%s healthy (pid %d)", spec.name, process.pid)
                return ServiceState(spec.name, True, True, process.pid, log_path)
            time.sleep(0.25)
        self.stop(spec)
        raise ServiceError(
            f"{spec.name} was not healthy within {spec.startup_timeout_s:.0f} s and was stopped; "
            f"see {log_path}: {tail(log_path)}"
        )

    def stop(self, spec: ServiceSpec) -> bool:
        """Stop the service and every process it spawned. Returns whether anything was running."""
        process = self.running_process(spec.name)
        if process is None:
            return False
        log.info("stopping %s (pid %d) with %s", spec.name, process.pid, spec.stop_signal.name)
        terminate_tree(process, spec.stop_signal, spec.stop_timeout_s)
        self.pid_file(spec.name).unlink(missing_ok=True)
        return True

    def recorded_names(self) -> list[str]:
        """Every service with a PID file here (running or stale)."""
        return sorted(path.stem for path in self.run_dir.glob("*.pid")) if self.run_dir.is_dir() else []

    def stop_recorded(self, name: str, timeout_s: float = 30.0) -> bool:
        """Stop a service known only by its PID file (started under other settings)."""
        process = self.running_process(name)
        if process is None:
            return False
        log.info("stopping %s (pid %d) with SIGTERM", name, process.pid)
        terminate_tree(process, signal.SIGTERM, timeout_s)
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def state(self, spec: ServiceSpec) -> ServiceState:
        process = self.running_process(spec.name)
        if process is None:
            return ServiceState(spec.name, False, False, None, self.log_file(spec.name), "not running")
        healthy = _safe_health(spec.health)
        return ServiceState(
            spec.name,
            True,
            healthy,
            process.pid,
            self.log_file(spec.name),
            "" if healthy else "running but failing its health check",
        )


def terminate_tree(process: psutil.Process, first_signal: signal.Signals, timeout_s: float) -> None:
    """Stop a service: its leader first, then whatever of its session and children remains.

    Only the leader gets ``first_signal``: supervisors such as ``airflow standalone`` shut their
    children down in order, and signalling every child at once leaves them hanging.
    """
    try:
        members = {process, *process.children(recursive=True)}
    except psutil.NoSuchProcess:
        return
    _signal_all({process}, first_signal)
    psutil.wait_procs([process], timeout=timeout_s)
    # Late children (spawned while shutting down) are in the same session. Some are already on their
    # way out (a PySpark driver's JVM exits once its Python parent's pipe closes): a moment first.
    leftovers = {p for p in members | _session_members(process.pid) if p.is_running()}
    if leftovers:
        _, still = psutil.wait_procs(list(leftovers), timeout=LEFTOVER_GRACE_S)
        leftovers = set(still)
    if leftovers:
        log.info("terminating %d leftover process(es): %s", len(leftovers), _describe(leftovers))
        _signal_all(leftovers, signal.SIGTERM)
        _, alive = psutil.wait_procs(list(leftovers), timeout=5)
        alive = set(alive) | _session_members(process.pid)
        if alive:
            log.warning("killing %d process(es) that outlived SIGTERM: %s", len(alive), _describe(alive))
            _signal_all(alive, signal.SIGKILL)
            psutil.wait_procs(list(alive), timeout=5)


def _describe(processes: set[psutil.Process]) -> str:
    names = []
    for process in sorted(processes, key=lambda p: p.pid):
        try:
            names.append(f"{process.name()} (pid {process.pid})")
        except psutil.NoSuchProcess:
            names.append(f"pid {process.pid} (gone)")
    return ", ".join(names)


def _session_members(session_id: int) -> set[psutil.Process]:
    members = set()
    for candidate in psutil.process_iter():
        try:
            if os.getsid(candidate.pid) == session_id:
                members.add(candidate)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return members


def _signal_all(processes: set[psutil.Process], sig: signal.Signals) -> None:
    for member in processes:
        try:
            member.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _safe_health(check: HealthCheck) -> bool:
    try:
        return bool(check())
    except Exception as exc:  # a health probe must never take the CLI down
        log.debug("health check raised %s", exc)
        return False


def tcp_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status: int = response.status
            return 200 <= status < 300
    except OSError:
        return False


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
