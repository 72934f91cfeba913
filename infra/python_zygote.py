"""A Python process, started early and already importing PySpark, that forks Spark's Python processes.

Spark starts a Python process for each kind of Python work, one after another under one JVM lock:
a worker daemon per worker module (the tasks' workers; each Python data source's creation and its
read planning) and a runner per streaming Python source. Each of them imports PySpark, pyarrow and
the sources before it answers, about 1 s each on 2 busy cores, and a streaming start waits for
five of them before its first batch commits.

The zygote imports all of that once, while the JVM starts. Spark is then given ``launcher_path``
as its Python: a two-line script that runs ``zygote_launch.py`` (standard library only, ~15 ms),
which passes its arguments, environment, working directory and standard streams to the zygote.
The zygote forks; the child takes over those streams and runs the requested module as
``__main__``, so what Spark talks to is the module it asked for, already imported. The launcher
stays as the process Spark started: it forwards signals to the child and exits with its status.

Whatever the zygote cannot serve (not running yet, gone, or anything but ``python -m module``)
runs on the real interpreter instead, so the zygote only ever makes a start faster.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.zygote_launch import SOCKET_ENV

log = logging.getLogger(__name__)

# What every Spark Python process of a streaming start imports before it answers.
PYSPARK_MODULES = (
    "pyspark.daemon",
    "pyspark.worker",
    "pyspark.sql.worker.create_data_source",
    "pyspark.sql.worker.plan_data_source_read",
    "pyspark.sql.streaming.python_streaming_source_runner",
)
LAUNCH_SCRIPT = Path(__file__).with_name("zygote_launch.py")
MAX_REQUEST_BYTES = 1 << 20


def launcher_path(run_dir: Path) -> Path:
    """The executable Spark runs as its Python (``PYSPARK_PYTHON``): Spark needs a file, not a
    command line, and ``-S -E`` keep the launcher's own start to the bare interpreter."""
    path = run_dir / "python-via-zygote"
    text = f'#!/bin/sh\nexec "{sys.executable}" -S -E "{LAUNCH_SCRIPT}" "$@"\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(text)
        partial.chmod(0o755)
        partial.replace(path)
    return path


@dataclass
class PythonZygote:
    """A running zygote: ``environment`` points Spark's Python at it."""

    environment: dict[str, str]
    process: subprocess.Popen[bytes]

    def import_later_modules(self) -> None:
        """Import the modules held back so far. They were held back because importing them
        competes for the 2 cores with the JVM's start; once the first batch is in, it no longer does."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)


@contextlib.contextmanager
def running_zygote(run_dir: Path, preload: Sequence[str], later: Sequence[str] = ()) -> Iterator[PythonZygote]:
    """Start a zygote that imports PySpark's worker modules and ``preload`` (``later`` when told
    to). It ends with this block, and on its own if this process dies."""
    for stale in run_dir.glob("python-zygote-*.sock"):  # of a process killed before it cleaned up
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(stale.stem.rsplit("-", 1)[1]), 0)
            continue
        stale.unlink(missing_ok=True)
    socket_path = run_dir / f"python-zygote-{os.getpid()}.sock"
    socket_path.unlink(missing_ok=True)
    # Spark gives its workers PYTHONHASHSEED=0 unless set; forked children keep the zygote's seed.
    env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
    command = [sys.executable, "-m", "infra.python_zygote", "--socket", str(socket_path)]
    process = subprocess.Popen(
        [*command, "--later", ",".join(later), *PYSPARK_MODULES, *preload], env=env, stdin=subprocess.DEVNULL
    )
    try:
        yield PythonZygote({"PYSPARK_PYTHON": str(launcher_path(run_dir)), SOCKET_ENV: str(socket_path)}, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        socket_path.unlink(missing_ok=True)


def serve(socket_path: Path, preload: Sequence[str], later: Sequence[str] = ()) -> None:
    started = time.monotonic()
    for module in preload:
        _preload(module)
    # Listen only once everything is imported: until then launchers use the real interpreter.
    partial = socket_path.with_name(f".{socket_path.name}.partial")
    partial.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(partial))
    listener.listen(64)
    partial.replace(socket_path)
    log.info("python zygote ready in %.1f s (%d modules)", time.monotonic() - started, len(preload))
    parent = os.getppid()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    # A child's exit wakes the loop (its launcher waits for the status), as does a new request.
    exited, wake = socket.socketpair()
    exited.setblocking(False)
    wake.setblocking(False)
    signal.set_wakeup_fd(wake.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    held_back = list(later)
    go_on = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: go_on.set())
    selector.register(exited, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while os.getppid() == parent:
            importing = go_on.is_set() and bool(held_back)
            for key, _ in selector.select(timeout=0 if importing else 1.0):
                if key.fileobj is exited:
                    with contextlib.suppress(BlockingIOError):
                        exited.recv(4096)
                    continue
                connection, _ = listener.accept()
                with contextlib.suppress(OSError, ValueError):
                    child = _fork_request(connection, (listener, exited, wake))
                    if child is not None:
                        children[child] = connection
                        continue
                connection.close()
            _report_exits(children)
            if importing:  # one module at a time: requests are served in between
                _preload(held_back.pop(0))
    finally:
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def _preload(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # a module that cannot load here loads in the child as before
        log.warning("python zygote: could not preload %s: %s", module, exc)


def _fork_request(connection: socket.socket, zygote_sockets: Sequence[socket.socket]) -> int | None:
    """Fork for one launcher's request; the parent returns the child's pid (None: not served, the
    launcher then runs the real interpreter)."""
    connection.settimeout(5)
    message, fds, _, _ = socket.recv_fds(connection, MAX_REQUEST_BYTES, 3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    request = json.loads(message)
    argv: list[str] = request["argv"]
    if len(argv) < 2 or argv[0] != "-m":
        connection.sendall(struct.pack("!i", 0))
        for fd in fds:
            os.close(fd)
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        for own in (*zygote_sockets, connection):
            own.close()
        _become(argv[1], argv[2:], request["env"], request["cwd"], fds)
    for fd in fds:
        os.close(fd)
    connection.sendall(struct.pack("!i", pid))
    return pid


def _become(module: str, args: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> None:
    """In the forked child: take the launcher's streams, environment and directory, run ``module``
    as ``python -m`` would, and never return into the zygote's loop."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = [module, *args]
        # The zygote imported the module on purpose; runpy then warns at every fork that it runs
        # the module's code again as __main__, which is exactly what `python -m module` asks for.
        warnings.filterwarnings("ignore", r".*found in sys\.modules after import of package", RuntimeWarning)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _report_exits(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
            connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve forks of a Python that has imported PySpark")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--later", default="", help="comma-separated modules imported on SIGUSR1")
    parser.add_argument("preload", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    serve(args.socket, args.preload, [m for m in args.later.split(",") if m])
    return 0


if __name__ == "__main__":
    sys.exit(main())
