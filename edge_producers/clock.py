"""Clock offset between an edge device and the hub, NTP-style (the way LSL does it).

A probe records t0 (device send), t1 (hub receive), t2 (hub send), t3 (device receive). Its offset
estimate is ((t1 - t0) + (t2 - t3)) / 2 and its error is bounded by half the round trip
(t3 - t0) - (t2 - t1); so of a round of probes, the one with the lowest round trip wins. Pure maths
here; the UDP exchange is in :class:`ClockProbe`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas.clock_wire import MAGIC, REPLY, REQUEST
from schemas.timebase import now_us

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSample:
    t0_us: int
    t1_us: int
    t2_us: int
    t3_us: int

    @property
    def offset_us(self) -> int:
        """Hub clock minus device clock."""
        return ((self.t1_us - self.t0_us) + (self.t2_us - self.t3_us)) // 2

    @property
    def rtt_us(self) -> int:
        return (self.t3_us - self.t0_us) - (self.t2_us - self.t1_us)


@dataclass(frozen=True)
class ClockEstimate:
    offset_us: int
    rtt_us: int
    measured_us: int  # device time of the winning probe

    def to_lab(self, device_us: int) -> int:
        return device_us + self.offset_us


UNKNOWN = ClockEstimate(offset_us=0, rtt_us=-1, measured_us=0)


def best_estimate(samples: Sequence[ProbeSample]) -> ClockEstimate | None:
    """The probe with the lowest round trip: its offset has the tightest error bound."""
    valid = [sample for sample in samples if sample.rtt_us >= 0]
    if not valid:
        return None
    winner = min(valid, key=lambda sample: sample.rtt_us)
    return ClockEstimate(winner.offset_us, winner.rtt_us, winner.t3_us)


class ClockProbe:
    """Probes the hub's time service in rounds on a background thread; thread-safe estimate."""

    def __init__(
        self,
        host: str,
        port: int,
        interval_s: float = 5.0,
        probes_per_round: int = 8,
        timeout_s: float = 0.2,
        clock: Callable[[], int] = now_us,
        max_offset_us: int = 600_000_000,
    ) -> None:
        self._address = (host, port)
        self._max_offset_us = max_offset_us
        self.replies_refused = 0
        self._interval_s = interval_s
        self._probes = probes_per_round
        self._timeout_s = timeout_s
        self._clock = clock
        self._estimate = UNKNOWN
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds_failed = 0

    @property
    def estimate(self) -> ClockEstimate:
        with self._lock:
            return self._estimate

    def probe_round(self) -> ClockEstimate | None:
        samples = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self._timeout_s)
            try:
                # A connected UDP socket: the kernel drops datagrams from any other address and port.
                sock.connect(self._address)
            except OSError:
                self.rounds_failed += 1
                return None
            for _ in range(self._probes):
                t0 = self._clock()
                try:
                    sock.send(REQUEST.pack(MAGIC, t0))
                    data = sock.recv(REPLY.size)
                except OSError:
                    continue
                t3 = self._clock()
                if len(data) != REPLY.size:
                    continue
                magic, echoed, t1, t2 = REPLY.unpack(data)
                if magic != MAGIC or echoed != t0:
                    continue
                sample = ProbeSample(t0, t1, t2, t3)
                if abs(sample.offset_us) > self._max_offset_us:
                    # Lab time from this reply would move every label; set the Pi's clock (NTP) instead.
                    self.replies_refused += 1
                    if self.replies_refused in (1, 10, 100):
                        log.warning(
                            "clock reply refused: offset %.1f s exceeds clock.max_offset_s=%.0f s",
                            sample.offset_us / 1e6,
                            self._max_offset_us / 1e6,
                        )
                    continue
                samples.append(sample)
        estimate = best_estimate(samples)
        if estimate is None:
            self.rounds_failed += 1
            return None
        with self._lock:
            self._estimate = estimate
        return estimate

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="clock-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.probe_round() is None and self.rounds_failed in (1, 10, 100):
                log.warning("clock probe to %s:%d got no answer", *self._address)
            self._stop.wait(self._interval_s)
