"""Radio losses: found from the packet counter, marked as gaps of the right length, and the samples
after a loss keep the sample index and lab time they would have had without it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from core.settings import EdgeSettings
from dsp.dejitter import DejitterState, dejitter_block
from edge_producers.clock import ClockProbe
from edge_producers.devices.eeg import BrainFlowSource, RadioLink, SimulatedHeadset, make_eeg_source
from edge_producers.devices.packets import CounterState, PacketCounter, samples_missing
from edge_producers.runtime import DeviceRunner
from edge_producers.spool import Spool
from schemas.codec import default_codec, eeg_block_device_times
from tests.conftest import free_port


def test_missing_samples_from_a_wrapping_counter() -> None:
    counter = np.array([250, 251, 252, 255, 0, 1, 5, 6])  # 253, 254 lost; 2, 3, 4 lost across the wrap
    missing, state = samples_missing(counter, PacketCounter(), CounterState())
    assert missing.tolist() == [0, 0, 0, 2, 0, 0, 3, 0] and state.last == 6
    # Cyton+Daisy: two packets per sample, the counter moves by 2.
    daisy, _ = samples_missing(np.array([1, 3, 9, 11, 255, 1]), PacketCounter(step=2), CounterState())
    assert daisy.tolist() == [0, 0, 2, 0, 121, 0]


def test_chunked_equals_one_pass() -> None:
    rng = np.random.default_rng(3)
    index = np.cumsum(1 + (rng.random(5000) < 0.03) * rng.integers(1, 40, 5000))
    counter = index % 256
    whole, _ = samples_missing(counter, PacketCounter(), CounterState())
    state, parts = CounterState(), []
    for piece in np.split(counter, np.sort(rng.choice(np.arange(1, 5000), 60, replace=False))):
        part, state = samples_missing(piece, PacketCounter(), state)
        parts.append(part)
    assert np.array_equal(np.concatenate(parts), whole)
    assert np.array_equal(whole[1:], np.diff(index) - 1)


def test_brainflow_synthetic_board_carries_its_counter() -> None:
    source = BrainFlowSource("synthetic")
    assert source.packet_counter == PacketCounter()
    assert BrainFlowSource("cyton_daisy", serial_port="/dev/null-no").packet_counter == PacketCounter(step=2)
    assert BrainFlowSource("ganglion", serial_port="/dev/null-no").packet_counter is None
    link = RadioLink(source, PacketCounter(), packet_loss=0.1, seed=2)
    with link:
        time.sleep(0.6)
        chunk = link.read()
    assert chunk.missing_before is not None and chunk.counter is not None
    # What the link dropped is exactly what the counter says is missing.
    expected = np.diff(chunk.counter.astype(int)) % 256 - 1
    assert np.array_equal(chunk.missing_before[1:], expected) and expected.sum() > 0


def test_the_simulated_headset_passes_through_the_radio_link() -> None:
    edge = EdgeSettings(simulation={"packet_loss": 0.05})
    assert isinstance(make_eeg_source(edge), RadioLink)
    assert isinstance(make_eeg_source(EdgeSettings()), RadioLink)  # counted, nothing dropped
    # A real Cyton's losses are counted, never made.
    cyton = make_eeg_source(EdgeSettings(board="cyton", serial_port="/dev/null-no", simulation={"packet_loss": 0.5}))
    assert isinstance(cyton, RadioLink) and cyton._loss == 0.0


def _blocks(runner: DeviceRunner) -> list[dict]:
    codec = default_codec()
    return [codec.decode(r.value)[1] for r in runner.spool.fetch_after(0, 100_000) if r.topic == "eeg.raw"]


@pytest.mark.parametrize("loss", [0.02, 0.2])
def test_samples_after_a_loss_keep_their_index_and_lab_time(tmp_path: Path, loss: float) -> None:
    edge = EdgeSettings(
        block_size=25,
        simulation={"packet_loss": loss, "timestamp_jitter_us": 300.0},
        # Durations that are not whole sample periods, so markers fall at every phase between samples
        # rather than all within the dejitter's error of one (and are skipped).
        stimulus={"enabled": True, "lead_in_s": 0.2, "stimulus_s": 0.5014, "rest_s": 0.2022},
    )
    clock = ClockProbe("127.0.0.1", free_port(), probes_per_round=1, timeout_s=0.01)
    headsets: list[SimulatedHeadset] = []

    def factory(settings, stimulus_at=None, to_lab_us=lambda t: t):  # type: ignore[no-untyped-def]
        source = make_eeg_source(settings, stimulus_at, to_lab_us)
        headsets.append(source._source)  # type: ignore[attr-defined]
        return source

    runner = DeviceRunner(edge, Spool(tmp_path / "spool.sqlite", 10**8), clock, source_factory=factory)
    runner.start_session()
    start_us = headsets[0]._start_us
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        runner.tick()
        time.sleep(0.02)
    runner.stop_session()
    blocks = _blocks(runner)
    rate = headsets[0].info.sample_rate_hz
    index = np.concatenate([b["first_sample_index"] + np.arange(b["n_samples"]) for b in blocks])
    times = np.concatenate([eeg_block_device_times(b) for b in blocks])
    lost = int(np.sum(np.diff(index) - 1))
    assert lost > 0 and lost == runner.counters.samples_lost
    assert np.all(np.diff(index) >= 1) and all(b["n_samples"] <= 25 for b in blocks)
    # Each sample's index is the one its acquisition time says (sample k is due at start + k/rate),
    # counted from the first sample that arrived: the index jumped by exactly what was lost.
    acquired = np.rint((times - start_us) * rate / 1e6).astype(np.int64)
    assert np.array_equal(index - index[0], acquired - acquired[0])
    # Silver's dejitter over the blocks as sent gives every sample its ideal time, loss or not.
    state, dejittered = DejitterState(), []
    for block in blocks:
        fitted, state = dejitter_block(state, block["first_sample_index"], eeg_block_device_times(block), rate)
        dejittered.append(fitted)
    ideal = start_us + acquired * 1e6 / rate
    late = index > rate  # after the fit's first second
    assert np.max(np.abs(np.concatenate(dejittered) - ideal)[late]) < 200
    # So a marker lands where it would have without the loss: the first sample at or after a
    # marker in dejittered (lab) time is the first that arrived of those acquired at or after it.
    from schemas.catalog import MARKERS

    codec = default_codec()
    records = runner.spool.fetch_after(0, 100_000)
    markers = [codec.decode(r.value)[1] for r in records if r.topic == MARKERS]
    lab_times = np.concatenate(dejittered) + clock.estimate.offset_us
    checked = 0
    for marker in markers:
        at = (marker["timestamp_us"] - clock.estimate.offset_us - start_us) * rate / 1e6  # in samples
        due = int(np.ceil(at))
        position = int(np.searchsorted(lab_times, marker["timestamp_us"]))
        if due <= acquired[0] + rate or position >= index.size or abs(at - round(at)) < 0.1:
            continue  # in the fit's first second, after the last sample, or within its error of a sample
        assert acquired[position] == acquired[acquired >= due][0]
        checked += 1
    assert checked >= 2
    runner.publish_status()
    status = [codec.decode(r.value)[1] for r in runner.spool.fetch_after(0, 100_000) if r.topic == "devices.status"]
    assert status[-1]["losses"] == lost + runner.spool.stats().losses
