"""The presenter without a browser: a websocket client plays the page (answers clock probes,
reports frames) and the device runner turns frame events into markers."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest

from core.settings import EdgeSettings, StimulusSettings
from edge_producers.clock import ClockEstimate, ClockProbe
from edge_producers.presenter import StimulusPresenter, lab_to_page_ms, page_to_lab_us
from edge_producers.runtime import DeviceRunner
from edge_producers.spool import Spool
from edge_producers.stimulus import StimulusEvent, StimulusSchedule, Trial
from schemas.codec import default_codec
from tests.conftest import free_port


def test_page_and_lab_time_round_trip() -> None:
    page = ClockEstimate(offset_us=-1_700_000_000_000_000, rtt_us=500, measured_us=0)  # page counts from load
    lab = ClockEstimate(offset_us=2_500, rtt_us=200, measured_us=0)
    lab_us = 1_700_000_012_345_678
    page_ms = lab_to_page_ms(lab_us, page, lab)
    assert page_ms == pytest.approx(12_345.678 - 2.5)
    assert page_to_lab_us(page_ms * 1000, page, lab) == lab_us
    assert page_to_lab_us(page_ms * 1000, page, lab, latency_us=8_000) == lab_us + 8_000


async def _fake_page(url: str, origin: str, page_offset_ms: float, seconds: float) -> list[dict]:
    """Answers probes on a clock ``page_offset_ms`` from this machine's; starts and ends the first
    planned trial at its planned times, as a display with perfect frames would."""
    from websockets.asyncio.client import connect

    plans: list[dict] = []

    def page_ms() -> float:
        return time.time() * 1000 + page_offset_ms

    async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
        deadline = time.monotonic() + seconds
        trial: dict | None = None
        sent: list[str] = []
        while time.monotonic() < deadline:
            try:
                data = json.loads(await asyncio.wait_for(ws.recv(), 0.01))
            except TimeoutError:
                data = {}
            if data.get("type") == "ping":
                now = page_ms() * 1000
                await ws.send(json.dumps({"type": "pong", "t0": data["t0"], "t1": now, "t2": now}))
            elif data.get("type") == "plan":
                plans.append(data)
                if trial is None and data["trials"]:
                    trial = {**data["trials"][0], "session": data["session"]}
            if trial is None:
                continue
            for event, key in (("START", "onset"), ("END", "offset")):
                if event not in sent and page_ms() >= trial[key]:
                    await ws.send(json.dumps({"type": "event", "session": trial["session"], "trial": trial["trial"],
                                              "event": event, "t": trial[key] * 1000, "frame": 0, "frames": 60,
                                              "period_ms": 1000 / 60}))  # fmt: skip
                    sent.append(event)
    return plans


def test_frame_events_become_markers_in_lab_time(tmp_path: Path) -> None:
    port = free_port()
    edge = EdgeSettings(
        stimulus={"enabled": True, "presenter": True, "presenter_port": port, "lead_in_s": 0.5, "cue_s": 0.2,
                  "stimulus_s": 1.0, "rest_s": 0.3},
    )  # fmt: skip
    clock = ClockProbe("127.0.0.1", free_port(), probes_per_round=1, timeout_s=0.01)
    with StimulusPresenter(edge.stimulus, lambda: clock.estimate) as presenter:
        page = urllib.request.urlopen(presenter.url, timeout=5).read()
        assert b"presenter.js" in page
        runner = DeviceRunner(edge, Spool(tmp_path / "spool.sqlite", 10**8), clock, presenter=presenter)
        runner.start_session()
        loop = asyncio.new_event_loop()
        import threading

        result: dict = {}
        thread = threading.Thread(
            target=lambda: result.setdefault(
                "plans",
                loop.run_until_complete(
                    _fake_page(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}", -5_000.0, 2.5)
                ),
            )
        )
        thread.start()
        deadline = time.monotonic() + 2.8
        while time.monotonic() < deadline:
            runner.tick()
            time.sleep(0.01)
        thread.join()
        status = presenter.status()
        runner.stop_session()
    assert result["plans"] and result["plans"][0]["targets"][0]["hz"] == 8.0
    # The offset's error is bounded by the round trip it was measured over, however slow the machine
    # (no bound on the round trip itself: that would time a unit test).
    assert status.page_rtt_us >= 0 and abs(status.page_offset_us + 5_000_000) < status.page_rtt_us
    codec = default_codec()
    markers = [codec.decode(r.value)[1] for r in runner.spool.fetch_after(0, 1000) if r.topic == "markers"]
    [session] = [codec.decode(r.value)[1] for r in runner.spool.fetch_after(0, 1000) if r.topic == "sessions"]
    assert [m["event"] for m in markers] == ["START", "END"]
    start, end = markers
    # The page stamped the planned times on its own clock; back in lab time they are the plan
    # (lead-in 0.5 s and cue 0.2 s after the session's start).
    assert abs(start["timestamp_us"] - (session["started_us"] + 700_000)) < status.page_rtt_us + 1000
    assert abs(end["timestamp_us"] - start["timestamp_us"] - 1_000_000) < 1000
    assert start["duration_s"] == pytest.approx(1.0, abs=1e-6)


def test_a_wrong_origin_is_refused(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    port = free_port()
    settings = StimulusSettings(presenter_port=port)
    with StimulusPresenter(settings, lambda: ClockEstimate(0, 0, 0)):

        async def attempt() -> None:
            async with connect(f"ws://127.0.0.1:{port}/ws", origin="http://evil.example"):  # type: ignore[arg-type]
                pass

        with pytest.raises(InvalidStatus):
            asyncio.run(attempt())


class FakePresenter:
    """What the runner needs of a presenter, with events handed in by the test."""

    url = "http://127.0.0.1:1/"

    def __init__(self) -> None:
        self.events: list[StimulusEvent] = []
        self.at_end: list[StimulusEvent] = []
        self.planned: list[Trial] = []
        self.session: str | None = None

    def begin(self, session_id: str, targets: tuple) -> None:
        self.session = session_id

    def plan(self, trials: list[Trial]) -> None:
        self.planned = trials

    def take_events(self) -> list[StimulusEvent]:
        events, self.events = self.events, []
        return events

    def end(self, wait_s: float = 0.0) -> list[StimulusEvent]:
        events, self.at_end = self.at_end, []
        return events

    def status(self):  # type: ignore[no-untyped-def]
        from edge_producers.presenter import PresenterStatus

        return PresenterStatus(True, 60.0, 0, 0, 0.0, 100, 0)


def test_the_runner_publishes_what_the_page_drew_not_the_timetable(tmp_path: Path) -> None:
    edge = EdgeSettings(stimulus={"enabled": True, "presenter": True, "lead_in_s": 0.0, "stimulus_s": 1.0})
    clock = ClockProbe("127.0.0.1", free_port(), probes_per_round=1, timeout_s=0.01)
    fake = FakePresenter()
    runner = DeviceRunner(edge, Spool(tmp_path / "spool.sqlite", 10**8), clock, presenter=fake)  # type: ignore[arg-type]
    runner.start_session()
    time.sleep(0.05)
    runner.tick()
    assert fake.session == runner.session_id and fake.planned and fake.planned[0].trial == 0
    first, second = fake.planned[0], fake.planned[1]
    fake.events = [StimulusEvent(first.start_us + 4_000, "START", first, 983_333)]
    runner.tick()
    fake.events = [StimulusEvent(first.end_us + 4_000, "END", first), StimulusEvent(second.end_us, "END", second)]
    runner.tick()
    fake.events = [StimulusEvent(second.start_us + 1_000, "START", second, 983_333)]
    runner.tick()
    fake.at_end = [StimulusEvent(second.start_us + 300_000, "END", second)]  # the page's frame at the close
    runner.stop_session()
    codec = default_codec()
    markers = [codec.decode(r.value)[1] for r in runner.spool.fetch_after(0, 1000) if r.topic == "markers"]
    assert [(m["event"], m["trial"]) for m in markers] == [("START", 0), ("END", 0), ("START", 1), ("END", 1)]
    assert markers[0]["timestamp_us"] == first.start_us + 4_000 and markers[0]["duration_s"] == 0.983333
    assert markers[3]["timestamp_us"] == second.start_us + 300_000  # not the timetable's, nor "now"


def test_a_trial_the_page_never_closed_ends_when_the_session_does(tmp_path: Path) -> None:
    edge = EdgeSettings(stimulus={"enabled": True, "presenter": True, "lead_in_s": 0.0, "stimulus_s": 10.0})
    clock = ClockProbe("127.0.0.1", free_port(), probes_per_round=1, timeout_s=0.01)
    fake = FakePresenter()
    runner = DeviceRunner(edge, Spool(tmp_path / "spool.sqlite", 10**8), clock, presenter=fake)  # type: ignore[arg-type]
    runner.start_session()
    runner.tick()
    trial = fake.planned[0]
    fake.events = [StimulusEvent(trial.start_us, "START", trial, 10_000_000)]
    runner.tick()
    runner.stop_session()  # the page went away: no END from it
    codec = default_codec()
    markers = [codec.decode(r.value)[1] for r in runner.spool.fetch_after(0, 1000) if r.topic == "markers"]
    assert [m["event"] for m in markers] == ["START", "END"]
    assert markers[1]["timestamp_us"] > trial.start_us


def test_schedule_reference() -> None:
    # The fake page's plan is the schedule's: lead-in plus cue after the session's start.
    schedule = StimulusSchedule(StimulusSettings(lead_in_s=0.5, cue_s=0.2), start_us=0)
    assert schedule.upcoming(0, 10_000_000)[0].start_us == 700_000
