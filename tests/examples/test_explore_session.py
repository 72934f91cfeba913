"""The example script runs against a fresh lake (it backfills a session) and writes its figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import child_environ
from tests.conftest import isolated_environ

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "explore_session.py"


def test_explore_session_example_runs(tmp_path: Path) -> None:
    env = child_environ(isolated_environ(tmp_path))
    result = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path / "figures")], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "flicker_12hz" in result.stderr and "mean_cca_12hz" in result.stderr
    assert {p.name for p in (tmp_path / "figures").iterdir()} >= {"psd.png", "epochs_flicker_12hz.png"}
