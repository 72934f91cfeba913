"""The zygote serves `python -m module` as the real interpreter would, and steps aside otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from infra.python_zygote import SOCKET_ENV, running_zygote

PROBE = """
import os, sys
print("argv", sys.argv[1:], "cwd", os.getcwd(), "probe", os.environ.get("PROBE"), "parent", os.getppid())
print("stdin", sys.stdin.read())
print("on stderr", file=sys.stderr)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture
def zygote(tmp_path: Path):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "zygote_probe.py").write_text(PROBE)
    (modules / "held_back.py").write_text("import os\nLOADED_IN = os.getpid()\n")
    (modules / "probe_package").mkdir()
    (modules / "probe_package" / "__init__.py").write_text("")
    (modules / "probe_package" / "preloaded.py").write_text("if __name__ == '__main__':\n    print('ran as main')\n")
    environment = {**os.environ, "PYTHONPATH": str(modules)}
    old = dict(os.environ)
    os.environ.update(environment)  # the zygote inherits this process's environment
    try:
        with running_zygote(tmp_path / "run", ["json", "probe_package.preloaded"], later=["held_back"]) as running:
            deadline = time.monotonic() + 30
            while not Path(running.environment[SOCKET_ENV]).exists():
                assert time.monotonic() < deadline, "the zygote never started listening"
                time.sleep(0.02)
            yield running, {**environment, **running.environment}
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_a_module_runs_with_the_launchers_arguments_streams_environment_and_directory(zygote, tmp_path) -> None:
    running, environment = zygote
    result = subprocess.run(
        [running.environment["PYSPARK_PYTHON"], "-m", "zygote_probe", "a", "b"],
        input="from the JVM",
        capture_output=True,
        text=True,
        env={**environment, "PROBE": "seen", "EXIT_CODE": "3"},
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 3
    assert f"argv ['a', 'b'] cwd {tmp_path} probe seen" in result.stdout
    assert "stdin from the JVM" in result.stdout
    assert "on stderr" in result.stderr
    # Forked by the zygote, not started by the launcher: the launcher is not its parent.
    parent = int(result.stdout.split("parent ")[1].split()[0])
    assert parent == running.process.pid


def test_a_preloaded_module_of_a_package_runs_as_main_without_a_warning(zygote) -> None:
    # Spark's worker modules (pyspark.daemon, ...) are preloaded; runpy's "found in sys.modules"
    # warning at every fork would fill the stream's log.
    running, environment = zygote
    result = subprocess.run(
        [running.environment["PYSPARK_PYTHON"], "-m", "probe_package.preloaded"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "ran as main" in result.stdout
    assert "RuntimeWarning" not in result.stderr


def test_the_launcher_passes_sigterm_on_and_ends_as_the_child_did(zygote) -> None:
    running, environment = zygote
    launched = subprocess.Popen(
        [running.environment["PYSPARK_PYTHON"], "-m", "http.server", "0", "--bind", "127.0.0.1"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    launched.terminate()
    assert launched.wait(10) == -signal.SIGTERM


def test_anything_but_python_dash_m_runs_on_the_real_interpreter(zygote) -> None:
    running, environment = zygote
    result = subprocess.run(
        [
            running.environment["PYSPARK_PYTHON"],
            "-c",
            "import sys; print(sys.flags.no_site, sys.flags.ignore_environment)",
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.split() == ["0", "0"]  # not the launcher's -S -E


def test_without_a_zygote_the_launcher_runs_the_real_interpreter(zygote, tmp_path) -> None:
    running, environment = zygote
    result = subprocess.run(
        [running.environment["PYSPARK_PYTHON"], "-m", "zygote_probe"],
        input="",
        capture_output=True,
        text=True,
        env={**environment, SOCKET_ENV: str(tmp_path / "no-such.sock")},
        timeout=30,
    )
    assert result.returncode == 0
    parent = int(result.stdout.split("parent ")[1].split()[0])
    assert parent != running.process.pid


def test_held_back_modules_load_only_when_asked(zygote) -> None:
    running, environment = zygote
    probe = "import sys; print('held_back' in sys.modules)"

    def loaded() -> bool:
        result = subprocess.run(
            [running.environment["PYSPARK_PYTHON"], "-m", "runpy_probe"],
            capture_output=True,
            text=True,
            env=environment,
            timeout=30,
        )
        return result.stdout.strip() == "True"

    modules = Path(environment["PYTHONPATH"])
    (modules / "runpy_probe.py").write_text(probe)
    assert not loaded()
    running.import_later_modules()
    deadline = time.monotonic() + 30
    while not loaded():
        assert time.monotonic() < deadline, "the held-back module was never imported"
        time.sleep(0.1)


def test_the_zygote_ends_with_its_block(tmp_path) -> None:
    with running_zygote(tmp_path / "run", []) as running:
        pass
    assert running.process.poll() is not None
    assert not Path(running.environment[SOCKET_ENV]).exists()
    # The launcher script stays for the next start.
    assert (tmp_path / "run" / "python-via-zygote").is_file()
