"""Spark's Python worker daemon for the lake's sessions: PySpark's own daemon, imported from the
installed, compiled PySpark.

Spark starts the daemon with its own copy of PySpark first on ``PYTHONPATH``
(``$SPARK_HOME/python/lib/pyspark.zip``). A zip holds no compiled modules, so the daemon compiled
every PySpark module it imports from source at every start (~0.65 s of its ~2.2 s on the 2-core
machine, on the path to a session's first Python task) and each worker again the modules its task
imports later. With PySpark installed as a package, ``SPARK_HOME`` is that package and the zip holds
the same version, so the daemon imports the installed copy, compiled at install time. Every session
of :func:`infra.spark.build_spark_session` names this module (``spark.python.daemon.module``); a
session whose tasks share heavy modules names one that calls :func:`serve` with them
(``streaming_jobs/python_daemon.py``).

Such a daemon can also be started ahead of its session (:func:`warm_daemon`): Spark starts its
daemon only when a task first needs a Python worker, after the JVM's own start, and its imports then
lie on the path to that task. A daemon started with the process imports while the JVM starts, and
the daemon process that Spark launches later hands its streams and environment over to it
(:func:`serve_or_hand_over`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from infra.python_workers import freeze_long_lived_objects

log = logging.getLogger(__name__)

# Where the daemon launched by Spark finds a daemon started ahead (:func:`warm_daemon`). The JVM
# inherits it from the process that starts the session, and its daemon launch from the JVM. Not
# NEUROLAKE_*: the settings refuse variables of theirs they do not know.
WARM_DAEMON_ENV = "WARM_PYTHON_DAEMON_SOCKET"
# How long a launched daemon waits for the one started ahead to finish its imports and take over.
HANDOVER_TIMEOUT_S = 120.0
MAX_REQUEST_BYTES = 1 << 20


def prefer_installed_pyspark(path: list[str], installed: Path) -> list[str]:
    """``path`` (a ``sys.path``) with the zips of ``installed`` (an installed PySpark package, the
    ``SPARK_HOME`` that Spark puts them on the path from) moved last. Zips of any other Spark stay
    where they are: only the installed package's are known to hold the same version."""
    bundled = (installed / "python" / "lib").resolve()
    moved = [entry for entry in path if entry.endswith(".zip") and Path(entry).resolve().parent == bundled]
    return [entry for entry in path if entry not in moved] + moved


# The schema of what :func:`report_daemon` yields.
DAEMON_PID_SCHEMA = "daemon_pid long"


def report_daemon(batches: Iterator[Any]) -> Iterator[Any]:
    """A task (``mapInArrow``) that does nothing but report the process id of the daemon that forked
    its worker (:func:`infra.spark.start_python_workers`)."""
    import pyarrow as pa

    for _ in batches:
        pass
    yield pa.record_batch({"daemon_pid": [os.getppid()]})


def serve(task_modules: Sequence[str] = ()) -> None:
    """Run PySpark's daemon from the installed PySpark, with ``task_modules`` imported (and frozen,
    :mod:`infra.python_workers`) before it forks its first worker."""
    import_daemon_modules(task_modules)
    from pyspark import daemon

    daemon.manager()


def import_daemon_modules(task_modules: Sequence[str]) -> None:
    """A daemon's imports before it forks: PySpark's daemon from the installed package, then
    ``task_modules``, frozen."""
    sys.path[:] = prefer_installed_pyspark(sys.path, Path(sysconfig.get_paths()["purelib"]) / "pyspark")
    from pyspark import daemon  # noqa: F401

    for name in task_modules:
        importlib.import_module(name)
    if task_modules:
        freeze_long_lived_objects()


