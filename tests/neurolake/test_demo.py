"""The demo's way out (no services: the stack's start and stop are replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ServiceError
from core.settings import load_settings
from infra import stack
from neurolake import demo
from tests.conftest import isolated_environ


def test_a_demo_whose_stack_failed_to_start_reports_no_other_labs_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(environ=isolated_environ(tmp_path), cwd=tmp_path)
    reported: list[str] = []
    stopped: list[str] = []

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ServiceError("port 5000 is taken by another process")

    monkeypatch.setattr(stack, "up", refuse)
    monkeypatch.setattr(stack, "down", lambda _settings: stopped.append("down") or [])
    monkeypatch.setattr(demo, "_report_models", lambda _settings: reported.append("models"))
    monkeypatch.setattr(demo, "_report_lake", lambda _settings: reported.append("lake"))

    with pytest.raises(ServiceError, match="port 5000"):
        demo.run_demo(settings, duration_s=1, with_airflow=False, headsets=0)

    assert reported == [] and stopped == ["down"]
