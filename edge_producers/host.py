"""The host's own health for the heartbeat: CPU, memory and processor temperature of the Pi.

CPU use is measured from the host's CPU times between two samples (not ``psutil.cpu_percent``,
whose one module-wide reference any other caller would move). The temperature is the kernel's
thermal zone (a Pi's SoC sensor); a host without one reports None rather than a made-up value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

# The SoC sensor on Raspberry Pi OS (millidegrees Celsius).
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


@dataclass(frozen=True)
class HostVitals:
    cpu_pct: float | None
    memory_pct: float | None
    soc_temperature_c: float | None


def _busy_and_total(times: Any) -> tuple[float, float]:
    total = float(sum(times))
    idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
    return total - idle, total


def read_temperature_c(path: Path) -> float | None:
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


class HostMonitor:
    """Samples the host at most every ``min_interval_s``: one process hosting many simulated Pis
    asks once per device heartbeat, and all of them get the same figures."""

    def __init__(
        self,
        thermal_zone: Path = THERMAL_ZONE,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._thermal_zone = thermal_zone
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._last_times = _busy_and_total(psutil.cpu_times())
        self._last: HostVitals | None = None
        self._last_at = -float("inf")

    def sample(self) -> HostVitals:
        now = self._clock()
        if self._last is not None and now - self._last_at < self._min_interval_s:
            return self._last
        busy, total = _busy_and_total(psutil.cpu_times())
        last_busy, last_total = self._last_times
        cpu = 100.0 * (busy - last_busy) / (total - last_total) if total > last_total else None
        self._last_times = (busy, total)
        try:
            memory: float | None = float(psutil.virtual_memory().percent)
        except (OSError, RuntimeError) as exc:  # a container without /proc/meminfo
            log.debug("memory use unavailable: %s", exc)
            memory = None
        self._last = HostVitals(
            cpu_pct=None if cpu is None else round(min(max(cpu, 0.0), 100.0), 1),
            memory_pct=memory,
            soc_temperature_c=read_temperature_c(self._thermal_zone),
        )
        self._last_at = now
        return self._last
