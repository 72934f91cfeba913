"""The hub's UDP time service that edge devices probe (see edge_producers/clock.py)."""

from __future__ import annotations

import logging
import socket
import time

from schemas.clock_wire import MAGIC, REPLY, REQUEST
from schemas.timebase import now_us

log = logging.getLogger(__name__)


def serve_clock(host: str, port: int, stop_after: float | None = None) -> None:
    """Answer probes forever (or for ``stop_after`` seconds). One reply per valid request."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        sock.settimeout(0.5)
        log.info("clock service on udp://%s:%d", host, port)
        deadline = None if stop_after is None else time.monotonic() + stop_after
        while deadline is None or time.monotonic() < deadline:
            try:
                data, peer = sock.recvfrom(64)
            except TimeoutError:
                continue
            received = now_us()
            if len(data) != REQUEST.size:
                continue
            magic, t0 = REQUEST.unpack(data)
            if magic != MAGIC:
                continue
            sock.sendto(REPLY.pack(MAGIC, t0, received, now_us()), peer)


def udp_clock_alive(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(REQUEST.pack(MAGIC, 1), (host, port))
            data, _ = sock.recvfrom(REPLY.size)
        except OSError:
            return False
    return len(data) == REPLY.size and data[:4] == MAGIC
