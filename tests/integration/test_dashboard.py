"""The dashboard in headless Chromium: traces, head map and predictions drawn and updating."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batch_jobs.sample_lake import write_sample_lake
from ml.dataset import build_training_set
from ml.registry import train
from tests.integration.browser import PAGE_STATE_JS, headless_chromium
from tests.integration.conftest import ModelStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[ModelStack]:
    stack = ModelStack(tmp_path, NEUROLAKE_ML__RELOAD_INTERVAL_S="1")
    stack.start()
    yield stack
    stack.stop()


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_dashboard_draws_and_updates_live_views(lab: ModelStack, tmp_path: Path) -> None:
    write_sample_lake(lab.settings, sessions=4, seconds=40)
    train(lab.settings, build_training_set(lab.settings.paths.lake_root, lab.settings.ml))
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = {
        name: lab.neurolake(*argv, stdout=subprocess.DEVNULL, stderr=(logs / f"{name}.log").open("w"))
        for name, argv in {
            "scorer": ("score", "live"),
            "dashboard": ("dashboard",),
            "edge": ("edge", "simulate", "--headsets", "1", "--stimulus", "--sensors", "--camera", "--duration", "120"),
        }.items()
    }
    port = lab.settings.dashboard.port
    browser = headless_chromium()
    try:

        def sessions() -> list[str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as response:
                    return json.load(response)["sessions"]
            except OSError:
                return []

        _until(lambda: bool(sessions()), 60, "the dashboard to see the live session")
        browser.get(f"http://127.0.0.1:{port}/")

        def state() -> dict:
            return browser.execute_script(PAGE_STATE_JS)

        _until(
            lambda: state()["predictions"]["rows"] > 0 and state()["headmap_pixels"] > 0,
            60,
            "traces, head map and predictions on the page",
        )
        first = state()
        time.sleep(3)
        second = state()
        assert second["traces"]["rows"] > 0 and second["traces"]["last"] > first["traces"]["last"]
        assert second["predictions"]["rows"] > first["predictions"]["rows"]
        assert second["headmap_pixels"] > 1000
        # The session's own montage model (neurolake-ssvep.<task>.<montage>.<rate>), version 1, once
        # the scorer has loaded it in the background (filter-bank CCA scores the session until then).
        _until(
            lambda: re.search(r"model neurolake-ssvep\.\S+ v1\b", state()["prediction_text"] or "") is not None,
            60,
            "predictions by the session's own champion",
        )
        browser.save_screenshot(str(tmp_path / "dashboard.png"))
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000

        browser.get(f"http://127.0.0.1:{port}/?session=no-such-session")
        _until(
            lambda: "unknown session no-such-session" in (state()["message"] or ""), 60, "the unknown-session message"
        )

        browser.get(f"http://127.0.0.1:{port}/")
        _until(lambda: state()["traces"]["rows"] > 0, 60, "traces after reload")
        processes["edge"].terminate()
        processes["edge"].wait(timeout=30)
        _until(lambda: "no data from" in (state()["status"] or ""), 60, "the stopped-headset message")
        assert state()["traces"]["rows"] > 0  # the page keeps what it had and keeps working
    finally:
        browser.quit()
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
