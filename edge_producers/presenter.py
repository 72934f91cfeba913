"""The stimulus presenter: a page on the stimulus monitor draws the flicker, frame by frame, and the
markers are stamped from the frames it drew (``neurolake stimulus serve``; README "Stimulus").

Why a page reports frames instead of the Pi keeping a timetable: a monitor shows a trial from the
first refresh after the program asked for it, and a browser may miss refreshes; a marker in lab
time is only as good as the frame it names. The page (``presenter_page/``) reports the
requestAnimationFrame timestamp of the frame each flicker started and stopped on, in its own clock
(``performance.now()``). This module

- measures the page's clock against this machine's NTP-style over the websocket (the server
  stamps t0 and t3, the page t1 and t2; of the recent probes the lowest round trip wins, exactly
  the edge clock probe's rule: :func:`edge_producers.clock.best_estimate`),
- sends the page the coming trials of the session's :class:`StimulusSchedule` in page time, and
- turns each reported frame into a :class:`StimulusEvent` in lab time (page -> this machine's
  clock -> lab time through the edge clock probe, plus ``edge.stimulus.display_latency_ms``), which
  the device runner publishes with the marker builder, signing and spool every marker takes.

The server runs on its own thread (an asyncio loop); the acquisition loop only calls ``plan``,
``take_events``, ``begin`` and ``end``, which hand data over under a lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any

import numpy as np

from core.settings import StimulusSettings
from edge_producers.clock import ClockEstimate, ProbeSample, best_estimate
from edge_producers.devices.eeg import DeviceError
from edge_producers.frames import frame_timing
from edge_producers.stimulus import StimulusEvent, Target, Trial
from schemas.timebase import now_us

log = logging.getLogger(__name__)

PAGE_FILES = {"/": ("index.html", "text/html"), "/presenter.js": ("presenter.js", "text/javascript")}
# Probes of the page's clock: one every PROBE_INTERVAL_S, the best of the last PROBE_WINDOW_S wins
# (long enough to catch a quiet round trip, short enough that clock drift stays far below 0.1 ms).
PROBE_INTERVAL_S = 0.25
PROBE_WINDOW_S = 10.0
# A new page is probed quickly first, while it may still be busy loading.
FIRST_PROBES, FIRST_PROBE_INTERVAL_S = 20, 0.025
# The plan is checked this often and sent when it changed.
PLAN_INTERVAL_S = 0.1
# A frame event waits (at most MAX_HOLD_US) for a page clock estimate whose round trip is at most
# GOOD_RTT_US, i.e. good to 1 ms: a page that has just loaded answers its first probes late.
GOOD_RTT_US = 2_000
MAX_HOLD_US = 2_000_000


def page_to_lab_us(page_us: float, page: ClockEstimate, lab: ClockEstimate, latency_us: int = 0) -> int:
    """A page timestamp (microseconds of ``performance.now()``) in lab time. ``page.offset_us`` is
    page minus this machine; ``lab.offset_us`` is lab minus this machine."""
    return int(round(page_us)) - page.offset_us + lab.offset_us + latency_us


def lab_to_page_ms(lab_us: int, page: ClockEstimate, lab: ClockEstimate) -> float:
    return (lab_us - lab.offset_us + page.offset_us) / 1000.0


@dataclass(frozen=True)
class PresenterStatus:
    connected: bool
    refresh_hz: float
    frames: int
    dropped_frames: int
    jitter_ms: float
    page_rtt_us: int
    page_offset_us: int


class StimulusPresenter:
    """Serves the page on ``settings.presenter_host:presenter_port`` and keeps one page as the
    display (a newer page takes over from an older one)."""

    def __init__(
        self,
        settings: StimulusSettings,
        lab_clock: Callable[[], ClockEstimate],
        clock_us: Callable[[], int] = now_us,
    ) -> None:
        self.settings = settings
        self._lab_clock = lab_clock
        self._clock_us = clock_us
        self._latency_us = int(round(settings.display_latency_ms * 1000))
        self._lock = threading.Lock()
        self._session: str | None = None
        self._targets: tuple[Target, ...] = ()
        self._trials: dict[int, Trial] = {}  # every trial planned this session, by number
        self._plan: list[Trial] = []
        # (page time, time received, event, trial, duration): converted to lab time once the
        # page's clock is known well enough (take_events).
        self._events: list[tuple[float, int, str, Trial, int | None]] = []
        # Events of a page that went away, already in lab time (a new page has another clock).
        self._converted: list[StimulusEvent] = []
        self._samples: deque[tuple[int, ProbeSample]] = deque()
        self._page_estimate: ClockEstimate | None = None
        self._page: Any = None  # the connected websocket
        self._frames = 0
        self._dropped = 0
        self._refresh_hz = float("nan")
        self._jitter_ms = float("nan")
        self.events_refused = 0
        self._sent_plan: str | None = None
        self._stopping_session = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.presenter_host}:{self.settings.presenter_port}/"

    # -- the acquisition loop's side --------------------------------------------------------

    def begin(self, session_id: str, targets: tuple[Target, ...]) -> None:
        with self._lock:
            self._session, self._targets, self._trials, self._plan = session_id, targets, {}, []

    def end(self, wait_s: float = 0.0) -> list[StimulusEvent]:
        """Close the session: the page stops a running flicker on its next frame. With ``wait_s``,
        wait that long for the frame it stopped on (an END event, returned with any other events
        not yet taken), so that a trial cut short by the session's end is closed frame-exact too."""
        with self._lock:
            self._plan, self._stopping_session = [], True
        self._wake_planner()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self._page is not None:
            with self._lock:
                if any(event[2] == "END" for event in self._events):
                    break
            time.sleep(0.005)
        events = self._convert(final=True)
        with self._lock:
            self._session, self._trials, self._stopping_session = None, {}, False
        return events

    def plan(self, trials: list[Trial]) -> None:
        """The trials the page must know of now (the runner passes the schedule's ``upcoming``)."""
        with self._lock:
            self._plan = list(trials)
            for trial in trials:
                self._trials[trial.trial] = trial

    def take_events(self) -> list[StimulusEvent]:
        """Onsets and offsets the page drew since the last call, in lab time, in time order."""
        return self._convert(final=False)

    def _convert(self, final: bool) -> list[StimulusEvent]:
        page, lab, now = self._page_estimate, self._lab_clock(), self._clock_us()
        with self._lock:
            converted, self._converted = self._converted, []
        if page is None:
            # Events come from a page, which answers probes first: none wait for long here.
            return sorted(converted, key=lambda e: e.time_us)
        good = 0 <= page.rtt_us <= GOOD_RTT_US
        with self._lock:
            ready = [e for e in self._events if good or final or now - e[1] > MAX_HOLD_US]
            self._events = [e for e in self._events if e not in ready]
        if ready and not good:
            log.warning(
                "%d stimulus marker(s) stamped with a page clock known only to +-%.1f ms (round trip)",
                len(ready),
                page.rtt_us / 2000,
            )
        events = [
            StimulusEvent(page_to_lab_us(page_us, page, lab, self._latency_us), event, trial, duration_us)
            for page_us, _, event, trial, duration_us in ready
        ]
        return sorted([*converted, *events], key=lambda e: e.time_us)

    def status(self) -> PresenterStatus:
        estimate = self._page_estimate
        return PresenterStatus(
            connected=self._page is not None,
            refresh_hz=round(self._refresh_hz, 3),
            frames=self._frames,
            dropped_frames=self._dropped,
            jitter_ms=round(self._jitter_ms, 3),
            page_rtt_us=estimate.rtt_us if estimate else -1,
            page_offset_us=estimate.offset_us if estimate else 0,
        )

    # -- the server thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stimulus-presenter", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise DeviceError(
                f"the stimulus presenter cannot listen on {self.settings.presenter_host}:"
                f"{self.settings.presenter_port} ({self._error}); free the port or set "
                "edge.stimulus.presenter_port"
            )
        log.info("stimulus presenter: open %s on the stimulus monitor (full screen)", self.url)

    def _wake_planner(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StimulusPresenter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:  # reported to start(); a later failure is logged
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("stimulus presenter stopped")
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        port = self.settings.presenter_port
        origins = [f"http://{host}:{port}" for host in {self.settings.presenter_host, "127.0.0.1", "localhost"}]
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        # Origins are checked: any web page in any browser on this machine could open the socket
        # otherwise, and what the page reports becomes signed markers.
        async with serve(
            self._connection,
            self.settings.presenter_host,
            port,
            process_request=self._http,
            origins=origins,  # type: ignore[arg-type]
            ping_interval=None,
        ):
            self._ready.set()
            planner = asyncio.create_task(self._send_plans())
            await self._stopping.wait()
            self._wake.set()
            await planner
            if self._page is not None:
                await self._page.close()

    def _http(self, connection: Any, request: Any) -> Any:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None
        if path not in PAGE_FILES:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        name, kind = PAGE_FILES[path]
        text = resources.files("edge_producers").joinpath("presenter_page", name).read_text(encoding="utf-8")
        response = connection.respond(HTTPStatus.OK, text)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = f"{kind}; charset=utf-8"
        response.headers["Cache-Control"] = "no-store"
        # Cross-origin isolation gives the page 5 us timers instead of 100 us.
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
        return response

    async def _connection(self, websocket: Any) -> None:
        previous, self._page = self._page, websocket
        if previous is not None:
            await previous.close(4000, "another page took over the display")
        # What the previous page reported is on its clock: into lab time before a new clock comes.
        waiting = self._convert(final=True)
        with self._lock:
            self._converted += waiting
        self._samples.clear()
        self._page_estimate = None
        self._sent_plan = None
        log.info("stimulus page connected from %s", websocket.remote_address)
        prober = asyncio.create_task(self._probe(websocket))
        try:
            async for message in websocket:
                self._on_message(message)
        except Exception as exc:  # a page that goes away mid-message is a disconnect, not a failure
            log.debug("stimulus page connection ended: %s", exc)
        finally:
            prober.cancel()
            if self._page is websocket:
                self._page = None
                if self._stopping is not None and not self._stopping.is_set():
                    log.warning("stimulus page disconnected: trials are not shown until it reconnects")

    async def _probe(self, websocket: Any) -> None:
        sent = 0
        while True:
            await websocket.send(json.dumps({"type": "ping", "t0": self._clock_us()}))
            sent += 1
            await asyncio.sleep(FIRST_PROBE_INTERVAL_S if sent < FIRST_PROBES else PROBE_INTERVAL_S)

    def _on_message(self, message: str | bytes) -> None:
        received = self._clock_us()
        try:
            data = json.loads(message)
            kind = data["type"]
            if kind == "pong":
                self._on_pong(int(data["t0"]), float(data["t1"]), float(data["t2"]), received)
            elif kind == "event":
                self._on_event(data)
            elif kind == "frames":
                self._on_frames(np.asarray(data["t"], dtype=np.float64))
        except (ValueError, KeyError, TypeError) as exc:
            self.events_refused += 1
            log.warning("stimulus page sent a message that is not understood (%s): %.200r", exc, message)

    def _on_pong(self, t0: int, t1: float, t2: float, t3: int) -> None:
        # The page plays the hub's part: offset_us is page clock minus this machine's.
        sample = ProbeSample(t0, int(round(t1)), int(round(t2)), t3)
        self._samples.append((t3, sample))
        while self._samples and self._samples[0][0] < t3 - PROBE_WINDOW_S * 1e6:
            self._samples.popleft()
        self._page_estimate = best_estimate([s for _, s in self._samples])

    def _on_event(self, data: dict[str, Any]) -> None:
        event = str(data["event"])
        if event not in ("START", "END"):
            raise ValueError(f"event {event!r}")
        page_us = float(data["t"])
        with self._lock:
            trial = self._trials.get(int(data["trial"]))
            if data.get("session") != self._session or trial is None:
                return  # a trial of a session already closed: its END was written at the close
            duration_us = None
            if event == "START":
                duration_us = int(round(int(data["frames"]) * float(data["period_ms"]) * 1000))
            self._events.append((page_us, self._clock_us(), event, trial, duration_us))

    def _on_frames(self, times_ms: np.ndarray) -> None:
        timing = frame_timing(times_ms)
        self._frames += timing.frames
        self._dropped += timing.dropped
        if timing.frames >= 3:
            if abs(timing.refresh_hz - self._refresh_hz) > 0.5 or self._refresh_hz != self._refresh_hz:
                log.info("stimulus display refresh %.2f Hz", timing.refresh_hz)
            self._refresh_hz, self._jitter_ms = timing.refresh_hz, timing.jitter_ms

    def _plan_message(self) -> str | None:
        page = self._page_estimate
        if page is None:
            return None
        lab = self._lab_clock()
        with self._lock:
            session, targets, trials = self._session, self._targets, list(self._plan)
            stop = self._stopping_session

        def at(lab_us: int | None) -> float | None:
            return None if lab_us is None else round(lab_to_page_ms(lab_us, page, lab), 1)

        return json.dumps(
            {
                "type": "plan",
                "session": session,
                # The session is closing: a running flicker stops on the next frame.
                "stop": stop,
                "targets": [
                    {"label": t.label, "hz": t.hz, "phase": t.phase, "row": t.row, "column": t.column} for t in targets
                ],
                "trials": [
                    {
                        "trial": t.trial,
                        "target": t.target,
                        "cue": at(t.cue_us),
                        "onset": at(t.start_us),
                        "offset": at(t.end_us),
                    }
                    for t in trials
                ],
            }
        )

    async def _send_plans(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            page = self._page
            message = self._plan_message() if page is not None else None
            if page is not None and message is not None and message != self._sent_plan:
                try:
                    await page.send(message)
                    self._sent_plan = message
                except Exception as exc:  # the page went away; it gets the plan when it is back
                    log.debug("plan not sent: %s", exc)
            assert self._wake is not None
            try:
                await asyncio.wait_for(self._wake.wait(), PLAN_INTERVAL_S)
            except TimeoutError:
                pass
            self._wake.clear()