@contextlib.contextmanager
def warm_daemon(module: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``module``'s daemon now (``python -m module --warm FD PID``, whose ``__main__`` calls
    :func:`serve_warm`), ahead of the session this block then starts: its imports (~1.3 s of CPU,
    3-4 s while a JVM starts beside it) overlap the JVM's start instead of following it. The
    session's daemon launch hands over to it (:func:`serve_or_hand_over`). It ends with the session's
    JVM when it took over, with this block when it did not, and on its own if this process dies."""
    folder = Path(tempfile.mkdtemp(prefix="neurolake-daemon-"))  # a Unix socket's path is short
    socket_path = folder / "daemon.sock"
    # Listening before the daemon runs: a launched daemon that comes early waits in the backlog.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(socket_path))
        listener.listen(4)
        # Spark gives its Python processes PYTHONHASHSEED=0 unless the driver's environment sets
        # one; the hash seed is fixed when an interpreter starts, so this daemon starts with it.
        env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--warm", str(listener.fileno()), str(os.getpid())],
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=(listener.fileno(),),
        )
    os.environ[WARM_DAEMON_ENV] = str(socket_path)
    try:
        yield process
    finally:
        os.environ.pop(WARM_DAEMON_ENV, None)
        if not socket_path.exists():  # it took over: it ends when the stopped JVM closes its stdin
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        socket_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def serve_warm(listener: socket.socket, parent: int, task_modules: Sequence[str]) -> None:
    """The daemon started ahead: import ``task_modules``, take over the first launched daemon that
    connects to ``listener`` (its standard streams, arguments, environment and directory; it waits
    for the imports rather than making its own), and run PySpark's daemon as that process would
    have. Returns without serving if its ``parent`` (a process id) ends first."""
    socket_path = Path(listener.getsockname())
    # A Ctrl-C at the terminal reaches the whole process group; the stream that started this
    # process handles it, and ends this process if it has not taken over.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_daemon_modules(task_modules)
    listener.settimeout(1.0)
    taken: tuple[dict[str, Any], list[int]] | None = None
    while taken is None and os.getppid() == parent:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        with connection:
            taken = _take_request(connection, task_modules)
    listener.close()
    socket_path.unlink(missing_ok=True)
    if taken is None:
        return
    request, fds = taken
    sys.argv[1:] = request["argv"]  # PySpark's daemon reads its worker module from them
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from pyspark import daemon

    daemon.manager()


def _take_request(connection: socket.socket, task_modules: Sequence[str]) -> tuple[dict[str, Any], list[int]] | None:
    """A launched daemon's request and its standard streams, when this process can serve it (the
    same task modules, interpreter and hash seed); answers with this process's id, or 0 to have it
    serve itself."""
    connection.settimeout(10)
    fds: list[int] = []
    try:
        message, fds, _, _ = socket.recv_fds(connection, MAX_REQUEST_BYTES, 3)
        request = json.loads(message)
        usable = (
            len(fds) == 3
            and request["task_modules"] == list(task_modules)
            and all(isinstance(arg, str) for arg in request["argv"])
            and os.path.realpath(request["executable"]) == os.path.realpath(sys.executable)
            and request["env"].get("PYTHONHASHSEED", "0") == os.environ.get("PYTHONHASHSEED", "0")
        )
        connection.sendall(struct.pack("!i", os.getpid() if usable else 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("warm Python daemon: unusable request (%s)", exc)
        usable = False
    if usable:
        return request, fds
    for fd in fds:
        os.close(fd)
    return None


def serve_or_hand_over(task_modules: Sequence[str]) -> None:
    """What the daemon that Spark launches runs: if a daemon was started ahead
    (:data:`WARM_DAEMON_ENV`), hand this process's standard streams, environment and directory over
    to it and stay until it ends, passing on the signals Spark sends; otherwise :func:`serve`."""
    path = os.environ.pop(WARM_DAEMON_ENV, None)
    warm = _hand_over(path, task_modules) if path else None
    if warm is None:
        serve(task_modules)
        return
    try:
        pidfd = os.pidfd_open(warm)
    except ProcessLookupError:
        return

    def forward(number: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(warm, number)

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, forward)
    select.select([pidfd], [], [])  # readable when the daemon that took over has ended


def _hand_over(path: str, task_modules: Sequence[str]) -> int | None:
    """The process id of the daemon at ``path`` once it has this process's streams; None when there
    is none there or it declined."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(HANDOVER_TIMEOUT_S)
            connection.connect(path)
            request = {
                "task_modules": list(task_modules),
                "executable": sys.executable,
                "argv": sys.argv[1:],
                "env": dict(os.environ),
                "cwd": os.getcwd(),
            }
            socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
            answer = b""
            while len(answer) < 4:
                chunk = connection.recv(4 - len(answer))
                if not chunk:
                    return None
                answer += chunk
    except OSError:
        return None
    pid = int(struct.unpack("!i", answer)[0])
    return pid or None


def main(argv: Sequence[str], task_modules: Sequence[str] = ()) -> None:
    """A daemon module's ``__main__``: as Spark launches it (its worker module the argument), or
    ``--warm FD PID`` (a listening socket, the process that started it) when started ahead of its
    session (:func:`warm_daemon`)."""
    if argv[:1] == ["--warm"]:
        serve_warm(socket.socket(fileno=int(argv[1])), int(argv[2]), task_modules)
    else:
        serve_or_hand_over(task_modules)


if __name__ == "__main__":
    main(sys.argv[1:])
