"""SIGINT/SIGTERM stop a command's loop, and the handlers in place before come back."""

from __future__ import annotations

import os
import signal

from core.stopping import stop_on_signals


def test_a_signal_sets_the_event_and_the_previous_handler_returns() -> None:
    seen: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals("the test", on_signal=seen.append) as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2.0)
    assert seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before
