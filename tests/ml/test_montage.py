"""A model per montage: the key a session record gives, and the registered model it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from core.settings import EdgeSettings, load_settings
from edge_producers.clock import ClockProbe
from edge_producers.runtime import DeviceRunner
from edge_producers.spool import Spool
from ml.montage import BOARD_TAG, CHANNELS_TAG, RATE_TAG, key_for_session
from schemas.codec import default_codec
from tests.conftest import free_port


def _record(**changes: object) -> dict:
    record = {
        "session_id": "s",
        "board": "CYTON_DAISY_BOARD",
        "sample_rate_hz": 125.0,
        "channel_names": [f"ch{i}" for i in range(16)] + ["pulse"],
        "channel_types": ["eeg"] * 16 + ["pulse"],
        "task": "ssvep",
        "metadata": {"stimulus.a": "8.0", "stimulus.b": "10.0", "stimulus_layout": "classes"},
    }
    return {**record, **changes}


def test_board_channels_rate_and_stimulus_each_make_another_key() -> None:
    base = key_for_session(_record())
    assert base.registered_name("lab") == f"lab.{base.task}.{base.montage}.125hz"
    assert base.task.startswith("ssvep2-") and base.montage.startswith("cyton_daisy_board-16ch-")
    assert base.stimulus == (("a", 8.0), ("b", 10.0)) and len(base.channels) == 16
    others = [
        _record(board="CYTON_BOARD"),
        _record(sample_rate_hz=250.0),
        _record(channel_names=[f"ch{i}" for i in range(15)] + ["Oz", "pulse"]),
        _record(metadata={"stimulus.a": "8.0", "stimulus.b": "12.0"}),
        _record(task="motor"),
    ]
    keys = {key_for_session(r) for r in others}
    assert base not in keys and len(keys) == len(others)
    # What does not change a model's inputs or classes does not change its key.
    assert key_for_session(_record(session_id="t", metadata={**_record()["metadata"], "stimulus_layout": "x"})) == base
    tags = base.tags("lab")
    assert (
        tags[BOARD_TAG] == "CYTON_DAISY_BOARD" and tags[RATE_TAG] == "125" and tags[CHANNELS_TAG].startswith("ch0,ch1")
    )


def test_mlflow_accepts_the_names() -> None:
    from mlflow.utils.validation import _validate_model_name

    _validate_model_name(key_for_session(_record(board="weird/board: name")).registered_name("neurolake-ssvep"))


@pytest.mark.parametrize("board", ["simulated", "cyton", "cyton_daisy"])
def test_the_sample_lake_trains_the_model_a_live_headset_is_routed_to(tmp_path: Path, board: str) -> None:
    """A headset on the edge runtime and the sample lake (what the demo's first champion is trained
    on) give the same key for the same board: the first champion serves the lab's headsets."""
    settings = load_settings(environ={"NEUROLAKE_EDGE__SIMULATION__BOARD": board}, cwd=tmp_path)
    sample = simulate_session(settings, 0, 2.0, SESSION_START_US)
    edge = EdgeSettings(simulation={"board": board}, stimulus={"enabled": True})
    clock = ClockProbe("127.0.0.1", free_port(), probes_per_round=1, timeout_s=0.01)
    runner = DeviceRunner(edge, Spool(tmp_path / "spool.sqlite", 10**8), clock)
    runner.start_session()
    runner.stop_session()
    codec = default_codec()
    (live,) = [codec.decode(r.value)[1] for r in runner.spool.fetch_after(0, 1000) if r.topic == "sessions"]
    assert key_for_session(live) == key_for_session(sample.session_record)
