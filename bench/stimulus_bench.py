"""Stimulus presenter: what a browser actually drew against the markers the edge published.

The presenter (edge_producers/presenter.py) serves its page; headless Chromium (selenium) opens it
in record mode, so that every frame's requestAnimationFrame timestamp is logged with what the frame
drew, read back from the canvas: the sync patch and each target's centre pixel. A device runner
(simulated headset, the edge's real spool, marker builder and signing, a clock service for lab
time) runs the schedule; its markers are read back from the spool and compared with the frames:

- flicker frequency achieved: a sinusoid fitted (frequency included) to each target's read-back
  luminance over each trial, against the target's frequency;
- onset (offset) error: a START (END) marker's lab time minus the lab time of the first frame whose
  sync patch was white (black again). Frame times go to this machine's clock through the page's
  ``performance.timeOrigin``, not through the presenter's websocket estimate, so the comparison
  checks that estimate too;
- frame-time jitter and dropped frames from the timestamps.

Two sessions in one browser: cold (Chromium and the page just started, first session) and warm
(the same page, a second session). Both layouts can be run (--layout classes|benchmark40|both).
``--survey`` first measures how this headless Chromium paces requestAnimationFrame with various
flags. The last line: ``stimulus: frequency_error_hz X onset_error_p95_ms Y`` over every trial.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import EdgeSettings
from edge_producers.clock import ClockProbe
from edge_producers.frames import fit_sinusoid, frame_timing
from edge_producers.presenter import StimulusPresenter
from edge_producers.runtime import DeviceRunner
from edge_producers.spool import Spool
from edge_producers.stimulus import stimulus_targets
from infra.chromium import BASE_FLAGS, headless_chromium
from infra.clock_server import serve_clock
from infra.ports import free_ports
from schemas.codec import default_codec

BENCH_WINDOW = "1280,800"
SURVEY_FLAGS: tuple[tuple[str, ...], ...] = (
    (),
    ("--run-all-compositor-stages-before-draw",),
    ("--disable-gpu-vsync",),
    ("--disable-gpu-vsync", "--disable-frame-rate-limit"),
    ("--enable-begin-frame-control",),
)


def survey(seconds: float) -> None:
    """requestAnimationFrame pacing of this headless Chromium with each flag set."""
    page = (
        "data:text/html,<canvas id=c width=400 height=300></canvas><script>window.ts=[];"
        "const x=document.getElementById('c').getContext('2d');function f(t){window.ts.push(t);"
        "x.fillStyle='rgb('+(window.ts.length%255)+',0,0)';x.fillRect(0,0,400,300);requestAnimationFrame(f)}"
        "requestAnimationFrame(f)</script>"
    )
    print(f"rAF pacing, {seconds:.0f} s per flag set (base: {' '.join(BASE_FLAGS)})")
    for extra in SURVEY_FLAGS:
        driver = headless_chromium(extra, size=BENCH_WINDOW)
        try:
            driver.get(page)
            time.sleep(1.0)
            driver.execute_script("window.ts=[]")
            time.sleep(seconds)
            times = np.asarray(driver.execute_script("return window.ts"), dtype=np.float64)
        finally:
            driver.quit()
        timing = frame_timing(times)
        intervals = np.diff(times)
        print(
            f"  {' '.join(extra) or '(base flags only)':<48} {len(times) / seconds:7.1f} frames/s  interval "
            f"median {timing.interval_ms:6.3f} ms  p5 {np.percentile(intervals, 5):6.2f}  p95 "
            f"{np.percentile(intervals, 95):6.2f}  max {intervals.max():6.1f}  dropped {timing.dropped}"
        )


@dataclass
class SessionResult:
    name: str
    trials: int = 0
    frequency_errors: list[float] = field(default_factory=list)
    phase_errors: list[float] = field(default_factory=list)
    onset_errors_ms: list[float] = field(default_factory=list)
    offset_errors_ms: list[float] = field(default_factory=list)
    missing: int = 0
    timing: Any = None
    clock_error_us: float = float("nan")
    page_rtt_us: int = -1
    first_frame_s: float = float("nan")


def run_session(
    name: str,
    runner: DeviceRunner,
    presenter: StimulusPresenter,
    driver: Any,
    seconds: float,
    time_origin_ms: float,
) -> SessionResult:
    from schemas.catalog import MARKERS

    codec = default_codec()
    before = runner.spool.next_seq(MARKERS)
    driver.execute_script("return presenter.takeLog()")  # frames drawn between sessions are not this one's
    runner.start_session()
    log: list[list[Any]] = []
    deadline = time.monotonic() + seconds
    next_pull = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        runner.tick()
        if time.monotonic() >= next_pull:
            log += driver.execute_script("return presenter.takeLog()")
            next_pull = time.monotonic() + 0.5
        time.sleep(0.01)
    runner.stop_session()
    time.sleep(0.1)
    log += driver.execute_script("return presenter.takeLog()")
    markers = [
        codec.decode(r.value)[1]
        for r in runner.spool.fetch_after(0, 1_000_000)
        if r.topic == MARKERS and r.seq >= before
    ]
    status = presenter.status()
    result = SessionResult(name, page_rtt_us=status.page_rtt_us)
    # The page's clock against this machine's, from the page itself: timeOrigin is wall time.
    result.clock_error_us = status.page_offset_us - (-time_origin_ms * 1000.0)
    lab_offset = runner.clock.estimate.offset_us
    times = np.array([row[0] for row in log])
    result.timing = frame_timing(times)
    trial_of = np.array([row[1] for row in log])
    sync = np.array([row[3] for row in log]) > 0.5
    targets = stimulus_targets(runner.edge.stimulus)
    # Frames drawn before the page had its layout read back no targets.
    values = np.array([row[4] if len(row[4]) == len(targets) else [np.nan] * len(targets) for row in log])

    def frame_lab_us(index: int) -> float:
        return (time_origin_ms + times[index]) * 1000.0 + lab_offset

    starts = {m["trial"]: m for m in markers if m["event"] == "START"}
    ends = {m["trial"]: m for m in markers if m["event"] == "END"}
    for trial, start in starts.items():
        shown = np.flatnonzero((trial_of == trial) & sync)
        if shown.size == 0:
            result.missing += 1
            continue
        result.trials += 1
        first, last = int(shown[0]), int(shown[-1])
        result.onset_errors_ms.append((start["timestamp_us"] - frame_lab_us(first)) / 1000.0)
        if trial in ends and last + 1 < len(times) and not sync[last + 1]:
            result.offset_errors_ms.append((ends[trial]["timestamp_us"] - frame_lab_us(last + 1)) / 1000.0)
        t = (times[shown] - times[first]) / 1000.0
        if t.size < 8:
            continue
        for index, target in enumerate(targets):
            fit = fit_sinusoid(t, values[shown, index], target.hz)
            result.frequency_errors.append(fit.hz - target.hz)
            result.phase_errors.append(float(np.angle(np.exp(1j * (fit.phase - target.phase)))))
    result.missing += sum(1 for trial in ends if trial not in starts)
    return result


def print_session(result: SessionResult, layout: str) -> None:
    t = result.timing
    freq = np.abs(result.frequency_errors) if result.frequency_errors else np.array([np.nan])
    onset = np.abs(result.onset_errors_ms) if result.onset_errors_ms else np.array([np.nan])
    offset = np.abs(result.offset_errors_ms) if result.offset_errors_ms else np.array([np.nan])
    phase = np.degrees(np.abs(result.phase_errors)) if result.phase_errors else np.array([np.nan])
    print(f"  {result.name} ({layout}): {result.trials} trials with markers, {result.missing} unmatched")
    if result.first_frame_s == result.first_frame_s:
        print(f"    browser start to the page's first frame: {result.first_frame_s:.2f} s")
    print(
        f"    frames {t.frames}, refresh {t.refresh_hz:.3f} Hz (interval {t.interval_ms:.3f} ms), jitter sd "
        f"{t.jitter_ms:.3f} ms p95 {t.jitter_p95_ms:.3f} ms, dropped frames {t.dropped}"
    )
    print(
        f"    frequency error over {len(freq)} target-trials: median {np.median(freq):.5f} Hz  max "
        f"{np.max(freq):.5f} Hz; phase error median {np.median(phase):.2f} deg max {np.max(phase):.2f} deg"
    )
    print(
        f"    onset error |marker - first frame shown|: median {np.median(onset):.3f} ms  p95 "
        f"{np.percentile(onset, 95):.3f} ms  max {np.max(onset):.3f} ms; offset p95 "
        f"{np.percentile(offset, 95):.3f} ms (signed onset mean {np.mean(result.onset_errors_ms):+.3f} ms)"
    )
    print(
        f"    page clock estimate vs the page's own timeOrigin: {result.clock_error_us / 1000:+.3f} ms "
        f"(winning round trip {result.page_rtt_us / 1000:.2f} ms)"
    )


def run_layout(layout: str, seconds: float, trial_s: float, flags: tuple[str, ...]) -> list[SessionResult]:
    presenter_port, clock_port = free_ports(2)
    clock_thread = threading.Thread(target=serve_clock, args=("127.0.0.1", clock_port, 4 * seconds + 60), daemon=True)
    clock_thread.start()
    with tempfile.TemporaryDirectory(prefix="neurolake-stimulus-bench-") as home:
        edge = EdgeSettings(
            device_id="stim-bench",
            stimulus={
                "enabled": True,
                "presenter": True,
                "presenter_port": presenter_port,
                "layout": layout,
                "lead_in_s": 1.0,
                "cue_s": 0.5,
                "stimulus_s": trial_s,
                "rest_s": 0.5,
            },
            simulation={"n_eeg_channels": 8},
        )
        clock = ClockProbe("127.0.0.1", clock_port, interval_s=2.0)
        clock.start()
        clock.probe_round()
        presenter = StimulusPresenter(edge.stimulus, lambda: clock.estimate)
        presenter.start()
        spool = Spool(Path(home) / "spool.sqlite", 1 << 30)
        runner = DeviceRunner(edge, spool, clock, presenter=presenter)
        started = time.monotonic()
        driver = headless_chromium(flags, size=BENCH_WINDOW)
        results = []
        try:
            driver.get(presenter.url + "?record=1")
            while not driver.execute_script("return presenter.state.times.length > 0"):
                time.sleep(0.01)
            first_frame_s = time.monotonic() - started
            time_origin = float(driver.execute_script("return presenter.timeOrigin"))
            while presenter.status().page_rtt_us < 0:
                time.sleep(0.01)
            for name in ("cold", "warm"):
                result = run_session(name, runner, presenter, driver, seconds, time_origin)
                if name == "cold":
                    result.first_frame_s = first_frame_s
                results.append(result)
        finally:
            driver.quit()
            presenter.stop()
            clock.stop()
            spool.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=["classes", "benchmark40", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=20.0, help="per session (two sessions per layout)")
    parser.add_argument("--trial-s", type=float, default=3.0, help="flicker seconds per trial")
    parser.add_argument("--flags", default="", help="extra Chromium flags, space-separated")
    parser.add_argument("--survey", action="store_true", help="first measure rAF pacing per flag set")
    parser.add_argument("--survey-seconds", type=float, default=4.0)
    parser.add_argument(
        "--load", type=int, default=0, help="busy-loop processes competing for the CPU meanwhile (stopped after)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.survey:
        survey(args.survey_seconds)
    flags = tuple(args.flags.split())
    layouts = ["classes", "benchmark40"] if args.layout == "both" else [args.layout]
    everything: list[SessionResult] = []
    burners = [
        subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 900\nwhile time.time() < end: pass"])
        for _ in range(args.load)
    ]
    try:
        for layout in layouts:
            results = run_layout(layout, args.seconds, args.trial_s, flags)
            print(
                f"presenter, layout {layout}, {args.seconds:.0f} s per session, flags: {' '.join(flags) or '-'}, "
                f"CPU burners: {args.load}"
            )
            for result in results:
                print_session(result, layout)
            everything += results
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    frequency = max((abs(e) for r in everything for e in r.frequency_errors), default=float("nan"))
    onsets = [abs(e) for r in everything for e in r.onset_errors_ms]
    onset_p95 = float(np.percentile(onsets, 95)) if onsets else float("nan")
    trials = sum(r.trials for r in everything)
    print(f"over {trials} trials ({statistics.fmean(r.timing.refresh_hz for r in everything):.2f} Hz display)")
    print(f"stimulus: frequency_error_hz {frequency:.4f} onset_error_p95_ms {onset_p95:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
