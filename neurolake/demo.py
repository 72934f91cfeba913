"""``neurolake demo``: start the lab, keep it running for a while, then stop all it started.

Each issue extends the list of stages; whatever happens, the stack is taken down on the way out
(duration elapsed, Ctrl-C, SIGTERM or an error).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from neurolake.settings import Settings

log = logging.getLogger(__name__)


def run_demo(settings: Settings, duration_s: float, with_airflow: bool) -> int:
    from infra import stack

    stop = threading.Event()

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping the demo", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = stack.up(settings, with_airflow=with_airflow)
        for state in status.services:
            log.info(
                "%-8s %s (pid %s, log %s)",
                state.name, "healthy" if state.healthy else "UNHEALTHY", state.pid, state.log_file,
            )
        if with_airflow:
            log.info("Airflow UI: http://%s:%d", settings.airflow.host, settings.airflow.port)
        log.info("MLflow UI: %s", settings.mlflow.effective_tracking_uri)
        if duration_s > 0:
            log.info("demo running for %.0f s", duration_s)
        else:
            log.info("demo running until Ctrl-C")
        deadline = time.monotonic() + duration_s if duration_s > 0 else None
        last_report = time.monotonic()
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.5)
            if time.monotonic() - last_report >= 15:
                last_report = time.monotonic()
                current = stack.status(settings)
                unhealthy = [s.name for s in current.services if s.running and not s.healthy]
                log.info("stack %s", "healthy" if not unhealthy else f"UNHEALTHY: {unhealthy}")
        return 0 if stack.status(settings).healthy else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stopped = stack.down(settings)
        log.info("demo stopped: %s", ", ".join(stopped) or "nothing was running")
