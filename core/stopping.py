"""How every long-running command stops: SIGINT or SIGTERM sets an event the command's loop waits on.

One helper instead of a handler pair per command, so each of them restores the previous handlers
on the way out (tests and the demo run several commands in one process).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(what: str = "", on_signal: Callable[[int], None] | None = None) -> Iterator[threading.Event]:
    """An event that SIGINT/SIGTERM set while the block runs (logged with ``what`` when given);
    ``on_signal`` also gets the signal number, e.g. to pass it on to children. The handlers that
    were installed before come back when the block ends."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if what:
            log.info("received %s; stopping %s", signal.Signals(signum).name, what)
        stop.set()
        if on_signal is not None:
            on_signal(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
