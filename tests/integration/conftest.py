from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import isolated_environ

pytestmark = pytest.mark.integration


class Cli:
    """Runs ``neurolake`` in a private home with free ports; `down` on teardown, whatever happened."""

    def __init__(self, home: Path, **extra: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROLAKE_")}
        self.env.update(isolated_environ(home, **extra))

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "neurolake.cli", *args],
            env=self.env, cwd=self.home, capture_output=True, text=True, timeout=timeout,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner("down")
