"""Dashboard: block produced -> data pushed to a browser session, and server CPU per open session.

Private broker; one `neurolake dashboard` process; N simulated headsets; K tabs of headless Debian
Chromium on the live page. The server records, each time it streams new samples into a session's
document, now minus the lab time of the newest sample pushed (the block's last sample; same machine,
same clock); /stats serves those figures. Traces are pushed when their block arrives. CPU is the dashboard process's CPU time over the
measurement, with no tab open and then with K tabs: the difference per tab is the cost of a session
(each tab filters its own copy of the traces with its own controls, the lake's filter by default).
``--camera`` adds each Pi's test-pattern camera at 640x480 and 24 fps, which every tab shows as an
MJPEG stream; the server's /stats gives the frames per second that reached it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import cli_environment, private_broker


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return json.load(response)


def _cpu_share(pid: int, seconds: float) -> float:
    import psutil

    process = psutil.Process(pid)
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    return (sum(process.cpu_times()[:2]) - before) / seconds * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--headsets", type=int, default=1)
    parser.add_argument("--tabs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--camera", action="store_true", help="640x480 camera at 24 fps on every headset")
    args = parser.parse_args()
    from infra.chromium import headless_chromium

    with private_broker() as settings:
        port = settings.dashboard.port
        env = cli_environment(settings)
        camera = ["--camera"] if args.camera else []
        edge_env = {
            **env,
            **(
                {"NEUROLAKE_EDGE__CAMERA__WIDTH": "640", "NEUROLAKE_EDGE__CAMERA__HEIGHT": "480",
                 "NEUROLAKE_EDGE__CAMERA__FPS": "24"}
                if args.camera
                else {}
            ),
        }  # fmt: skip
        logs = settings.paths.home / "bench-logs"
        logs.mkdir(parents=True, exist_ok=True)
        cli = [sys.executable, "-m", "neurolake.cli"]
        dashboard = subprocess.Popen(
            [*cli, "dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=(logs / "dashboard.log").open("w")
        )
        edge = subprocess.Popen(
            [
                *cli,
                "edge",
                "simulate",
                "--headsets",
                str(args.headsets),
                "--stimulus",
                *camera,
                "--duration",
                str(3 * args.seconds + 60),
            ],
            env=edge_env,
            stdout=subprocess.DEVNULL,
            stderr=(logs / "edge.log").open("w"),
        )
        browser = None
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if _stats(port)["sessions"]:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the dashboard saw no live session in 60 s")
                time.sleep(0.5)
            idle_cpu = _cpu_share(dashboard.pid, args.seconds)
            browser = headless_chromium()
            for tab in range(args.tabs):
                if tab:
                    browser.switch_to.new_window("tab")
                browser.get(f"http://127.0.0.1:{port}/")
            time.sleep(8)  # pages load, first full redraw
            skip = len(_stats(port)["push_latencies_ms"])
            busy_cpu = _cpu_share(dashboard.pid, args.seconds)
            stats = _stats(port)
            latencies = stats["push_latencies_ms"][skip:]
        finally:
            if browser is not None:
                browser.quit()
            for process in (edge, dashboard):
                process.terminate()
                process.wait(timeout=30)
    print(
        f"dashboard bench: {args.headsets} headset(s), {args.tabs} Chromium tab(s), {args.seconds:.0f} s "
        "measured, traces pushed on arrival" + (", 640x480 24 fps cameras" if args.camera else "")
    )
    if latencies:
        a = np.asarray(latencies)
        print(
            f"  newest sample -> pushed to a browser session  p50 {np.percentile(a, 50):.1f} ms  "
            f"p95 {np.percentile(a, 95):.1f} ms  (n={len(a)}; target p95 <= 50 ms)"
        )
    else:
        print("  no pushes recorded")
    if args.camera:
        rates = ", ".join(f"{device} {fps:.1f}" for device, fps in sorted(stats["camera_fps"].items()))
        print(f"  camera frames reaching the server per s: {rates or 'none'} (edge.camera.fps = 24)")
    print(
        f"  server CPU: {idle_cpu:.1f} % of a core with no tab, {busy_cpu:.1f} % with {args.tabs}: "
        f"{(busy_cpu - idle_cpu) / args.tabs:.1f} % per open session"
    )


if __name__ == "__main__":
    main()
