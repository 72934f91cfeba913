"""Logging setup shared by every process neurolake starts."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time, not the one at setup: a CLI run inside
    a test must not keep logging into a stream the test runner has since closed."""

    @property
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # type: ignore[no-untyped-def]
        pass


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr so that stdout stays clean for command output (tables, JSON)."""
    root = logging.getLogger()
    if not any(getattr(handler, "_neurolake", False) for handler in root.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._neurolake = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # librdkafka and py4j are chatty at INFO; their warnings still come through.
    for noisy in ("py4j", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
